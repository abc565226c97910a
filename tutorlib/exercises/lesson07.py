"""Exercise checks of lesson 07 (solvers and few-step generation): a third-order Runge-Kutta step, the
minimax time grid by dynamic programming, and MeanFlow's target in the paper's own clock."""

from __future__ import annotations

import itertools
import math
from typing import Callable

import torch

from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, _exception_text, _fmt,
                                     _inputs_text, batch_size, check, compare, finish, guarded_call, learner_name,
                                     rand, randn, test_field)
from tutorlib.solvers import bellman_grid

__all__ = ["check_meanflow_target_paper", "check_minimax_grid", "check_rk3_step", "minimax_grid_reference"]

_VELOCITY_HINT = Hint("exception", "the velocity is called as velocity(x, t) with x (B, D) and t (B,)",
                      match="takes|positional argument|mat1 and mat2")


# --- a third-order Runge-Kutta step -------------------------------------------------------------------


def _rk3(v, x, t, dt):
    k1 = v(x, t)
    k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = v(x - dt * k1 + 2.0 * dt * k2, t + dt)
    return x + dt / 6.0 * (k1 + 4.0 * k2 + k3)


def _step_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
    return {"velocity": test_field(g, D), "x": randn(g, B, D), "t": rand(g, B).mul(0.9),
            "dt": round(float(rand(g, 1)) * 0.2 + 0.05, 4)}


def check_rk3_step(fn: Callable, *, strict: bool | None = None,
                   time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one step of Kutta's third-order method (lesson 07).

    The learner writes ``fn(velocity, x, t, dt) -> x_next`` with ``x`` ``(B, D)``, ``t`` ``(B,)``, a float
    ``dt`` and ``velocity(x, t) -> (B, D)``, for the tableau ``c = (0, 1/2, 1)``, ``a21 = 1/2``,
    ``a31 = -1``, ``a32 = 2``, ``b = (1/6, 4/6, 1/6)``. The step size is varied between trials.
    """
    def heun(v, x, t, dt):
        k1 = v(x, t)
        return x + 0.5 * dt * (k1 + v(x + dt * k1, t + dt))

    def midpoint(v, x, t, dt):
        return x + dt * v(x + 0.5 * dt * v(x, t), t + 0.5 * dt)

    def third_stage_without_k1(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        return x + dt / 6.0 * (k1 + 4.0 * k2 + v(x + 2.0 * dt * k2, t + dt))

    def third_stage_at_k2(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        return x + dt / 6.0 * (k1 + 4.0 * k2 + v(x + dt * k2, t + dt))

    def times_unshifted(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t)
        return x + dt / 6.0 * (k1 + 4.0 * k2 + v(x - dt * k1 + 2.0 * dt * k2, t))

    def quarter_weights(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        return x + dt * (0.25 * k1 + 0.5 * k2 + 0.25 * v(x - dt * k1 + 2.0 * dt * k2, t + dt))

    def rk4(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        k3 = v(x + 0.5 * dt * k2, t + 0.5 * dt)
        return x + dt / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + v(x + dt * k3, t + dt))

    mistakes = [
        Mistake("the classic RK4 step (four stages)", rk4,
                "Kutta's third-order method has three stages and the tableau above: k3 at "
                "(x - dt k1 + 2 dt k2, t + dt), weights 1/6, 4/6, 1/6"),
        Mistake("Heun's method", heun, "Kutta's method has three stages: k1 at t, k2 at t + dt/2, k3 at t + dt"),
        Mistake("the midpoint method", midpoint, "add the third stage k3 and the weights 1/6, 4/6, 1/6"),
        Mistake("k3 taken at x + 2 dt k2 (the -dt k1 term missing)", third_stage_without_k1,
                "the third stage starts from x - dt k1 + 2 dt k2 (a31 = -1, a32 = 2)"),
        Mistake("k3 taken at x + dt k2", third_stage_at_k2, "the third stage uses a31 = -1 and a32 = 2: "
                "x - dt k1 + 2 dt k2"),
        Mistake("the stages evaluated at time t", times_unshifted,
                "stage i is evaluated at t + c_i dt: t, t + dt/2 and t + dt"),
        Mistake("the weights 1/4, 1/2, 1/4", quarter_weights, "the weights are b = (1/6, 4/6, 1/6)"),
    ]
    # Another third-order tableau (Ralston's, Heun's, SSPRK3) or RK4 differs from Kutta's step by O(dt^4),
    # about 1e-5 here: the default tolerance (1e-6 + 1e-5 |x|) would leave only a thin margin. A correct
    # float64 step matches to ~1e-15, and one with dt rounded to float32 to ~1e-8, well inside this one.
    return check(fn, _rk3, _step_inputs, name="rk3_step", mistakes=mistakes, hints=[_VELOCITY_HINT],
                 atol=1e-8, rtol=1e-7, strict=strict, time_limit_s=time_limit_s)


# --- the minimax time grid --------------------------------------------------------------------------------


def minimax_grid_reference(costs: torch.Tensor, steps: int) -> torch.Tensor:
    """The indices ``0 = i_0 < ... < i_K = N`` minimising the largest jump cost ``max_k C[i_{k-1}, i_k]``.

    Bellman's recursion with ``max`` in place of ``+``: ``J_1(j) = C[0, j]``,
    ``J_k(j) = min_{i < j} max(J_{k-1}(i), C[i, j])``. Returns an int64 tensor ``(steps + 1,)``.
    """
    C = costs.double()
    n = C.shape[0] - 1
    J = C[0].clone()
    parents = []
    for _ in range(steps - 1):
        J, arg = torch.maximum(J[:, None], C).min(0)
        parents.append(arg)
    idx = [n]
    for arg in reversed(parents):
        idx.append(int(arg[idx[-1]]))
    idx.append(0)
    return torch.tensor(idx[::-1], dtype=torch.int64)


def _largest_jump(costs: torch.Tensor, idx: list[int]) -> float:
    return max(float(costs[a, b]) for a, b in zip(idx[:-1], idx[1:]))


def _random_costs(g: torch.Generator, n: int) -> torch.Tensor:
    """Euler-like jump costs: growing with the jump's length, with random local difficulty, inf below the diagonal."""
    t = torch.arange(n + 1, dtype=torch.float64) / n
    rough = 0.2 + rand(g, n + 1)  # (N+1,) how hard the field is near each time
    gap = (t[None] - t[:, None]).clamp_min(0)  # (N+1, N+1)
    C = gap**2 * (rough[:, None] + rough[None, :]) * (1 + 0.3 * rand(g, n + 1, n + 1))
    C[~torch.triu(torch.ones(n + 1, n + 1, dtype=torch.bool), 1)] = math.inf
    return C


def check_minimax_grid(fn: Callable, *, trials: int = 6, seed: int = 0, strict: bool | None = None,
                       time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check a dynamic program for the time grid whose *largest* jump cost is smallest (lesson 07).

    The learner writes ``fn(costs, steps) -> indices``: ``costs`` is an ``(N + 1, N + 1)`` float64 matrix
    of jump costs (``inf`` where ``j <= i``), ``steps`` the number of jumps ``K``; the answer is an int64
    tensor ``(K + 1,)`` of indices ``0 = i_0 < i_1 < ... < i_K = N`` that minimises
    ``max_k costs[i_{k-1}, i_k]``. Checked on random costs with ``N`` from 6 to 11 and ``K`` from 1 to
    ``N`` (both ends included): type, shape and dtype, that ``costs`` is left unchanged, that the grid is
    valid, and that its largest jump equals the optimum found by brute force (several grids may tie;
    any of them passes).
    """
    name = learner_name(fn, "minimax_grid")
    g = torch.Generator().manual_seed(seed)
    cases = []
    for trial in range(trials):
        n = int(torch.randint(6, 12, (1,), generator=g))
        K = (1, n)[trial] if trial < 2 else int(torch.randint(2, min(n, 6), (1,), generator=g))
        cases.append((_random_costs(g, n), K))
    for trial, (C, K) in enumerate(cases, 1):
        n = C.shape[0] - 1
        inputs = {"costs": C, "steps": K}
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        args = [C.clone(), K]
        got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return finish(CheckResult(name, False, f"{_exception_text(err)} ({where})", "exception"), strict)
        if not torch.equal(args[0], C):
            return finish(CheckResult(name, False, f"{name} changed its input costs in place; work on new tensors "
                                                   f"({where})", "mutation"), strict)
        failure, _ = compare(got, torch.zeros(K + 1, dtype=torch.int64), None, math.inf, 0.0)
        if failure is not None:
            hint = ""
            if failure.kind == "shape" and isinstance(got, torch.Tensor) and got.dim() == 1:
                hint = (f" ({K} jumps visit {K + 1} indices, both ends included: 0 first, N = {n} last)"
                        if got.shape[0] in (K, K + 2) else "")
            elif failure.kind == "dtype":
                hint = " (indices are int64: torch.tensor(indices, dtype=torch.long))"
            return finish(CheckResult(name, False, f"{failure.message}{hint} ({where})", failure.kind), strict)
        idx = got.tolist()
        if idx[0] != 0 or idx[-1] != n or any(b <= a for a, b in zip(idx[:-1], idx[1:])):
            return finish(CheckResult(name, False, (
                f"the indices {idx} are not a grid: they must start at 0, end at N = {n} and increase strictly "
                f"({where})"), "value"), strict)
        best = min(_largest_jump(C, [0, *mid, n]) for mid in itertools.combinations(range(1, n), K - 1))
        mine = _largest_jump(C, idx)
        if mine > best * (1 + 1e-12):
            summed = bellman_grid(C, K).indices
            why = (" It is the grid with the least *sum* of costs (Bellman's recursion with +): here the recursion "
                   "combines the cost so far and the next jump with max(J_{k-1}(i), C[i, j])."
                   if idx == summed and _largest_jump(C, summed) > best * (1 + 1e-12) else
                   " Check the recursion J_k(j) = min_i max(J_{k-1}(i), C[i, j]) and the backtracking from N.")
            return finish(CheckResult(name, False, (
                f"not optimal: the grid {idx} has a largest jump cost of {_fmt(mine)}, but the best grid with {K} "
                f"jumps has {_fmt(best)}.{why} ({where})"), "value"), strict)
    return finish(CheckResult(name, True, f"optimal minimax grids on {trials} random cost matrices "
                                          f"(N from 6 to 11, K from 1 to N)"), strict)


# --- MeanFlow's target in the paper's clock --------------------------------------------------------------


def _paper_inputs(g: torch.Generator) -> dict:
    """A smooth random average-velocity model u(z, r, t) (the paper's clock) and one batch."""
    B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
    W, A = randn(g, D, D) / math.sqrt(D), randn(g, D, D) / math.sqrt(D)
    a, b = randn(g, D), randn(g, D)

    def u(z, r, t):
        return torch.tanh(z @ W + a * t[:, None] - 0.7 * b * r[:, None]) * (1 + t - r)[:, None] \
            + 0.3 * torch.sin(z @ A) * t[:, None] ** 2

    lo, hi = rand(g, 2, B).sort(0).values
    return {"u": u, "z_t": randn(g, B, D), "r": lo, "t": hi, "v": randn(g, B, D)}


def _paper_reference(u, z_t, r, t, v):
    _, du_dt = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return (v - (t - r)[:, None] * du_dt).detach()


def check_meanflow_target_paper(fn: Callable, *, strict: bool | None = None,
                                time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check MeanFlow's regression target in the paper's time convention (lesson 07).

    In *Mean Flows for One-step Generative Modeling* time runs from data (0) to noise (1),
    ``z_t = (1 - t) x + t eps``, and the model ``u(z, r, t)`` is the average velocity over ``[r, t]``
    (``r <= t``) with ``z_r = z_t - (t - r) u(z_t, r, t)``. The learner writes
    ``fn(u, z_t, r, t, v) -> target`` with ``v = dz_t/dt`` at ``(z_t, t)``, ``z_t``, ``v`` ``(B, D)`` and
    ``r``, ``t`` ``(B,)``; the target is ``v - (t - r) d/dt u(z_t, r, t)`` with the derivative along the
    path (a JVP with tangent ``(v, 0, 1)``). ``u`` is a random smooth function, varied between trials.
    """
    def derivative(u, z_t, r, t, v, tangent_z, tangent_r, tangent_t):
        tangents = (tangent_z, tangent_r * torch.ones_like(r), tangent_t * torch.ones_like(t))
        return torch.func.jvp(u, (z_t, r, t), tangents)[1].detach()

    def gap(r, t):
        return (t - r)[:, None]

    mistakes = [
        Mistake("v + (t - r) du/dt (the course's sign)",
                lambda u, z, r, t, v: v + gap(r, t) * derivative(u, z, r, t, v, v, 0.0, 1.0),
                "in the paper's clock z moves backwards from t to r, z_r = z_t - (t - r) u: differentiating "
                "(t - r) u = int_r^t v in t gives u = v - (t - r) du/dt"),
        Mistake("the derivative taken in r (tangent (v, 1, 0))",
                lambda u, z, r, t, v: v - gap(r, t) * derivative(u, z, r, t, v, v, 1.0, 0.0),
                "z is given at time t, so differentiate along t: the tangent is (v, 0, 1) for (z, r, t)"),
        Mistake("the partial derivative in t alone (no v . grad_z u)",
                lambda u, z, r, t, v: v - gap(r, t) * derivative(u, z, r, t, v, torch.zeros_like(z), 0.0, 1.0),
                "the derivative follows the path: dz/dt = v, so the tangent of z is v, not 0"),
        Mistake("the derivative with r moving too (tangent (v, 1, 1))",
                lambda u, z, r, t, v: v - gap(r, t) * derivative(u, z, r, t, v, v, 1.0, 1.0),
                "r is the fixed start of the interval: its tangent is 0, the tangent is (v, 0, 1) for (z, r, t)"),
        Mistake("the derivative without the explicit time (tangent (v, 0, 0))",
                lambda u, z, r, t, v: v - gap(r, t) * derivative(u, z, r, t, v, v, 0.0, 0.0),
                "moving along the path changes t as well as z: the tangent of t is 1"),
        Mistake("v alone (flow matching's target)", lambda u, z, r, t, v: v.clone(),
                "add the correction -(t - r) du/dt, computed with torch.func.jvp"),
        Mistake("the (t - r) factor missing", lambda u, z, r, t, v: v - derivative(u, z, r, t, v, v, 0.0, 1.0),
                "multiply the derivative by the interval length t - r"),
    ]
    hints = [Hint("exception", "torch.func.jvp(u, (z_t, r, t), (tangent_z, tangent_r, tangent_t)) returns "
                               "(u(z_t, r, t), the derivative); each tangent has its primal's shape",
                  match="jvp|tangent|primal"),
             Hint("exception", "t - r has shape (B,): reshape it, (t - r)[:, None], before it meets the (B, D) "
                               "derivative", match="must match the size")]
    return check(fn, _paper_reference, _paper_inputs, name="meanflow_target_paper", mistakes=mistakes, hints=hints,
                 atol=1e-9, rtol=1e-7, strict=strict, time_limit_s=time_limit_s)
