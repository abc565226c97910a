"""Flow matching on the probability simplex: the linear path and Dirichlet flow matching (lesson 10).

A category ``k`` of ``{0, ..., K - 1}`` is the vertex ``e_k`` of the simplex
``S = {x in R^K : x >= 0, sum(x) = 1}``. A flow on the simplex carries the uniform law on ``S`` (the
Dirichlet law ``Dir(1, ..., 1)``, the source ``x_0``) to the vertices (the data ``x_1``); a network
predicts the *posterior* ``p(x_1 = e_k | x_t)`` by cross-entropy, as for discrete flows, and the
marginal velocity is the posterior average of the conditional ones::

    v_t(x) = sum_k p(k | x_t = x) u_t(x | e_k).

Two paths (``x_1 = e_k``):

* **linear** (:class:`LinearSimplexPath`): ``x_t = (1 - t) x_0 + t e_k``, ``t`` in ``[0, 1]``,
  ``u_t(x | e_k) = (e_k - x) / (1 - t)``, so ``v_t(x) = (p(. | x) - x) / (1 - t)``. Given ``e_k``, ``x_t``
  is uniform on the shrunken simplex ``{x : x_k >= t}``: the exact posterior of a categorical law
  ``q`` is ``q_k [x_k >= t]`` normalised. Past ``t = 1/2`` at most one category is possible, and for
  a uniform ``x_0`` already at ``t ~ log(K) / K`` usually only one: the posterior jumps from ``q`` to a
  delta within a window that shrinks as ``K`` grows (the failure *Dirichlet Flow Matching* points out).
* **Dirichlet** (:class:`DirichletPath`): ``x_t ~ Dir(1 + t e_k)``, ``t`` in ``[0, t_max]`` (the data are
  reached only as ``t -> oo``; samples are read by ``argmax`` at ``t_max``). The posterior of ``q`` is
  ``q_k x_k^t`` normalised, smooth in ``x`` and ``t``; the conditional velocity is
  ``u_t(x | e_k) = C(x_k, t) (e_k - x)`` with (:func:`dirichlet_coefficient`)::

      C(x, t) = -dI_x(a, b)/da * B(a, b) / (x^t (1 - x)^(K - 1)),    a = t + 1, b = K - 1,

  ``I_x`` the regularised incomplete beta function (the CDF of ``x_k ~ Beta(t + 1, K - 1)``): the 1D
  continuity equation of that marginal, divided by ``1 - x_k``.

Shapes: tokens ``x_1`` int64 ``(B, ...)``, points ``x_t`` ``(B, ..., K)``, times ``t`` ``(B,)``.
Models are called as ``model(x_t, s)`` with the **normalised time** ``s = t / t_max`` in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tutorlib.utils import batch_times, expand_t

__all__ = [
    "DirichletPath",
    "LinearSimplexPath",
    "SimplexSolution",
    "categorical_tv",
    "dirichlet_coefficient",
    "sample_dirichlet",
    "simplex_euler",
    "simplex_loss",
]

PosteriorFn = Callable[[Tensor, Tensor], Tensor]  # (x_t (B, ..., K), s (B,)) -> logits (B, ..., K)


def _check_k(K: int) -> int:
    if isinstance(K, bool) or not isinstance(K, int) or K < 2:
        raise ValueError(f"the number of categories K must be an int >= 2, got {K!r}")
    return K


def _check_labels(x_1: Tensor, K: int) -> None:
    if not isinstance(x_1, Tensor) or x_1.is_floating_point() or x_1.dim() < 1:
        raise ValueError("x_1 must be an integer tensor of categories with a batch dimension")
    if x_1.numel() and (int(x_1.min()) < 0 or int(x_1.max()) >= K):
        raise ValueError(f"x_1 must lie in [0, {K - 1}], got [{int(x_1.min())}, {int(x_1.max())}]")


def _standard_gamma(alpha: Tensor, generator: torch.Generator | None) -> Tensor:
    """Gamma(alpha, 1) draws by Marsaglia and Tsang's method (with a boost for alpha < 1), from ``generator``."""
    alpha = alpha.to(torch.float64)
    boost = alpha < 1
    a = torch.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.empty_like(a)
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):  # each round accepts over 95 % of what is left
        z = torch.randn(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        v = (1 + c * z) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v + d * torch.log(v.clamp_min(1e-300))) & todo
        out = torch.where(ok, d * v, out)
        todo = todo & ~ok
    if bool(boost.any()):
        u = torch.rand(a.shape, generator=generator, dtype=torch.float64, device=a.device)
        out = torch.where(boost, out * u ** (1.0 / alpha), out)
    return out


def sample_dirichlet(alpha: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """Draws of ``Dir(alpha)`` for every row of ``alpha`` ``(..., K)`` (positive): ``Gamma`` draws, normalised.

    Returns:
        float64 ``(..., K)`` on the simplex.
    """
    if not bool((alpha > 0).all()):
        raise ValueError("Dirichlet concentrations must be positive")
    g = _standard_gamma(alpha, generator)  # (..., K)
    return g / g.sum(-1, keepdim=True)


def categorical_tv(samples: Tensor, q: Tensor) -> float:
    """Total variation ``(1/2) sum_k |hat q_k - q_k|`` between the empirical law of ``samples`` ``(n,)`` and ``q`` ``(K,)``."""
    K = q.shape[-1]
    hist = torch.bincount(samples.reshape(-1).long().cpu(), minlength=K).to(torch.float64) / samples.numel()
    if hist.numel() != K:
        raise ValueError(f"samples must lie in [0, {K - 1}]")
    return 0.5 * float((hist - q.detach().cpu().to(torch.float64) / q.sum()).abs().sum())


# --------------------------------------------------------------------------------------
# The two paths
# --------------------------------------------------------------------------------------


class _SimplexPath:
    """What both paths share: the source, the number of categories, the time range."""

    t_max: float = 1.0

    def __init__(self, num_categories: int):
        self.K = _check_k(num_categories)

    def sample_source(self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> Tensor:
        """``x_0`` uniform on the simplex: float64 ``(*shape, K)`` (``shape`` = the tokens' shape, e.g. ``(B,)``)."""
        x = sample_dirichlet(torch.ones(*shape, self.K, dtype=torch.float64), generator=generator)
        return x.to(device) if device is not None else x

    def _times(self, t: Tensor | float, x: Tensor) -> Tensor:
        t = batch_times(t, x).to(torch.float64)  # (B,)
        if t.device.type == "cpu" and (bool((t < 0).any()) or bool((t > self.t_max).any())):
            raise ValueError(f"t must lie in [0, t_max = {self.t_max}], got [{float(t.min()):.4g}, {float(t.max()):.4g}]")
        return t

    def _check_point(self, x_t: Tensor) -> None:
        if not x_t.is_floating_point() or x_t.dim() < 2 or x_t.shape[-1] != self.K:
            raise ValueError(f"x_t must be points of the simplex of shape (B, ..., {self.K}), got "
                             f"{tuple(x_t.shape)} {x_t.dtype}")

    def posterior_of(self, q: Tensor, x_t: Tensor, t: Tensor | float) -> Tensor:
        """The exact posterior ``p(x_1 = e_k | x_t)`` when every token's category is drawn from ``q`` ``(K,)``."""
        self._check_point(x_t)
        if q.shape != (self.K,) or not bool((q >= 0).all()) or not float(q.sum()) > 0:
            raise ValueError(f"q must be a non-negative ({self.K},) vector with a positive sum")
        return self._posterior(q.to(x_t.device, torch.float64) / q.sum(), x_t.to(torch.float64), self._times(t, x_t))


class LinearSimplexPath(_SimplexPath):
    """``x_t = (1 - t) x_0 + t e_{x_1}`` on ``[0, 1]``; ``v_t(x) = (p(. | x) - x) / (1 - t)`` (lesson 10)."""

    t_max = 1.0

    def __repr__(self) -> str:
        return f"LinearSimplexPath(K={self.K})"

    def sample(self, x_1: Tensor, t: Tensor | float, *, generator: torch.Generator | None = None) -> Tensor:
        """``x_t`` float64 ``(B, ..., K)`` for categories ``x_1`` ``(B, ...)`` and times ``t`` ``(B,)`` (fresh ``x_0``)."""
        _check_labels(x_1, self.K)
        t = expand_t(self._times(t, x_1), x_1).unsqueeze(-1)  # (B, 1, ..., 1)
        x_0 = self.sample_source(tuple(x_1.shape), generator=generator, device=x_1.device)  # (B, ..., K)
        return (1 - t) * x_0 + t * F.one_hot(x_1.long(), self.K).to(torch.float64)

    def _posterior(self, q: Tensor, x: Tensor, t: Tensor) -> Tensor:
        feasible = (x >= expand_t(t, x[..., 0]).unsqueeze(-1) - 1e-12).to(torch.float64)  # (B, ..., K)
        w = q * feasible
        # off the path's support (a coarse sampler can step there) no category fits: take the one whose
        # region {x_k >= t} is nearest, argmax_k x_k
        nearest = F.one_hot(x.argmax(-1), self.K).to(torch.float64)
        w = torch.where(w.sum(-1, keepdim=True) > 0, w, nearest)
        return w / w.sum(-1, keepdim=True)

    def velocity(self, posterior: Tensor, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``(p - x) / (1 - t)`` ``(B, ..., K)``: sums to zero, so Euler steps stay on the simplex's plane."""
        self._check_point(x_t)
        t = expand_t(self._times(t, x_t), x_t[..., 0]).unsqueeze(-1).to(x_t.dtype)
        return (posterior.to(x_t.dtype) - x_t) / (1 - t).clamp_min(1e-12)


_NODES: dict[int, tuple[Tensor, Tensor]] = {}


def _gauss_legendre(n: int) -> tuple[Tensor, Tensor]:
    """Nodes and weights of the ``n``-point Gauss-Legendre rule on ``[0, 1]`` (float64, cached)."""
    if n not in _NODES:
        import numpy as np

        u, w = np.polynomial.legendre.leggauss(n)
        _NODES[n] = (torch.from_numpy((u + 1) / 2), torch.from_numpy(w / 2))
    return _NODES[n]


def dirichlet_coefficient(x: Tensor, t: Tensor | float, K: int, *, nodes: int = 64) -> Tensor:
    """``C(x, t) = -dI_x(a, b)/da B(a, b) / (x^t (1 - x)^b)`` with ``a = t + 1``, ``b = K - 1`` (lesson 10).

    The speed (per unit of ``e_k - x``) at which the Dirichlet path's conditional flow moves a point whose
    ``k``-th coordinate is ``x``. Differentiating ``I_x(a, b) = int_0^x s^(a-1) (1-s)^(b-1) ds / B(a, b)``
    under the integral, with ``m = psi(a) - psi(a + b) = E[log s]`` under ``Beta(a, b)``::

        C(x, t) = int_0^x (s/x)^(a-1) ((1-s)/(1-x))^(b-1) (m - log s) ds / (1 - x)
                = int_x^1 (s/x)^(a-1) ((1-s)/(1-x))^(b-1) (log s - m) ds / (1 - x)

    (the two agree because ``log s - m`` integrates to zero over ``[0, 1]``). Below ``x = e^m`` the first
    integrand is positive, above it the second: each is evaluated where it has one sign (no cancellation),
    by ``nodes``-point Gauss-Legendre quadrature in float64 after the substitutions ``s = x u`` and
    ``s = x + (1 - x) u``. ``x`` is clamped to ``[1e-9, 1 - 1e-9]``.

    Args:
        x: coordinates in ``[0, 1]``, any shape ``(B, ...)``.
        t: times ``(B,)`` (or a float), ``>= 0``.
        K: number of categories.
        nodes: quadrature nodes.

    Returns:
        ``C >= 0`` with the shape of ``x``, float64.
    """
    _check_k(K)
    x = x.to(torch.float64).clamp(1e-9, 1 - 1e-9)
    t = expand_t(batch_times(t, x).to(torch.float64), x).expand_as(x)  # (B, ...)
    a, b = t + 1, float(K - 1)
    m = torch.digamma(a) - torch.digamma(a + b)  # (B, ...) E[log s] under Beta(a, b)
    u, w = (v.to(x.device) for v in _gauss_legendre(nodes))  # (n,) each
    xs, a_, m_ = x.unsqueeze(-1), a.unsqueeze(-1), m.unsqueeze(-1)  # (..., 1)
    # below e^m: s = x u, ds = x du
    low = ((a_ - 1) * torch.log(u) + (b - 1) * (torch.log1p(-xs * u) - torch.log1p(-xs))
           ).exp() * (m_ - torch.log(xs * u))  # (..., n)
    low = (low * w).sum(-1) * x / (1 - x)
    # above e^m: s = x + (1 - x) u, ds = (1 - x) du
    s = xs + (1 - xs) * u  # (..., n)
    high = ((a_ - 1) * (torch.log(s) - torch.log(xs)) + (b - 1) * torch.log1p(-u)).exp() * (torch.log(s) - m_)
    high = (high * w).sum(-1)
    return torch.where(torch.log(x) < m, low, high).clamp_min(0.0)


_GRIDS: dict[str, Tensor] = {}


def _coefficient_grid(device: torch.device) -> Tensor:
    """Where :meth:`DirichletPath.coefficient` tabulates ``C``: 200 log-spaced points in ``[1e-9, 0.01)``,
    then 2,049 evenly spaced ones on ``[0.01, 1]`` (float64, cached per device)."""
    key = str(device)
    if key not in _GRIDS:
        grid = torch.cat([torch.logspace(-9, -2, 201, dtype=torch.float64)[:-1],
                          torch.linspace(0.01, 1.0, 2049, dtype=torch.float64)])
        _GRIDS[key] = grid.to(device)
    return _GRIDS[key]


class DirichletPath(_SimplexPath):
    """``x_t ~ Dir(1 + t e_{x_1})`` on ``[0, t_max]``: Dirichlet flow matching (Stark et al., 2024; lesson 10).

    Args:
        num_categories: ``K``.
        t_max: where sampling stops (samples are read by ``argmax``); models see ``t / t_max``.
    """

    def __init__(self, num_categories: int, t_max: float = 8.0):
        super().__init__(num_categories)
        if not t_max > 0:
            raise ValueError(f"t_max must be positive, got {t_max!r}")
        self.t_max = float(t_max)

    def __repr__(self) -> str:
        return f"DirichletPath(K={self.K}, t_max={self.t_max:g})"

    def sample(self, x_1: Tensor, t: Tensor | float, *, generator: torch.Generator | None = None) -> Tensor:
        """``x_t ~ Dir(1 + t e_{x_1})``: float64 ``(B, ..., K)``."""
        _check_labels(x_1, self.K)
        t = expand_t(self._times(t, x_1), x_1).unsqueeze(-1)  # (B, 1, ..., 1)
        alpha = 1.0 + t * F.one_hot(x_1.long(), self.K).to(torch.float64)  # (B, ..., K)
        return sample_dirichlet(alpha, generator=generator)

    def _posterior(self, q: Tensor, x: Tensor, t: Tensor) -> Tensor:
        t = expand_t(t, x[..., 0]).unsqueeze(-1)  # (B, ..., 1)
        return torch.softmax(torch.log(q.clamp_min(1e-300)) + t * torch.log(x.clamp_min(1e-300)), -1)

    def coefficient(self, x: Tensor, t: Tensor | float) -> Tensor:
        """:func:`dirichlet_coefficient` of the coordinates ``x`` ``(B, ..., K)``; fast for one shared time.

        When every sample has the same time (a sampler's step), ``C(., t)`` is computed once on a fixed grid
        of 2,249 points of ``[0, 1]`` (logarithmic below 0.01) and interpolated linearly (relative error
        below ``1e-4``, checked in the tests), instead of a quadrature per coordinate.
        """
        t = self._times(t, x)  # (B,)
        if t.numel() > 1 and bool((t == t[0]).all()):
            grid = _coefficient_grid(x.device)  # (G,)
            table = dirichlet_coefficient(grid[None], t[:1], self.K)[0]  # (G,) C(., t) on the grid
            xf = x.to(torch.float64).clamp(0.0, 1.0)
            i = torch.searchsorted(grid, xf.reshape(-1).contiguous()).clamp(1, grid.numel() - 1).view(xf.shape)
            x0, x1, c0, c1 = grid[i - 1], grid[i], table[i - 1], table[i]
            return torch.lerp(c0, c1, ((xf - x0) / (x1 - x0)).clamp(0.0, 1.0))
        return dirichlet_coefficient(x, t, self.K)

    def velocity(self, posterior: Tensor, x_t: Tensor, t: Tensor | float) -> Tensor:
        """``sum_k p_k C(x_k, t) (e_k - x)`` ``(B, ..., K)``, summing to zero."""
        self._check_point(x_t)
        x = x_t.to(torch.float64)
        pc = posterior.to(torch.float64) * self.coefficient(x, t)  # (B, ..., K)
        return (pc - x * pc.sum(-1, keepdim=True)).to(x_t.dtype)


# --------------------------------------------------------------------------------------
# Training and sampling
# --------------------------------------------------------------------------------------


def simplex_loss(model: PosteriorFn, path: LinearSimplexPath | DirichletPath, x_1: Tensor, t: Tensor, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """Cross-entropy of ``model(x_t, t / t_max)`` at the category ``x_1``: the posterior's training loss.

    Args:
        model: ``(x_t (B, ..., K), s (B,)) -> logits (B, ..., K)``.
        path: the path.
        x_1: categories int64 ``(B, ...)``.
        t: times ``(B,)`` in ``[0, t_max]``.
        generator: generator of the path's draws.

    Returns:
        A scalar (nats per token).
    """
    x_t = path.sample(x_1, t, generator=generator)  # (B, ..., K)
    w = next((p for p in getattr(model, "parameters", lambda: iter(()))()), None)
    x_t = x_t.to(w.dtype) if w is not None else x_t
    logits = model(x_t, batch_times(t, x_1).to(x_t.dtype) / path.t_max)  # (B, ..., K)
    if logits.shape != (*x_1.shape, path.K):
        raise ValueError(f"the model must return logits of shape {(*x_1.shape, path.K)}, got {tuple(logits.shape)}")
    return F.cross_entropy(logits.reshape(-1, path.K), x_1.reshape(-1).long())


@dataclass
class SimplexSolution:
    """What :func:`simplex_euler` returns."""

    x: Tensor  # (B, ..., K) points at t_max
    categories: Tensor  # (B, ...) int64: argmax of x
    nfe: int  # posterior evaluations (= steps)
    times: Tensor  # (steps + 1,) the time grid on [0, t_max]


@torch.no_grad()
def simplex_euler(model: PosteriorFn, path: LinearSimplexPath | DirichletPath, x_0: Tensor, *, steps: int,
                  exact: bool = False) -> SimplexSolution:
    """Euler steps of the marginal velocity on a uniform grid of ``[0, t_max]``, then ``argmax``.

    Each step evaluates the posterior (``softmax(model(x, t / t_max))``, or ``model(x, t)`` itself when
    ``exact`` is set: a function returning probabilities, such as ``path.posterior_of(q, ...)``), forms
    :meth:`velocity` and moves ``x <- x + h v``; the point is then clipped at zero and renormalised (a
    large step can leave the simplex). For the linear path the last step lands on the posterior itself.

    Args:
        model: logits ``model(x_t, s)`` with ``s = t / t_max``, or (``exact=True``) probabilities ``model(x_t, t)``.
        path: the path.
        x_0: source points ``(B, ..., K)`` (:meth:`sample_source`).
        steps: Euler steps (= NFE), ``>= 1``.
        exact: ``model`` returns probabilities at the path's own time.

    Returns:
        A :class:`SimplexSolution`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1, got {steps!r}")
    path._check_point(x_0)
    x = x_0
    times = torch.linspace(0.0, path.t_max, steps + 1, dtype=torch.float64)
    for k in range(steps):
        t = torch.full((x.shape[0],), float(times[k]), dtype=x.dtype, device=x.device)  # (B,)
        h = float(times[k + 1] - times[k])
        post = model(x, t) if exact else torch.softmax(model(x, t / path.t_max).to(torch.float64), -1)
        x = x + h * path.velocity(post, x, t)
        x = x.clamp_min(0.0)
        x = x / x.sum(-1, keepdim=True)
    return SimplexSolution(x=x, categories=x.argmax(-1), nfe=steps, times=times)
