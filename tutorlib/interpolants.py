"""Stochastic interpolants: an affine path with a latent noise term (lesson 04).

*Stochastic Interpolants: A Unifying Framework for Flows and Diffusions* (Albergo, Boffi,
Vanden-Eijnden) adds a Gaussian term to the path between a source sample ``x_0`` and a data sample
``x_1``::

    x_t  = alpha_t x_1 + sigma_t x_0 + gamma_t z,        z ~ N(0, I), independent of (x_0, x_1),
    dx_t = d_alpha_t x_1 + d_sigma_t x_0 + d_gamma_t z,  gamma_0 = gamma_1 = 0, gamma_t > 0 inside.

The source need not be Gaussian: ``x_0`` may come from a second data set (a two-sided
interpolant, e.g. eight Gaussians -> checkerboard). What the latent term brings:

* **a score everywhere.** x_t = m + gamma_t z with m independent of z, so p_t is a Gaussian blur
  of the law of m and ``grad log p_t(x) = -E[z | x_t = x] / gamma_t``: a *denoiser*
  eta(x, t) = E[z | x_t = x], learned by regression like the velocity, gives the score, even
  between two data sets where no other Gaussian is around;
* **SDEs with the same marginals.** With the velocity b(x, t) = E[dx_t | x_t = x] and that score,
  dx = [b + g_t^2 / 2 score] dt + g_t dW has the marginals p_t of the flow dx = b dt for every
  g_t; :meth:`InterpolantModel.sde` uses g_t = noise * gamma_t, which vanishes at both ends, so the
  drift b - noise^2 / 2 * gamma_t eta never divides by zero;
* **for a Gaussian source, nothing new in the marginals**: sigma_t x_0 + gamma_t z is then
  N(0, (sigma_t^2 + gamma_t^2) I), so p_t and b are those of the affine path with
  sigma'_t = sqrt(sigma_t^2 + gamma_t^2) (:meth:`StochasticInterpolant.gaussian_equivalent`);
  only the regression target is noisier.

A model predicts both halves at once: ``model(x_t, t)`` returns ``(B, 2 * D)``, the velocity in
the first ``D`` channels and the denoiser in the last ``D`` (:func:`interpolant_loss`,
:class:`InterpolantModel`). ``t`` is (B,), ``x`` is (B, D) (or (B, C, ...), split along dim 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from tutorlib.schedulers import CondOTScheduler, Scheduler, SchedulerOutput, _as_time
from tutorlib.utils import expand_t

__all__ = [
    "GaussianEquivalentScheduler",
    "InterpolantModel",
    "InterpolantSample",
    "LatentNoise",
    "LatentNoiseOutput",
    "QuadraticNoise",
    "SqrtNoise",
    "StochasticInterpolant",
    "interpolant_loss",
]

Field = Callable[[Tensor, Tensor], Tensor]


@dataclass
class LatentNoiseOutput:
    """gamma_t and its time derivative; each has the shape of ``t``."""

    gamma_t: Tensor  # the latent noise level, 0 at t = 0 and t = 1
    d_gamma_t: Tensor  # d gamma_t / dt


class LatentNoise:
    """Base class: map ``t`` in [0, 1] to ``(gamma_t, d_gamma_t)``, with gamma_0 = gamma_1 = 0."""

    def __call__(self, t: Tensor | float) -> LatentNoiseOutput:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


def _check_scale(a: float) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a < 0:
        raise ValueError(f"the latent noise scale a must be a finite number >= 0 (0: no latent noise), got {a!r}")
    return float(a)


class QuadraticNoise(LatentNoise):
    """gamma_t = a t (1 - t): largest, a / 4, at t = 1/2, with a bounded derivative a (1 - 2t).

    ``a = 0`` is the deterministic interpolant (no latent noise, no score).

    Args:
        a: the scale, >= 0.
    """

    def __init__(self, a: float = 1.0):
        self.a = _check_scale(a)

    def __call__(self, t: Tensor | float) -> LatentNoiseOutput:
        t = _as_time(t)
        return LatentNoiseOutput(gamma_t=self.a * t * (1.0 - t), d_gamma_t=self.a * (1.0 - 2.0 * t))


class SqrtNoise(LatentNoise):
    """gamma_t = sqrt(a t (1 - t)), the paper's main choice: largest, sqrt(a) / 2, at t = 1/2.

    Its derivative a (1 - 2t) / (2 gamma_t) is infinite at t = 0 and t = 1, so a velocity target
    d_gamma_t z has unbounded variance near the ends (lesson 04's exercise shows it); sample ``t``
    away from them or prefer :class:`QuadraticNoise` for training.

    Args:
        a: the scale, >= 0.
    """

    def __init__(self, a: float = 1.0):
        self.a = _check_scale(a)

    def __call__(self, t: Tensor | float) -> LatentNoiseOutput:
        t = _as_time(t)
        gamma = torch.sqrt((self.a * t * (1.0 - t)).clamp_min(0.0))
        return LatentNoiseOutput(gamma_t=gamma, d_gamma_t=self.a * (1.0 - 2.0 * t) / (2.0 * gamma))


@dataclass
class InterpolantSample:
    """A point of a stochastic interpolant and its time derivative for fixed (x_0, x_1, z)."""

    x_0: Tensor  # (B, ...) source sample
    x_1: Tensor  # (B, ...) data sample
    z: Tensor  # (B, ...) the latent N(0, I) sample
    x_t: Tensor  # (B, ...) alpha_t x_1 + sigma_t x_0 + gamma_t z
    t: Tensor  # (B,) times in [0, 1]
    dx_t: Tensor  # (B, ...) d_alpha_t x_1 + d_sigma_t x_0 + d_gamma_t z: the velocity target


class GaussianEquivalentScheduler(Scheduler):
    """The affine scheduler with the marginals of a one-sided stochastic interpolant (lesson 04).

    With x_0 ~ N(0, I) independent of z, sigma_t x_0 + gamma_t z ~ N(0, (sigma_t^2 + gamma_t^2) I),
    so x_t has the law of alpha_t x_1 + sigma'_t x_0 with::

        sigma'_t = sqrt(sigma_t^2 + gamma_t^2),   d_sigma'_t = (sigma_t d_sigma_t + gamma_t d_gamma_t) / sigma'_t,

    (at sigma'_t = 0, its limit -sqrt(d_sigma_t^2 + d_gamma_t^2)) and alpha_t unchanged. The marginal velocity E[dx_t | x_t] is that path's too: given x_t, the
    pair (x_0, z) enters only through w = sigma_t x_0 + gamma_t z, and
    E[d_sigma_t x_0 + d_gamma_t z | w] = (d_sigma'_t / sigma'_t) w.

    Args:
        scheduler: the interpolant's (alpha_t, sigma_t).
        noise: its gamma_t.
    """

    def __init__(self, scheduler: Scheduler, noise: LatentNoise):
        self.scheduler = scheduler
        self.noise = noise

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        t = _as_time(t)
        out, g = self.scheduler(t), self.noise(t)
        sigma = torch.sqrt(out.sigma_t.square() + g.gamma_t.square())
        # where sigma' = 0 (the data end) the quotient is 0 / 0; its limit, for sigma and gamma falling to 0
        # at rates d_sigma and d_gamma, is -sqrt(d_sigma^2 + d_gamma^2)
        d_sigma = torch.where(sigma > 0, (out.sigma_t * out.d_sigma_t + g.gamma_t * g.d_gamma_t) / sigma,
                              -torch.sqrt(out.d_sigma_t.square() + g.d_gamma_t.square()))
        return SchedulerOutput(alpha_t=out.alpha_t, sigma_t=sigma, d_alpha_t=out.d_alpha_t, d_sigma_t=d_sigma)


class StochasticInterpolant:
    """x_t = alpha_t x_1 + sigma_t x_0 + gamma_t z between a source and the data (lesson 04).

    Args:
        scheduler: (alpha_t, sigma_t) of the deterministic part; default the linear path
            alpha_t = t, sigma_t = 1 - t.
        noise: the latent noise gamma_t; default ``QuadraticNoise(1.0)``.
    """

    def __init__(self, scheduler: Scheduler | None = None, noise: LatentNoise | None = None):
        self.scheduler = CondOTScheduler() if scheduler is None else scheduler
        self.noise = QuadraticNoise(1.0) if noise is None else noise
        if not isinstance(self.scheduler, Scheduler):
            raise TypeError(f"scheduler must be a tutorlib.schedulers.Scheduler, got {type(self.scheduler).__name__}")
        if not isinstance(self.noise, LatentNoise):
            raise TypeError(f"noise must be a LatentNoise (QuadraticNoise(a), SqrtNoise(a)), got "
                            f"{type(self.noise).__name__}")

    def __repr__(self) -> str:
        return f"StochasticInterpolant({self.scheduler!r}, {self.noise!r})"

    def sample(self, x_0: Tensor, x_1: Tensor, z: Tensor, t: Tensor) -> InterpolantSample:
        """The interpolant at ``t`` for the triple ``(x_0, x_1, z)``, each (B, ...), ``t`` (B,).

        Returns:
            An :class:`InterpolantSample` with x_t and its time derivative dx_t.
        """
        if not (x_0.shape == x_1.shape == z.shape):
            raise ValueError(f"x_0, x_1 and z must have one shape, got {tuple(x_0.shape)}, {tuple(x_1.shape)} and "
                             f"{tuple(z.shape)}")
        tt = torch.as_tensor(t, device=x_1.device, dtype=x_1.dtype)
        out, g = self.scheduler(tt), self.noise(tt)
        a, s, da, ds = (expand_t(c, x_1) for c in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t))
        gm, dg = expand_t(g.gamma_t, x_1), expand_t(g.d_gamma_t, x_1)
        x_t = a * x_1 + s * x_0 + gm * z  # (B, ...)
        dx_t = da * x_1 + ds * x_0 + dg * z  # (B, ...)
        return InterpolantSample(x_0=x_0, x_1=x_1, z=z, x_t=x_t, t=t, dx_t=dx_t)

    def gaussian_equivalent(self) -> GaussianEquivalentScheduler:
        """The affine scheduler with this interpolant's marginals when x_0 ~ N(0, I) (see the class)."""
        return GaussianEquivalentScheduler(self.scheduler, self.noise)

    def denoiser_to_score(self, eta: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """score = grad log p_t = -eta / gamma_t, for eta = E[z | x_t] (singular where gamma_t = 0)."""
        g = self.noise(torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype))
        return -eta / expand_t(g.gamma_t, x_t)


def interpolant_loss(model: Field, interpolant: StochasticInterpolant, x_0: Tensor, x_1: Tensor, z: Tensor,
                     t: Tensor) -> Tensor:
    """Regress the velocity and the denoiser of a stochastic interpolant at once (lesson 04).

    ``model(x_t, t)`` returns ``(B, 2 D, ...)``: its first half is fitted to dx_t (so it learns
    b = E[dx_t | x_t]), its second half to z (so it learns eta = E[z | x_t]); the loss is the sum
    of the two mean squared errors. With gamma = 0 the second half learns E[z] = 0 and is useless.

    Args:
        model: the network, ``(B, D, ...)`` and ``(B,)`` -> ``(B, 2 D, ...)``.
        interpolant: the path.
        x_0, x_1, z: source, data and latent samples, each (B, D, ...).
        t: times (B,), usually uniform on [0, 1].

    Returns:
        The scalar loss.
    """
    s = interpolant.sample(x_0, x_1, z, t)
    out = model(s.x_t, t)  # (B, 2D, ...)
    if out.shape[1] != 2 * x_1.shape[1] or out.shape[2:] != x_1.shape[2:]:
        raise ValueError(f"the model must return (B, {2 * x_1.shape[1]}, ...): velocity and denoiser stacked along "
                         f"dim 1, got {tuple(out.shape)} (build it with out_dim = 2 * dim)")
    b, eta = out.chunk(2, dim=1)  # (B, D, ...) each
    return (b - s.dx_t).square().mean() + (eta - z).square().mean()


class InterpolantModel:
    """A network trained by :func:`interpolant_loss`, seen as a velocity, a denoiser, a score and SDEs.

    Args:
        model: the network returning velocity and denoiser stacked along dim 1.
        interpolant: the interpolant it was trained on.
    """

    def __init__(self, model: Field, interpolant: StochasticInterpolant):
        self.model = model
        self.interpolant = interpolant

    def _halves(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        b, eta = self.model(x, t).chunk(2, dim=1)
        return b, eta

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """b(x, t) = E[dx_t | x_t = x], the field of the probability-flow ODE; (B, D, ...)."""
        return self._halves(x, t)[0]

    def denoiser(self, x: Tensor, t: Tensor) -> Tensor:
        """eta(x, t) = E[z | x_t = x]; (B, D, ...)."""
        return self._halves(x, t)[1]

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """grad log p_t(x) = -eta / gamma_t (infinite where gamma_t = 0: at t = 0 and t = 1)."""
        return self.interpolant.denoiser_to_score(self.denoiser(x, t), x, t)

    def sde(self, noise: float) -> tuple[Field, Field]:
        """``(drift, diffusion)`` for :func:`tutorlib.solvers.sde_solve`, with the marginals of the ODE.

        Diffusion g_t = noise * gamma_t and drift b + g_t^2 / 2 * score = b - noise^2 / 2 * gamma_t * eta:
        finite at both ends (where gamma_t = 0 the SDE is the ODE). ``noise = 0`` is the ODE.

        Args:
            noise: the noise level, >= 0.
        """
        if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
            raise ValueError(f"noise must be a finite number >= 0 (0: the probability-flow ODE), got {noise!r}")
        c = 0.5 * float(noise) ** 2

        def drift(x: Tensor, t: Tensor) -> Tensor:
            b, eta = self._halves(x, t)
            g = self.interpolant.noise(torch.as_tensor(t, device=x.device, dtype=x.dtype))
            return b - c * expand_t(g.gamma_t, x) * eta

        def diffusion(x: Tensor, t: Tensor) -> Tensor:
            g = self.interpolant.noise(torch.as_tensor(t, device=x.device, dtype=x.dtype))
            return float(noise) * torch.broadcast_to(g.gamma_t, (x.shape[0],))  # (B,)

        return drift, diffusion
