"""Exercise checks of appendix A (MNIST at scale): a guided jump of a shortcut model, and OT pairs within each
class on images."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.couplings import class_ot_assignment, ot_assignment
from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, _exception_text, _fmt,
                                     _inputs_text, check, compare, finish, guarded_call, learner_name, rand, randn)

__all__ = ["check_class_ot_images", "check_guided_jump"]


# --- one guided jump of an average-velocity model ---------------------------------------------------


def _toy_average_velocity(g: torch.Generator, shape: tuple[int, ...], classes: int):
    """A smooth u(x, s, t, y) whose every input matters: mixing weights, a per-class shift, both times."""
    D = 1
    for n in shape:
        D *= n
    W = randn(g, D, D) / D ** 0.5
    shift = randn(g, classes + 1, D)  # the last row is the null class

    def u(x, s, t, y):
        flat = x.reshape(x.shape[0], -1)
        out = torch.tanh(flat @ W) * (1 + s[:, None]) + shift[y] * (1 + 2 * t[:, None]) + (t - s)[:, None] * flat
        return out.reshape(x.shape)

    return u


def _guided_jump(u, x, s, t, y, w, null):
    y_null = torch.full_like(y, null)
    cond, uncond = u(x, s, t, y), u(x, s, t, y_null)
    return x + (t - s).reshape(-1, *([1] * (x.dim() - 1))) * (uncond + w * (cond - uncond))


def check_guided_jump(fn: Callable, *, strict: bool | None = None,
                      time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one classifier-free-guided jump of an average-velocity model (appendix A).

    The learner writes ``fn(u, x, s, t, y, w, null) -> x_t``: from images ``x`` ``(B, ...)`` at start
    times ``s`` ``(B,)`` to end times ``t`` ``(B,)``, with the guided average velocity
    ``u(x, s, t, null) + w (u(x, s, t, y) - u(x, s, t, null))`` of a model ``u(x, s, t, y)`` (labels
    int64 ``(B,)``, ``null`` the null class). Checked against the closed form on random batches of
    varying shapes, guidance scales (including 0 and 1) and time pairs.
    """
    def make_inputs(g):
        B = int(torch.randint(3, 8, (1,), generator=g))
        shape = ((1, 3, 3), (2, 2, 2), (1, 4, 2))[int(torch.randint(0, 3, (1,), generator=g))]
        classes = int(torch.randint(3, 11, (1,), generator=g))
        a, b = rand(g, B), rand(g, B)
        return {"u": _toy_average_velocity(g, shape, classes), "x": randn(g, B, *shape),
                "s": torch.minimum(a, b), "t": torch.maximum(a, b),
                "y": torch.randint(0, classes, (B,), generator=g), "w": [0.0, 1.0, 2.5, 4.0][int(rand(g, 1) * 4)],
                "null": classes}

    def swapped(u, x, s, t, y, w, null):  # w weights the wrong difference
        y_null = torch.full_like(y, null)
        cond, uncond = u(x, s, t, y), u(x, s, t, y_null)
        return x + (t - s).reshape(-1, *([1] * (x.dim() - 1))) * (cond + w * (uncond - cond))

    def no_step(u, x, s, t, y, w, null):  # the guided velocity returned instead of the new state
        return _guided_jump(u, x, s, t, y, w, null) - x

    def end_time_only(u, x, s, t, y, w, null):  # x + t u: the step size taken as t, not t - s
        y_null = torch.full_like(y, null)
        cond, uncond = u(x, s, t, y), u(x, s, t, y_null)
        return x + t.reshape(-1, *([1] * (x.dim() - 1))) * (uncond + w * (cond - uncond))

    def unguided(u, x, s, t, y, w, null):
        return x + (t - s).reshape(-1, *([1] * (x.dim() - 1))) * u(x, s, t, y)

    def one_time(u, x, s, t, y, w, null):  # an instantaneous velocity at s used for the whole jump
        return _guided_jump(lambda xx, ss, tt, yy: u(xx, ss, ss, yy), x, s, t, y, w, null)

    mistakes = [
        Mistake("guidance around the conditional output: cond + w (uncond - cond)", swapped,
                "start from the unconditional output and move w times towards the conditional one: "
                "uncond + w (cond - uncond), so w = 0 is unconditional and w = 1 conditional"),
        Mistake("the guided average velocity returned, not the state after the jump", no_step,
                "a jump moves the state: return x + (t - s) * u_guided"),
        Mistake("the step size taken as t instead of t - s", end_time_only,
                "a jump from s to t covers t - s of the path: x + (t - s) * u_guided"),
        Mistake("no guidance: the conditional output alone", unguided,
                "evaluate the model twice, with y and with the null label, and combine with w"),
        Mistake("the model called with (x, s, s): an instantaneous velocity used for a whole jump", one_time,
                "an average-velocity model takes the start and the END time: u(x, s, t, y)"),
    ]
    hints = [Hint("value", "u_guided = u(x, s, t, null) + w (u(x, s, t, y) - u(x, s, t, null)); then x + (t - s) u_guided, "
                           "with t - s reshaped to (B, 1, 1, 1) to broadcast over the image")]
    return check(fn, _guided_jump, make_inputs, name="guided_jump", atol=1e-5, rtol=1e-5, trials=6,
                 mistakes=mistakes, hints=hints, strict=strict, time_limit_s=time_limit_s)


# --- OT within each class, on images ----------------------------------------------------------------


def check_class_ot_images(fn: Callable, *, trials: int = 5, seed: int = 0, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check minibatch OT within each class on a batch of images (appendix A).

    The learner writes ``fn(x_0, x_1, y) -> x_1_paired``: noise ``x_0`` ``(B, C, H, W)``, digits ``x_1``
    of the same shape with labels ``y`` ``(B,)`` int64; return the digits reordered so that row ``i``
    keeps the label ``y[i]`` (``y[perm] == y``) and, within each class, the total squared distance
    ``sum_i ||x_0[i] - x_1_paired[i]||^2`` is minimal. Checked on batches with 2 to 4 classes and
    varying image shapes against :func:`tutorlib.couplings.class_ot_assignment`.
    """
    name = learner_name(fn, "class_ot_images")
    g = torch.Generator().manual_seed(seed)
    for trial in range(1, trials + 1):
        B = int(torch.randint(6, 12, (1,), generator=g))
        shape = ((1, 2, 2), (1, 3, 3), (2, 2, 3))[trial % 3]
        k = int(torch.randint(2, 5, (1,), generator=g))
        y = torch.randint(0, k, (B,), generator=g)
        y[:k] = torch.arange(k)  # every class present
        inputs = {"x_0": randn(g, B, *shape), "x_1": randn(g, B, *shape) * 2 + 1, "y": y}
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        expected = inputs["x_1"][class_ot_assignment(inputs["x_0"], inputs["x_1"], y)]
        args = [inputs["x_0"].clone(), inputs["x_1"].clone(), y.clone()]
        got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return finish(CheckResult(name, False, f"{_exception_text(err)} ({where})", "exception"), strict)
        changed = [n for n, a in zip(inputs, args) if not torch.equal(a, inputs[n])]
        if changed:
            return finish(CheckResult(name, False, f"{name} changed its input {', '.join(changed)} in place; return a "
                                                   f"reordered copy, e.g. x_1[perm] ({where})", "mutation"), strict)
        failure, _ = compare(got, expected, None, float("inf"), 0.0)  # type, shape, dtype
        if failure is not None:
            return finish(CheckResult(name, False, f"{failure.message} ({where})", failure.kind), strict)
        flat_got, flat_in = got.detach().reshape(B, -1).double(), inputs["x_1"].reshape(B, -1).double()
        dist = torch.cdist(flat_got, flat_in)
        perm = dist.argmin(1)
        problem = None
        if bool((dist.min(1).values > 1e-9).any()) or len(set(perm.tolist())) != B:
            problem = "the result is not a reordering of the rows of x_1"
        elif not torch.equal(y[perm], y):
            whole = inputs["x_1"][ot_assignment(inputs["x_0"], inputs["x_1"])]
            why = (" (that is minibatch OT over the whole batch: solve one assignment per class, on the rows of that "
                   "class only)" if torch.equal(got.detach(), whole) else "")
            problem = f"row i of the result must keep the label y[i]: some digits were paired across classes{why}"
        else:
            cost = float((inputs["x_0"] - got.detach()).square().sum())
            best = float((inputs["x_0"] - expected).square().sum())
            if cost > best * (1 + 1e-9) + 1e-9:
                same = torch.equal(got.detach(), inputs["x_1"])
                problem = (f"not optimal within the classes: total squared distance {_fmt(cost)}, the best is "
                           f"{_fmt(best)}" + (" (the pairing as given: nothing was re-paired)" if same else
                                               " (flatten each image to a vector for the cost matrix)"))
        if problem is not None:
            return finish(CheckResult(name, False, f"{problem} ({where})", "value"), strict)
    return finish(CheckResult(name, True, f"optimal class-wise pairings on {trials} random batches of images"), strict)
