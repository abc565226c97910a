"""Exercise checks of lesson 05 (couplings): minibatch OT, the entropic plan of two points, and OT with a
penalty for pairing across classes."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from tutorlib.couplings import minibatch_ot
from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, _exception_text, _fmt,
                                     _inputs_text, check, compare, finish, guarded_call, learner_name, rand, randn)

__all__ = ["check_entropic_plan_2x2", "check_minibatch_ot", "check_penalised_ot"]


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


# --- the entropic plan of two points ------------------------------------------------------------------


def _plan_2x2(C: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The entropic plan of a 2 x 2 cost with marginals (1/2, 1/2): [[p, 1/2 - p], [1/2 - p, p]]."""
    delta = C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0]  # what the diagonal pairing costs more than the anti-diagonal
    p = 0.5 * torch.sigmoid(-delta / (2 * epsilon))
    return torch.stack([torch.stack([p, 0.5 - p]), torch.stack([0.5 - p, p])])  # (2, 2)


def check_entropic_plan_2x2(fn: Callable, *, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the entropic OT plan of two points against two points, in closed form (lesson 05).

    The learner writes ``fn(C, epsilon) -> plan``: for a cost matrix ``C`` (2, 2) float64 and a float
    ``epsilon > 0``, the plan (2, 2) minimising ``sum_ij plan_ij C_ij - epsilon H(plan)`` whose rows and
    columns each sum to 1/2. Every entropic plan has the form ``exp(u_i + v_j - C_ij / epsilon)``; with
    the marginals that leaves one unknown, ``plan[0, 0]``. The reference is the closed form; the
    library's :func:`tutorlib.couplings.sinkhorn_plan` reaches the same plan by iterating. Costs and
    ``epsilon`` vary between trials (one trial has a cost whose two pairings cost the same).
    """
    def make_inputs(g):
        C = 4.0 * rand(g, 2, 2)  # (2, 2) any costs
        if float(rand(g, 1)) < 0.25:  # a tie: both pairings cost the same, so the plan is uniform
            C[1, 1] = C[0, 1] + C[1, 0] - C[0, 0]
        return {"C": C, "epsilon": round(0.2 + 3.0 * float(rand(g, 1)), 3)}

    def sqrt_missed(C, eps):  # p / (1/2 - p) = exp(-delta / eps): the square root of the ratio forgotten
        return _plan_2x2(C, eps / 2)

    def unit_mass_rows(C, eps):  # rows summing to 1 instead of 1/2
        return 2 * _plan_2x2(C, eps)

    def kernel_only(C, eps):  # exp(-C / eps) scaled to total mass 1, no marginal constraint
        K = torch.exp(-C / eps)
        return K / K.sum()

    def flipped(C, eps):
        return _plan_2x2(C, eps).flip(0)

    mistakes = [
        Mistake("the square root missed: plan[0, 0] / plan[0, 1] = exp(-delta / epsilon)", sqrt_missed,
                "the ratio exp(-delta / epsilon) is that of plan[0, 0] plan[1, 1] to plan[0, 1] plan[1, 0]; by symmetry "
                "plan[0, 0] = plan[1, 1] and plan[0, 1] = plan[1, 0], so take the square root"),
        Mistake("rows that sum to 1", unit_mass_rows, "each of the two points carries mass 1/2: rows and columns sum to 1/2"),
        Mistake("exp(-C / epsilon) normalised to mass 1 (no marginals enforced)", kernel_only,
                "the factors exp(u_i) and exp(v_j) rescale rows and columns until each sums to 1/2"),
        Mistake("the two pairings swapped (the costlier one favoured)", flipped,
                "the cheaper pairing gets the larger mass: when C_00 + C_11 < C_01 + C_10 the diagonal is favoured"),
    ]
    hints = [Hint("value", "with the marginals, plan = [[p, 1/2 - p], [1/2 - p, p]]; in the ratio "
                           "plan_00 plan_11 / (plan_01 plan_10) the potentials u and v cancel, leaving C and epsilon")]
    return check(fn, _plan_2x2, make_inputs, name="entropic_plan_2x2", atol=1e-9, rtol=1e-7, trials=5,
                 mistakes=mistakes, hints=hints, strict=strict, time_limit_s=time_limit_s)


# --- OT with a penalty for pairing across classes (C^2OT with a finite weight) -----------------------------


def _penalised_assignment(x_0: torch.Tensor, x_1: torch.Tensor, y: torch.Tensor, weight: float,
                          mismatch=None) -> torch.Tensor:
    """Columns sigma minimising sum_i ||x_0[i] - x_1[sigma_i]||^2 + weight [y_i != y_sigma_i] (exactly)."""
    cost = torch.cdist(x_0.double(), x_1.double()).square()  # (B, B)
    pen = (y[:, None] != y[None, :]).double() if mismatch is None else mismatch(y)  # (B, B)
    _, cols = linear_sum_assignment((cost + weight * pen).numpy())
    return torch.from_numpy(cols.astype(np.int64))


def _penalised_cost(x_0, x_1p, y, yp, weight) -> float:
    return float((x_0.double() - x_1p.double()).square().sum() + weight * (y != yp).double().sum())


def check_penalised_ot(fn: Callable, *, trials: int = 10, seed: int = 0, strict: bool | None = None,
                       time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check minibatch OT with a penalty for pairing noise and data of different classes (lesson 05).

    The learner writes ``fn(x_0, x_1, y, weight) -> (x_1, y)``: row i of the noise ``x_0`` (B, D) carries
    the class ``y[i]`` of row i of the batch as drawn; return the data ``x_1`` and its labels ``y``
    reordered together so that ``sum_i ||x_0[i] - x_1'[i]||^2 + weight * (number of i with y[i] != y'[i])``
    is minimal. ``weight = 0`` is plain minibatch OT; a large weight is OT within each class
    (:func:`tutorlib.couplings.class_ot_assignment`). Checked on batches of 6 to 10 points in 2 or 3
    dimensions with 3 to 5 classes and weights 0, moderate and large: types, shapes and dtypes, inputs left
    unchanged, that ``(x_1', y')`` is a reordering of the rows of ``(x_1, y)`` (labels travel with their
    points), and that the penalised cost is the optimum. Known mistakes are named.
    """
    name = learner_name(fn, "penalised_ot")
    g = torch.Generator().manual_seed(seed)
    weights = [0.0, None, 1e6, None]  # None: a moderate weight drawn per trial
    for trial in range(1, trials + 1):
        B, D = int(torch.randint(6, 11, (1,), generator=g)), int(torch.randint(2, 4, (1,), generator=g))
        K = int(torch.randint(3, 6, (1,), generator=g))
        y = torch.randint(0, K, (B,), generator=g)
        y[:K] = torch.arange(K)  # every class present
        w = weights[(trial - 1) % len(weights)]
        w = round(0.5 + 4.0 * float(rand(g, 1)), 3) if w is None else w
        inputs = {"x_0": randn(g, B, D), "x_1": randn(g, B, D) * 1.5 + 0.5, "y": y, "weight": w}
        where = f"trial {trial} of {trials}, weight = {w:g}, {K} classes, inputs: {_inputs_text(inputs)}"
        x_0, x_1 = inputs["x_0"], inputs["x_1"]
        sigma = _penalised_assignment(x_0, x_1, y, w)
        expected = (x_1[sigma], y[sigma])
        optimum = _penalised_cost(x_0, *expected[:1], y, expected[1], w)
        args = [x_0.clone(), x_1.clone(), y.clone(), w]
        got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return finish(CheckResult(name, False, f"{_exception_text(err)} ({where})", "exception"), strict)
        changed = [k for k, a in zip(("x_0", "x_1", "y"), args) if not torch.equal(a, inputs[k])]
        if changed:
            return finish(CheckResult(name, False, f"{name} changed its input {', '.join(changed)} in place; return "
                                                   f"reordered copies, e.g. x_1[cols], y[cols] ({where})", "mutation"),
                          strict)
        failure, _ = compare(got, expected, ("x_1", "y"), math.inf, 0.0)  # types, shapes, dtypes, devices only
        if failure is not None:
            return finish(CheckResult(name, False, f"{failure.message} ({where})", failure.kind), strict)
        x_1p, yp = (o.detach() for o in got)
        rows = torch.cat([x_1, y[:, None].double()], 1)  # (B, D + 1): each point with its label
        dist = torch.cdist(torch.cat([x_1p.double(), yp[:, None].double()], 1), rows)  # (B, B)
        best = dist.argmin(1)
        if bool((dist.min(1).values > 1e-9).any()) or len(set(best.tolist())) != B:
            only_x = torch.cdist(x_1p.double(), x_1).min(1).values.max() <= 1e-9
            why = (" (the points are a reordering of x_1, but the labels did not move with them: reorder y by the "
                   "same indices as x_1)" if only_x else "")
            return finish(CheckResult(name, False, f"(x_1, y) returned are not the rows of the input (x_1, y) "
                                                   f"reordered together{why} ({where})", "value"), strict)
        cost = _penalised_cost(x_0, x_1p, y, yp, w)
        if cost > optimum * (1 + 1e-9) + 1e-9:
            plain = x_1[_penalised_assignment(x_0, x_1, y, 0.0)]
            numeric = _penalised_assignment(x_0, x_1, y, w, lambda y_: (y_[:, None] - y_[None, :]).abs().double())
            same = _penalised_assignment(x_0, x_1, y, w, lambda y_: (y_[:, None] == y_[None, :]).double())
            if torch.equal(x_1p, plain):
                why = "it looks like plain minibatch OT: add the weight to the cost of every pair whose labels differ"
            elif torch.equal(x_1p, x_1[same]):
                why = "it looks like the penalty is on pairs with equal labels: penalise y[i] != y[j], not y[i] == y[j]"
            elif torch.equal(x_1p, x_1[numeric]):
                why = ("it looks like the penalty grows with |y[i] - y[j]|: class ids are names, not numbers; add the "
                       "same weight for every pair of different classes")
            else:
                why = "use the cost ||x_0[i] - x_1[j]||^2 + weight [y[i] != y[j]] and solve the assignment exactly"
            return finish(CheckResult(name, False, f"not optimal: penalised cost {_fmt(cost)}, but the best pairing "
                                                   f"has {_fmt(optimum)}; {why} ({where})", "value"), strict)
    return finish(CheckResult(name, True, f"optimal penalised pairings on {trials} random batches (weights 0, "
                                          "moderate and large), labels moving with their points"), strict)
