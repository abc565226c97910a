"""ODE and SDE solvers for sampling from velocity fields (lessons 02, 03, 04, 06 and 07).

A flow model generates by integrating dx/dt = v(x, t) from noise at t = 0 to data at t = 1::

    sol = ode_solve(velocity, x_0, method="midpoint", steps=50)     # sol.x: (B, ...)

``velocity(x, t)`` takes ``x`` of shape (B, ...) and ``t`` of shape (B,). Fixed-step methods
(lesson 07) and their orders: ``euler`` (1), ``midpoint`` (2), ``heun`` (2), ``rk4`` (4), using
1, 2, 2 and 4 evaluations per step; ``dopri5`` is the adaptive Dormand-Prince 5(4) pair with
error control (lesson 02). Integrating from ``t0 > t1`` runs backwards (encoding data to noise,
likelihoods). :func:`sde_solve` is Euler-Maruyama for SDEs with the same marginals (lesson 04).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from tutorlib.couplings import Coupling
from tutorlib.paths import randn_like
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "METHODS",
    "ODESolution",
    "SDESolution",
    "ode_solve",
    "reflow_coupling",
    "sde_solve",
    "steps_for_nfe",
    "velocity_to_sde_drift",
]

VelocityField = Callable[[Tensor, Tensor], Tensor]


@dataclass
class ODESolution:
    """The result of :func:`ode_solve`."""

    x: Tensor  # (B, ...) the state at t1
    nfe: int  # number of velocity evaluations
    trajectory: Tensor | None  # (S+1, B, ...) states at `times`, or None unless asked
    times: Tensor  # (S+1,) float64 CPU: the time grid (fixed steps) or t0 and the accepted times (dopri5)


@dataclass
class SDESolution(ODESolution):
    """The result of :func:`sde_solve` (``nfe`` counts drift evaluations)."""


# --- fixed-step methods: one step from t to t + h; f(x, t) takes a Python float t ---

def _euler(f, x: Tensor, t: float, h: float) -> Tensor:
    return x.add(f(x, t), alpha=h)


def _midpoint(f, x: Tensor, t: float, h: float) -> Tensor:
    return x.add(f(x.add(f(x, t), alpha=0.5 * h), t + 0.5 * h), alpha=h)


def _heun(f, x: Tensor, t: float, h: float) -> Tensor:
    k1 = f(x, t)
    k2 = f(x.add(k1, alpha=h), t + h)
    return x.add(k1 + k2, alpha=0.5 * h)


def _rk4(f, x: Tensor, t: float, h: float) -> Tensor:
    k1 = f(x, t)
    k2 = f(x.add(k1, alpha=0.5 * h), t + 0.5 * h)
    k3 = f(x.add(k2, alpha=0.5 * h), t + 0.5 * h)
    k4 = f(x.add(k3, alpha=h), t + h)
    return x.add(k1 + 2.0 * (k2 + k3) + k4, alpha=h / 6.0)


_FIXED_STEP = {"euler": (_euler, 1), "midpoint": (_midpoint, 2), "heun": (_heun, 2), "rk4": (_rk4, 4)}
METHODS = (*_FIXED_STEP, "dopri5")  # the valid values of ``method``


def _time_grid(time_grid: Tensor | None, steps: int, t0: float, t1: float) -> list[float]:
    """The integration times as Python floats (one host copy, before any step)."""
    if time_grid is None:
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        if t0 == t1:
            raise ValueError("t0 and t1 must differ")
        return torch.linspace(float(t0), float(t1), steps + 1, dtype=torch.float64).tolist()
    grid = torch.as_tensor(time_grid).detach().to("cpu", torch.float64)
    if grid.ndim != 1 or len(grid) < 2:
        raise ValueError(f"time_grid must be a 1D tensor of at least 2 times, got shape {tuple(grid.shape)}")
    d = grid.diff()
    if not (bool((d > 0).all()) or bool((d < 0).all())):
        raise ValueError("time_grid must be strictly monotone (increasing, or decreasing to run backwards)")
    return grid.tolist()


def steps_for_nfe(method: str, nfe: int) -> int:
    """The number of steps of a fixed-step ``method`` that costs exactly ``nfe`` velocity evaluations.

    Euler evaluates the field once per step, midpoint and Heun twice, RK4 four times.

    Raises:
        ValueError: an adaptive or unknown method, or an ``nfe`` the method's stages do not divide.
    """
    if method not in _FIXED_STEP:
        raise ValueError(f"steps_for_nfe needs a fixed-step method ({', '.join(_FIXED_STEP)}), got {method!r}")
    stages = _FIXED_STEP[method][1]
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < stages or nfe % stages:
        raise ValueError(f"{method} costs {stages} evaluation(s) per step, so nfe must be a positive multiple of "
                         f"{stages}, got {nfe!r}")
    return nfe // stages


def ode_solve(velocity: VelocityField, x_0: Tensor, *, method: str = "euler", steps: int = 100,
              time_grid: Tensor | None = None, t0: float = 0.0, t1: float = 1.0, atol: float = 1e-5,
              rtol: float = 1e-5, max_steps: int = 10_000, return_trajectory: bool = False,
              enable_grad: bool = False) -> ODESolution:
    """Integrate dx/dt = velocity(x, t) from ``t0`` to ``t1`` starting at ``x_0``.

    Args:
        velocity: ``velocity(x, t)`` with x (B, ...) and t (B,) -> (B, ...).
        x_0: the initial state at ``t0``, shape (B, ...).
        method: one of ``METHODS``: "euler", "midpoint", "heun", "rk4" (fixed steps) or
            "dopri5" (adaptive).
        steps: number of uniform steps for the fixed-step methods (ignored by dopri5).
        time_grid: a strictly monotone 1D tensor of times; overrides ``steps``, ``t0`` and
            ``t1``. Fixed-step methods step between its entries; dopri5 lands on each of them.
        t0, t1: start and end times; ``t0 > t1`` integrates backwards.
        atol, rtol: dopri5's absolute and relative tolerances (RMS norm over all elements:
            err = rms((x5 - x4) / (atol + rtol max(|x|, |x_new|))) <= 1).
        max_steps: dopri5 raises RuntimeError after this many attempted steps.
        return_trajectory: also return the states at every grid / accepted time.
        enable_grad: track gradients through the solve (default: run under ``torch.no_grad``).

    Returns:
        An :class:`ODESolution` (x, nfe, trajectory, times).

    Raises:
        ValueError: unknown method, or a bad grid.
        RuntimeError: dopri5 exceeded ``max_steps`` or its step size underflowed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown ODE method {method!r}; valid methods are: {', '.join(METHODS)}")
    grid = _time_grid(time_grid, 1 if method == "dopri5" else steps, t0, t1)  # dopri5 alone: [t0, t1]
    with torch.set_grad_enabled(enable_grad):
        if method == "dopri5":
            return _dopri5(velocity, x_0, grid, atol, rtol, max_steps, return_trajectory)
        step, stages = _FIXED_STEP[method]

        def f(x: Tensor, t: float) -> Tensor:
            return velocity(x, batch_times(t, x))  # t: (B,), one shared value (stride 0)

        x = x_0
        states = [x] if return_trajectory else None
        for t_a, t_b in zip(grid[:-1], grid[1:]):
            x = step(f, x, t_a, t_b - t_a)  # (B, ...)
            if states is not None:
                states.append(x)
        return ODESolution(x=x, nfe=stages * (len(grid) - 1),
                           trajectory=torch.stack(states) if states is not None else None,
                           times=torch.tensor(grid, dtype=torch.float64))


# --- Dormand-Prince 5(4): tableau, FSAL, Hairer's initial step, error control ---

_DP_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_DP_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_DP_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)  # 5th order, k1..k6
_DP_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)  # k1..k7
_DP_E = tuple(b5 - b4 for b5, b4 in zip((*_DP_B, 0.0), _DP_B4))  # error weights, k1..k7


def _combine(x: Tensor, h: float, coeffs, ks) -> Tensor:
    """x + h sum_i coeffs[i] ks[i] (zero coefficients skipped)."""
    out = x
    for c, k in zip(coeffs, ks):
        if c != 0.0:
            out = out.add(k, alpha=h * c)
    return out


def _rms(v: Tensor) -> float:
    return v.square().mean().sqrt().item()


def _dopri5(velocity: VelocityField, x_0: Tensor, grid: list[float], atol: float, rtol: float,
            max_steps: int, return_trajectory: bool) -> ODESolution:
    nfe = 0

    def f(x: Tensor, t: float) -> Tensor:
        nonlocal nfe
        nfe += 1
        return velocity(x, batch_times(t, x))  # t: (B,), one shared value (stride 0)

    direction = 1.0 if grid[-1] > grid[0] else -1.0
    t, x = grid[0], x_0
    k1 = f(x, t)
    # Initial step (Hairer, Norsett & Wanner, "Solving ODEs I", II.4).
    scale = atol + rtol * x.abs()
    d0, d1 = _rms(x / scale), _rms(k1 / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    k_probe = f(x.add(k1, alpha=direction * h0), t + direction * h0)
    d2 = _rms((k_probe - k1) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** 0.2
    h = min(100 * h0, h1, abs(grid[-1] - grid[0]))  # magnitude of the next step

    states, times = ([x] if return_trajectory else None), [t]
    attempts = 0
    for target in grid[1:]:
        while (target - t) * direction > 0:
            attempts += 1
            if attempts > max_steps:
                raise RuntimeError(
                    f"dopri5 needed more than max_steps={max_steps} steps (stopped at t={t:.6g}, step {h:.3g}); "
                    "loosen atol/rtol, raise max_steps, or check the velocity field for NaNs or stiffness"
                )
            remaining = abs(target - t)
            h_try = min(h, remaining)
            hs = direction * h_try  # signed step
            ks = [k1]
            for c, a in zip(_DP_C, _DP_A):
                ks.append(f(_combine(x, hs, a, ks), t + c * hs))
            x_new = _combine(x, hs, _DP_B, ks)  # (B, ...) 5th-order solution
            t_new = target if h_try == remaining else t + hs
            ks.append(f(x_new, t_new))  # k7 = f at the new point: the next k1 if accepted (FSAL)
            err_vec = _combine(torch.zeros_like(x), hs, _DP_E, ks)
            err = _rms(err_vec / (atol + rtol * torch.maximum(x.abs(), x_new.abs())))
            factor = 0.2 if not math.isfinite(err) else (10.0 if err == 0.0 else min(10.0, max(0.2, 0.9 * err**-0.2)))
            if math.isfinite(err) and err <= 1.0:  # accept
                t, x, k1 = t_new, x_new, ks[-1]
                times.append(t)
                if states is not None:
                    states.append(x)
                # A step shortened to land on a grid time says nothing against the longer proposal.
                h = max(h_try * factor, h) if h_try < h else h_try * factor
            else:  # reject and retry with a smaller step
                h = h_try * factor
                if h < 1e-12 * max(1.0, abs(t)):
                    raise RuntimeError(f"dopri5 step size underflow at t={t:.6g} (error {err:.3g}); "
                                       "the velocity field may be singular or return NaN there")
    return ODESolution(x=x, nfe=nfe, trajectory=torch.stack(states) if states is not None else None,
                       times=torch.tensor(times, dtype=torch.float64))


# --- SDEs (lesson 04) ---

def sde_solve(drift: VelocityField, diffusion: VelocityField, x_0: Tensor, *, steps: int = 100,
              time_grid: Tensor | None = None, t0: float = 0.0, t1: float = 1.0,
              generator: torch.Generator | None = None, return_trajectory: bool = False,
              enable_grad: bool = False) -> SDESolution:
    """Euler-Maruyama for dx = drift(x, t) dt + diffusion(x, t) dW from ``t0`` to ``t1``.

    x_{n+1} = x_n + h drift(x_n, t_n) + g(x_n, t_n) sqrt(|h|) z_n, z_n ~ N(0, I) from ``generator``.

    Args:
        drift: ``drift(x, t)`` -> (B, ...).
        diffusion: ``diffusion(x, t)`` -> g, shape (B,) (one scalar per sample) or (B, ...).
        x_0: initial state, shape (B, ...).
        steps, time_grid, t0, t1, return_trajectory, enable_grad: as in :func:`ode_solve`.
        generator: the source of the Brownian increments.

    Returns:
        An :class:`SDESolution` (``nfe`` counts drift evaluations).
    """
    grid = _time_grid(time_grid, steps, t0, t1)
    x = x_0
    states = [x] if return_trajectory else None
    with torch.set_grad_enabled(enable_grad):
        for t_a, t_b in zip(grid[:-1], grid[1:]):
            h = t_b - t_a
            t = batch_times(t_a, x)  # (B,), one shared value (stride 0)
            g = diffusion(x, t)
            g = expand_t(g, x) if g.ndim == 1 else g  # (B, 1, ...) or (B, ...)
            x = x.add(drift(x, t), alpha=h) + (math.sqrt(abs(h)) * g) * randn_like(x, generator=generator)
            if states is not None:
                states.append(x)
    return SDESolution(x=x, nfe=len(grid) - 1, trajectory=torch.stack(states) if states is not None else None,
                       times=torch.tensor(grid, dtype=torch.float64))


def velocity_to_sde_drift(velocity: VelocityField, score: VelocityField, diffusion: VelocityField) -> VelocityField:
    """The drift of the SDE with the same marginals p_t as the flow dx = v dt (lesson 04).

    dx = [v(x, t) + g(x, t)^2 / 2 grad log p_t(x)] dt + g(x, t) dW, forwards in t (noise to
    data): the Fokker-Planck equation of this SDE is the continuity equation of v for any g.

    Args:
        velocity: ``velocity(x, t)``.
        score: ``score(x, t)`` = grad_x log p_t(x) (e.g. ``path.velocity_to_score``).
        diffusion: ``diffusion(x, t)`` -> g, shape (B,) or (B, ...), the same as passed to
            :func:`sde_solve`.

    Returns:
        ``drift(x, t)``.
    """

    def drift(x: Tensor, t: Tensor) -> Tensor:
        g = diffusion(x, t)
        g = expand_t(g, x) if g.ndim == 1 else g
        return velocity(x, t) + 0.5 * g.square() * score(x, t)

    return drift


# --- reflow (lesson 06) ---

def reflow_coupling(velocity: VelocityField, x_0: Tensor, *, steps: int = 100, method: str = "euler") -> Coupling:
    """The rectified-flow coupling: pair noise ``x_0`` with the model's sample from it.

    Integrates ``velocity`` from t = 0 to 1 without gradients and returns
    ``Coupling(x_0, x_1_generated)``; a new flow trained on these pairs (reflow) has straighter
    paths (lesson 06).

    Args:
        velocity: the trained field ``velocity(x, t)``.
        x_0: noise, shape (B, ...).
        steps: solver steps (ignored by dopri5).
        method: a solver from ``METHODS``.
    """
    return Coupling(x_0, ode_solve(velocity, x_0, method=method, steps=steps).x)
