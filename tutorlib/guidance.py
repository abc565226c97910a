"""Guidance for class-conditional flows: classifier-free guidance, CFG-Zero* and classifier guidance.

Lesson 08 introduces every function here on labelled 2D data; lesson 09 samples MNIST digits with
:func:`cfg_velocity`. All velocities follow the course's time convention (``t`` in [0, 1] from
noise to data) and the guidance scale ``w`` of lesson 08's exercise::

    v = v_uncond + w (v_cond - v_uncond)        # w = 0: unconditional, w = 1: conditional,
                                                # w > 1: pushed further towards the class

**Classifier-free guidance (CFG).** One network learns both fields: trained on labels that are
replaced by the null class with probability ``p`` (:func:`drop_labels`), ``model(x, t, y)`` is
the conditional velocity and ``model(x, t, null_class)`` the unconditional one.
:func:`cfg_velocity` evaluates both in one batched forward pass and combines them.

**CFG-Zero*** (Fan et al., 2025) rescales the unconditional velocity by the per-sample least-squares
factor ``s* = <v_c, v_u> / ||v_u||^2`` (the projection of ``v_c`` on ``v_u``) before combining,
``v = s* v_u + w (v_c - s* v_u)``, and may set the velocity to zero on the first steps
(``t < zero_init_until``), where an imperfect model's guided velocity points the wrong way.

**Classifier guidance.** On an affine path ``x_t = alpha_t x_1 + sigma_t x_0`` with a N(0, I)
source, the velocity is affine in the score: ``v_t(x) = a_t x + b_t grad log p_t(x)`` with::

    a_t = d_alpha_t / alpha_t,      b_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t

(:meth:`tutorlib.paths.AffinePath.score_to_velocity`). Bayes' rule gives
``grad log p_t(x | y) = grad log p_t(x) + grad log p_t(y | x)``, so the conditional velocity is
``v_t(x | y) = v_t(x) + b_t grad_x log p_t(y | x)``, and a time-dependent classifier
``p_t(y | x_t)`` guides an unconditional model: ``v = v_uncond + w b_t grad_x log p_t(y | x)``
(:func:`classifier_guided_velocity`). For the linear path ``b_t = (1 - t) / t``.

Shapes: ``x`` is ``(B, ...)`` (points ``(B, D)`` or images ``(B, C, H, W)``), ``t`` is ``(B,)``
and labels ``y`` are int64 ``(B,)``.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tutorlib.paths import AffinePath
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "cfg_velocity",
    "classifier_guided_velocity",
    "classifier_log_prob_grad",
    "classifier_loss",
    "drop_labels",
    "guided_velocity",
    "score_velocity_coefficient",
    "zero_star_scale",
    "zero_star_velocity",
]

VelocityField = Callable[[Tensor, Tensor], Tensor]


# --------------------------------------------------------------------------------------
# Checks shared by the functions below
# --------------------------------------------------------------------------------------


def _check_scale(w: float) -> float:
    if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
        raise ValueError(f"the guidance scale w must be a finite number, got {w!r}")
    return float(w)


def _check_labels(y: Tensor, high: int, what: str) -> Tensor:
    """``y`` must be an int64 ``(B,)`` tensor with values in ``[0, high)``."""
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.dim() != 1:
        shape = tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__
        dtype = y.dtype if isinstance(y, Tensor) else ""
        raise ValueError(f"labels y must be an int64 tensor of shape (B,), got {shape} {dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= high):
        raise ValueError(f"labels y must lie in [0, {high}) ({what}), got values in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return y


class _Labels:
    """Labels given as one int or a ``(B,)`` tensor, handed out on ``x``'s device and batch."""

    def __init__(self, y: Tensor | int, high: int, what: str):
        if isinstance(y, int) and not isinstance(y, bool):
            _check_labels(torch.tensor([y]), high, what)
        else:
            _check_labels(y, high, what)
        self.y = y
        self._cache: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        B = x.shape[0]
        if isinstance(self.y, int):
            return torch.full((B,), self.y, dtype=torch.int64, device=x.device)
        if self.y.shape[0] != B:
            raise ValueError(f"got {self.y.shape[0]} labels for a batch of {B} points; pass one label per "
                             f"sample (or a single int)")
        if self._cache is None or self._cache.device != x.device:
            self._cache = self.y.to(x.device)
        return self._cache


# --------------------------------------------------------------------------------------
# Classifier-free guidance and CFG-Zero*
# --------------------------------------------------------------------------------------


def drop_labels(y: Tensor, p: float, null_class: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Label dropout for classifier-free guidance training (lesson 08).

    Each label is replaced by ``null_class`` independently with probability ``p``, so one
    network learns the conditional velocity and, on the dropped rows, the unconditional one.

    Args:
        y: class ids, int64 ``(B,)`` in ``[0, null_class]`` (labels already equal to
            ``null_class`` stay so).
        p: dropout probability in ``[0, 1]`` (0.1 to 0.2 is usual).
        null_class: the model's null label (``model.null_class``, i.e. its ``num_classes``).
        generator: draws the dropout mask (on its own device; the mask is moved to ``y``'s).

    Returns:
        A new int64 ``(B,)`` tensor.
    """
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"the dropout probability p must lie in [0, 1], got {p!r}")
    if isinstance(null_class, bool) or not isinstance(null_class, int) or null_class < 0:
        raise ValueError(f"null_class must be a non-negative int (the model's num_classes), got {null_class!r}")
    _check_labels(y, null_class + 1, f"class ids 0..{null_class - 1} or the null class {null_class}")
    device = generator.device if generator is not None else y.device
    drop = torch.rand(y.shape, generator=generator, device=device).to(y.device) < p  # (B,)
    return torch.where(drop, torch.full_like(y, null_class), y)


def guided_velocity(v_cond: Tensor, v_uncond: Tensor, w: float) -> Tensor:
    """The classifier-free guidance combination ``v_uncond + w (v_cond - v_uncond)`` (lesson 08).

    Args:
        v_cond: conditional velocity ``(B, ...)``.
        v_uncond: unconditional velocity, same shape.
        w: guidance scale (0: unconditional, 1: conditional, > 1: stronger guidance).

    Returns:
        The guided velocity ``(B, ...)``.
    """
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"v_cond and v_uncond must have the same shape, got {tuple(v_cond.shape)} "
                         f"and {tuple(v_uncond.shape)}")
    return torch.lerp(v_uncond, v_cond, _check_scale(w))


def zero_star_scale(v_cond: Tensor, v_uncond: Tensor) -> Tensor:
    """CFG-Zero*'s optimised scale ``s* = <v_c, v_u> / ||v_u||^2`` per sample.

    ``s*`` minimises ``||v_c - s v_u||^2`` over the scalar ``s``: ``s* v_u`` is the projection
    of ``v_c`` on ``v_u``, with inner products over all non-batch dimensions. Where
    ``v_u = 0`` the result is 0 (and ``s* v_u = 0`` whatever ``s*`` is).

    Args:
        v_cond: conditional velocity ``(B, ...)``.
        v_uncond: unconditional velocity, same shape.

    Returns:
        ``s*`` of shape ``(B,)``.
    """
    if v_cond.shape != v_uncond.shape:
        raise ValueError(f"v_cond and v_uncond must have the same shape, got {tuple(v_cond.shape)} "
                         f"and {tuple(v_uncond.shape)}")
    B = v_cond.shape[0]
    vc, vu = v_cond.reshape(B, -1), v_uncond.reshape(B, -1)  # (B, D)
    norm2 = vu.square().sum(1)  # (B,)
    return (vc * vu).sum(1) / norm2.clamp_min(torch.finfo(norm2.dtype).tiny)  # (B,)


def zero_star_velocity(v_cond: Tensor, v_uncond: Tensor, w: float) -> Tensor:
    """CFG-Zero*'s combination ``s* v_u + w (v_c - s* v_u)`` with ``s*`` from :func:`zero_star_scale`.

    At ``w = 1`` it is ``v_c``; at ``w = 0`` it is ``s* v_u`` (not ``v_u``).

    Args:
        v_cond: conditional velocity ``(B, ...)``.
        v_uncond: unconditional velocity, same shape.
        w: guidance scale.

    Returns:
        The guided velocity ``(B, ...)``.
    """
    s = zero_star_scale(v_cond, v_uncond)  # (B,)
    return guided_velocity(v_cond, expand_t(s, v_uncond) * v_uncond, w)


def cfg_velocity(model: torch.nn.Module, y: Tensor | int, w: float, *, zero_star: bool = False,
                 zero_init_until: float = 0.0) -> VelocityField:
    """A guided velocity field ``velocity(x, t)`` of a class-conditional model, for :func:`ode_solve`.

    Each call evaluates the conditional and the unconditional velocity in **one** forward pass of
    the doubled batch ``[x, x]`` with labels ``[y, null_class]`` and combines them with
    :func:`guided_velocity` (or :func:`zero_star_velocity`). Only one half is evaluated when the
    other is not needed: ``w = 1`` needs only the conditional half; ``w = 0`` only the
    unconditional half (not with ``zero_star``, whose ``s*`` needs both).

    Args:
        model: a class-conditional model ``model(x, t, y)`` with a ``null_class`` attribute
            (:class:`~tutorlib.models.TimeMLP` or :class:`~tutorlib.models.UNet` built with
            ``num_classes``).
        y: the class of every sample, an int or int64 ``(B,)`` in ``[0, null_class)``; the
            batch of ``x`` must then have ``B`` rows.
        w: guidance scale (0: unconditional, 1: conditional).
        zero_star: use CFG-Zero*'s optimised scale ``s*``.
        zero_init_until: CFG-Zero*'s zero-init: the velocity is 0 for samples with
            ``t < zero_init_until`` (and the model is not called when all are); e.g.
            ``0.5 / steps`` skips the first Euler step. 0 disables it.

    Returns:
        ``velocity(x, t)``: ``x`` ``(B, ...)`` and ``t`` ``(B,)`` -> ``(B, ...)``.

    Raises:
        ValueError: the model is unconditional, or the labels are not int64 in range.
    """
    null = getattr(model, "null_class", None)
    if null is None:
        raise ValueError("cfg_velocity needs a class-conditional model with a null class (e.g. TimeMLP(..., "
                         "num_classes=K) trained with drop_labels); this model is unconditional")
    labels = _Labels(y, null, f"{null} classes; {null} is the null class, not a class to guide towards")
    w = _check_scale(w)
    if not 0.0 <= zero_init_until <= 1.0:
        raise ValueError(f"zero_init_until must lie in [0, 1], got {zero_init_until!r}")
    need_uncond = w != 1.0
    need_cond = w != 0.0 or zero_star
    combine = zero_star_velocity if zero_star else guided_velocity

    def velocity(x: Tensor, t: Tensor) -> Tensor:
        B = x.shape[0]
        t = batch_times(t, x)  # (B,)
        active = None
        if zero_init_until > 0.0:
            active = t >= zero_init_until  # (B,)
            if not bool(active.any()):
                return torch.zeros_like(x)
        y_c = labels(x)  # (B,)
        if need_cond and need_uncond:
            y_u = torch.full_like(y_c, null)  # (B,)
            out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y_c, y_u]))  # (2B, ...)
            v = combine(out[:B], out[B:], w)  # (B, ...)
        elif need_cond:
            v = model(x, t, y_c)  # (B, ...) w = 1: the conditional field
        else:
            v = model(x, t, None)  # (B, ...) w = 0: the unconditional field (y=None: the null class)
        if active is not None:
            v = v * expand_t(active.to(v.dtype), v)
        return v

    return velocity


# --------------------------------------------------------------------------------------
# Classifier guidance
# --------------------------------------------------------------------------------------


def score_velocity_coefficient(path: AffinePath, t: Tensor | float) -> Tensor:
    """``b_t`` in ``v_t(x) = a_t x + b_t grad log p_t(x)`` on an affine path with a N(0, I) source.

    ``b_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t``, the coefficient of the
    score in :meth:`~tutorlib.paths.AffinePath.score_to_velocity`; ``(1 - t) / t`` on the linear
    path. It is infinite where ``alpha_t = 0`` (t = 0) and 0 (or 0 times infinity on VP paths)
    where ``sigma_t = 0`` (t = 1).

    Args:
        path: the affine path.
        t: times, any shape.

    Returns:
        ``b_t``, the shape of ``t``.
    """
    c = path.scheduler(t)
    return c.sigma_t * (c.sigma_t * c.d_alpha_t - c.alpha_t * c.d_sigma_t) / c.alpha_t


def classifier_log_prob_grad(classifier: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor,
                             y: Tensor) -> Tensor:
    """``grad_x log p_t(y | x)`` of a time-dependent classifier, per sample (autograd).

    ``log p_t(y | x) = log_softmax(classifier(x, t))[y]``. Works under ``torch.no_grad``
    (as inside :func:`~tutorlib.solvers.ode_solve`), not under ``torch.inference_mode``.

    Args:
        classifier: ``classifier(x_t, t) -> logits (B, K)``, e.g. a
            :class:`~tutorlib.models.NoisyClassifier2D`; any logits whose log-softmax is the
            posterior (exact log-joint densities too).
        x: points ``(B, ...)``.
        t: times ``(B,)``.
        y: labels, int64 ``(B,)`` in ``[0, K)``.

    Returns:
        The gradient, shape of ``x`` (detached).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("classifier guidance differentiates the classifier: call it outside "
                           "torch.inference_mode() (torch.no_grad is fine)")
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        logits = classifier(x_in, t)  # (B, K)
        if logits.dim() != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(f"the classifier must return logits of shape (B, K) = ({x.shape[0]}, K), "
                             f"got {tuple(logits.shape)}")
        _check_labels(y, logits.shape[1], f"the classifier has {logits.shape[1]} classes")
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()  # sum over the batch
        (grad,) = torch.autograd.grad(log_p, x_in)
    return grad


def classifier_guided_velocity(velocity: VelocityField, classifier: Callable[[Tensor, Tensor], Tensor],
                               path: AffinePath, y: Tensor | int, w: float, *,
                               t_eps: float = 0.02) -> VelocityField:
    """Classifier guidance: ``v = v_uncond + w b_t grad_x log p_t(y | x)`` (lesson 08).

    With ``b_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t``
    (:func:`score_velocity_coefficient`), ``b_t grad_x log p_t(y | x)`` is exactly the
    difference between the conditional and unconditional velocities (Bayes' rule on the score),
    so ``w = 1`` with the exact posterior gives the exact conditional field and ``w = 0`` the
    unconditional one.

    The ends: ``b_t`` is infinite at ``alpha_t = 0`` while ``grad log p_t(y | x) -> 0``, and on VP
    paths ``sigma_t d_sigma_t`` is ``0 * inf`` at t = 1; the product has a finite limit at both
    ends. The guidance term is therefore evaluated at ``t`` clamped to ``[t_eps, 1 - t_eps]``
    (classifier and ``b_t`` alike), a continuous extension; the base velocity always sees the
    true ``t``. Near noise ``b_t`` is about ``1 / t`` and multiplies the *error* of a learned
    classifier's (tiny) gradient too: with ``t_eps = 1e-3``, the first Euler step from t = 0 of a
    trained 2D noisy classifier threw samples well off the data; the default 0.02 caps the factor
    near 50.

    Args:
        velocity: the unconditional field ``velocity(x, t)``; a class-conditional model can be
            passed as is (``model(x, t)`` uses its null class).
        classifier: ``classifier(x_t, t) -> logits (B, K)``, trained on the same path
            (:func:`classifier_loss`).
        path: the affine path both were trained on.
        y: target class, an int or int64 ``(B,)`` in ``[0, K)``.
        w: guidance scale (0: no guidance; the classifier is then not called).
        t_eps: how far from 0 and 1 the guidance term is evaluated, in ``(0, 0.5)``; smaller is
            closer to the exact term and more sensitive to the classifier's errors near noise.

    Returns:
        ``guided(x, t)``: ``x`` ``(B, ...)`` and ``t`` ``(B,)`` -> ``(B, ...)``.
    """
    w = _check_scale(w)
    if not 0.0 < t_eps < 0.5:
        raise ValueError(f"t_eps must lie in (0, 0.5), got {t_eps!r}")
    labels = _Labels(y, torch.iinfo(torch.int64).max, "non-negative class ids")  # range checked per call

    def guided(x: Tensor, t: Tensor) -> Tensor:
        t = batch_times(t, x)  # (B,)
        v = velocity(x, t)  # (B, ...)
        if v.shape != x.shape:
            raise ValueError(f"velocity(x, t) must have the shape of x {tuple(x.shape)}, got {tuple(v.shape)}")
        if w == 0.0:
            return v
        t_c = t.clamp(t_eps, 1.0 - t_eps)  # (B,)
        grad = classifier_log_prob_grad(classifier, x, t_c, labels(x))  # (B, ...)
        b = score_velocity_coefficient(path, t_c)  # (B,)
        return v + w * expand_t(b, x) * grad.to(v.dtype)

    return guided


def classifier_loss(classifier: Callable[[Tensor, Tensor], Tensor], path: AffinePath, x_1: Tensor, y: Tensor,
                    t: Tensor, x_0: Tensor) -> Tensor:
    """Cross-entropy of a time-dependent classifier on noisy points of the path (lesson 08).

    ``L = mean_i -log softmax(classifier(x_t, t))[y]`` with ``x_t = alpha_t x_1 + sigma_t x_0``.
    Its minimiser is the posterior ``p_t(y | x_t)`` that classifier guidance needs. ``t = 1``
    everywhere trains an ordinary classifier of clean data.

    Args:
        classifier: ``classifier(x_t, t) -> logits (B, K)``.
        path: the path the flow model uses.
        x_1: data ``(B, ...)``.
        y: their labels, int64 ``(B,)``.
        t: times ``(B,)`` in [0, 1].
        x_0: source noise ``(B, ...)``.

    Returns:
        The scalar loss.
    """
    x_t = path.sample(x_0, x_1, t).x_t  # (B, ...)
    return F.cross_entropy(classifier(x_t, t), y)
