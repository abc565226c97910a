"""Schedulers: the coefficients (alpha_t, sigma_t) of an affine probability path (lesson 04).

An affine path mixes a source sample ``x_0`` (noise) and a data sample ``x_1``::

    x_t = alpha_t x_1 + sigma_t x_0,        dx_t = d_alpha_t x_1 + d_sigma_t x_0,

with ``t`` in [0, 1] running from noise (alpha_0 = 0, sigma_0 = 1) to data (alpha_1 = 1,
sigma_1 = 0). A scheduler maps ``t`` to the four numbers ``alpha_t, sigma_t`` and their exact
time derivatives, returned as a :class:`SchedulerOutput`. Lesson 03 uses the conditional-OT
(linear) scheduler; lesson 04 adds the variance-preserving (diffusion), cosine and polynomial
ones. Each scheduler is a small class that overrides the equations and nothing else::

    out = CosineScheduler()(t)          # t: (B,)  ->  out.alpha_t, out.sigma_t, ...: (B,)

All schedulers work elementwise on a tensor ``t`` of any shape, dtype and device; the path
(:mod:`tutorlib.paths`) broadcasts the result against ``x``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CondOTScheduler",
    "CosineScheduler",
    "CosineVPScheduler",
    "LinearVPScheduler",
    "PolynomialScheduler",
    "Scheduler",
    "SchedulerOutput",
    "VPScheduler",
]


@dataclass
class SchedulerOutput:
    """The path coefficients at times ``t``; every field has the shape of ``t``."""

    alpha_t: Tensor  # data coefficient alpha_t
    sigma_t: Tensor  # noise coefficient sigma_t
    d_alpha_t: Tensor  # d alpha_t / dt
    d_sigma_t: Tensor  # d sigma_t / dt


def _check_snr(snr: Tensor) -> None:
    """Refuse ratios alpha / sigma that no path has (negative or NaN)."""
    if bool(torch.isnan(snr).any()) or bool((snr < 0).any()):
        raise ValueError("snr must be non-negative (alpha_t / sigma_t >= 0; inf for the data end), got values "
                         f"in [{float(snr.min()):.4g}, {float(snr.max()):.4g}] or NaN")


def _as_time(t: Tensor | float) -> Tensor:
    """``t`` as a floating tensor (a Python number becomes a 0-d tensor of the default dtype)."""
    t = torch.as_tensor(t)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class Scheduler:
    """Base class: map ``t`` in [0, 1] to ``(alpha_t, sigma_t, d_alpha_t, d_sigma_t)``.

    Subclasses implement :meth:`__call__`; the convention is alpha_0 = 0, sigma_0 = 1 (noise)
    and alpha_1 = 1, sigma_1 = 0 (data).
    """

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        """Coefficients at ``t``.

        Args:
            t: times in [0, 1], any shape (usually (B,)).

        Returns:
            A :class:`SchedulerOutput` whose fields have the shape of ``t``.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"

    def snr(self, t: Tensor | float) -> Tensor:
        """The signal-to-noise ratio alpha_t / sigma_t (lesson 04), the shape of ``t``.

        It rises from alpha_0 / sigma_0 (0 when alpha_0 = 0) to infinity at t = 1. Two affine paths
        at times of equal SNR hold the same information about x_1: their points differ only by the
        factor (alpha + sigma) (see :func:`tutorlib.paths.snr_match`). (Some papers call the square,
        alpha^2 / sigma^2, the SNR; this ratio is its square root.)
        """
        out = self(t)
        return out.alpha_t / out.sigma_t

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """The time t with alpha_t / sigma_t = ``snr``: the inverse of :meth:`snr` (lesson 04).

        The base class bisects on [0, 1] in float64 (``iters`` halvings: 2^-60 of the interval), which
        needs an SNR that increases with t (every scheduler of the course); subclasses with a closed
        form override it. An SNR below this scheduler's smallest (alpha_0 / sigma_0 > 0 on
        :class:`LinearVPScheduler` and DDPM's schedules) gives t = 0, and ``inf`` gives t = 1.

        Args:
            snr: non-negative ratios alpha / sigma, any shape (``inf`` allowed).
            iters: bisection steps.

        Returns:
            Times in [0, 1], float64, the shape and device of ``snr``.

        Raises:
            ValueError: a negative or NaN ratio.
        """
        snr = torch.as_tensor(snr).to(torch.float64)
        _check_snr(snr)
        lo, hi = torch.zeros_like(snr), torch.ones_like(snr)
        for _ in range(iters):
            mid = 0.5 * (lo + hi)
            below = self.snr(mid) < snr  # the root lies above mid
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        t = torch.where(lo == 0, lo, 0.5 * (lo + hi))  # below the smallest SNR: exactly 0
        return torch.where(torch.isinf(snr), torch.ones_like(snr), t)


class CondOTScheduler(Scheduler):
    """The conditional-OT (linear) path: alpha_t = t, sigma_t = 1 - t (lesson 03).

    Its conditional velocity is constant in time: dx_t = x_1 - x_0.
    """

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        t = _as_time(t)
        one = torch.ones_like(t)
        return SchedulerOutput(alpha_t=t, sigma_t=1.0 - t, d_alpha_t=one, d_sigma_t=-one)

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """t / (1 - t) = snr, so t = snr / (1 + snr) (closed form; ``iters`` unused)."""
        snr = torch.as_tensor(snr).to(torch.float64)
        _check_snr(snr)
        return torch.where(torch.isinf(snr), torch.ones_like(snr), snr / (1.0 + snr))


class PolynomialScheduler(Scheduler):
    """A polynomial family: alpha_t = t^n, sigma_t = 1 - t^n (lesson 04).

    ``n = 1`` is the conditional-OT path. The derivatives are d_alpha_t = n t^(n-1) and
    d_sigma_t = -n t^(n-1) (infinite at t = 0 when n < 1).

    Args:
        n: the exponent, n > 0.
    """

    def __init__(self, n: float = 2.0):
        if not n > 0:
            raise ValueError(f"the exponent n must be positive, got {n!r}")
        self.n = float(n)

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        t = _as_time(t)
        alpha = t.pow(self.n)
        d_alpha = self.n * t.pow(self.n - 1.0)
        return SchedulerOutput(alpha_t=alpha, sigma_t=1.0 - alpha, d_alpha_t=d_alpha, d_sigma_t=-d_alpha)

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """t^n / (1 - t^n) = snr, so t = (snr / (1 + snr))^(1/n) (closed form; ``iters`` unused)."""
        snr = torch.as_tensor(snr).to(torch.float64)
        _check_snr(snr)
        return torch.where(torch.isinf(snr), torch.ones_like(snr), (snr / (1.0 + snr)).pow(1.0 / self.n))


class CosineScheduler(Scheduler):
    """The cosine (trigonometric) path: alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2) (lesson 04).

    It is variance preserving (alpha_t^2 + sigma_t^2 = 1) with smooth derivatives everywhere:
    d_alpha_t = (pi/2) cos(pi t / 2), d_sigma_t = -(pi/2) sin(pi t / 2).
    """

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        t = _as_time(t)
        angle = (0.5 * math.pi) * t
        sin, cos = torch.sin(angle), torch.cos(angle)
        return SchedulerOutput(
            alpha_t=sin, sigma_t=cos, d_alpha_t=(0.5 * math.pi) * cos, d_sigma_t=(-0.5 * math.pi) * sin
        )

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """tan(pi t / 2) = snr, so t = (2 / pi) atan(snr) (closed form, inf -> 1; ``iters`` unused)."""
        snr = torch.as_tensor(snr).to(torch.float64)
        _check_snr(snr)
        return (2.0 / math.pi) * torch.atan(snr)


class VPScheduler(Scheduler):
    """Variance-preserving (diffusion) paths: sigma_t = sqrt(1 - alpha_t^2) (lessons 01 and 04).

    In the continuous-time VP SDE of score-based diffusion, with diffusion time s = 1 - t
    (s = 0 data, s = 1 noise) and a noise rate beta(s)::

        alpha_t = exp(-1/2 int_0^{1-t} beta(u) du),     sigma_t = sqrt(1 - alpha_t^2),
        d_alpha_t = 1/2 beta(1 - t) alpha_t,            d_sigma_t = -alpha_t d_alpha_t / sigma_t.

    Subclasses give ``alpha(t)`` and ``d_alpha(t)`` (and may override ``sigma(t)`` for
    precision); the base class derives the rest. d_sigma_t is singular at t = 1 (sigma_1 = 0),
    so velocities built from epsilon- or score-predictions on a VP path blow up there: integrate
    to ``t1 = 1 - 1e-3`` or so, or finish with a denoising step.
    """

    def alpha(self, t: Tensor) -> Tensor:
        """alpha_t, same shape as ``t``."""
        raise NotImplementedError

    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha_t / dt, same shape as ``t``."""
        raise NotImplementedError

    def sigma(self, t: Tensor) -> Tensor:
        """sigma_t = sqrt(1 - alpha_t^2) (clamped at 0 against round-off)."""
        return torch.sqrt((1.0 - self.alpha(t).square()).clamp_min(0.0))

    def __call__(self, t: Tensor | float) -> SchedulerOutput:
        t = _as_time(t)
        alpha, d_alpha, sigma = self.alpha(t), self.d_alpha(t), self.sigma(t)
        return SchedulerOutput(alpha_t=alpha, sigma_t=sigma, d_alpha_t=d_alpha, d_sigma_t=-alpha * d_alpha / sigma)


class LinearVPScheduler(VPScheduler):
    """VP path of the linear beta schedule beta(s) = beta_min + s (beta_max - beta_min).

    With s = 1 - t, int_0^s beta = beta_min s + (beta_max - beta_min) s^2 / 2. The defaults
    (0.1, 20) are the continuous limit of DDPM's linear schedule (beta from 1e-4 to 0.02 over
    T = 1000 steps, so beta(s) = T beta_k). alpha_0 = exp(-(beta_min + beta_max) / 4) is about
    0.0066, not exactly 0: the source is only approximately N(0, I).

    Args:
        beta_min: beta at the data end (s = 0), >= 0.
        beta_max: beta at the noise end (s = 1), >= beta_min.
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        if not 0.0 <= beta_min <= beta_max:
            raise ValueError(f"need 0 <= beta_min <= beta_max, got {beta_min!r}, {beta_max!r}")
        self.beta_min = float(beta_min)
        self.beta_max = float(beta_max)

    def integrated_beta(self, t: Tensor) -> Tensor:
        """B(1 - t) = int_0^{1-t} beta(u) du, so alpha_t = exp(-B / 2)."""
        s = 1.0 - t
        return s * (self.beta_min + 0.5 * (self.beta_max - self.beta_min) * s)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(-0.5 * self.integrated_beta(t))

    def d_alpha(self, t: Tensor) -> Tensor:
        beta = self.beta_min + (1.0 - t) * (self.beta_max - self.beta_min)
        return 0.5 * beta * self.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        # 1 - alpha^2 = 1 - exp(-B) = -expm1(-B): accurate near the data end where B -> 0.
        return torch.sqrt(-torch.expm1(-self.integrated_beta(t)))

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """Closed form (``iters`` unused): alpha / sigma = snr means B = log(1 + 1 / snr^2).

        B(s) = beta_min s + (beta_max - beta_min) s^2 / 2 is a quadratic in s = 1 - t; its positive
        root is s = 2 B / (beta_min + sqrt(beta_min^2 + 2 (beta_max - beta_min) B)) (the form without
        0 / 0 when beta_max = beta_min). SNRs below alpha_0 / sigma_0 give t = 0, ``inf`` gives t = 1.
        """
        snr = torch.as_tensor(snr).to(torch.float64)
        _check_snr(snr)
        big_b = torch.log1p(snr.square().reciprocal())  # int_0^s beta; 0 for snr = inf, inf for snr = 0
        root = self.beta_min + torch.sqrt(self.beta_min**2 + 2.0 * (self.beta_max - self.beta_min) * big_b)
        s = torch.where(torch.isinf(big_b), torch.ones_like(big_b), 2.0 * big_b / root)
        return (1.0 - s).clamp(0.0, 1.0)


class CosineVPScheduler(VPScheduler):
    """VP path of the cosine schedule of Nichol & Dhariwal (Improved DDPM), in continuous time.

    alpha_bar(s) = f(s) / f(0) with f(s) = cos^2(pi/2 (s + eps) / (1 + eps)) and s = 1 - t, so::

        alpha_t = sin(a t) / cos(a eps),    a = pi / (2 (1 + eps)),

    exactly 0 at t = 0 and 1 at t = 1; d_alpha_t = a cos(a t) / cos(a eps). The equivalent beta,
    beta(s) = -d log alpha_bar / ds, is infinite at s = 1 (DDPM clips it at 0.999 in discrete
    time).

    Args:
        s: the small offset eps of the schedule (0.008 in the paper), >= 0.
    """

    def __init__(self, s: float = 0.008):
        if s < 0:
            raise ValueError(f"the offset s must be non-negative, got {s!r}")
        self.s = float(s)

    @property
    def _a(self) -> float:
        return 0.5 * math.pi / (1.0 + self.s)

    def alpha(self, t: Tensor) -> Tensor:
        return torch.sin(self._a * t) / math.cos(self._a * self.s)

    def d_alpha(self, t: Tensor) -> Tensor:
        return self._a * torch.cos(self._a * t) / math.cos(self._a * self.s)

    def sigma(self, t: Tensor) -> Tensor:
        # 1 - alpha^2 = (C - sin(a t)) (C + sin(a t)) / C^2 with C = cos(a eps) = sin(a), and
        # sin(a) - sin(a t) = 2 cos(a (1 + t) / 2) sin(a (1 - t) / 2): no cancellation near t = 1.
        a, c = self._a, math.cos(self._a * self.s)
        gap = 2.0 * torch.cos(0.5 * a * (1.0 + t)) * torch.sin(0.5 * a * (1.0 - t))
        return torch.sqrt((gap * (c + torch.sin(a * t))).clamp_min(0.0)) / c
