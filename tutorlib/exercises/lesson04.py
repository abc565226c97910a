"""Exercise checks of lesson 04 (paths, parametrisations, interpolants): conversions between what a
network predicts, the affine path equivalent to a stochastic interpolant, DDPM's clock on the linear path.

Every check draws its coefficients at random (not from one path), so that an answer written for the
linear path alone, or for one time, cannot pass.
"""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.exercises.core import (BROADCAST_HINT, DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size,
                                     check, rand, randn)
from tutorlib.interpolants import GaussianEquivalentScheduler, LatentNoise, LatentNoiseOutput
from tutorlib.schedulers import CondOTScheduler, Scheduler, SchedulerOutput

__all__ = ["check_equivalent_sigma", "check_linear_path_time", "check_x1_to_velocity"]


# --- x-prediction -> velocity -------------------------------------------------------------------


def _coefficient_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
    return {"x1_hat": 2 * randn(g, B, D), "x_t": randn(g, B, D),
            "alpha": 0.1 + 0.9 * rand(g, B), "sigma": 0.1 + 0.9 * rand(g, B),
            "d_alpha": 0.2 + 2 * rand(g, B), "d_sigma": -0.2 - 2 * rand(g, B)}


def _x1_to_velocity(x1_hat, x_t, alpha, sigma, d_alpha, d_sigma):
    a, s, da, ds = (c[:, None] for c in (alpha, sigma, d_alpha, d_sigma))
    eps = (x_t - a * x1_hat) / s  # (B, D): the noise that x_t and x1_hat imply
    return da * x1_hat + ds * eps


def check_x1_to_velocity(fn: Callable, *, strict: bool | None = None,
                         time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the velocity implied by an x-prediction (a data estimate) on any affine path (lesson 04).

    The learner writes ``fn(x1_hat, x_t, alpha, sigma, d_alpha, d_sigma) -> velocity``: ``x1_hat`` and
    ``x_t`` of shape ``(B, D)``, the path's coefficients at each sample's time of shape ``(B,)``. The
    reference is ``AffinePath.x1_to_velocity``'s formula: the noise estimate
    ``(x_t - alpha x1_hat) / sigma``, then ``d_alpha x1_hat + d_sigma eps``. The coefficients are drawn at
    random for every sample, so no path's special case passes.
    """
    def bc(*c):
        return (v[:, None] for v in c)

    def as_eps(x1, xt, a, s, da, ds):  # the epsilon conversion applied to a data estimate
        a, s, da, ds = bc(a, s, da, ds)
        return (da / a) * xt + (ds - da * s / a) * x1

    def no_noise(x1, xt, a, s, da, ds):
        a, s, da, ds = bc(a, s, da, ds)
        return da * x1

    def eps_sign(x1, xt, a, s, da, ds):
        a, s, da, ds = bc(a, s, da, ds)
        return da * x1 + ds * (a * x1 - xt) / s

    def linear_path(x1, xt, a, s, da, ds):  # lesson 03's (x_1 - x_t) / (1 - t), which holds only on the linear path
        a, s, da, ds = bc(a, s, da, ds)
        return (x1 - xt) / s

    mistakes = [
        Mistake("the epsilon conversion (x1_hat treated as a noise estimate)", as_eps,
                "x1_hat estimates the data x_1: first recover the noise that x_t = alpha x_1 + sigma x_0 leaves"),
        Mistake("d_alpha x1_hat alone (the noise term missing)", no_noise,
                "the velocity moves the noise part too: add d_sigma times the noise estimate"),
        Mistake("the noise estimate with the wrong sign", eps_sign,
                "x_0 = (x_t - alpha x_1) / sigma, not (alpha x_1 - x_t) / sigma"),
        Mistake("the linear path's (x1_hat - x_t) / sigma", linear_path,
                "that holds only for alpha_t = t, sigma_t = 1 - t; use the coefficients you are given"),
    ]
    hints = [BROADCAST_HINT, Hint("value", "check with x1_hat = x_1 and x_t on the path: the answer must be "
                                           "d_alpha x_1 + d_sigma x_0")]
    return check(fn, _x1_to_velocity, _coefficient_inputs, name="x1_to_velocity", mistakes=mistakes, hints=hints,
                 strict=strict, time_limit_s=time_limit_s)


# --- the affine path of a one-sided stochastic interpolant ------------------------------------------


class _Given(Scheduler):
    """A scheduler that returns fixed coefficient tensors (whatever t is): the check's adapter."""

    def __init__(self, sigma: torch.Tensor, d_sigma: torch.Tensor):
        self._sigma, self._d_sigma = sigma, d_sigma

    def __call__(self, t):
        one = torch.ones_like(self._sigma)
        return SchedulerOutput(alpha_t=one, sigma_t=self._sigma, d_alpha_t=one, d_sigma_t=self._d_sigma)


class _GivenNoise(LatentNoise):
    def __init__(self, gamma: torch.Tensor, d_gamma: torch.Tensor):
        self._gamma, self._d_gamma = gamma, d_gamma

    def __call__(self, t):
        return LatentNoiseOutput(gamma_t=self._gamma, d_gamma_t=self._d_gamma)


def _equivalent_sigma(sigma, d_sigma, gamma, d_gamma):
    out = GaussianEquivalentScheduler(_Given(sigma, d_sigma), _GivenNoise(gamma, d_gamma))(torch.zeros_like(sigma))
    return out.sigma_t, out.d_sigma_t


def check_equivalent_sigma(fn: Callable, *, strict: bool | None = None,
                           time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the noise coefficient of the affine path that a one-sided stochastic interpolant equals (lesson 04).

    The learner writes ``fn(sigma, d_sigma, gamma, d_gamma) -> (sigma_eq, d_sigma_eq)``, all ``(B,)``:
    with x_0 ~ N(0, I) and z ~ N(0, I) independent, ``sigma x_0 + gamma z`` is one Gaussian, so the
    interpolant has the marginals of the affine path with noise coefficient
    ``sigma_eq = sqrt(sigma^2 + gamma^2)``, and ``d_sigma_eq`` is its time derivative. The reference is
    :class:`tutorlib.interpolants.GaussianEquivalentScheduler`.
    """
    def make_inputs(g):
        B = batch_size(g)
        return {"sigma": 0.05 + 0.95 * rand(g, B), "d_sigma": -0.5 - 1.5 * rand(g, B),
                "gamma": 0.05 + 0.5 * rand(g, B), "d_gamma": 2 * rand(g, B) - 1}

    mistakes = [
        Mistake("sigma + gamma (standard deviations added)", lambda s, ds, gm, dg: (s + gm, ds + dg),
                "independent Gaussians add their variances: sigma_eq^2 = sigma^2 + gamma^2"),
        Mistake("the derivative d_sigma + d_gamma",
                lambda s, ds, gm, dg: ((s * s + gm * gm).sqrt(), ds + dg),
                "differentiate sqrt(sigma^2 + gamma^2) with the chain rule"),
        Mistake("the derivative without the division by sigma_eq",
                lambda s, ds, gm, dg: ((s * s + gm * gm).sqrt(), s * ds + gm * dg),
                "d/dt sqrt(u) = u' / (2 sqrt(u)) with u = sigma^2 + gamma^2"),
        Mistake("the variance sigma^2 + gamma^2 instead of its square root",
                lambda s, ds, gm, dg: (s * s + gm * gm, 2 * (s * ds + gm * dg)),
                "sigma_eq multiplies x_0 like sigma does: it is a standard deviation, the square root"),
    ]
    return check(fn, _equivalent_sigma, make_inputs, name="equivalent_sigma", output_names=("sigma_eq", "d_sigma_eq"),
                 mistakes=mistakes, strict=strict, time_limit_s=time_limit_s)


# --- DDPM's noise levels on the linear path -------------------------------------------------------


def _linear_path_time(alpha_bar):
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return CondOTScheduler().time_at_snr(a / s).to(alpha_bar.dtype), 1 / (a + s)


def check_linear_path_time(fn: Callable, *, strict: bool | None = None,
                           time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check where DDPM's noise level alpha_bar_k sits on the linear path (lesson 04).

    The learner writes ``fn(alpha_bar) -> (t, scale)`` for ``alpha_bar`` of shape ``(B,)`` in (0, 1):
    ``t`` is the time of the linear path x_t = t x_1 + (1 - t) x_0 with the same signal-to-noise ratio
    as DDPM's x_k = sqrt(alpha_bar) x_1 + sqrt(1 - alpha_bar) x_0, and ``scale`` the factor with
    x_t = scale * x_k. The reference is :func:`tutorlib.paths.snr_match`'s algebra.
    """
    def make_inputs(g):
        B = batch_size(g)
        return {"alpha_bar": torch.cat([1e-4 + (1 - 2e-4) * rand(g, B - 1), torch.tensor([0.5], dtype=torch.float64)])}

    def sq(ab):
        return ab.sqrt(), (1 - ab).sqrt()

    mistakes = [
        Mistake("t = sqrt(alpha_bar) (the VP path's alpha_t)", lambda ab: (sq(ab)[0], 1 / sum(sq(ab))),
                "on the linear path alpha_t = t but sigma_t = 1 - t: match the ratio alpha / sigma, not alpha alone"),
        Mistake("t = alpha_bar", lambda ab: (ab, 1 / sum(sq(ab))),
                "alpha_bar is alpha^2 of DDPM's path: match the ratio sqrt(alpha_bar) / sqrt(1 - alpha_bar)"),
        Mistake("the scale inverted", lambda ab: (sq(ab)[0] / sum(sq(ab)), sum(sq(ab))),
                "x_t = t x_1 + (1 - t) x_0 and t + (1 - t) = 1, while DDPM's coefficients sum to "
                "sqrt(alpha_bar) + sqrt(1 - alpha_bar): divide by that sum"),
        Mistake("(scale, t): the outputs swapped", lambda ab: (1 / sum(sq(ab)), sq(ab)[0] / sum(sq(ab))),
                "return the time first, then the scale"),
    ]
    hints = [Hint("value", "alpha_bar = 0.5 has alpha = sigma, so it must sit at t = 1/2 of the linear path")]
    return check(fn, _linear_path_time, make_inputs, name="linear_path_time", output_names=("t", "scale"),
                 mistakes=mistakes, hints=hints, strict=strict, time_limit_s=time_limit_s)
