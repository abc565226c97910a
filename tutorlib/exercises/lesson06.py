"""Exercise checks of lesson 06 (rectified flow and reflow): the 1-RF velocity at the noise end, the
endpoint a straight flow predicts, and the data-side (backward) reflow coupling."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.exercises.core import (BROADCAST_HINT, DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size,
                                     check, rand, randn, test_field)
from tutorlib.reflow import backward_coupling
from tutorlib.solvers import reflow_coupling

__all__ = ["check_backward_coupling", "check_noise_end_velocity", "check_predicted_endpoint"]

_VELOCITY_HINT = Hint("exception", "the velocity is called as velocity(x, t) with x (B, D) and t (B,)",
                      match="takes|positional argument|mat1 and mat2")


def _dims(g: torch.Generator) -> tuple[int, int]:
    return batch_size(g), int(torch.randint(2, 5, (1,), generator=g))


def check_noise_end_velocity(fn: Callable, *, strict: bool | None = None,
                             time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the exact velocity of 1-rectified flow at t = 0 (lesson 06).

    The learner writes ``fn(x_0, data) -> v`` ``(B, D)``: the marginal velocity
    ``u_0(x_0) = E[x_1 - x_0 | x_t = x_0 at t = 0]`` of flow matching with the *independent* coupling,
    for noise ``x_0`` ``(B, D)`` and a data set ``data`` ``(N, D)`` standing for the data distribution
    (its empirical mean is the data mean). At t = 0, ``x_t = x_0`` says nothing about ``x_1``, so the
    answer is ``data.mean(0) - x_0``. The check varies ``B``, ``N`` (never equal to ``B``), ``D`` and the
    data's mean.
    """
    def make_inputs(g):
        B, D = _dims(g)
        N = B + int(torch.randint(3, 20, (1,), generator=g))
        return {"x_0": randn(g, B, D), "data": randn(g, N, D) * 0.7 + 2.0 * randn(g, 1, D)}

    def reference(x_0, data):
        return data.mean(0, keepdim=True) - x_0

    def nearest(x_0, data):
        return data[torch.cdist(x_0, data).argmin(1)] - x_0

    mistakes = [
        Mistake("the data mean E[x_1] itself (where the one-step sample lands, not the velocity)",
                lambda x_0, data: data.mean(0, keepdim=True).expand_as(x_0),
                "the velocity is the expected displacement from x_0: E[x_1] - x_0"),
        Mistake("x_0 - E[x_1] (the sign flipped)", lambda x_0, data: x_0 - data.mean(0, keepdim=True),
                "the flow moves from the noise x_0 towards the data: E[x_1] - x_0"),
        Mistake("the displacement to the nearest data point", nearest,
                "the independent coupling pairs x_0 with random data: no data point is nearer to x_0 than another "
                "on average, so the velocity averages over all of them"),
        Mistake("E[x_1] - E[x_0], one velocity for the whole batch",
                lambda x_0, data: (data.mean(0, keepdim=True) - x_0.mean(0, keepdim=True)).expand_as(x_0),
                "at t = 0 the point x_t = x_0 is known: subtract each sample's own x_0, not the batch mean"),
        Mistake("zero (no motion at t = 0)", lambda x_0, data: torch.zeros_like(x_0),
                "the straight pairs all leave x_0 at t = 0 with velocity x_1 - x_0; average that over x_1"),
    ]
    hints = [Hint("shape", "the answer has one velocity per noise sample: shape (B, D) like x_0, not (N, D) like "
                           "the data", match=r"got \(\d+, \d+\)"),
             Hint("exception", "data has N rows and x_0 has B (N != B): the velocity of each noise sample averages "
                               "x_1 - x_0 over all the data, so reduce the data over its rows first, e.g. "
                               "data.mean(0) (D,), before it meets x_0 (B, D)", match="must match the size")]
    return check(fn, reference, make_inputs, name="noise_end_velocity", mistakes=mistakes, hints=hints,
                 strict=strict, time_limit_s=time_limit_s)


def check_predicted_endpoint(fn: Callable, *, strict: bool | None = None,
                             time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the endpoint a velocity predicts when the path from here on is straight (lesson 06).

    The learner writes ``fn(velocity, x_t, t) -> x1_hat`` ``(B, D)``: where a point ``x_t`` at time ``t``
    ``(B,)`` lands at ``t = 1`` if it keeps its current velocity ``velocity(x_t, t)``, i.e.
    ``x_t + (1 - t) velocity(x_t, t)`` (one Euler step from ``t`` to 1; on the linear path it is also the
    x-prediction ``E[x_1 | x_t]``). The check uses smooth nonlinear fields and varies ``B``, ``D`` and ``t``.
    """
    def make_inputs(g):
        B, D = _dims(g)
        return {"velocity": test_field(g, D), "x_t": randn(g, B, D), "t": rand(g, B).mul(0.95)}

    def reference(v, x_t, t):
        return x_t + (1 - t)[:, None] * v(x_t, t)

    mistakes = [
        Mistake("x_t + t v (the time already travelled)", lambda v, x, t: x + t[:, None] * v(x, t),
                "from time t to time 1 there is 1 - t left to travel"),
        Mistake("x_t + v (a whole unit of time)", lambda v, x, t: x + v(x, t),
                "scale the velocity by the time left, 1 - t"),
        Mistake("x_t - (1 - t) v (backwards)", lambda v, x, t: x - (1 - t)[:, None] * v(x, t),
                "t = 1 is the data: move along the velocity, x_t + (1 - t) v"),
        Mistake("the increment (1 - t) v alone", lambda v, x, t: (1 - t)[:, None] * v(x, t),
                "add the increment to the current point x_t"),
        Mistake("x_t - t v (the noise end x_0, where the straight path started)",
                lambda v, x, t: x - t[:, None] * v(x, t),
                "the endpoint asked for is the data end, t = 1: x_t + (1 - t) v"),
    ]
    return check(fn, reference, make_inputs, name="predicted_endpoint", mistakes=mistakes,
                 hints=[BROADCAST_HINT, _VELOCITY_HINT], strict=strict, time_limit_s=time_limit_s)


def check_backward_coupling(fn: Callable, *, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the data-side reflow coupling: Euler from t = 1 back to t = 0 (lesson 06).

    The learner writes ``fn(velocity, x_1, steps) -> (x_0, x_1)``: the noise ``x_0`` that ``steps``
    uniform Euler steps of ``dx/dt = velocity(x, t)`` *backwards* in time, from ``x_1`` at ``t = 1`` to
    ``t = 0``, arrive at (each step evaluates the field at the time where it starts: 1, 1 - h, ...,
    h), paired with the data ``x_1`` it came from. The reference is
    :func:`tutorlib.reflow.backward_coupling` with ``method="euler"``; the check varies ``B``, ``D``,
    ``steps`` and the field.
    """
    def make_inputs(g):
        B, D = _dims(g)
        return {"velocity": test_field(g, D), "x_1": randn(g, B, D) * 1.5,
                "steps": int(torch.randint(2, 7, (1,), generator=g))}

    def reference(v, x_1, steps):
        return tuple(backward_coupling(v, x_1, steps=steps))

    def euler(v, x, steps, times, sign):
        h = 1.0 / steps
        for t in times:
            x = x + sign * h * v(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        return x

    def grid(steps, start, stop):
        return [start + (stop - start) * k / steps for k in range(steps)]

    mistakes = [
        Mistake("the forward coupling (Euler from t = 0 to 1, as reflow_coupling does)",
                lambda v, x_1, steps: (reflow_coupling(v, x_1, steps=steps).x_1, x_1),
                "start at the data x_1 at t = 1 and step backwards to t = 0: x <- x - h v(x, t), t = 1, 1 - h, ..."),
        Mistake("backward steps with the times running up from 0",
                lambda v, x_1, steps: (euler(v, x_1, steps, grid(steps, 0.0, 1.0), -1.0), x_1),
                "the state starts at t = 1: evaluate the field at t = 1, 1 - h, ..., h"),
        Mistake("each step's field taken at the time where it ends (t - h)",
                lambda v, x_1, steps: (euler(v, x_1, steps, grid(steps, 1.0 - 1.0 / steps, -1.0 / steps), -1.0), x_1),
                "an explicit Euler step uses the field where the step starts: t = 1 for the first one"),
        Mistake("x + h v going backwards (the sign of the step)",
                lambda v, x_1, steps: (euler(v, x_1, steps, grid(steps, 1.0, 0.0), 1.0), x_1),
                "time decreases by h each step, so x changes by -h v(x, t)"),
        Mistake("Euler steps at the times torch.linspace(1, 0, steps) (steps points, the last at t = 0)",
                lambda v, x_1, steps: (euler(v, x_1, steps, [1.0 - k / (steps - 1) for k in range(steps)], -1.0), x_1),
                "steps steps need steps + 1 grid points: the steps start at torch.linspace(1, 0, steps + 1)[:-1], "
                "i.e. t = 1, 1 - h, ..., h with h = 1 / steps"),
        Mistake("steps + 1 Euler steps (one too many)",
                lambda v, x_1, steps: (euler(v, x_1, steps, grid(steps + 1, 1.0, 1.0 - (steps + 1) / steps), -1.0),
                                       x_1),
                "take exactly steps steps of size h = 1 / steps, from t = 1 down to t = 0"),
        Mistake("steps - 1 Euler steps (one too few)",
                lambda v, x_1, steps: (euler(v, x_1, steps, grid(steps - 1, 1.0, 1.0 - (steps - 1) / steps), -1.0),
                                       x_1),
                "take exactly steps steps of size h = 1 / steps, from t = 1 down to t = 0 (range(steps), not "
                "range(1, steps))"),
        Mistake("(x_0, x_0): the data side overwritten by the integration",
                lambda v, x_1, steps: (lambda x_0: (x_0, x_0))(backward_coupling(v, x_1, steps=steps).x_0),
                "keep the data you started from: integrate a new variable (x = x_1, then x = x - h v) and return "
                "(x, x_1)"),
        Mistake("(x_1, x_0): the pair swapped",
                lambda v, x_1, steps: (x_1, backward_coupling(v, x_1, steps=steps).x_0),
                "return the noise first, then the data: (x_0, x_1), as a Coupling is ordered"),
    ]
    return check(fn, reference, make_inputs, name="backward_coupling", output_names=("x_0", "x_1"), mistakes=mistakes,
                 hints=[_VELOCITY_HINT], strict=strict, time_limit_s=time_limit_s)
