"""DDPM in discrete time: beta schedules, forward noising, ancestral and DDIM samplers (lesson 01),
and the map from a DDPM epsilon-model to a continuous-time velocity field (lesson 04).

Naming, read this first
-----------------------
The DDPM paper writes ``x_0`` for DATA and ``x_T`` for noise, and counts its step index
``k = 1..T`` from data towards noise. This course writes ``x_0`` for NOISE and ``x_1`` for data.
To keep the two apart, this module never uses the name ``x_0``:

* ``x_data``  -- a data sample (the paper's x_0);
* ``x_noisy`` -- a noised sample at DDPM index k (the paper's x_k);
* ``x_T``     -- the pure-noise start of sampling (the paper's x_T, the course's x_0);
* ``k``       -- the integer DDPM index, 1..T (k = 0 is clean data, k = T is noise).

Course time and DDPM index are related by ``t = 1 - k / T`` (k = T is t = 0, noise; k = 0 is
t = 1, data). Epsilon-models are called like every model in the course, ``eps_model(x, t)``
with ``t`` of shape (B,), where ``t = 1 - k / T`` is the course time of index k (so a network
trained here can be reused by the ODE solvers without any change of input convention).

The forward process is q(x_noisy | x_data) = N(sqrt(alpha_bar_k) x_data, (1 - alpha_bar_k) I)
with alpha_bar_k = prod_{j <= k} (1 - beta_j); in course notation that is the VP affine path
with alpha_t = sqrt(alpha_bar_k), sigma_t = sqrt(1 - alpha_bar_k) (see :class:`DDPMScheduler`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from tutorlib.paths import AffinePath, randn_like
from tutorlib.utils import expand_t
from tutorlib.schedulers import VPScheduler

__all__ = [
    "DDPMSample",
    "DDPMSchedule",
    "DDPMScheduler",
    "DDPMSolution",
    "DDPMVelocity",
    "ancestral_sample",
    "cosine_betas",
    "ddim_sample",
    "ddpm_to_velocity",
    "linear_betas",
]

EpsModel = Callable[[Tensor, Tensor], Tensor]


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """DDPM's linear schedule: beta_k linear from ``beta_1`` (k = 1) to ``beta_T`` (k = T).

    Returns:
        betas, shape (T,), float64; entry k - 1 is beta_k.
    """
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal (Improved DDPM).

    alpha_bar_k = f(k) / f(0) with f(k) = cos^2(pi/2 (k/T + s) / (1 + s)), and
    beta_k = min(1 - alpha_bar_k / alpha_bar_{k-1}, max_beta).

    Returns:
        betas, shape (T,), float64.
    """
    if T < 1:
        raise ValueError(f"T must be at least 1, got {T}")
    k = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((k / T + s) / (1 + s) * math.pi / 2).square()  # (T+1,)
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)


@dataclass
class DDPMSample:
    """A draw from the forward process q(x_noisy | x_data) at DDPM indices k."""

    x_data: Tensor  # (B, ...) clean data (the paper's x_0)
    x_noisy: Tensor  # (B, ...) sqrt(alpha_bar_k) x_data + sqrt(1 - alpha_bar_k) noise
    noise: Tensor  # (B, ...) the epsilon used: the target of the epsilon loss
    k: Tensor  # (B,) integer DDPM indices in 0..T
    t: Tensor  # (B,) course times 1 - k / T (what the eps-model is called with)


@dataclass(eq=False)
class DDPMSchedule:
    """A discrete DDPM noise schedule of T steps (lesson 01).

    Build it from betas: ``DDPMSchedule(linear_betas(1000))`` or ``DDPMSchedule(cosine_betas(1000))``.
    Tensors are float64 on the CPU; methods move what they need to the data's device and dtype.
    Entry k - 1 of each tensor belongs to DDPM index k.
    """

    betas: Tensor  # (T,) beta_k, the variance added at step k
    alphas: Tensor = field(init=False)  # (T,) 1 - beta_k
    alpha_bars: Tensor = field(init=False)  # (T,) prod_{j <= k} alpha_j
    _cache: dict = field(init=False, default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu()
        if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty 1D tensor with entries in (0, 1)")
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = torch.cumprod(self.alphas, 0)

    @property
    def T(self) -> int:
        """The number of diffusion steps."""
        return len(self.betas)

    def alpha_bar(self, k: Tensor | int) -> Tensor:
        """alpha_bar_k for integer k in 0..T (alpha_bar_0 = 1), float64 on the CPU."""
        full = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])  # (T+1,)
        return full[torch.as_tensor(k, device="cpu")]

    def time(self, k: Tensor | int) -> Tensor:
        """Course time t = 1 - k / T of DDPM index k."""
        return 1.0 - torch.as_tensor(k) / self.T

    def _table(self, name: str, device: torch.device, dtype: torch.dtype) -> Tensor:
        """sqrt(alpha_bar) or sqrt(1 - alpha_bar), padded with k = 0, cached per device and dtype."""
        key = (name, device, dtype)
        if key not in self._cache:
            full = torch.cat([torch.ones(1, dtype=torch.float64), self.alpha_bars])  # (T+1,)
            table = full.sqrt() if name == "sqrt_ab" else (1.0 - full).sqrt()
            self._cache[key] = table.to(device=device, dtype=dtype)
        return self._cache[key]

    def q_sample(self, x_data: Tensor, k: Tensor, noise: Tensor) -> DDPMSample:
        """Noise data to DDPM index k: x_noisy = sqrt(alpha_bar_k) x_data + sqrt(1 - alpha_bar_k) noise.

        Args:
            x_data: clean data, shape (B, ...).
            k: integer indices in 0..T, shape (B,) (k = T is almost pure noise).
            noise: standard normal noise, shape of ``x_data`` (the epsilon target).

        Returns:
            A :class:`DDPMSample`; its ``t`` is the course time 1 - k / T.
        """
        k = torch.as_tensor(k, device=x_data.device).long()
        a = self._table("sqrt_ab", x_data.device, x_data.dtype)[k]  # (B,)
        s = self._table("sqrt_1mab", x_data.device, x_data.dtype)[k]  # (B,)
        x_noisy = expand_t(a, x_data) * x_data + expand_t(s, x_data) * noise  # (B, ...)
        t = 1.0 - k.to(x_data.dtype) / self.T  # (B,)
        return DDPMSample(x_data=x_data, x_noisy=x_noisy, noise=noise, k=k, t=t)

    def step_indices(self, steps: int | None = None) -> list[int]:
        """``steps`` DDPM indices from T down to 1, evenly spaced, followed by 0.

        ``steps=None`` (or T) gives T, T-1, ..., 1, 0 (the full chain).
        """
        steps = self.T if steps is None else int(steps)
        if not 1 <= steps <= self.T:
            raise ValueError(f"steps must be in 1..T={self.T}, got {steps}")
        ks = torch.linspace(self.T, 1, steps, dtype=torch.float64).round().long().unique_consecutive()
        return ks.tolist() + [0]


@dataclass
class DDPMSolution:
    """The result of a discrete DDPM sampler."""

    x: Tensor  # (B, ...) the final sample at k = 0 (data)
    nfe: int  # number of eps-model evaluations
    trajectory: Tensor | None  # (S+1, B, ...) states from x_T to x, or None unless asked
    k: Tensor  # (S+1,) DDPM index of each state, from T down to 0
    times: Tensor  # (S+1,) course time 1 - k / T of each state, from 0 up to 1


def _sample_loop(eps_model: EpsModel, x_T: Tensor, schedule: DDPMSchedule, steps: int | None,
                 update: Callable[[Tensor, Tensor, float, float, bool], Tensor],
                 return_trajectory: bool) -> DDPMSolution:
    """Shared loop of the samplers: call the eps-model at each index, apply ``update``."""
    ks = schedule.step_indices(steps)
    alpha_bar = schedule.alpha_bar(torch.tensor(ks)).tolist()
    B = x_T.shape[0]
    x = x_T
    states = [x] if return_trajectory else None
    with torch.no_grad():
        for i in range(len(ks) - 1):
            t = torch.full((B,), 1.0 - ks[i] / schedule.T, dtype=x.dtype, device=x.device)  # (B,)
            eps = eps_model(x, t)  # (B, ...)
            x = update(x, eps, alpha_bar[i], alpha_bar[i + 1], ks[i + 1] == 0)
            if states is not None:
                states.append(x)
    k = torch.tensor(ks)
    return DDPMSolution(x=x, nfe=len(ks) - 1, trajectory=torch.stack(states) if states is not None else None,
                        k=k, times=1.0 - k.double() / schedule.T)


def ancestral_sample(eps_model: EpsModel, x_T: Tensor, schedule: DDPMSchedule, *, steps: int | None = None,
                     posterior_variance: bool = False, generator: torch.Generator | None = None,
                     return_trajectory: bool = False) -> DDPMSolution:
    """DDPM's ancestral sampler p(x_{k'} | x_k), from noise ``x_T`` to data (lesson 01).

    With the full chain (k' = k - 1) this is Algorithm 2 of the DDPM paper::

        x_{k-1} = (x_k - beta_k / sqrt(1 - alpha_bar_k) eps(x_k, t_k)) / sqrt(alpha_k) + sigma_k z,

    with sigma_k^2 = beta_k (or the posterior variance beta_k (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k)
    when ``posterior_variance``) and no noise at the last step. With ``steps < T`` the chain is
    respaced as in Improved DDPM: for consecutive kept indices k > k', beta = 1 - alpha_bar_k / alpha_bar_k'.

    Args:
        eps_model: ``eps_model(x_noisy, t)`` -> predicted noise, t = 1 - k / T of shape (B,).
        x_T: the starting noise, shape (B, ...), usually N(0, I).
        schedule: the DDPM schedule the model was trained with.
        steps: number of model calls (None: all T).
        posterior_variance: use the posterior variance instead of beta.
        generator: the source of the per-step noise.
        return_trajectory: keep every state.

    Returns:
        A :class:`DDPMSolution`.
    """

    def update(x: Tensor, eps: Tensor, ab: float, ab_prev: float, last: bool) -> Tensor:
        beta = 1.0 - ab / ab_prev
        mean = (x - (beta / math.sqrt(1.0 - ab)) * eps) / math.sqrt(1.0 - beta)  # (B, ...)
        if last:
            return mean
        var = beta * (1.0 - ab_prev) / (1.0 - ab) if posterior_variance else beta
        return mean + math.sqrt(var) * randn_like(x, generator=generator)

    return _sample_loop(eps_model, x_T, schedule, steps, update, return_trajectory)


def ddim_sample(eps_model: EpsModel, x_T: Tensor, schedule: DDPMSchedule, *, steps: int = 50, eta: float = 0.0,
                clip_denoised: float | None = None, generator: torch.Generator | None = None,
                return_trajectory: bool = False) -> DDPMSolution:
    """The DDIM sampler (deterministic for ``eta = 0``), from noise ``x_T`` to data (lesson 01).

    For consecutive kept indices k > k' (k' = 0 at the end, alpha_bar_0 = 1)::

        x_data_hat = (x_k - sqrt(1 - alpha_bar_k) eps) / sqrt(alpha_bar_k)
        s^2 = eta^2 (1 - alpha_bar_k') / (1 - alpha_bar_k) (1 - alpha_bar_k / alpha_bar_k')
        x_k' = sqrt(alpha_bar_k') x_data_hat + sqrt(1 - alpha_bar_k' - s^2) eps + s z.

    ``eta = 1`` is the respaced ancestral sampler with posterior variance. With ``eta = 0`` it is
    a first-order solver of the probability-flow ODE of lesson 04.

    Args:
        eps_model: ``eps_model(x_noisy, t)`` with t = 1 - k / T of shape (B,).
        x_T: starting noise, shape (B, ...).
        schedule: the DDPM schedule.
        steps: number of model calls, 1..T.
        eta: the amount of fresh noise, >= 0.
        clip_denoised: if set, clamp ``x_data_hat`` to ``[-c, c]`` and recompute ``eps`` from it.
            Schedules whose alpha_bar_T is tiny (the cosine schedule: about 2e-9) make the first
            few-step update divide by ``sqrt(alpha_bar_T)``; clipping to the data's range (1 for
            images in [-1, 1], about 5 for the course's 2D data) keeps that error bounded.
        generator: the source of the noise when eta > 0.
        return_trajectory: keep every state.

    Returns:
        A :class:`DDPMSolution`.
    """
    if eta < 0:
        raise ValueError(f"eta must be non-negative, got {eta}")
    if clip_denoised is not None and clip_denoised <= 0:
        raise ValueError(f"clip_denoised must be positive (or None), got {clip_denoised}")

    def update(x: Tensor, eps: Tensor, ab: float, ab_prev: float, last: bool) -> Tensor:
        x_data_hat = (x - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)  # (B, ...)
        if clip_denoised is not None:
            x_data_hat = x_data_hat.clamp(-clip_denoised, clip_denoised)
            eps = (x - math.sqrt(ab) * x_data_hat) / math.sqrt(1.0 - ab)  # the eps that x_data_hat implies
        var = eta**2 * (1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev)
        x = math.sqrt(ab_prev) * x_data_hat + math.sqrt(max(1.0 - ab_prev - var, 0.0)) * eps
        if var > 0 and not last:
            x = x + math.sqrt(var) * randn_like(x, generator=generator)
        return x

    return _sample_loop(eps_model, x_T, schedule, steps, update, return_trajectory)


# --- continuous time: DDPM as a VP path (lesson 04) ---


class DDPMScheduler(VPScheduler):
    """The VP scheduler of a DDPM schedule, continuous in t (lesson 04).

    With k(t) = (1 - t) T, log alpha_bar is interpolated linearly in k between the integers
    (alpha_bar_0 = 1 at k = 0), and alpha_t = sqrt(alpha_bar(k(t))), sigma_t = sqrt(1 - alpha_bar(k(t))).
    At integer k this is exactly DDPM's forward process. Between integers the noise rate is
    constant: on k in [j - 1, j], d log alpha_bar / dk = log(1 - beta_j), so
    d_alpha_t = -T/2 log(1 - beta_j) alpha_t (about T beta_j / 2 alpha_t).
    Note alpha_0 = sqrt(alpha_bar_T) > 0 (about 0.006 for the linear schedule of T = 1000).
    """

    def __init__(self, schedule: DDPMSchedule):
        self.schedule = schedule
        self._log_ab = torch.cat([torch.zeros(1, dtype=torch.float64), schedule.alpha_bars.log()])  # (T+1,)
        self._cache: dict = {}

    def __repr__(self) -> str:
        return f"DDPMScheduler(T={self.schedule.T})"

    def _interp(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """(log alpha_bar(k(t)), d log alpha_bar / dk), each the shape of ``t``."""
        key = (t.device, t.dtype)
        if key not in self._cache:
            self._cache[key] = self._log_ab.to(device=t.device, dtype=t.dtype)
        log_ab = self._cache[key]  # (T+1,)
        T = self.schedule.T
        k = ((1.0 - t) * T).clamp(0.0, float(T))
        j = k.floor().clamp(max=T - 1).long()
        slope = log_ab[j + 1] - log_ab[j]
        return log_ab[j] + (k - j) * slope, slope

    def alpha(self, t: Tensor) -> Tensor:
        return torch.exp(0.5 * self._interp(t)[0])

    def d_alpha(self, t: Tensor) -> Tensor:
        log_ab, slope = self._interp(t)
        return (-0.5 * self.schedule.T) * slope * torch.exp(0.5 * log_ab)

    def time_at_snr(self, snr: Tensor | float, *, iters: int = 60) -> Tensor:
        """The exact inverse of :meth:`snr` on the interpolated schedule (``iters`` unused).

        alpha / sigma = snr means log alpha_bar = log(snr^2 / (1 + snr^2)); the piece of the log-linear
        interpolation holding that value is found by ``searchsorted``. SNRs below alpha_0 / sigma_0
        (k = T) give t = 0, ``inf`` gives t = 1.
        """
        snr = torch.as_tensor(snr).to(torch.float64)
        if bool(torch.isnan(snr).any()) or bool((snr < 0).any()):
            raise ValueError("snr must be non-negative (alpha_t / sigma_t >= 0; inf for the data end)")
        T = self.schedule.T
        neg = (-self._log_ab).to(snr.device)  # (T+1,) increasing from 0
        target = torch.log1p(snr.square().reciprocal())  # -log(snr^2 / (1 + snr^2)) >= 0; 0 for inf
        j = (torch.searchsorted(neg, target.reshape(-1), right=True) - 1).clamp(0, T - 1).reshape(target.shape)
        k = j + (target - neg[j]) / (neg[j + 1] - neg[j])
        return (1.0 - k.clamp(0.0, float(T)) / T).clamp(0.0, 1.0)

    def sigma(self, t: Tensor) -> Tensor:
        # 1 - alpha_bar = -expm1(log alpha_bar) >= 0; abs() turns the -0.0 of t = 1 into +0.0 (so snr = +inf)
        return torch.sqrt(torch.expm1(self._interp(t)[0]).abs())


class DDPMVelocity:
    """A DDPM epsilon-model seen as a velocity field v(x, t) on the matching VP path (lesson 04).

    On the affine path of :class:`DDPMScheduler`, x_t = alpha_t x_1 + sigma_t x_0, an
    epsilon-prediction eps(x, t) (an estimate of E[x_0 | x_t = x]) gives the probability-flow
    velocity::

        v(x, t) = (d_alpha_t / alpha_t) x + (d_sigma_t - d_alpha_t sigma_t / alpha_t) eps(x, t).

    This is exact when the model is the exact conditional mean on the interpolated path. The
    approximations are (1) between integer k the path is DDPM's schedule interpolated
    log-linearly, and the model is queried at non-integer k = (1 - t) T, i.e. at times between
    those it was trained on, and (2) the source is taken as N(0, I) although alpha_0 is not 0.
    The field is singular at t = 1 (sigma_1 = 0) and the model never saw k < 1: integrate from
    t = 0 to :attr:`t_max` = 1 - 1/T (k = 1) and finish with :meth:`denoise`, exactly DDPM's
    own last step::

        v = ddpm_to_velocity(eps_model, schedule)
        x = ode_solve(v, x_T, method="heun", steps=50, t1=v.t_max).x
        x_data = v.denoise(x, v.t_max)
    """

    def __init__(self, eps_model: EpsModel, schedule: DDPMSchedule):
        self.eps_model = eps_model
        self.schedule = schedule
        self.path = AffinePath(DDPMScheduler(schedule))

    @property
    def t_max(self) -> float:
        """1 - 1/T, the course time of k = 1 (the last noisy level)."""
        return 1.0 - 1.0 / self.schedule.T

    def __call__(self, x: Tensor, t: Tensor) -> Tensor:
        """The velocity at ``x`` (B, ...) and times ``t`` (B,)."""
        return self.path.epsilon_to_velocity(self.eps_model(x, t), x, t)

    def denoise(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Tweedie's estimate of the data, (x - sigma_t eps(x, t)) / alpha_t; ``t`` (B,) or a float."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])  # (B,)
        return self.path.epsilon_to_x1(self.eps_model(x, t), x, t)


def ddpm_to_velocity(eps_model: EpsModel, schedule: DDPMSchedule) -> DDPMVelocity:
    """Turn a DDPM epsilon-model into a velocity field ``v(x, t)`` (see :class:`DDPMVelocity`)."""
    return DDPMVelocity(eps_model, schedule)
