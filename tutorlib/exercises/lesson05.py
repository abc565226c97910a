"""Exercise checks of lesson 05 (couplings): a minibatch optimal-transport coupling."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.couplings import minibatch_ot
from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, _exception_text, _fmt, _inputs_text, compare,
                                     finish, guarded_call, learner_name, randn)

__all__ = ["check_minibatch_ot"]


def _row_permutation(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
    """Indices p with out[i] == ref[p[i]] (a permutation), or None if out's rows are not ref's rows."""
    dist = torch.cdist(out.reshape(len(out), -1).double(), ref.reshape(len(ref), -1).double())  # (B, B)
    best = dist.argmin(1)
    if bool((dist.min(1).values > 1e-9).any()) or len(set(best.tolist())) != len(best):
        return None
    return best


def check_minibatch_ot(fn: Callable, *, trials: int = 4, seed: int = 0, strict: bool | None = None,
                       time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check a minibatch optimal-transport coupling (lesson 05).

    The learner writes ``fn(x_0, x_1) -> (x_0, x_1)``: the same points, re-paired so that the
    total squared distance ``sum_i ||x_0[i] - x_1[i]||^2`` is minimal over all pairings (either
    side may be reordered). Checked on batches of 5 to 9 points in 2 or 3 dimensions: the types
    and shapes, that the inputs are left unchanged, that each output is a reordering of the
    corresponding input, and that the total cost equals that of
    :func:`tutorlib.couplings.minibatch_ot` (exact assignment, so ties aside the optimum).
    """
    name = learner_name(fn, "minibatch_ot")
    g = torch.Generator().manual_seed(seed)
    for trial in range(1, trials + 1):
        B, D = int(torch.randint(5, 10, (1,), generator=g)), int(torch.randint(2, 4, (1,), generator=g))
        inputs = {"x_0": randn(g, B, D), "x_1": randn(g, B, D) * 2 + 1}
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        expected = tuple(minibatch_ot(inputs["x_0"].clone(), inputs["x_1"].clone()))
        args = [inputs["x_0"].clone(), inputs["x_1"].clone()]
        got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return finish(CheckResult(name, False, f"{_exception_text(err)} ({where})", "exception"), strict)
        changed = [k for k, a in zip(inputs, args) if not torch.equal(a, inputs[k])]
        if changed:
            return finish(CheckResult(name, False, f"{name} changed its input {', '.join(changed)} in place; return "
                                                   f"reordered copies, e.g. x_1[cols] ({where})", "mutation"), strict)
        failure, _ = compare(got, expected, ("x_0", "x_1"), float("inf"), 0.0)  # types, shapes, dtypes only
        problem = failure.message if failure is not None else None
        if problem is None:
            for key, out, inp in zip(("x_0", "x_1"), got, inputs.values()):
                if _row_permutation(out.detach(), inp) is None:
                    problem = f"the returned {key} is not a reordering of the input {key}'s rows"
                    break
        if problem is None:
            cost = float((got[0] - got[1]).square().sum())
            optimum = float((expected[0] - expected[1]).square().sum())
            unchanged = float((inputs["x_0"] - inputs["x_1"]).square().sum())
            if cost > optimum * (1 + 1e-9) + 1e-9:
                why = (" (that is the pairing it was given: nothing was re-paired)" if abs(cost - unchanged) < 1e-9
                       else " (use the squared Euclidean cost, and reorder x_1 by the assignment's column indices)")
                problem = (f"not optimal: total squared distance {_fmt(cost)}, but the best pairing has "
                           f"{_fmt(optimum)}{why}")
        if problem is not None:
            return finish(CheckResult(name, False, f"{problem} ({where})", "value"), strict)
    return finish(CheckResult(name, True, f"optimal pairings on {trials} random batches"), strict)
