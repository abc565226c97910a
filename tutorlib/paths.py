"""Affine probability paths, parametrisation conversions and a Gaussian-mixture oracle.

Lesson 03 introduces the conditional path x_t = t x_1 + (1 - t) x_0 (:class:`CondOTPath`);
lesson 04 generalises it to any affine path built from a scheduler::

    x_t  = alpha_t x_1 + sigma_t x_0                    # x_0 ~ N(0, I) source, x_1 data
    dx_t = d_alpha_t x_1 + d_sigma_t x_0                # conditional velocity

    path = AffinePath(CosineScheduler())
    s = path.sample(x_0, x_1, t)                        # PathSample(x_0, x_1, x_t, t, dx_t)

A network may predict the velocity, the data x_1 ("x-prediction"), the noise x_0
("epsilon-prediction") or the score; on an affine path each is a linear function of another
and ``x_t`` (lesson 04), e.g. ``path.epsilon_to_velocity(eps_hat, x_t, t)``. For a standard
normal source the score is ``grad log p_t(x_t) = -E[x_0 | x_t] / sigma_t``.

:func:`gmm_marginal_velocity` and :func:`gmm_marginal_log_prob` give the *marginal* velocity
and density of a Gaussian-mixture data distribution in closed form (lesson 03's oracle for
"the CFM gradient equals the FM gradient", and the tests' ground truth).

Paths that reach the same signal-to-noise ratio alpha_t / sigma_t hold the same information:
:func:`snr_match` maps a time and a point of one path to the other, and :class:`PathTransfer`
turns a velocity field learned on one path into the field of another (lesson 04: a DDPM model on
the flow-matching path, DDIM as Euler's method on the linear path).

``t`` is a tensor of shape (B,) (or a 0-d tensor / float) and ``x`` any shape (B, ...):
(B, D) points or (B, C, H, W) images; :func:`expand_t` does the broadcasting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from tutorlib.data import gmm_component_log_probs
from tutorlib.schedulers import CondOTScheduler, Scheduler
from tutorlib.utils import expand_t

__all__ = [
    "AffinePath",
    "CondOTPath",
    "PathSample",
    "PathTransfer",
    "SNRMatch",
    "gmm_marginal_log_prob",
    "gmm_marginal_velocity",
    "randn_like",
    "snr_match",
]


def randn_like(x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """A standard normal sample shaped like ``x`` (its dtype and device), from ``generator``.

    The generator may live on another device than ``x`` (a CPU generator for CUDA tensors):
    the noise is then drawn on the generator's device and moved. Without a generator torch's
    global one is used (lessons seed it once with ``seed_everything``).
    """
    if generator is None or generator.device.type == x.device.type:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)


@dataclass
class PathSample:
    """A point on a conditional path and its conditional velocity."""

    x_0: Tensor  # (B, ...) source sample (noise)
    x_1: Tensor  # (B, ...) data sample
    x_t: Tensor  # (B, ...) alpha_t x_1 + sigma_t x_0
    t: Tensor  # (B,) times in [0, 1]
    dx_t: Tensor  # (B, ...) d_alpha_t x_1 + d_sigma_t x_0


class AffinePath:
    """The affine conditional path x_t = alpha_t x_1 + sigma_t x_0 of a scheduler (lesson 04).

    Args:
        scheduler: maps ``t`` to ``(alpha_t, sigma_t, d_alpha_t, d_sigma_t)``, e.g.
            ``CondOTScheduler()``, ``CosineScheduler()``, ``LinearVPScheduler()``.

    The conversion methods all take ``(prediction, x_t, t)`` with ``prediction`` and ``x_t`` of
    shape (B, ...) and ``t`` of shape (B,), and return a tensor of shape (B, ...). They divide
    by alpha_t (x_1 from the noise), sigma_t (x_0 from the data, the score) or
    ``sigma_t d_alpha_t - alpha_t d_sigma_t`` (from the velocity; positive on every path here),
    so each is singular where that quantity vanishes (alpha_0 = 0, sigma_1 = 0).
    """

    def __init__(self, scheduler: Scheduler):
        self.scheduler = scheduler

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.scheduler!r})"

    def _coefficients(self, t: Tensor | float, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(alpha_t, sigma_t, d_alpha_t, d_sigma_t), each broadcastable against ``x``."""
        out = self.scheduler(torch.as_tensor(t, device=x.device, dtype=x.dtype))
        return (expand_t(out.alpha_t, x), expand_t(out.sigma_t, x),
                expand_t(out.d_alpha_t, x), expand_t(out.d_sigma_t, x))

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        """Sample the conditional path at ``t`` given the pair ``(x_0, x_1)``.

        Args:
            x_0: source samples, shape (B, ...).
            x_1: data samples, same shape.
            t: times, shape (B,), in [0, 1].

        Returns:
            A :class:`PathSample` with x_t = alpha_t x_1 + sigma_t x_0 and
            dx_t = d_alpha_t x_1 + d_sigma_t x_0.
        """
        alpha, sigma, d_alpha, d_sigma = self._coefficients(t, x_1)  # each (B, 1, ...)
        x_t = alpha * x_1 + sigma * x_0  # (B, ...)
        dx_t = d_alpha * x_1 + d_sigma * x_0  # (B, ...)
        return PathSample(x_0=x_0, x_1=x_1, x_t=x_t, t=t, dx_t=dx_t)

    # --- x_1 (data) prediction <-> velocity ---
    def x1_to_velocity(self, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """v = (d_sigma / sigma) x_t + (d_alpha - d_sigma alpha / sigma) x_1 (singular at sigma = 0)."""
        alpha, sigma, d_alpha, d_sigma = self._coefficients(t, x_t)
        return (d_sigma / sigma) * x_t + (d_alpha - d_sigma * alpha / sigma) * x_1

    def velocity_to_x1(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_1 = (sigma v - d_sigma x_t) / (sigma d_alpha - alpha d_sigma)."""
        alpha, sigma, d_alpha, d_sigma = self._coefficients(t, x_t)
        return (sigma * velocity - d_sigma * x_t) / (sigma * d_alpha - alpha * d_sigma)

    # --- epsilon (x_0, noise) prediction <-> velocity ---
    def epsilon_to_velocity(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """v = (d_alpha / alpha) x_t + (d_sigma - d_alpha sigma / alpha) x_0 (singular at alpha = 0)."""
        alpha, sigma, d_alpha, d_sigma = self._coefficients(t, x_t)
        return (d_alpha / alpha) * x_t + (d_sigma - d_alpha * sigma / alpha) * epsilon

    def velocity_to_epsilon(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 = (alpha v - d_alpha x_t) / (alpha d_sigma - sigma d_alpha)."""
        alpha, sigma, d_alpha, d_sigma = self._coefficients(t, x_t)
        return (alpha * velocity - d_alpha * x_t) / (alpha * d_sigma - sigma * d_alpha)

    # --- x_1 <-> epsilon ---
    def x1_to_epsilon(self, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 = (x_t - alpha x_1) / sigma."""
        alpha, sigma, _, _ = self._coefficients(t, x_t)
        return (x_t - alpha * x_1) / sigma

    def epsilon_to_x1(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_1 = (x_t - sigma x_0) / alpha (Tweedie's denoised estimate for epsilon-models)."""
        alpha, sigma, _, _ = self._coefficients(t, x_t)
        return (x_t - sigma * epsilon) / alpha

    # --- score (source N(0, I)): score = -x_0_hat / sigma ---
    def epsilon_to_score(self, epsilon: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """score = -x_0 / sigma_t (for a standard normal source)."""
        _, sigma, _, _ = self._coefficients(t, x_t)
        return -epsilon / sigma

    def score_to_epsilon(self, score: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_0 = -sigma_t score."""
        _, sigma, _, _ = self._coefficients(t, x_t)
        return -sigma * score

    def score_to_velocity(self, score: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """v = (d_alpha / alpha) x_t - sigma (d_sigma - d_alpha sigma / alpha) score."""
        return self.epsilon_to_velocity(self.score_to_epsilon(score, x_t, t), x_t, t)

    def velocity_to_score(self, velocity: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """score = -velocity_to_epsilon(v) / sigma."""
        return self.epsilon_to_score(self.velocity_to_epsilon(velocity, x_t, t), x_t, t)

    def x1_to_score(self, x_1: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """score = -(x_t - alpha x_1) / sigma^2."""
        return self.epsilon_to_score(self.x1_to_epsilon(x_1, x_t, t), x_t, t)

    def score_to_x1(self, score: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x_1 = (x_t + sigma^2 score) / alpha."""
        return self.epsilon_to_x1(self.score_to_epsilon(score, x_t, t), x_t, t)


class CondOTPath(AffinePath):
    """The conditional-OT (linear) path x_t = t x_1 + (1 - t) x_0, dx_t = x_1 - x_0 (lesson 03).

    It overrides only the sampling equations with their linear special case (one ``lerp`` and
    one subtraction, the fewest kernels); the conversions come from :class:`AffinePath`.
    """

    def __init__(self):
        super().__init__(CondOTScheduler())

    def __repr__(self) -> str:
        return "CondOTPath()"

    def sample(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        """x_t = x_0 + t (x_1 - x_0) and dx_t = x_1 - x_0; shapes as in :meth:`AffinePath.sample`."""
        x_t = torch.lerp(x_0, x_1, expand_t(torch.as_tensor(t, dtype=x_1.dtype, device=x_1.device), x_1))  # (B, ...)
        return PathSample(x_0=x_0, x_1=x_1, x_t=x_t, t=t, dx_t=x_1 - x_0)


# --- one path seen as another: equal signal-to-noise ratio (lesson 04) ---


@dataclass
class SNRMatch:
    """Where a time and a point of one affine path sit on another path (see :func:`snr_match`)."""

    t: Tensor  # (B,) float64: the times on the target path with the same alpha / sigma
    scale: Tensor  # (B,) float64: x_target = scale * x_source, scale = (alpha' + sigma') / (alpha + sigma)


def snr_match(t: Tensor | float, source: AffinePath, target: AffinePath) -> SNRMatch:
    """Map times of ``source`` to the times of ``target`` with the same signal-to-noise ratio (lesson 04).

    Both paths mix the same pair: x_t = alpha_t x_1 + sigma_t x_0 on ``source`` and
    x'_s = alpha'_s x_1 + sigma'_s x_0 on ``target``. Where alpha'_s / sigma'_s = alpha_t / sigma_t,
    the two points are multiples of each other, x'_s = c x_t with c = alpha'_s / alpha_t =
    sigma'_s / sigma_t = (alpha'_s + sigma'_s) / (alpha_t + sigma_t) (the last form has no 0 / 0),
    so they carry the same information about x_1: E[x_1 | x'_s = c x] = E[x_1 | x_t = x], and the
    same for x_0. Every affine path is therefore every other one, up to a change of clock and a
    rescaling of space. Example: DDPM's linear schedule at k = T has alpha / sigma of about 0.0064,
    so it starts the linear path at t = 0.0064, not at 0.

    Args:
        t: times on ``source``, a float or shape (B,).
        source, target: the two paths.

    Returns:
        An :class:`SNRMatch` with the target times and the scale factor, float64, the shape of ``t``.
        Times whose SNR lies below the smallest the target reaches (alpha'_0 > 0) map to s = 0, where
        the match is not exact.
    """
    t = torch.as_tensor(t).to(torch.float64)
    a = source.scheduler(t)
    s = target.scheduler.time_at_snr(a.alpha_t / a.sigma_t)  # (B,)
    b = target.scheduler(s)
    return SNRMatch(t=s, scale=(b.alpha_t + b.sigma_t) / (a.alpha_t + a.sigma_t))


class PathTransfer:
    """A velocity field learned on one affine path, seen as the field of another (lesson 04).

    At a point ``x`` and time ``t`` of the ``target`` path, find the ``source`` time ``s`` with the
    same SNR and the source point ``x_s = c x`` (:func:`snr_match`), ask the source field for its
    velocity there, read off the two conditional means it implies,
    D = E[x_1 | x] = ``velocity_to_x1`` and E[x_0 | x] = ``velocity_to_epsilon`` (the same on both
    paths, by the SNR argument), and rebuild the target's velocity from them::

        v_target(x, t) = d_alpha'_t D + d_sigma'_t E[x_0 | x].

    If the source field is a path's exact marginal velocity, the result is the target's exact
    marginal velocity (``tests/test_paths.py`` checks it on Gaussian mixtures). Neither conversion
    divides by alpha_t or sigma_t, so the result is finite at both ends of the target path; but
    target times whose SNR the source never reaches (below alpha_0 / sigma_0 of a DDPM source) are
    evaluated at s = 0, where it is not the source's field any more.

    Args:
        velocity: ``velocity(x, t)`` on ``source``, x (B, ...) and t (B,).
        source: the path the field was learned on.
        target: the path to see it on.

    Example (a DDPM epsilon-model on the linear path, sampled by Euler)::

        v = ddpm_to_velocity(eps_model, schedule)
        v_lin = PathTransfer(v, v.path, CondOTPath())
    """

    def __init__(self, velocity: Callable[[Tensor, Tensor], Tensor], source: AffinePath, target: AffinePath):
        self.velocity = velocity
        self.source = source
        self.target = target

    def __repr__(self) -> str:
        return f"PathTransfer({self.source!r} -> {self.target!r})"

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The target path's velocity at ``x`` (B, ...) and ``t`` (B,)."""
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        match = snr_match(t, self.target, self.source)  # target time -> source time and x scale
        s = match.t.to(x.device, x.dtype)  # (B,)
        x_s = expand_t(match.scale.to(x.device, x.dtype), x) * x  # (B, ...)
        v_s = self.velocity(x_s, s)  # (B, ...)
        x1_hat = self.source.velocity_to_x1(v_s, x_s, s)  # (B, ...) E[x_1 | x]
        x0_hat = self.source.velocity_to_epsilon(v_s, x_s, s)  # (B, ...) E[x_0 | x]
        out = self.target.scheduler(t.to(x.dtype))
        return expand_t(out.d_alpha_t, x) * x1_hat + expand_t(out.d_sigma_t, x) * x0_hat


# --- Gaussian-mixture data: closed-form marginal path (lesson 03, tests) ---


def _gmm_posterior(path: AffinePath, x: Tensor, t: Tensor | float, means: Tensor, stds: Tensor, weights: Tensor):
    """Shared algebra: per-component log-densities of p_t and the broadcast coefficients."""
    B, K = x.shape[0], means.shape[0]
    xf = x.reshape(B, -1)  # (B, D)
    mu = means.reshape(K, -1).to(xf)  # (K, D)
    s2 = stds.to(xf).reshape(K).square()  # (K,)
    out = path.scheduler(torch.as_tensor(t, device=x.device).to(xf.dtype))
    alpha, sigma, d_alpha, d_sigma = (torch.broadcast_to(c, (B,))[:, None] for c in
                                      (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t))  # (B, 1)
    var = alpha.square() * s2 + sigma.square()  # (B, K) variance of component k of p_t
    mean_t = alpha[:, :, None] * mu  # (B, K, D) mean of component k of p_t
    diff = xf[:, None, :] - mean_t  # (B, K, D)
    log_comp = gmm_component_log_probs(xf, mean_t, var.sqrt(), weights.to(xf))  # (B, K)
    return xf, mu, s2, alpha, sigma, d_alpha, d_sigma, var, diff, log_comp


def gmm_marginal_velocity(path: AffinePath, x: Tensor, t: Tensor | float, means: Tensor, stds: Tensor,
                          weights: Tensor) -> Tensor:
    """Marginal velocity u_t(x) = E[dx_t | x_t = x] for Gaussian-mixture data, N(0, I) source.

    Data: p_1 = sum_k w_k N(mu_k, s_k^2 I). Then p_t = sum_k w_k N(alpha_t mu_k, v_k I) with
    v_k = alpha_t^2 s_k^2 + sigma_t^2, and with responsibilities r_k(x) proportional to
    w_k N(x; alpha_t mu_k, v_k I)::

        E[x_1 | x, k] = mu_k + alpha_t s_k^2 (x - alpha_t mu_k) / v_k
        E[x_0 | x, k] = sigma_t (x - alpha_t mu_k) / v_k
        u_t(x) = sum_k r_k(x) (d_alpha_t E[x_1 | x, k] + d_sigma_t E[x_0 | x, k]).

    Args:
        path: an affine path (its scheduler is used).
        x: points, shape (B, ...).
        t: times, shape (B,) or scalar.
        means: component means, shape (K, ...) with the trailing shape of ``x``.
        stds: isotropic standard deviations s_k, shape (K,) (s_k = 0 allowed for t < 1).
        weights: mixture weights, shape (K,), positive (normalised here).

    Returns:
        The marginal velocity, shape of ``x``.
    """
    xf, mu, s2, alpha, sigma, d_alpha, d_sigma, var, diff, log_comp = _gmm_posterior(path, x, t, means, stds, weights)
    r = torch.softmax(log_comp, dim=1)  # (B, K) responsibilities
    scaled = diff / var[:, :, None]  # (B, K, D) (x - alpha mu_k) / v_k
    e_x1 = mu + (alpha[:, :, None] * s2[:, None]) * scaled  # (B, K, D)
    e_x0 = sigma[:, :, None] * scaled  # (B, K, D)
    u = (r[:, :, None] * (d_alpha[:, :, None] * e_x1 + d_sigma[:, :, None] * e_x0)).sum(1)  # (B, D)
    return u.reshape(x.shape)


def gmm_marginal_log_prob(path: AffinePath, x: Tensor, t: Tensor | float, means: Tensor, stds: Tensor,
                          weights: Tensor) -> Tensor:
    """log p_t(x) of the marginal path of Gaussian-mixture data under a N(0, I) source.

    p_t = sum_k w_k N(alpha_t mu_k, (alpha_t^2 s_k^2 + sigma_t^2) I); arguments as in
    :func:`gmm_marginal_velocity`.

    Returns:
        Log-densities, shape (B,).
    """
    *_, log_comp = _gmm_posterior(path, x, t, means, stds, weights)
    return torch.logsumexp(log_comp, dim=1)  # (B,)
