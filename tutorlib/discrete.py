"""Discrete flow matching: mixture paths on tokens, posterior training, the discrete Euler sampler.

Lesson 10 uses this module. Data are *tokens*: int64 tensors ``x`` of shape ``(B, ...)`` (e.g.
``(B, 2)`` for a tokenised 2D point, ``(B, 28, 28)`` for a quantised image) with values in a
vocabulary ``{0, ..., K - 1}``. A continuous-time Markov chain moves every token from a source
``x_0`` (all ``[MASK]``, or uniform noise) to data ``x_1`` along the *mixture path*, which treats
each token ``i`` independently::

    p_t(x^i | x_0, x_1) = kappa_t delta_{x_1^i}(x^i) + (1 - kappa_t) delta_{x_0^i}(x^i),

with a scheduler ``kappa_t`` (``kappa_0 = 0``, ``kappa_1 = 1``: any :class:`~tutorlib.schedulers.Scheduler`'s
``alpha_t``, e.g. ``CondOTScheduler()`` for ``kappa_t = t``). Its conditional probability velocity
is ``kappa'_t / (1 - kappa_t) (delta_{x_1} - delta_{x_t})``; the marginal one needs only the
per-token *posterior* ``p_{1|t}(x^i | x_t)`` (x-prediction), which a network learns by cross-entropy::

    u_t^i(x | x_t) = kappa'_t / (1 - kappa_t) * (p_{1|t}(x^i = x | x_t) - delta_{x_t^i}(x)).

Sampling follows that velocity with Euler steps of size ``h``: ``P(x_{t+h}^i = x) = delta_{x_t^i}(x)
+ h u_t^i(x | x_t)``, i.e. each token jumps with probability ``h kappa'_t / (1 - kappa_t)`` to a fresh
draw from its posterior (:func:`discrete_euler`).

Conventions:

* a *posterior model* is any callable ``model(x_t, t) -> logits`` with tokens ``x_t`` ``(B, ...)``,
  times ``t`` ``(B,)`` and logits ``(B, ..., K)`` (category axis last; log-probabilities up to a
  constant per token). :class:`PosteriorMLP` wraps a :class:`~tutorlib.models.TimeMLP` this way;
  a :class:`~tutorlib.models.UNet` gives ``(B, K, H, W)``, so move its axis 1 to the end.
* the masked source uses one extra state, the mask token ``K``: states are ``0 .. K`` (``K + 1``
  of them, :attr:`MixturePath.num_states`) while the posterior has ``K`` categories.
* 2D points become tokens through :func:`quantise` and come back through :func:`dequantise`.

The layout follows the discrete part of facebookresearch/flow_matching (mixture path, x-prediction
loss, mixture Euler solver); the maths is that of the "Discrete Flow Matching" paper (Gat et al.,
2024) and, for the masked source, "[MASK] is All You Need".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tutorlib.guidance import cfg_velocity
from tutorlib.models import TimeMLP
from tutorlib.schedulers import Scheduler
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "DiscretePathSample",
    "DiscreteSolution",
    "MixturePath",
    "PosteriorMLP",
    "TokenImagePosterior",
    "cfg_posterior",
    "dequantise",
    "discrete_euler",
    "discrete_loss",
    "mixture_elbo",
    "one_hot_input",
    "quantise",
    "tabular_posterior",
]

SOURCES = ("mask", "uniform")
PosteriorFn = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, ...) int64, t (B,)) -> logits (B, ..., K)


# --------------------------------------------------------------------------------------
# Tokenising 2D data
# --------------------------------------------------------------------------------------


def _check_grid(bins: int, low: float, high: float) -> float:
    """Validate a uniform grid of ``bins`` cells on ``[low, high]``; return the cell width."""
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
        raise ValueError(f"bins must be a positive int, got {bins!r}")
    if not float(high) > float(low):
        raise ValueError(f"need low < high, got low={low!r}, high={high!r}")
    return (float(high) - float(low)) / bins


def quantise(x: Tensor, bins: int, low: float, high: float, *, clip: bool = False) -> Tensor:
    """Tokenise coordinates: each value becomes the index of its cell on a uniform grid.

    The interval ``[low, high]`` is cut into ``bins`` cells of width ``w = (high - low) / bins``;
    ``token = floor((x - low) / w)``, with ``x = high`` put in the last cell. A 2D point ``(B, 2)``
    becomes two tokens ``(B, 2)``, one per coordinate (lesson 10).

    Args:
        x: coordinates ``(B, D)`` (any shape works, elementwise), finite.
        bins: number of cells ``K`` per coordinate (the vocabulary size).
        low: left end of the grid.
        high: right end of the grid (``> low``).
        clip: put values outside ``[low, high]`` into the first / last cell instead of raising.

    Returns:
        Tokens int64 with the shape of ``x``, in ``[0, bins)``.

    Raises:
        ValueError: bad grid, non-finite values, or (without ``clip``) values outside ``[low, high]``.
    """
    width = _check_grid(bins, low, high)
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of coordinates, got {x.dtype}")
    xd = x.detach().to(torch.float64)
    if not bool(torch.isfinite(xd).all()):
        raise ValueError("x has NaN or infinite values")
    outside = (xd < low) | (xd > high)
    if not clip and bool(outside.any()):
        raise ValueError(f"{int(outside.sum())} of {x.numel()} values lie outside [low, high] = [{low}, {high}] "
                         f"(range seen [{float(xd.min()):.4g}, {float(xd.max()):.4g}]); widen the grid or pass "
                         f"clip=True")
    tokens = torch.floor((xd - low) / width).to(torch.int64)  # same shape as x
    return tokens.clamp_(0, bins - 1)


def dequantise(
    tokens: Tensor,
    bins: int,
    low: float,
    high: float,
    *,
    generator: torch.Generator | None = None,
    jitter: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Coordinates of tokens: a uniform point inside each token's cell (or its centre).

    ``x = low + (token + u) w`` with ``u ~ U[0, 1)`` independently per value (``jitter=True``) or
    ``u = 1/2`` (the cell centre). With jitter, dequantised tokens of data have the data's density
    averaged over each cell (a piecewise-constant density), so a two-sample distance such as
    the energy distance against *continuous* data measures only what quantisation loses (the
    bench's "quantisation floor"); cell centres would sit on a lattice and be penalised for it.
    ``quantise(dequantise(tok, ...), ...) == tok`` for every token.

    Args:
        tokens: int tokens ``(B, D)`` (any shape) in ``[0, bins)``.
        bins: number of cells per coordinate.
        low: left end of the grid.
        high: right end of the grid.
        generator: generator for the jitter (on any device; values are moved to ``tokens``' device).
        jitter: uniform jitter inside the cell (``True``) or cell centres (``False``).
        dtype: floating dtype of the result.

    Returns:
        Coordinates ``(B, D)`` (shape of ``tokens``) of dtype ``dtype`` in ``[low, high]``.
    """
    width = _check_grid(bins, low, high)
    _check_tokens(tokens, bins, "tokens")
    if jitter:
        u = _uniform(tokens.shape, generator, tokens.device)  # (B, D) float64 in [0, 1)
    else:
        u = torch.full(tokens.shape, 0.5, dtype=torch.float64, device=tokens.device)
    centre = low + (tokens.to(torch.float64) + 0.5) * width  # (B, D)
    x = (low + (tokens.to(torch.float64) + u) * width).to(dtype)  # (B, D)
    # rounding to a low-precision dtype may land a point on the next cell's edge: use the centre there
    moved = torch.floor((x.to(torch.float64) - low) / width).clamp(0, bins - 1) != tokens
    return torch.where(moved, centre.to(dtype), x)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _check_tokens(x: Tensor, num_states: int, name: str) -> None:
    """Tokens must be an integer tensor with values in ``[0, num_states)``."""
    if not isinstance(x, Tensor) or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{name} must be an integer tensor of tokens, got "
                         f"{x.dtype if isinstance(x, Tensor) else type(x).__name__}")
    if x.dim() < 1:
        raise ValueError(f"{name} must have a batch dimension, got a 0-d tensor")
    if x.device.type == "cpu" and x.numel() and (bool((x < 0).any()) or bool((x >= num_states).any())):
        raise ValueError(f"{name} must lie in [0, {num_states - 1}], got values in "
                         f"[{int(x.min())}, {int(x.max())}]")


def _uniform(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None, device: torch.device,
             dtype: torch.dtype = torch.float64) -> Tensor:
    """``U[0, 1)`` of ``shape`` drawn from ``generator`` (on its own device), returned on ``device``."""
    if generator is None or generator.device.type == torch.device(device).type:
        return torch.rand(shape, generator=generator, dtype=dtype, device=device)
    return torch.rand(shape, generator=generator, dtype=dtype, device=generator.device).to(device)


def _categorical(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One draw per row of ``probs`` ``(..., K)`` (rows need not be normalised): int64 ``(...)``.

    Inverse-CDF sampling, so any generator device works and zero-probability categories are never drawn.
    """
    cdf = probs.to(torch.float64).cumsum(-1)  # (..., K)
    u = _uniform(probs.shape[:-1], generator, probs.device) * cdf[..., -1]  # (...)
    idx = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1)  # (...)
    return idx.clamp_(max=probs.shape[-1] - 1)


def one_hot_input(tokens: Tensor, num_states: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Flattened one-hot encoding of tokens, the input of a vector network (TimeMLP).

    ``(B, D)`` tokens with values in ``[0, num_states)`` become ``(B, D * num_states)`` with
    ``out[b, i * num_states + k] = [tokens[b, i] == k]``. For the masked source ``num_states = K + 1``
    (the mask is a state of its own), for the uniform source ``K``: use :attr:`MixturePath.num_states`.

    Args:
        tokens: int64 ``(B, D)``.
        num_states: number of token values the input can take.
        dtype: floating dtype of the result.

    Returns:
        ``(B, D * num_states)`` of zeros and ones.
    """
    _check_tokens(tokens, num_states, "tokens")
    if tokens.dim() != 2:
        raise ValueError(f"tokens must have shape (B, D), got {tuple(tokens.shape)}")
    return F.one_hot(tokens.long(), num_states).to(dtype).flatten(1)  # (B, D * S)


# --------------------------------------------------------------------------------------
# The mixture path
# --------------------------------------------------------------------------------------


@dataclass
class DiscretePathSample:
    """A draw from the mixture path: every token is ``x_1``'s with probability kappa_t, else ``x_0``'s."""

    x_0: Tensor  # (B, ...) int64 source tokens
    x_1: Tensor  # (B, ...) int64 data tokens
    x_t: Tensor  # (B, ...) int64 tokens at time t
    t: Tensor  # (B,) times in [0, 1]


class MixturePath:
    """The factorised mixture path from a masked or uniform source to data tokens (lesson 10).

    ``p_t(x^i | x_0, x_1) = kappa_t delta_{x_1^i} + (1 - kappa_t) delta_{x_0^i}`` independently per token,
    with ``kappa_t`` the scheduler's ``alpha_t`` and ``kappa'_t`` its ``d_alpha_t``.

    Sources:

    * ``"mask"``: ``x_0`` is the mask token ``K`` everywhere. A token that is not the mask is already
      data, so its posterior is a delta (:meth:`posterior_probs` enforces that).
    * ``"uniform"``: ``x_0`` is uniform on ``{0, ..., K - 1}``; a token can change several times.

    Args:
        scheduler: gives ``kappa_t = alpha_t`` (``kappa_0 = 0``, ``kappa_1 = 1``) and ``kappa'_t``,
            e.g. ``CondOTScheduler()`` (``kappa_t = t``) or ``PolynomialScheduler(2.0)``.
        source: ``"mask"`` or ``"uniform"``.
        vocab_size: ``K``, the number of data categories per token.
        mask_token: ``None`` or ``vocab_size``: the mask is always the extra state ``K`` (masked
            source only).
    """

    def __init__(self, scheduler: Scheduler, source: str = "mask", vocab_size: int = 2, mask_token: int | None = None):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
            raise ValueError(f"vocab_size must be an int >= 2, got {vocab_size!r}")
        if mask_token is not None and (source != "mask" or mask_token != vocab_size):
            raise ValueError(f"mask_token must be None or vocab_size ({vocab_size}) with source='mask' "
                             f"(the mask is the extra state K), got {mask_token!r} with source={source!r}")
        self.scheduler = scheduler
        self.source = source
        self.vocab_size = vocab_size

    def __repr__(self) -> str:
        return f"MixturePath({self.scheduler!r}, source={self.source!r}, vocab_size={self.vocab_size})"

    @property
    def mask_token(self) -> int | None:
        """The mask state ``K`` (masked source), or ``None``."""
        return self.vocab_size if self.source == "mask" else None

    @property
    def num_states(self) -> int:
        """Values ``x_t`` can take: ``K + 1`` with the mask, ``K`` for the uniform source."""
        return self.vocab_size + (self.source == "mask")

    def kappa(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(kappa_t, kappa'_t)``, each with the shape of ``t``."""
        out = self.scheduler(t)
        return out.alpha_t, out.d_alpha_t

    def rate_coefficient(self, t: Tensor, eps: float = 1e-12) -> Tensor:
        """``kappa'_t / (1 - kappa_t)``, the jump intensity of a token not yet at its target.

        It is infinite at ``t = 1`` (``kappa_1 = 1``): ``1 - kappa_t`` is clamped at ``eps``, and
        :func:`discrete_euler` never evaluates it there (its last step jumps with probability 1).

        Args:
            t: times ``(B,)`` in ``[0, 1]``.

        Returns:
            ``(B,)``, non-negative.
        """
        k, dk = self.kappa(t)
        return dk / (1.0 - k).clamp_min(eps)

    def sample_source(self, shape: tuple[int, ...] | torch.Size, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """Source tokens ``x_0``: the mask everywhere, or uniform on ``{0, ..., K - 1}``.

        Args:
            shape: ``(B, ...)``, e.g. ``(B, 2)``.
            generator: generator for the uniform source (unused by the masked one).
            device: where to put the tokens (default: the CPU).

        Returns:
            int64 tokens of ``shape``.
        """
        device = torch.device("cpu") if device is None else torch.device(device)
        if self.source == "mask":
            return torch.full(tuple(shape), self.vocab_size, dtype=torch.int64, device=device)
        u = _uniform(tuple(shape), generator, device)
        return (u * self.vocab_size).long().clamp_(max=self.vocab_size - 1)

    def _check_pair(self, x_0: Tensor, x_1: Tensor) -> None:
        _check_tokens(x_0, self.num_states, "x_0")
        _check_tokens(x_1, self.vocab_size, "x_1")
        if x_0.shape != x_1.shape:
            raise ValueError(f"x_0 and x_1 must have the same shape, got {tuple(x_0.shape)} and {tuple(x_1.shape)}")

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor | float, *,
               generator: torch.Generator | None = None) -> DiscretePathSample:
        """Draw ``x_t``: each token independently takes ``x_1``'s value with probability kappa_t.

        Args:
            x_0: source tokens ``(B, ...)`` int64 in ``[0, num_states)``.
            x_1: data tokens ``(B, ...)`` int64 in ``[0, K)``.
            t: times ``(B,)`` in ``[0, 1]`` (or a scalar).
            generator: generator of the per-token coin flips.

        Returns:
            A :class:`DiscretePathSample`.
        """
        self._check_pair(x_0, x_1)
        t = batch_times(t, x_1, check_range=True)  # (B,)
        kappa, _ = self.kappa(t)  # (B,)
        take_data = _uniform(x_1.shape, generator, x_1.device) < expand_t(kappa.to(torch.float64), x_1)  # (B, ...)
        x_t = torch.where(take_data, x_1, x_0.to(x_1.dtype))  # (B, ...)
        return DiscretePathSample(x_0=x_0, x_1=x_1, x_t=x_t, t=t)

    def posterior_probs(self, logits: Tensor, x_t: Tensor) -> Tensor:
        """Posterior probabilities ``p_{1|t}(. | x_t)`` from a model's logits, exact where known.

        ``softmax(logits)``; with the masked source, every token of ``x_t`` that is not the mask is
        already ``x_1`` (the path never changes it again), so its posterior is replaced by the delta
        at that token whatever the model says.

        Args:
            logits: ``(B, ..., K)``.
            x_t: tokens ``(B, ...)``.

        Returns:
            ``(B, ..., K)``, rows summing to one.
        """
        if logits.shape != (*x_t.shape, self.vocab_size):
            raise ValueError(f"logits must have shape {(*x_t.shape, self.vocab_size)} (tokens + (K,)), "
                             f"got {tuple(logits.shape)}")
        probs = torch.softmax(logits.to(torch.float32) if logits.dtype in (torch.float16, torch.bfloat16)
                              else logits, dim=-1)  # (B, ..., K)
        if self.source == "mask":
            known = x_t != self.vocab_size  # (B, ...)
            delta = F.one_hot(x_t.long().clamp(max=self.vocab_size - 1), self.vocab_size).to(probs.dtype)  # (B, ..., K)
            probs = torch.where(known.unsqueeze(-1), delta, probs)
        return probs

    def velocity(self, posterior: Tensor, x_t: Tensor, t: Tensor | float) -> Tensor:
        """The marginal probability velocity ``u_t(x | x_t)`` over the states of each token.

        ``u_t^i(x | x_t) = kappa'_t / (1 - kappa_t) * (p_{1|t}(x^i = x | x_t) - delta_{x_t^i}(x))`` for
        ``x`` in ``{0, ..., num_states - 1}`` (the posterior is zero on the mask). Each row sums to
        zero and is non-negative off the current state: a valid CTMC rate.

        Args:
            posterior: probabilities ``(B, ..., K)`` (e.g. :meth:`posterior_probs`).
            x_t: tokens ``(B, ...)``.
            t: times ``(B,)`` in ``[0, 1)`` (infinite at ``t = 1``; see :meth:`rate_coefficient`).

        Returns:
            ``(B, ..., num_states)``.
        """
        _check_tokens(x_t, self.num_states, "x_t")
        if posterior.shape != (*x_t.shape, self.vocab_size):
            raise ValueError(f"posterior must have shape {(*x_t.shape, self.vocab_size)}, got {tuple(posterior.shape)}")
        t = batch_times(t, x_t, check_range=True)
        pad = self.num_states - self.vocab_size
        p = F.pad(posterior, (0, pad))  # (B, ..., S)
        coef = expand_t(self.rate_coefficient(t).to(p.dtype), x_t).unsqueeze(-1)  # (B, 1, ..., 1)
        return coef * (p - F.one_hot(x_t.long(), self.num_states).to(p.dtype))  # (B, ..., S)

    def likelihood(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``p_t(x_t^i | x_1^i = k)`` for every category ``k`` (the source marginalised), per token.

        ``kappa_t [x_t^i = k] + (1 - kappa_t) q_0(x_t^i)`` with ``q_0`` the source's token law
        (``[x = mask]`` or ``1 / K``): Bayes' rule with a prior over ``x_1`` gives the posterior
        (:func:`tabular_posterior`).

        Args:
            x_t: tokens ``(B, ...)``.
            t: times ``(B,)``.

        Returns:
            ``(B, ..., K)`` float64.
        """
        _check_tokens(x_t, self.num_states, "x_t")
        t = batch_times(t, x_t, check_range=True)
        kappa = expand_t(self.kappa(t.to(torch.float64))[0], x_t).unsqueeze(-1)  # (B, 1, ..., 1)
        K = self.vocab_size
        hit = (x_t.unsqueeze(-1) == torch.arange(K, device=x_t.device)).to(torch.float64)  # (B, ..., K)
        if self.source == "mask":
            q0 = (x_t == K).to(torch.float64).unsqueeze(-1)  # (B, ..., 1)
        else:
            q0 = torch.full_like(hit[..., :1], 1.0 / K)
        return kappa * hit + (1.0 - kappa) * q0  # (B, ..., K)


# --------------------------------------------------------------------------------------
# Exact posterior of a known (tabular) distribution
# --------------------------------------------------------------------------------------


def tabular_posterior(table: Tensor, path: MixturePath, x_t: Tensor, t: Tensor | float) -> Tensor:
    """Exact per-token posteriors ``p_{1|t}(x^i | x_t)`` of a data distribution given as a table.

    The data law of ``D`` tokens is ``table`` of shape ``(K,) * D`` (``table[k_1, ..., k_D] =
    P(x_1 = (k_1, ..., k_D))``, normalised here). Bayes' rule on the mixture path::

        p(x_1 | x_t) ∝ table[x_1] * prod_i (kappa_t [x_t^i = x_1^i] + (1 - kappa_t) q_0(x_t^i)),

    then each token's marginal. For independent tokens this reduces to the familiar cases: at a
    masked token the posterior is the data marginal, at an unmasked one a delta; with the uniform
    source ``p(x) (kappa [x = x_t] + (1 - kappa) / K)`` normalised. Cost ``B D K^D``: small ``K`` and
    ``D`` only (lesson 10's oracle, the tests' ground truth).

    Args:
        table: non-negative ``(K,) * D``.
        path: the :class:`MixturePath` (its ``vocab_size`` must be ``K``).
        x_t: tokens ``(B, D)`` that are possible at ``t`` (else the result is NaN).
        t: times ``(B,)`` in ``[0, 1]``.

    Returns:
        Probabilities ``(B, D, K)`` float64 (take ``.log()`` for a posterior function's logits).
    """
    K = path.vocab_size
    if x_t.dim() != 2:
        raise ValueError(f"x_t must have shape (B, D), got {tuple(x_t.shape)}")
    B, D = x_t.shape
    if not 1 <= D <= 25:
        raise ValueError(f"a table covers 1 to 25 tokens, got D = {D}")
    if table.shape != (K,) * D:
        raise ValueError(f"table must have shape {(K,) * D} for D = {D} tokens of K = {K} categories, "
                         f"got {tuple(table.shape)}")
    if bool((table < 0).any()) or not float(table.sum()) > 0:
        raise ValueError("table must be non-negative with a positive sum")
    lik = path.likelihood(x_t, t)  # (B, D, K)
    table = (table.to(device=x_t.device, dtype=torch.float64) / table.sum())  # (K, ..., K)
    # token i's marginal: lik_i(k) * sum over the other tokens of table * prod_{j != i} lik_j, one
    # contraction per token (a matrix-vector product per sample for D = 2), never the (B, K^D) joint
    letters = "abcdefghijklmnopqrstuvwxy"[:D]
    out = []
    for i in range(D):
        others = [j for j in range(D) if j != i]
        spec = ",".join([letters] + [f"z{letters[j]}" for j in others]) + f"->z{letters[i]}"
        m = torch.einsum(spec, table, *[lik[:, j] for j in others]) if others else table.expand(B, K)  # (B, K)
        w = lik[:, i] * m  # (B, K)
        out.append(w / w.sum(-1, keepdim=True))
    return torch.stack(out, 1)  # (B, D, K)


# --------------------------------------------------------------------------------------
# Training: the x-prediction (posterior) loss
# --------------------------------------------------------------------------------------


def discrete_loss(model: PosteriorFn, path: MixturePath, x_0: Tensor, x_1: Tensor, t: Tensor | float, *,
                  generator: torch.Generator | None = None, masked_only: bool = False) -> Tensor:
    """Cross-entropy of the posterior model at the data: ``-E log p_{1|t}(x_1^i | x_t)``.

    Draws ``x_t ~ p_t(. | x_0, x_1)`` (:meth:`MixturePath.sample`), evaluates ``model(x_t, t)`` and
    returns the mean over **all tokens** of ``-log softmax(logits)[x_1^i]`` (the Discrete Flow
    Matching paper's loss, summed there, averaged here). Its minimiser is the true posterior.
    With the masked source, unmasked tokens are trivial (their posterior is a delta that
    :meth:`MixturePath.posterior_probs` enforces at sampling time); ``masked_only=True`` averages
    over the masked tokens only (0 when a batch has none).

    Args:
        model: ``model(x_t, t) -> logits (B, ..., K)``.
        path: the :class:`MixturePath`.
        x_0: source tokens ``(B, ...)``.
        x_1: data tokens ``(B, ...)`` in ``[0, K)``.
        t: times ``(B,)`` in ``[0, 1]``.
        generator: generator of the path's coin flips.
        masked_only: average over masked tokens only (masked source only).

    Returns:
        A scalar tensor (nats per token).
    """
    if masked_only and path.source != "mask":
        raise ValueError("masked_only needs the masked source")
    s = path.sample(x_0, x_1, t, generator=generator)
    logits = model(s.x_t, s.t)  # (B, ..., K)
    if logits.shape != (*x_1.shape, path.vocab_size):
        raise ValueError(f"the model must return logits of shape {(*x_1.shape, path.vocab_size)} "
                         f"(tokens + (K,)), got {tuple(logits.shape)}")
    nll = F.cross_entropy(logits.reshape(-1, path.vocab_size), x_1.reshape(-1).long(), reduction="none")  # (B*D,)
    if not masked_only:
        return nll.mean()
    masked = (s.x_t == path.mask_token).reshape(-1).to(nll.dtype)  # (B*D,)
    return (nll * masked).sum() / masked.sum().clamp_min(1.0)


def mixture_elbo(model: PosteriorFn, path: MixturePath, x_0: Tensor, x_1: Tensor, t: Tensor | float, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """One-draw estimate of the evidence bound ``-log p_theta(x_1) <= E_t[...]``, per sample, in nats.

    The model's CTMC jumps token ``i`` from ``x_t^i`` to ``y != x_t^i`` at rate ``c_t p(y)``, with
    ``c_t = kappa'_t / (1 - kappa_t)`` and ``p = p_{1|t}(. | x_t)`` its posterior; the path's own chain towards
    ``x_1`` jumps a token only when ``x_t^i != x_1^i``, to ``x_1^i``, at rate ``c_t``. Both start from the same
    source, so the negative log-likelihood of ``x_1`` under the model's sampler is at most the KL divergence
    between the two path measures (the continuous-time ELBO of CTMCs)::

        -log p_theta(x_1) <= int_0^1 E_{x_t ~ p_t(. | x_1)} sum_i c_t [ 1 - p(x_t^i) - d_i - d_i log p(x_1^i) ] dt,
        d_i = [x_t^i != x_1^i],

    and this function returns the integrand at one draw of ``x_t ~ p_t(. | x_0, x_1)`` for each sample's
    ``t``: with ``t ~ U[0, 1]`` its mean is an unbiased estimate of the bound. With the **masked** source a
    token is either masked (``p(mask) = 0`` and ``d_i = 1``: the term is ``-log p(x_1^i)``) or revealed
    (``p`` is the delta there and ``d_i = 0``: the term is 0), so the bound is the familiar
    ``E_t[c_t * sum over masked tokens of -log p(x_1^i | x_t)]``, exact (equal to ``-log p(x_1)``) for the
    true posterior. With the **uniform** source every term counts, and the bound is loose even for the true
    posterior (the path's chain jumps straight to ``x_1^i``, the model's may wander). Lesson 10 reports it
    per character on held-out text.

    Args:
        model: ``model(x_t, t) -> logits (B, ..., K)``.
        path: the :class:`MixturePath` the model was trained on.
        x_0: source tokens ``(B, ...)``.
        x_1: data tokens ``(B, ...)`` in ``[0, K)``.
        t: times ``(B,)`` in ``[0, 1)`` (``U[0, 1)`` draws for an unbiased estimate).
        generator: generator of the path's coin flips.

    Returns:
        ``(B,)`` float64: the integrand summed over each sample's tokens (nats).
    """
    s = path.sample(x_0, x_1, t, generator=generator)
    if bool((s.t >= 1).any()):
        raise ValueError("t must lie in [0, 1): the rate kappa'/(1 - kappa) is infinite at t = 1")
    logits = model(s.x_t, s.t)  # (B, ..., K)
    if logits.shape != (*x_1.shape, path.vocab_size):
        raise ValueError(f"the model must return logits of shape {(*x_1.shape, path.vocab_size)} "
                         f"(tokens + (K,)), got {tuple(logits.shape)}")
    probs = path.posterior_probs(logits.to(torch.float64), s.x_t)  # (B, ..., K)
    x_t = s.x_t.long()
    stay = F.pad(probs, (0, path.num_states - path.vocab_size)).gather(-1, x_t.unsqueeze(-1)).squeeze(-1)  # p(x_t^i)
    log_p1 = torch.log_softmax(logits.to(torch.float64), -1).gather(-1, x_1.long().unsqueeze(-1)).squeeze(-1)
    if path.source == "mask":  # a revealed token is x_1^i: its posterior is the delta, log p(x_1^i) = 0
        log_p1 = torch.where(x_t == path.mask_token, log_p1, torch.zeros_like(log_p1))
    off = (x_t != x_1.long()).to(torch.float64)  # (B, ...) d_i
    terms = 1.0 - stay - off - off * log_p1  # (B, ...)
    coef = path.rate_coefficient(s.t.to(torch.float64))  # (B,)
    return coef * terms.reshape(terms.shape[0], -1).sum(1)  # (B,)


# --------------------------------------------------------------------------------------
# Sampling: the discrete Euler method
# --------------------------------------------------------------------------------------


@dataclass
class DiscreteSolution:
    """What :func:`discrete_euler` returns."""

    x: Tensor  # (B, ...) int64 tokens at t = 1 (named like ODESolution.x)
    nfe: int  # posterior evaluations (= steps)
    times: Tensor  # (steps + 1,) the time grid
    trajectory: Tensor | None  # (steps + 1, B, ...) tokens at each grid time, or None


@torch.no_grad()
def discrete_euler(
    model: PosteriorFn,
    path: MixturePath,
    x_0: Tensor,
    *,
    steps: int,
    generator: torch.Generator | None = None,
    return_trajectory: bool = False,
) -> DiscreteSolution:
    """Sample the CTMC of the mixture path with Euler steps on a uniform grid ``0 = t_0 < ... < t_N = 1``.

    One step from ``t`` to ``t + h``, per token independently (the scheme of the Discrete Flow
    Matching paper)::

        x_1 ~ p_{1|t}(. | x_t)                        # a fresh posterior draw
        c   = min(1, h kappa'_t / (1 - kappa_t))      # jump probability
        x_{t+h} = x_1 with probability c, else x_t

    so ``P(x_{t+h} = x) = delta_{x_t}(x) + h u_t(x | x_t)`` whenever ``c < 1`` (``u_t`` from
    :meth:`MixturePath.velocity`). The last step uses ``c = 1``: every token takes its posterior
    draw, so nothing stays masked and ``1 / (1 - kappa_t)`` is never evaluated at ``t = 1``. With
    ``kappa_t = t`` that is automatic: ``c = 1 / (N - k)`` at step ``k``, so a masked token is still
    masked at ``t_k`` with probability exactly ``1 - t_k``. The one approximation is that tokens
    jumping in the same step are drawn independently (the factorised posterior); with one step all
    tokens come from their marginals at once.

    Args:
        model: ``model(x_t, t) -> logits (B, ..., K)`` (a trained network, or the log of an exact
            posterior such as :func:`tabular_posterior`).
        path: the :class:`MixturePath` the model was trained on.
        x_0: source tokens ``(B, ...)`` (:meth:`MixturePath.sample_source`).
        steps: number of Euler steps ``N >= 1`` (= NFE).
        generator: generator of every draw (any device).
        return_trajectory: also return the tokens at every grid time.

    Returns:
        A :class:`DiscreteSolution`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    _check_tokens(x_0, path.num_states, "x_0")
    x = x_0.long()  # (B, ...)
    times = torch.linspace(0.0, 1.0, steps + 1, device=x.device)  # (N + 1,)
    traj = [x] if return_trajectory else None
    for k in range(steps):
        t = times[k].expand(x.shape[0])  # (B,)
        h = float(times[k + 1] - times[k])
        probs = path.posterior_probs(model(x, t), x)  # (B, ..., K)
        target = _categorical(probs, generator)  # (B, ...)
        if k == steps - 1:
            x = target
        else:
            c = (h * path.rate_coefficient(t)).clamp(max=1.0).to(torch.float64)  # (B,)
            jump = _uniform(x.shape, generator, x.device) < expand_t(c, x)  # (B, ...)
            x = torch.where(jump, target, x)
        if traj is not None:
            traj.append(x)
    return DiscreteSolution(x=x, nfe=steps, times=times,
                            trajectory=torch.stack(traj) if traj is not None else None)


# --------------------------------------------------------------------------------------
# A posterior network for a few tokens
# --------------------------------------------------------------------------------------


class PosteriorMLP(nn.Module):
    """A :class:`~tutorlib.models.TimeMLP` as a posterior model: tokens ``(B, D)`` -> logits ``(B, D, K)``.

    The input is :func:`one_hot_input` (``D * num_states`` features, the mask being a state of its own),
    the output ``D * K`` logits viewed as ``(B, D, K)``: the categorical head the TimeMLP
    docstring describes (lesson 10).

    Args:
        num_tokens: ``D``, tokens per sample (2 for a tokenised 2D point).
        num_states: values a token of ``x_t`` can take (:attr:`MixturePath.num_states`).
        vocab_size: ``K``, the data categories.
        hidden: TimeMLP width.
        depth: TimeMLP residual blocks.
    """

    def __init__(self, num_tokens: int, num_states: int, vocab_size: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        if num_states < vocab_size:
            raise ValueError(f"num_states ({num_states}) must be at least vocab_size ({vocab_size})")
        self.num_tokens, self.num_states, self.vocab_size = num_tokens, num_states, vocab_size
        self.net = TimeMLP(dim=num_tokens * num_states, hidden=hidden, depth=depth, out_dim=num_tokens * vocab_size)

    @classmethod
    def for_path(cls, path: MixturePath, num_tokens: int, hidden: int = 128, depth: int = 3) -> "PosteriorMLP":
        """A posterior network sized for ``path`` (its ``num_states`` and ``vocab_size``)."""
        return cls(num_tokens, path.num_states, path.vocab_size, hidden, depth)

    def forward(self, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``x_t`` int64 ``(B, D)`` and ``t`` ``(B,)`` -> logits ``(B, D, K)``."""
        if x_t.dim() != 2 or x_t.shape[1] != self.num_tokens:
            raise ValueError(f"x_t must have shape (B, {self.num_tokens}), got {tuple(x_t.shape)}")
        inp = one_hot_input(x_t, self.num_states, dtype=self.net.inp.weight.dtype)  # (B, D * S)
        return self.net(inp, t).view(x_t.shape[0], self.num_tokens, self.vocab_size)  # (B, D, K)


# --------------------------------------------------------------------------------------
# Images of tokens, and classifier-free guidance on posteriors
# --------------------------------------------------------------------------------------


class TokenImagePosterior(nn.Module):
    """An image network as a posterior model on token images: ``(B, H, W)`` tokens -> logits ``(B, H, W, K)``.

    The tokens become one-hot channels ``(B, num_states, H, W)`` (the mask being a channel of its own),
    ``net(h, t, y)`` returns ``(B, K, H, W)`` (e.g. ``PatchUNet(num_states, K, ...)``), and the category
    axis moves last, the convention of this module. Class-conditional when ``net`` is: ``y=None`` (or
    ``null_class``) is the unconditional posterior, so :func:`cfg_posterior` can guide it (lesson 10).

    Args:
        net: ``net(x, t, y) -> (B, K, H, W)`` with ``in_channels = num_states``.
        num_states: values a token of ``x_t`` can take (:attr:`MixturePath.num_states`).
        vocab_size: ``K``.
    """

    def __init__(self, net: nn.Module, num_states: int, vocab_size: int):
        super().__init__()
        if num_states < vocab_size:
            raise ValueError(f"num_states ({num_states}) must be at least vocab_size ({vocab_size})")
        self.net, self.num_states, self.vocab_size = net, num_states, vocab_size

    @property
    def null_class(self) -> int | None:
        """The network's null class (``None`` if unconditional)."""
        return getattr(self.net, "null_class", None)

    def forward(self, x_t: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """``x_t`` int64 ``(B, H, W)``, ``t`` ``(B,)``, ``y`` ``(B,)`` or ``None`` -> logits ``(B, H, W, K)``."""
        if x_t.dim() != 3:
            raise ValueError(f"x_t must be token images of shape (B, H, W), got {tuple(x_t.shape)}")
        _check_tokens(x_t, self.num_states, "x_t")
        weight = next(self.net.parameters())
        h = F.one_hot(x_t.long(), self.num_states).permute(0, 3, 1, 2).to(weight.dtype)  # (B, S, H, W)
        if weight.device.type == "cpu":
            h = h.contiguous(memory_format=torch.channels_last)  # NHWC: faster convolutions on CPUs
        out = self.net(h, t, y) if y is not None else self.net(h, t)  # (B, K, H, W)
        if out.shape != (x_t.shape[0], self.vocab_size, *x_t.shape[1:]):
            raise ValueError(f"net must return (B, {self.vocab_size}, H, W), got {tuple(out.shape)}")
        return out.permute(0, 2, 3, 1)  # (B, H, W, K)


def cfg_posterior(model: nn.Module, y: Tensor | int, w: float) -> PosteriorFn:
    """Classifier-free guidance of a class-conditional posterior model: ``logits_u + w (logits_c - logits_u)``.

    The guided posterior is the per-token geometric mixture ``p_w ∝ p_u^(1 - w) p_c^w`` of the
    unconditional and conditional posteriors (renormalised by the softmax): ``w = 0`` is unconditional,
    ``w = 1`` conditional, ``w > 1`` sharpens towards tokens the label makes likelier. The jump intensity
    ``kappa'/(1 - kappa)`` of :func:`discrete_euler` is unchanged, so only *where* tokens jump is guided.
    One forward pass of the doubled batch per call: it is :func:`tutorlib.guidance.cfg_velocity` applied
    to logits instead of velocities (lesson 10).

    Args:
        model: ``model(x_t, t, y) -> logits (B, ..., K)`` with a ``null_class`` (e.g. a class-conditional
            :class:`TokenImagePosterior`), trained with label dropout.
        y: the class of every sample (int or int64 ``(B,)``).
        w: guidance scale.

    Returns:
        ``posterior(x_t, t) -> logits (B, ..., K)`` for :func:`discrete_euler`.
    """
    return cfg_velocity(model, y, w)
