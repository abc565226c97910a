"""Exercise checks of lesson 03 (flow matching): paths and their velocities, one solver step."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.exercises.core import (BROADCAST_HINT, DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size,
                                     check, rand, randn, test_field)
from tutorlib.paths import AffinePath, CondOTPath
from tutorlib.schedulers import PolynomialScheduler

__all__ = ["check_cfm_target", "check_euler_step", "check_midpoint_step", "check_polynomial_target"]

_VELOCITY_HINT = Hint("exception", "the velocity is called as velocity(x, t) with x (B, D) and t (B,)",
                      match="takes|positional argument")


def _step_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
    return {"velocity": test_field(g, D), "x": randn(g, B, D), "t": rand(g, B).mul(0.9),
            "dt": round(float(rand(g, 1)) * 0.1 + 0.01, 4)}


def check_euler_step(fn: Callable, *, strict: bool | None = None,
                     time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one explicit Euler step ``x + dt * velocity(x, t)`` (lesson 03).

    The learner writes ``fn(velocity, x, t, dt) -> x_next`` with ``x`` ``(B, D)``, ``t`` ``(B,)``
    (the current time of each sample), a float ``dt``, and ``velocity(x, t) -> (B, D)``.
    """
    mistakes = [
        Mistake("x - dt v", lambda v, x, t, dt: x - dt * v(x, t), "the course integrates forwards in time: x + dt v"),
        Mistake("the field evaluated at t + dt", lambda v, x, t, dt: x + dt * v(x, t + dt),
                "Euler's method uses the velocity at the current time t: x + dt v(x, t)"),
        Mistake("x + v (dt missing)", lambda v, x, t, dt: x + v(x, t), "scale the velocity by the step: x + dt v"),
        Mistake("dt v (the current state missing)", lambda v, x, t, dt: dt * v(x, t),
                "the step moves the state: return x + dt v, not the increment alone"),
    ]
    return check(fn, lambda v, x, t, dt: x + dt * v(x, t), _step_inputs, name="euler_step", mistakes=mistakes,
                 hints=[_VELOCITY_HINT], strict=strict, time_limit_s=time_limit_s)


def check_midpoint_step(fn: Callable, *, strict: bool | None = None,
                        time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one explicit midpoint step (lesson 03).

    The learner writes ``fn(velocity, x, t, dt) -> x_next`` with
    ``x_next = x + dt * velocity(x + dt / 2 * velocity(x, t), t + dt / 2)``; shapes as in
    :func:`check_euler_step`.
    """
    def reference(v, x, t, dt):
        return x + dt * v(x + 0.5 * dt * v(x, t), t + 0.5 * dt)

    mistakes = [
        Mistake("an Euler step", lambda v, x, t, dt: x + dt * v(x, t),
                "evaluate the velocity a second time, at the midpoint: x + dt v(x + dt/2 v(x, t), t + dt/2)"),
        Mistake("the midpoint velocity taken at time t", lambda v, x, t, dt: x + dt * v(x + 0.5 * dt * v(x, t), t),
                "the midpoint lies half a step later in time too: evaluate it at t + dt/2"),
        Mistake("a midpoint a whole step ahead", lambda v, x, t, dt: x + dt * v(x + dt * v(x, t), t + 0.5 * dt),
                "the trial point is half an Euler step away: x + (dt / 2) v(x, t)"),
        Mistake("Heun's method (the average of the two slopes)",
                lambda v, x, t, dt: x + 0.5 * dt * (v(x, t) + v(x + dt * v(x, t), t + dt)),
                "that is Heun's method (lesson 07); the midpoint method uses the slope at the midpoint alone"),
    ]
    return check(fn, reference, _step_inputs, name="midpoint_step", mistakes=mistakes, hints=[_VELOCITY_HINT],
                 strict=strict, time_limit_s=time_limit_s)


def _pair_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
    return {"x_0": randn(g, B, D), "x_1": randn(g, B, D) * 2, "t": rand(g, B)}


def check_cfm_target(fn: Callable, *, strict: bool | None = None,
                     time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the linear (conditional OT) path and its velocity, the CFM target (lesson 03).

    The learner writes ``fn(x_0, x_1, t) -> (x_t, dx_t)`` with ``x_t = (1 - t) x_0 + t x_1`` and
    ``dx_t = x_1 - x_0``; ``x_0`` (noise) and ``x_1`` (data) have shape ``(B, D)``, ``t`` shape
    ``(B,)``. The reference is ``CondOTPath().sample(x_0, x_1, t)``.
    """
    path = CondOTPath()

    def reference(x_0, x_1, t):
        s = path.sample(x_0, x_1, t)
        return s.x_t, s.dx_t

    def lin(a, b, t):
        return (1 - t[:, None]) * a + t[:, None] * b

    mistakes = [
        Mistake("t and 1 - t swapped (the path runs from data to noise)", lambda x0, x1, t: (lin(x1, x0, t), x0 - x1),
                "t = 0 is the noise x_0 and t = 1 the data x_1: x_t = (1 - t) x_0 + t x_1"),
        Mistake("the velocity with the wrong sign", lambda x0, x1, t: (lin(x0, x1, t), x0 - x1),
                "the path moves from x_0 to x_1: dx_t = x_1 - x_0"),
        Mistake("(dx_t, x_t): the outputs swapped", lambda x0, x1, t: (x1 - x0, lin(x0, x1, t)),
                "return the point first, then its velocity: (x_t, dx_t)"),
    ]
    return check(fn, reference, _pair_inputs, name="cfm_target", output_names=("x_t", "dx_t"), mistakes=mistakes,
                 hints=[BROADCAST_HINT], strict=strict, time_limit_s=time_limit_s)


def check_polynomial_target(fn: Callable, *, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the point and velocity of the polynomial path ``alpha_t = t^n``, ``sigma_t = 1 - t^n`` (lesson 03).

    The learner writes ``fn(x_0, x_1, t, n) -> (x_t, dx_t)`` with ``x_t = t^n x_1 + (1 - t^n) x_0`` and
    ``dx_t = n t^(n - 1) (x_1 - x_0)``, for ``x_0``, ``x_1`` ``(B, D)``, ``t`` ``(B,)`` and a float ``n``
    (varied between trials). The reference is ``AffinePath(PolynomialScheduler(n)).sample``.
    """
    def make_inputs(g):
        inputs = _pair_inputs(g)
        inputs["t"] = 0.05 + 0.9 * inputs["t"]  # away from t = 0, where t^(n - 1) is singular for n < 1
        inputs["n"] = round(1.5 + 2.0 * float(rand(g, 1)), 3)
        return inputs

    def reference(x_0, x_1, t, n):
        s = AffinePath(PolynomialScheduler(n)).sample(x_0, x_1, t)
        return s.x_t, s.dx_t

    def point(x0, x1, t, n):
        a = t[:, None] ** n
        return a * x1 + (1 - a) * x0

    mistakes = [
        Mistake("the linear path's velocity x_1 - x_0", lambda x0, x1, t, n: (point(x0, x1, t, n), x1 - x0),
                "differentiate alpha_t = t^n: dx_t = d alpha_t/dt (x_1 - x_0) = n t^(n - 1) (x_1 - x_0)"),
        Mistake("t^(n - 1) (x_1 - x_0): the factor n missing",
                lambda x0, x1, t, n: (point(x0, x1, t, n), t[:, None] ** (n - 1) * (x1 - x0)),
                "d/dt t^n = n t^(n - 1)"),
        Mistake("the velocity with the wrong sign",
                lambda x0, x1, t, n: (point(x0, x1, t, n), n * t[:, None] ** (n - 1) * (x0 - x1)),
                "alpha_t grows and sigma_t shrinks: dx_t = d alpha_t (x_1 - x_0) with d alpha_t > 0"),
        Mistake("alpha_t and sigma_t swapped",
                lambda x0, x1, t, n: (point(x1, x0, t, n), n * t[:, None] ** (n - 1) * (x0 - x1)),
                "alpha_t = t^n multiplies the data x_1; sigma_t = 1 - t^n the noise x_0"),
    ]
    return check(fn, reference, make_inputs, name="polynomial_target", output_names=("x_t", "dx_t"),
                 mistakes=mistakes, hints=[BROADCAST_HINT], strict=strict, time_limit_s=time_limit_s)
