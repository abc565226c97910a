"""Lesson 05's exercise checks: the correct solutions pass, no bad submission does, known mistakes are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.couplings import sinkhorn_plan
from tutorlib.exercises.lesson05 import check_entropic_plan_2x2, check_minibatch_ot, check_penalised_ot


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them ---


def minibatch_ot(x_0, x_1):
    _, cols = linear_sum_assignment(torch.cdist(x_0, x_1).square().numpy())
    return x_0, x_1[torch.from_numpy(cols)]


def entropic_plan_2x2(C, epsilon):
    r = torch.exp(-(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0]) / (2 * epsilon))
    p = 0.5 * r / (1 + r)
    return torch.stack([torch.stack([p, 0.5 - p]), torch.stack([0.5 - p, p])])


def penalised_ot(x_0, x_1, y, weight):
    cost = torch.cdist(x_0, x_1).square() + weight * (y[:, None] != y[None, :]).to(x_0.dtype)
    _, cols = linear_sum_assignment(cost.numpy())
    cols = torch.from_numpy(cols)
    return x_1[cols], y[cols]


CORRECT = [(check_minibatch_ot, minibatch_ot), (check_entropic_plan_2x2, entropic_plan_2x2),
           (check_penalised_ot, penalised_ot)]
IDS = [c.__name__ for c, _ in CORRECT]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_correct_solutions_pass_also_strictly(checker, fn):
    assert checker(fn).passed
    assert checker(fn, strict=True).passed


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


def test_strict_raises_on_a_failure():
    with pytest.raises(AssertionError, match="FAILED"):
        check_entropic_plan_2x2(lambda C, eps: torch.full((2, 2), 0.25, dtype=C.dtype), strict=True)


# --- the entropic plan of two points ---


def test_entropic_plan_agrees_with_sinkhorn():
    # the closed form the check uses is the plan Sinkhorn's iterations reach on two points
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = torch.randn(2, 3, generator=g, dtype=torch.float64), torch.randn(2, 3, generator=g, dtype=torch.float64)
    for eps in (0.3, 2.0):
        plan = sinkhorn_plan(x_0, x_1, eps, tol=1e-13, max_iter=100_000).plan
        torch.testing.assert_close(entropic_plan_2x2(torch.cdist(x_0, x_1).square(), eps), plan, atol=1e-12, rtol=0)


def test_entropic_plan_mistakes_are_named():
    def ratio_without_root(C, eps):
        r = torch.exp(-(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0]) / eps)
        p = 0.5 * r / (1 + r)
        return torch.stack([torch.stack([p, 0.5 - p]), torch.stack([0.5 - p, p])])

    def kernel(C, eps):
        K = torch.exp(-C / eps)
        return K / K.sum()

    cases = [
        (ratio_without_root, "the square root missed"),
        (lambda C, eps: 2 * entropic_plan_2x2(C, eps), "rows that sum to 1"),
        (kernel, "no marginals enforced"),
        (lambda C, eps: entropic_plan_2x2(C, eps).flip(1), "the costlier one favoured"),
    ]
    for fn, text in cases:
        result = check_entropic_plan_2x2(fn)
        assert not result.passed and text in result.message, result.message
    exact = check_entropic_plan_2x2(lambda C, eps: entropic_plan_2x2(C, 1e-9))  # the unregularised plan
    assert not exact.passed and "hint:" in exact.message  # the hint fires for a wrong value
    assert "hint:" not in check_entropic_plan_2x2(lambda C, eps: C.sum()).message  # a shape error: no value hint


# --- OT with a penalty across classes ---


def test_penalised_ot_mistakes_are_named():
    def plain(x_0, x_1, y, weight):
        return penalised_ot(x_0, x_1, y, 0.0)

    def equal_labels(x_0, x_1, y, weight):
        cost = torch.cdist(x_0, x_1).square() + weight * (y[:, None] == y[None, :]).double()
        cols = torch.from_numpy(linear_sum_assignment(cost.numpy())[1])
        return x_1[cols], y[cols]

    def numeric(x_0, x_1, y, weight):
        cost = torch.cdist(x_0, x_1).square() + weight * (y[:, None] - y[None, :]).abs().double()
        cols = torch.from_numpy(linear_sum_assignment(cost.numpy())[1])
        return x_1[cols], y[cols]

    def labels_stay(x_0, x_1, y, weight):
        return penalised_ot(x_0, x_1, y, weight)[0], y

    def maximised(x_0, x_1, y, weight):
        cost = torch.cdist(x_0, x_1).square() + weight * (y[:, None] != y[None, :]).double()
        cols = torch.from_numpy(linear_sum_assignment(-cost.numpy())[1])
        return x_1[cols], y[cols]

    cases = [
        (plain, "looks like plain minibatch OT"),
        (equal_labels, "penalty is on pairs with equal labels"),
        (numeric, "class ids are names, not numbers"),
        (labels_stay, "the labels did not move with them"),
        (maximised, "not optimal"),
        (lambda x_0, x_1, y, w: (x_1, y), "not optimal"),
    ]
    for fn, text in cases:
        result = check_penalised_ot(fn)
        assert not result.passed and text in result.message, (text, result.message)


def test_penalised_ot_accepts_any_optimal_method():
    # brute force over permutations (B <= 10 is too many; solve exactly by the assignment, but in float32 and
    # with the penalty added as a large finite number for every mismatch)
    def other(x_0, x_1, y, weight):
        cost = (x_0[:, None, :] - x_1[None, :, :]).square().sum(-1) + weight * (y[:, None] != y[None, :])
        rows, cols = linear_sum_assignment(cost.numpy().astype(np.float64))
        order = np.empty_like(cols)
        order[rows] = cols
        idx = torch.from_numpy(order)
        return x_1.index_select(0, idx), y.index_select(0, idx)

    assert check_penalised_ot(other).passed


def test_minibatch_ot_check_still_names_the_unchanged_pairing():
    result = check_minibatch_ot(lambda x_0, x_1: (x_0, x_1.clone()))
    assert not result.passed and "nothing was re-paired" in result.message
