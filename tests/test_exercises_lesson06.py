"""Lesson 06's exercise checks: each passes its solution, names the known mistakes, and passes no bad submission."""

from __future__ import annotations

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lesson06 import check_backward_coupling, check_noise_end_velocity, check_predicted_endpoint
from tutorlib.solvers import reflow_coupling


# --- the solutions, as the lesson's solution cells write them ---


def noise_end_velocity(x_0, data):
    return data.mean(0) - x_0  # (B, D): E[x_1] - x_0


def predicted_endpoint(velocity, x_t, t):
    return x_t + (1 - t)[:, None] * velocity(x_t, t)


def backward_coupling(velocity, x_1, steps):
    x, h = x_1, 1.0 / steps
    for k in range(steps):
        t = torch.full((x.shape[0],), 1.0 - k * h, dtype=x.dtype, device=x.device)  # (B,)
        x = x - h * velocity(x, t)
    return x, x_1


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


CASES = [(check_noise_end_velocity, noise_end_velocity), (check_predicted_endpoint, predicted_endpoint),
         (check_backward_coupling, backward_coupling)]


@pytest.mark.parametrize("checker, solution", CASES, ids=[c.__name__ for c, _ in CASES])
def test_the_solution_passes_strictly(checker, solution):
    assert checker(solution, strict=True).passed


@pytest.mark.parametrize("checker, solution", CASES, ids=[c.__name__ for c, _ in CASES])
def test_no_bad_submission_passes(checker, solution):
    assert_no_bad_submission_passes(checker, solution)


def _fails_naming(result, *words):
    assert not result.passed
    for w in words:
        assert w in result.message, (w, result.message)


def test_noise_end_velocity_names_its_mistakes():
    _fails_naming(check_noise_end_velocity(lambda x_0, d: d.mean(0).expand_as(x_0).clone()), "E[x_1] itself")
    _fails_naming(check_noise_end_velocity(lambda x_0, d: x_0 - d.mean(0)), "sign flipped")
    _fails_naming(check_noise_end_velocity(lambda x_0, d: d[torch.cdist(x_0, d).argmin(1)] - x_0), "nearest data point")
    _fails_naming(check_noise_end_velocity(lambda x_0, d: (d.mean(0) - x_0.mean(0)).expand_as(x_0).clone()),
                  "whole batch")
    _fails_naming(check_noise_end_velocity(lambda x_0, d: torch.zeros_like(x_0)), "zero")
    # the velocity per data point, not per noise sample: the shape hint
    _fails_naming(check_noise_end_velocity(lambda x_0, d: d - x_0.mean(0)), "wrong shape", "one velocity per noise")
    # a fixed data mean (0) instead of the data's: fails with the inputs shown
    result = check_noise_end_velocity(lambda x_0, d: -x_0)
    _fails_naming(result, "wrong value", "the inputs there")


def test_predicted_endpoint_names_its_mistakes():
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x + t[:, None] * v(x, t)), "time already travelled")
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x + v(x, t)), "a whole unit of time")
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x - (1 - t)[:, None] * v(x, t)), "backwards")
    _fails_naming(check_predicted_endpoint(lambda v, x, t: (1 - t)[:, None] * v(x, t)), "increment")
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x + (1 - t) * v(x, t)), "t[:, None]")


def test_backward_coupling_names_its_mistakes():
    def euler(v, x, steps, times, sign):
        for t in times:
            x = x + sign * (1.0 / steps) * v(x, torch.full((x.shape[0],), t, dtype=x.dtype))
        return x

    _fails_naming(check_backward_coupling(lambda v, x_1, s: (reflow_coupling(v, x_1, steps=s).x_1, x_1)),
                  "forward coupling")
    _fails_naming(check_backward_coupling(lambda v, x_1, s: (euler(v, x_1, s, [k / s for k in range(s)], -1.0), x_1)),
                  "times running up")
    _fails_naming(check_backward_coupling(
        lambda v, x_1, s: (euler(v, x_1, s, [1 - (k + 1) / s for k in range(s)], -1.0), x_1)), "where it ends")
    _fails_naming(check_backward_coupling(
        lambda v, x_1, s: (euler(v, x_1, s, [1 - k / s for k in range(s)], 1.0), x_1)), "sign of the step")
    _fails_naming(check_backward_coupling(lambda v, x_1, s: backward_coupling(v, x_1, s)[::-1]), "swapped")
    _fails_naming(check_backward_coupling(lambda v, x_1, s: backward_coupling(v, x_1, s)[0]), "single tensor")
    # a fixed number of steps instead of the argument
    _fails_naming(check_backward_coupling(lambda v, x_1, s: backward_coupling(v, x_1, 4)), "wrong value")


def test_checks_report_without_raising_unless_strict():
    bad = lambda x_0, d: x_0  # noqa: E731
    result = check_noise_end_velocity(bad, strict=False)
    assert not result.passed
    with pytest.raises(AssertionError):
        check_noise_end_velocity(bad, strict=True)


# --- regressions of the audit: plausible mistakes are named, exceptions get a hint ---


def _euler_back(v, x, steps, times, h=None):
    h = 1.0 / steps if h is None else h
    for t in times:
        x = x - h * v(x, torch.full((x.shape[0],), float(t), dtype=x.dtype))
    return x


def test_backward_coupling_names_its_grid_mistakes():
    _fails_naming(check_backward_coupling(
        lambda v, x_1, s: (_euler_back(v, x_1, s, torch.linspace(1, 0, s).tolist()), x_1)),
        "torch.linspace(1, 0, steps)")
    _fails_naming(check_backward_coupling(
        lambda v, x_1, s: (_euler_back(v, x_1, s, [1 - k / s for k in range(s + 1)]), x_1)), "one too many")
    _fails_naming(check_backward_coupling(
        lambda v, x_1, s: (_euler_back(v, x_1, s, [1 - k / s for k in range(s - 1)]), x_1)), "one too few")
    _fails_naming(check_backward_coupling(lambda v, x_1, s: (backward_coupling(v, x_1, s)[0],) * 2), "overwritten")


def test_noise_end_velocity_hints_when_the_data_is_not_averaged():
    result = check_noise_end_velocity(lambda x_0, d: d - x_0)  # (N, D) - (B, D), N != B: a broadcast error
    _fails_naming(result, "hint", "data.mean(0)")


def test_predicted_endpoint_names_the_noise_end_and_hints_a_swapped_call():
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x - t[:, None] * v(x, t)), "noise end")
    _fails_naming(check_predicted_endpoint(lambda v, x, t: x + (1 - t)[:, None] * v(t, x)), "hint", "velocity(x, t)")


def test_lesson_specific_bad_submissions_never_pass():
    extra = [("linspace grid", lambda v, x_1, s: (_euler_back(v, x_1, s, torch.linspace(1, 0, s).tolist()), x_1), None),
             ("h = 1 / (steps + 1)", lambda v, x_1, s: (_euler_back(v, x_1, s, [1 - k / s for k in range(s)],
                                                                      1 / (s + 1)), x_1), None),
             ("midpoint times", lambda v, x_1, s: (_euler_back(v, x_1, s, [1 - (k + 0.5) / s for k in range(s)]), x_1),
              None)]
    assert_no_bad_submission_passes(check_backward_coupling, backward_coupling, extra=extra)
