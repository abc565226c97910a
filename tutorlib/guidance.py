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

**The oracle.** :class:`LabelledGMM` is a Gaussian mixture whose components carry class labels.
On an affine path every marginal of such data is again a mixture, so the conditional and
unconditional velocities and the noisy posterior ``p_t(y | x)`` are closed forms; its
:meth:`LabelledGMM.flow_model` behaves like a perfectly trained class-conditional network (with a
null class), so :func:`cfg_velocity` runs on it unchanged. Lesson 08 measures what guidance does
with these exact fields, separately from what a trained network gets wrong.

Shapes: ``x`` is ``(B, ...)`` (points ``(B, D)`` or images ``(B, C, H, W)``), ``t`` is ``(B,)``
and labels ``y`` are int64 ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from tutorlib.data import gmm_component_log_probs
from tutorlib.paths import AffinePath, gmm_marginal_log_prob, gmm_marginal_velocity
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "LabelledGMM",
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


# --------------------------------------------------------------------------------------
# The oracle: a labelled Gaussian mixture with exact guidance fields
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class LabelledGMM:
    """A Gaussian mixture whose components carry class labels, with its exact fields (lesson 08).

    ``p_1(x) = sum_m pi_m N(x; mu_m, s_m^2 I)``, and component ``m`` belongs to class ``c_m``: so
    ``p(y) = sum_{m: c_m = y} pi_m`` and ``p_1(x | y)`` is the mixture of class ``y``'s components.
    On an affine path ``x_t = alpha_t x_1 + sigma_t x_0`` with a ``N(0, I)`` source, ``p_t(x | y)``
    and ``p_t(x)`` are mixtures too, with components ``N(alpha_t mu_m, (alpha_t^2 s_m^2 +
    sigma_t^2) I)``. Hence, in closed form:

    * the conditional velocity ``u_t(x | y)`` and the unconditional ``u_t(x)``
      (:func:`tutorlib.paths.gmm_marginal_velocity` on class ``y``'s components, or on all);
    * the noisy posterior ``log p_t(y | x) = log p(y) + log p_t(x | y) - log p_t(x)``
      (:meth:`logits`, whose log-softmax it is), the classifier that classifier guidance needs;
    * at ``t = 1``, the Bayes classifier of the data (:meth:`classify`), a class judge for samples.

    The course's ``eight_gaussians`` is :meth:`ring` with its defaults (one class per component).

    Args:
        means: component means ``(M, D)``.
        stds: isotropic standard deviations ``(M,)``, positive.
        weights: mixture weights ``(M,)``, positive (normalised here).
        classes: int64 ``(M,)``, the class of each component; every class ``0..K-1`` has one.
    """

    means: Tensor  # (M, D) component means, float64
    stds: Tensor  # (M,) isotropic standard deviations, float64
    weights: Tensor  # (M,) mixture weights pi_m, normalised, float64
    classes: Tensor  # (M,) int64 class of each component

    def __post_init__(self):
        means = torch.as_tensor(self.means, dtype=torch.float64)
        if means.dim() != 2 or means.shape[0] < 1:
            raise ValueError(f"means must have shape (M, D) with M >= 1 components, got {tuple(means.shape)}")
        M = means.shape[0]
        stds = torch.as_tensor(self.stds, dtype=torch.float64).reshape(-1)
        weights = torch.as_tensor(self.weights, dtype=torch.float64).reshape(-1)
        classes = torch.as_tensor(self.classes)
        for name, v in (("stds", stds), ("weights", weights), ("classes", classes)):
            if v.shape != (M,):
                raise ValueError(f"{name} must have shape ({M},), one entry per component, got {tuple(v.shape)}")
        if not bool((stds > 0).all()) or not bool((weights > 0).all()):
            raise ValueError("stds and weights must be positive (drop a component instead of giving it weight 0)")
        if classes.dtype != torch.int64:
            raise ValueError(f"classes must be int64 class ids, got {classes.dtype}")
        K = int(classes.max()) + 1
        if int(classes.min()) < 0 or bool((torch.bincount(classes, minlength=K) == 0).any()):
            raise ValueError(f"classes must use every id 0..{K - 1} (a class without a component has no data), "
                             f"got {classes.tolist()}")
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "stds", stds)
        object.__setattr__(self, "weights", weights / weights.sum())
        object.__setattr__(self, "classes", classes)

    @classmethod
    def ring(cls, k: int = 8, radius: float = 2.5, std: float = 0.2) -> "LabelledGMM":
        """``k`` equal components of std ``std`` on a circle of radius ``radius``, at angles ``2 pi j / k``;
        class ``j`` is component ``j``. The defaults are :func:`tutorlib.data.eight_gaussians`."""
        angles = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k  # (k,)
        means = radius * torch.stack([angles.cos(), angles.sin()], 1)  # (k, 2)
        return cls(means, torch.full((k,), float(std)), torch.ones(k), torch.arange(k))

    @property
    def num_classes(self) -> int:
        """The number of classes ``K``."""
        return int(self.classes.max()) + 1

    @property
    def class_prior(self) -> Tensor:
        """``p(y)``, ``(K,)``: the summed weights of each class's components."""
        return torch.zeros(self.num_classes, dtype=torch.float64).index_add_(0, self.classes, self.weights)

    def _part(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        sel = self.classes == k
        return self.means[sel], self.stds[sel], self.weights[sel]

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``n`` points ``(n, D)`` float32 and their classes ``(n,)`` int64, drawn from ``generator`` (CPU)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int (the number of samples), got {n!r}")
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.int64)  # (n,)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)  # (n, D)
        x = self.means[comp] + self.stds[comp, None] * noise  # (n, D)
        return x.to(device=device, dtype=torch.float32), self.classes[comp].to(device)

    def sample_given(self, y: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """One point of ``p_1(x | y_i)`` per label: ``(B, D)`` float32 on ``y``'s device.

        A label-matched draw: the same class counts as ``y`` (e.g. a held-out set's labels), so a
        distance between it and that set carries no class-count noise.
        """
        y = _check_labels(y, self.num_classes, f"{self.num_classes} classes")
        B, D = y.shape[0], self.means.shape[1]
        comp = torch.empty(B, dtype=torch.int64)
        y_cpu = y.cpu()
        for k in range(self.num_classes):
            rows = y_cpu == k
            if bool(rows.any()):
                members = torch.nonzero(self.classes == k).flatten()  # (M_k,) this class's components
                pick = torch.multinomial(self.weights[members], int(rows.sum()), replacement=True, generator=generator)
                comp[rows] = members[pick]
        noise = torch.randn(B, D, generator=generator, dtype=torch.float64)  # (B, D)
        x = self.means[comp] + self.stds[comp, None] * noise  # (B, D)
        return x.to(device=y.device, dtype=torch.float32)

    def velocity(self, path: AffinePath, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The exact velocity: ``u_t(x | y)`` per row, or ``u_t(x)`` where ``y`` is ``None`` or the null class ``K``.

        Args:
            path: the affine path.
            x: points ``(B, D)``.
            t: times ``(B,)`` or one time.
            y: int64 ``(B,)`` in ``[0, K]`` (``K``: unconditional), or ``None`` (all unconditional).

        Returns:
            ``(B, D)`` in ``x``'s dtype.
        """
        t = batch_times(t, x)  # (B,)
        if y is None:
            return gmm_marginal_velocity(path, x, t, self.means, self.stds, self.weights)
        y = _check_labels(y, self.num_classes + 1, f"{self.num_classes} classes, {self.num_classes} is the null class")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"got {y.shape[0]} labels for a batch of {x.shape[0]} points")
        out = torch.empty_like(x)
        for k in range(self.num_classes + 1):
            rows = (y == k).to(x.device)  # (B,)
            if bool(rows.any()):
                parts = (self.means, self.stds, self.weights) if k == self.num_classes else self._part(k)
                out[rows] = gmm_marginal_velocity(path, x[rows], t[rows], *parts)
        return out

    def logits(self, path: AffinePath) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact noisy classifier: ``logits(x, t) -> (B, K)`` = ``log p(y) + log p_t(x | y)``.

        Their log-softmax is ``log p_t(y | x)``, so they plug into :func:`classifier_guided_velocity`
        and :func:`classifier_log_prob_grad` like a trained classifier's logits.
        """
        log_prior = self.class_prior.log()  # (K,)

        def logits(x: Tensor, t: Tensor | float) -> Tensor:
            t = batch_times(t, x)  # (B,)
            cols = []
            for k in range(self.num_classes):
                means, stds, weights = self._part(k)
                cols.append(log_prior[k].to(x) + gmm_marginal_log_prob(path, x, t, means, stds, weights))
            return torch.stack(cols, 1)  # (B, K)

        return logits

    def log_posterior(self, x: Tensor) -> Tensor:
        """``log p(y | x)`` of the data (t = 1) for every class: ``(B, K)``."""
        log_joint = gmm_component_log_probs(x, self.means.to(x), self.stds.to(x), self.weights.to(x))  # (B, M)
        per_class = [torch.logsumexp(log_joint[:, (self.classes == k).to(x.device)], 1) for k in range(self.num_classes)]
        return torch.log_softmax(torch.stack(per_class, 1), 1)  # (B, K)

    def classify(self, x: Tensor) -> Tensor:
        """The Bayes classifier of the data: the most probable class of each point, int64 ``(B,)``."""
        return self.log_posterior(x).argmax(1)

    def sharpened_target(self, w: float, n: int, *, generator: torch.Generator | None = None) -> dict[str, float]:
        """Class accuracy and spread of the "sharpened" density ``p(x) p(y | x)^w``, per class (lesson 08).

        Within class ``y`` the density is ``pi_w(x | y) ~ p(x) p(y | x)^w ~ p(x | y) p(y | x)^(w - 1)``, so it is
        estimated by self-normalised importance sampling: ``n`` points of the mixture, each weighted within
        its class by ``p(y | x)^(w - 1)`` (the exact posterior). Guidance is often said to sample this density;
        lesson 08 compares it with what guided sampling actually gives.

        Args:
            w: the sharpening exponent (guidance scale); 1 gives the data itself.
            n: points drawn (every class needs a good share; thousands per class for large ``w``).
            generator: draws the points.

        Returns:
            ``{"accuracy": the mean over classes of pi_w's mass that the Bayes classifier assigns to the class,
            "spread_ratio": the mean over classes of pi_w's within-class spread (root-mean-square distance to
            its mean) divided by the class's own spread}``.
        """
        w = _check_scale(w)
        x, y = self.sample(n, generator=generator)
        x = x.double()  # (n, D)
        log_post = self.log_posterior(x)  # (n, K)
        log_weight = (w - 1.0) * log_post[torch.arange(n), y]  # (n,)
        correct = (log_post.argmax(1) == y).double()  # (n,)
        acc, ratio = [], []
        for k in range(self.num_classes):
            rows = y == k
            if int(rows.sum()) < 2:
                raise ValueError(f"class {k} got {int(rows.sum())} of the {n} points: draw more (n)")
            xk, weight = x[rows], torch.softmax(log_weight[rows], 0)  # (n_k, D), (n_k,)
            centre = (weight[:, None] * xk).sum(0)  # (D,)
            spread = (weight * (xk - centre).square().sum(1)).sum().sqrt()
            plain = (xk - xk.mean(0)).square().sum(1).mean().sqrt()
            acc.append(float((weight * correct[rows]).sum()))
            ratio.append(float(spread / plain))
        return {"accuracy": sum(acc) / len(acc), "spread_ratio": sum(ratio) / len(ratio)}

    def flow_model(self, path: AffinePath) -> "ExactFlowModel":
        """A callable ``model(x, t, y=None)`` with ``null_class = K``: the perfectly trained CFG network."""
        return ExactFlowModel(self, path)


class ExactFlowModel:
    """The exact fields of a :class:`LabelledGMM` called like a class-conditional network (lesson 08).

    ``model(x, t, y)`` is ``u_t(x | y)``; rows whose label is ``null_class`` (and ``y=None``) get
    ``u_t(x)``: what a network trained with label dropout learns at best. :func:`cfg_velocity`
    accepts it in place of a network.
    """

    def __init__(self, gmm: LabelledGMM, path: AffinePath):
        self.gmm, self.path = gmm, path

    @property
    def null_class(self) -> int:
        """The null label ``K``."""
        return self.gmm.num_classes

    def __call__(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        return self.gmm.velocity(self.path, x, t, y)
