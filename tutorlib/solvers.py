"""ODE and SDE solvers for sampling from velocity fields (lessons 02, 03, 04, 06 and 07).

A flow model generates by integrating dx/dt = v(x, t) from noise at t = 0 to data at t = 1::

    sol = ode_solve(velocity, x_0, method="midpoint", steps=50)     # sol.x: (B, ...)

``velocity(x, t)`` takes ``x`` of shape (B, ...) and ``t`` of shape (B,). Fixed-step methods
(lesson 07) and their orders: ``euler`` (1), ``midpoint`` (2), ``heun`` (2), ``rk4`` (4), using
1, 2, 2 and 4 evaluations per step; ``dopri5`` is the adaptive Dormand-Prince 5(4) pair with
error control (lesson 02). Integrating from ``t0 > t1`` runs backwards (encoding data to noise,
likelihoods). :func:`sde_solve` is Euler-Maruyama for SDEs with the same marginals (lesson 04):
:func:`velocity_to_sde_drift` gives the drift and :func:`reverse_diffusion` a family of noise levels.

Time grids (lesson 07): the fixed-step methods step between the entries of ``time_grid``. Besides the
uniform grid, :func:`power_time_grid` puts the steps closer together near the data, and
:func:`optimal_time_grid` chooses the Euler grid of a given number of steps that a dynamic program
finds best for one trained field (in the spirit of *Bellman Optimal Step-size Straightening*):
:func:`euler_jump_costs` measures every possible Euler jump against a fine reference solution and
:func:`bellman_grid` picks the cheapest chain of jumps. :func:`fit_time_grid` instead fits the step
times of an Euler grid by gradient descent on the *global* error against an accurate solution (the
step times alone of what *Bespoke Solvers for Generative Flow Models* learns).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from tutorlib.couplings import Coupling
from tutorlib.paths import AffinePath, randn_like
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "METHODS",
    "affine_sde_drift",
    "BellmanGrid",
    "ODESolution",
    "SDESolution",
    "bellman_grid",
    "euler_jump_costs",
    "fit_time_grid",
    "reduced_precision",
    "FittedGrid",
    "ode_solve",
    "optimal_time_grid",
    "power_time_grid",
    "reflow_coupling",
    "reverse_diffusion",
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


def reduced_precision(velocity: VelocityField, dtype: torch.dtype | None = torch.bfloat16) -> VelocityField:
    """``velocity`` evaluated under ``torch.autocast(dtype)``: a faster network, the same solver.

    Inside the network, matrix products and convolutions run in ``dtype`` (bfloat16: 8 bits of mantissa);
    the solver's state, its time grid and its arithmetic stay in ``x``'s dtype, and the returned velocity is
    cast back to it. Lesson 09 measures what this changes (quality within its noise, about half the time on
    a CPU with bfloat16 instructions); :func:`tutorlib.device.fast_sampling_dtype` says where it pays.
    For sampling with fixed-step methods: dopri5's error control would read bfloat16's rounding as error.

    Args:
        velocity: ``velocity(x, t)`` as for :func:`ode_solve`.
        dtype: ``torch.bfloat16`` or ``torch.float16``; ``None`` returns ``velocity`` unchanged.

    Returns:
        ``velocity(x, t)`` -> ``(B, ...)`` in ``x.dtype``.
    """
    if dtype is None:
        return velocity
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"reduced_precision takes torch.bfloat16 or torch.float16 (or None), got {dtype}")

    def low(x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(x.device.type, dtype=dtype):
            v = velocity(x, t)
        return v.to(x.dtype)

    return low


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


# --- time grids (lesson 07) ---

def power_time_grid(steps: int, rho: float, *, t0: float = 0.0, t1: float = 1.0) -> Tensor:
    """A grid of ``steps`` steps from ``t0`` to ``t1`` that is uniform in ``u = 1 - (1 - tau)^(1 / rho)``.

    ``t_k = t0 + (t1 - t0) (1 - (1 - k / steps)^rho)``: ``rho = 1`` is the uniform grid; ``rho > 1``
    takes long steps first and short ones near ``t1`` (the data end, where a flow's paths bend as
    the posterior over the data point sharpens); ``rho < 1`` the reverse.

    Args:
        steps: number of steps (>= 1).
        rho: the warp exponent (> 0).
        t0, t1: the end points.

    Returns:
        ``(steps + 1,)`` float64 CPU tensor, strictly monotone, exactly ``t0`` and ``t1`` at the ends.

    Raises:
        ValueError: ``steps < 1`` or ``rho <= 0``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not rho > 0:
        raise ValueError(f"rho must be positive (1 is the uniform grid), got {rho!r}")
    k = torch.arange(steps + 1, dtype=torch.float64) / steps  # (steps + 1,)
    grid = t0 + (t1 - t0) * (1.0 - (1.0 - k) ** rho)
    grid[0], grid[-1] = t0, t1
    return grid


def euler_jump_costs(trajectory: Tensor, velocities: Tensor, times: Tensor) -> Tensor:
    """The error of every Euler jump between the states of a reference solution (lesson 07).

    For reference states ``x_i`` at times ``t_i`` (a fine, accurate solution) and the field
    ``v_i = v(x_i, t_i)`` there, the Euler jump from ``i`` to ``j > i`` lands at ``x_i + (t_j - t_i) v_i``;
    its cost is the root-mean-square distance to ``x_j`` over the batch::

        C[i, j] = sqrt(mean_b || x_i + (t_j - t_i) v_i - x_j ||^2),   C[i, j] = inf for j <= i.

    The jumps reuse the stored velocities, so the matrix costs no network evaluation. Summed along a
    grid, these local errors bound its global error up to how the flow spreads errors out.

    Args:
        trajectory: ``(N + 1, B, ...)`` reference states at ``times``.
        velocities: ``(N + 1, B, ...)`` the field at those states.
        times: ``(N + 1,)`` strictly increasing times.

    Returns:
        ``(N + 1, N + 1)`` float64 CPU tensor.

    Raises:
        ValueError: shapes that do not match, or times that do not increase.
    """
    if trajectory.shape != velocities.shape or trajectory.dim() < 2:
        raise ValueError(f"trajectory and velocities must both be (N + 1, B, ...), got {tuple(trajectory.shape)} "
                         f"and {tuple(velocities.shape)}")
    times = torch.as_tensor(times).detach().to("cpu", torch.float64).reshape(-1)
    if len(times) != trajectory.shape[0] or len(times) < 2 or not bool((times.diff() > 0).all()):
        raise ValueError(f"times must increase strictly and have one entry per state ({trajectory.shape[0]}), "
                         f"got {len(times)}")
    n = len(times)
    X = trajectory.detach().reshape(n, trajectory.shape[1], -1).double()  # (N+1, B, D)
    V = velocities.detach().reshape(n, trajectory.shape[1], -1).double()  # (N+1, B, D)
    tt = times.to(X.device)
    costs = torch.full((n, n), math.inf, dtype=torch.float64)
    for i in range(n - 1):
        h = (tt[i + 1:] - tt[i])[:, None, None]  # (n-i-1, 1, 1)
        err = X[i][None] + h * V[i][None] - X[i + 1:]  # (n-i-1, B, D)
        costs[i, i + 1:] = err.square().sum(-1).mean(-1).sqrt().cpu()
    return costs


@dataclass
class BellmanGrid:
    """The result of :func:`bellman_grid` / :func:`optimal_time_grid`."""

    indices: list[int]  # the chosen reference indices, 0 = i_0 < i_1 < ... < i_K = N
    times: Tensor  # (K + 1,) float64: the chosen times, for ``ode_solve(time_grid=...)``
    cost: float  # the summed jump costs of the chosen grid


def bellman_grid(costs: Tensor, steps: int, times: Tensor | None = None) -> BellmanGrid:
    """The chain of ``steps`` jumps from index 0 to index N with the least summed cost (dynamic programming).

    With ``J_k(j)`` the least cost of reaching ``j`` in ``k`` jumps, Bellman's recursion is
    ``J_1(j) = C[0, j]`` and ``J_k(j) = min_{i < j} J_{k-1}(i) + C[i, j]``; the answer is ``J_K(N)``,
    and the grid is read back from the minimisers. ``O(K N^2)`` work.

    Args:
        costs: ``(N + 1, N + 1)`` jump costs, ``inf`` where a jump is not allowed (e.g. from
            :func:`euler_jump_costs`).
        steps: ``K``, the number of jumps, from 1 to N.
        times: optional ``(N + 1,)`` times of the indices (filled into the result; default ``i / N``).

    Returns:
        A :class:`BellmanGrid`.

    Raises:
        ValueError: a non-square cost matrix, or ``steps`` outside 1..N.
    """
    C = torch.as_tensor(costs, dtype=torch.float64).cpu()
    if C.dim() != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 2:
        raise ValueError(f"costs must be a square (N + 1, N + 1) matrix with N >= 1, got {tuple(C.shape)}")
    n = C.shape[0] - 1
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= n:
        raise ValueError(f"steps must be an int from 1 to N = {n} (the reference's steps), got {steps!r}")
    J = C[0].clone()  # (N+1,): J_1
    parents = []
    for _ in range(steps - 1):
        total = J[:, None] + C  # (N+1, N+1): reach i in k-1 jumps, then jump i -> j
        J, arg = total.min(0)
        parents.append(arg)
    indices = [n]
    for arg in reversed(parents):
        indices.append(int(arg[indices[-1]]))
    indices.append(0)
    indices.reverse()
    grid = (torch.arange(n + 1, dtype=torch.float64) / n if times is None
            else torch.as_tensor(times).detach().to("cpu", torch.float64).reshape(-1))
    return BellmanGrid(indices=indices, times=grid[indices], cost=float(J[n]))


def optimal_time_grid(velocity: VelocityField, x_0: Tensor, steps: int, *, candidates: int = 128,
                      reference_method: str = "rk4", reference_substeps: int = 4) -> BellmanGrid:
    """The Euler grid of ``steps`` steps with the least summed local error for one field (lesson 07).

    A step-size search in the spirit of *Bellman Optimal Step-size Straightening* (BOSS, its first
    stage; the paper then fine-tunes the network on the grid, which this does not): solve accurately
    from ``x_0`` (``reference_method`` with ``reference_substeps`` steps between each pair of the
    ``candidates + 1`` uniform candidate times), evaluate the field at the ``candidates + 1`` reference
    states, cost every Euler jump between candidates with :func:`euler_jump_costs` and choose the
    cheapest chain of ``steps`` jumps with :func:`bellman_grid`. It costs about
    ``(stages x reference_substeps + 1) x (candidates + 1)`` evaluations on ``x_0``'s batch, once per field.

    Args:
        velocity: ``velocity(x, t)``.
        x_0: noise ``(B, ...)`` that stands for the samples the grid will serve (a few hundred points).
        steps: the number of Euler steps of the grid.
        candidates: the candidate times are ``i / candidates``, ``i = 0 .. candidates``.
        reference_method: a fixed-step method of :data:`METHODS` for the reference.
        reference_substeps: its steps per candidate interval.

    Returns:
        A :class:`BellmanGrid`; ``.times`` goes to ``ode_solve(..., method="euler", time_grid=...)``.
    """
    if reference_method not in _FIXED_STEP:
        raise ValueError(f"reference_method must be a fixed-step method ({', '.join(_FIXED_STEP)}), "
                         f"got {reference_method!r}")
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates must be a positive int, got {candidates!r}")
    if isinstance(reference_substeps, bool) or not isinstance(reference_substeps, int) or reference_substeps < 1:
        raise ValueError(f"reference_substeps must be a positive int, got {reference_substeps!r}")
    fine = ode_solve(velocity, x_0, method=reference_method, steps=candidates * reference_substeps,
                     return_trajectory=True)
    states = fine.trajectory[::reference_substeps]  # (candidates + 1, B, ...)
    times = fine.times[::reference_substeps]  # (candidates + 1,)
    with torch.no_grad():
        flat = states.reshape(-1, *states.shape[2:])  # ((candidates + 1) B, ...)
        t_flat = times.to(flat.device, flat.dtype).repeat_interleave(states.shape[1])  # ((candidates + 1) B,)
        v = velocity(flat, t_flat).reshape(states.shape)
    return bellman_grid(euler_jump_costs(states, v, times), steps, times)


@dataclass
class FittedGrid:
    """The result of :func:`fit_time_grid`."""

    times: Tensor  # (K + 1,) float64 CPU: the fitted grid, 0 = t_0 < ... < t_K = 1
    losses: list[float]  # the mean squared global error at each iteration (before its update)


def fit_time_grid(velocity: VelocityField, x_0: Tensor, target: Tensor, steps: int, *, iters: int = 150,
                  lr: float = 0.05, init: Tensor | None = None) -> FittedGrid:
    """Fit the times of a ``steps``-step Euler grid from 0 to 1 to the global error (lesson 07).

    The step sizes are a softmax, ``h = softmax(theta)``, so the grid ``t_k = h_1 + ... + h_k`` always
    runs from 0 to 1 and increases; Adam minimises ``mean_b || Euler_grid(x_0)_b - target_b ||^2``,
    differentiating through the ``steps`` Euler steps (the field must be differentiable in ``x`` and
    ``t``; its own parameters get no gradient). Each iteration costs ``steps`` evaluations and their
    backward pass on ``x_0``'s batch.

    Args:
        velocity: ``velocity(x, t)``.
        x_0: noise ``(B, ...)``.
        target: accurate solutions from ``x_0`` at t = 1 (e.g. RK4 with many steps), ``(B, ...)``.
        steps: ``K``, the number of Euler steps.
        iters: Adam iterations.
        lr: Adam's learning rate on ``theta``.
        init: a starting grid ``(K + 1,)`` from 0 to 1 (default: uniform).

    Returns:
        A :class:`FittedGrid`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if target.shape != x_0.shape:
        raise ValueError(f"target must have x_0's shape {tuple(x_0.shape)}, got {tuple(target.shape)}")
    if init is None:
        theta0 = torch.zeros(steps, dtype=torch.float64)
    else:
        grid = torch.as_tensor(init).detach().to("cpu", torch.float64).reshape(-1)
        if len(grid) != steps + 1 or not bool((grid.diff() > 0).all()) or grid[0] != 0 or grid[-1] != 1:
            raise ValueError(f"init must increase strictly from 0 to 1 with {steps + 1} times, got {grid.tolist()}")
        theta0 = grid.diff().log()
    theta = theta0.to(x_0.device).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    losses = []
    x_0, target = x_0.detach(), target.detach()
    for _ in range(iters):
        h = torch.softmax(theta, 0).to(x_0.dtype)  # (K,) step sizes summing to 1
        t = torch.zeros((), dtype=x_0.dtype, device=x_0.device)
        x = x_0
        for k in range(steps):
            x = x + h[k] * velocity(x, t.expand(x.shape[0]))  # (B, ...)
            t = t + h[k]
        loss = (x - target).square().reshape(x.shape[0], -1).sum(1).mean()
        (grad,) = torch.autograd.grad(loss, theta)
        opt.zero_grad(set_to_none=True)
        theta.grad = grad
        opt.step()
        losses.append(float(loss.detach()))
    h = torch.softmax(theta.detach().cpu(), 0)
    times = torch.cat([torch.zeros(1, dtype=torch.float64), h.cumsum(0)])
    times[-1] = 1.0
    return FittedGrid(times=times, losses=losses)


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


def affine_sde_drift(velocity: VelocityField, path: AffinePath, diffusion: VelocityField) -> VelocityField:
    """:func:`velocity_to_sde_drift` for a field on an affine path, with one evaluation of it per call (lesson 04).

    The score comes from the same velocity by the path's conversion, score = ``path.velocity_to_score(v)``,
    so a step of :func:`sde_solve` costs one network evaluation, like an Euler step of the ODE::

        drift(x, t) = v + g_t^2 / 2 * path.velocity_to_score(v, x, t),   v = velocity(x, t).

    The conversion divides by sigma_t: stop short of the data end (t1 < 1) where sigma_1 = 0.

    Args:
        velocity: ``velocity(x, t)`` on ``path`` (e.g. :func:`tutorlib.ddpm.ddpm_to_velocity`'s field).
        path: its affine path.
        diffusion: ``diffusion(x, t)`` -> g, (B,) or (B, ...) (e.g. :func:`reverse_diffusion`).

    Returns:
        ``drift(x, t)``.
    """

    def drift(x: Tensor, t: Tensor) -> Tensor:
        v = velocity(x, t)
        g = diffusion(x, t)
        g = expand_t(g, x) if g.ndim == 1 else g
        return v + 0.5 * g.square() * path.velocity_to_score(v, x, t)

    return drift


def reverse_diffusion(path: AffinePath, noise: float = 1.0) -> VelocityField:
    """A diffusion coefficient g_t for :func:`sde_solve` on an affine path, scaled by ``noise`` (lesson 04).

    g_t^2 = noise^2 * 2 sigma_t^2 d/dt log(alpha_t / sigma_t) = noise^2 * 2 (sigma_t^2 d_alpha_t / alpha_t - sigma_t d_sigma_t).

    With ``noise = 1`` this is the diffusion of the time reversal of the path's forward noising SDE
    (*Score-Based Generative Modeling through Stochastic Differential Equations*): on DDPM's VP path,
    the SDE whose Euler-Maruyama steps become DDPM's ancestral sampler as the steps shrink. ``noise = 0``
    is the probability-flow ODE; every value gives the same marginals p_t when used with
    :func:`velocity_to_sde_drift`. g_t vanishes at the data end (sigma_1 = 0) and is infinite where
    alpha_t = 0 (t = 0 of the linear and cosine paths: start those at t0 > 0; DDPM's path has
    alpha_0 > 0).

    Args:
        path: the affine path of the velocity field.
        noise: the noise level, >= 0.

    Returns:
        ``diffusion(x, t)`` -> g_t, shape (B,).
    """
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (0: the probability-flow ODE, 1: the reverse SDE), "
                         f"got {noise!r}")
    scale = float(noise)

    def diffusion(x: Tensor, t: Tensor) -> Tensor:
        out = path.scheduler(batch_times(t, x))
        g2 = 2.0 * (out.sigma_t.square() * out.d_alpha_t / out.alpha_t - out.sigma_t * out.d_sigma_t)  # (B,)
        return scale * g2.clamp_min(0.0).sqrt()

    return diffusion


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
