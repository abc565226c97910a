"""Lesson 07's exercise checks: the solutions pass, no bad submission passes, the known mistakes are named."""

from __future__ import annotations

import math

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lesson07 import (check_meanflow_target_paper, check_minimax_grid, check_rk3_step,
                                         minimax_grid_reference)
from tutorlib.fewstep import meanflow_target
from tutorlib.solvers import bellman_grid


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


def rk3_step(velocity, x, t, dt):
    k1 = velocity(x, t)
    k2 = velocity(x + 0.5 * dt * k1, t + 0.5 * dt)
    k3 = velocity(x - dt * k1 + 2 * dt * k2, t + dt)
    return x + dt * (k1 + 4 * k2 + k3) / 6


def minimax_grid(costs, steps):
    n = costs.shape[0] - 1
    best = costs[0].clone()  # J_1(j)
    parents = []
    for _ in range(steps - 1):
        best, arg = torch.maximum(best[:, None], costs).min(0)
        parents.append(arg)
    idx = [n]
    for arg in reversed(parents):
        idx.append(int(arg[idx[-1]]))
    return torch.tensor([0] + idx[::-1], dtype=torch.long)


def meanflow_target_paper(u, z_t, r, t, v):
    _, du_dt = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
    return (v - (t - r)[:, None] * du_dt).detach()


SOLUTIONS = [(check_rk3_step, rk3_step), (check_minimax_grid, minimax_grid),
             (check_meanflow_target_paper, meanflow_target_paper)]


@pytest.mark.parametrize("checker, fn", SOLUTIONS, ids=[c.__name__ for c, _ in SOLUTIONS])
def test_correct_solutions_pass(checker, fn, capsys):
    result = checker(fn, strict=True)
    assert result.passed and result.message
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("checker, fn", SOLUTIONS, ids=[c.__name__ for c, _ in SOLUTIONS])
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


def test_the_minimax_reference_is_the_brute_force_optimum():
    import itertools

    g = torch.Generator().manual_seed(3)
    n = 8
    C = torch.rand(n + 1, n + 1, generator=g, dtype=torch.float64)
    C[~torch.triu(torch.ones(n + 1, n + 1, dtype=torch.bool), 1)] = math.inf
    for K in (1, 3, n):
        idx = minimax_grid_reference(C, K).tolist()
        best = min(max(C[a, b].item() for a, b in zip((0, *m), (*m, n)))
                   for m in itertools.combinations(range(1, n), K - 1))
        assert max(C[a, b].item() for a, b in zip(idx[:-1], idx[1:])) == best


def _messages(checker, fn):
    result = checker(fn, strict=False, time_limit_s=5.0)
    assert not result.passed
    return result.message


def test_rk3_mistakes_are_named():
    def heun(v, x, t, dt):
        k1 = v(x, t)
        return x + 0.5 * dt * (k1 + v(x + dt * k1, t + dt))

    def no_minus(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        return x + dt * (k1 + 4 * k2 + v(x + 2 * dt * k2, t + dt)) / 6

    def quarter(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + 0.5 * dt * k1, t + 0.5 * dt)
        return x + dt * (k1 + 2 * k2 + v(x - dt * k1 + 2 * dt * k2, t + dt)) / 4

    assert "Heun" in _messages(check_rk3_step, heun)
    assert "-dt k1 term missing" in _messages(check_rk3_step, no_minus)
    assert "1/4, 1/2, 1/4" in _messages(check_rk3_step, quarter)
    assert "hint" in _messages(check_rk3_step, lambda velocity, x, t, dt: x + dt * velocity(x))


def test_minimax_mistakes_are_named():
    def summed(costs, steps):  # Bellman's recursion with + (the lesson's grid)
        return torch.tensor(bellman_grid(costs, steps).indices, dtype=torch.long)

    def without_ends(costs, steps):
        return minimax_grid(costs, steps)[1:]

    def uniform(costs, steps):
        n = costs.shape[0] - 1
        return torch.linspace(0, n, steps + 1).round().long()

    assert "least *sum*" in _messages(check_minimax_grid, summed)
    assert "both ends included" in _messages(check_minimax_grid, without_ends)
    msg = _messages(check_minimax_grid, uniform)
    assert "not optimal" in msg or "not a grid" in msg
    assert "int64" in _messages(check_minimax_grid, lambda c, k: minimax_grid(c, k).double())


def test_meanflow_paper_mistakes_are_named():
    def course_sign(u, z_t, r, t, v):
        _, d = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
        return v + (t - r)[:, None] * d

    def along_r(u, z_t, r, t, v):
        _, d = torch.func.jvp(u, (z_t, r, t), (v, torch.ones_like(r), torch.zeros_like(t)))
        return v - (t - r)[:, None] * d

    def no_gap(u, z_t, r, t, v):
        _, d = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
        return v - d

    assert "course's sign" in _messages(check_meanflow_target_paper, course_sign)
    assert "taken in r" in _messages(check_meanflow_target_paper, along_r)
    assert "factor missing" in _messages(check_meanflow_target_paper, no_gap)
    assert "flow matching's target" in _messages(check_meanflow_target_paper, lambda u, z_t, r, t, v: v + 0)


def test_the_paper_target_is_the_course_target_with_time_reversed():
    """The two clocks describe the same identity: with s = 1 - t, the course's MeanFlow target of
    u_course(x, s, t') = -u_paper(x, 1 - t', 1 - s) is minus the paper's (velocities flip sign)."""
    from tutorlib.exercises.lesson07 import _paper_inputs

    inputs = _paper_inputs(torch.Generator().manual_seed(0))
    u_p, z, r, t, v = (inputs[k] for k in ("u", "z_t", "r", "t", "v"))

    def u_course(x, s, e):  # the course's average velocity from s to e, e >= s
        return -u_p(x, 1 - e, 1 - s)

    _, target_course = meanflow_target(u_course, z, 1 - t, 1 - r, -v)
    torch.testing.assert_close(target_course, -meanflow_target_paper(u_p, z, r, t, v))


# --- regressions of the audit ---


def _tableau(a21, a31, a32, c2, c3, b):
    def step(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + a21 * dt * k1, t + c2 * dt)
        k3 = v(x + a31 * dt * k1 + a32 * dt * k2, t + c3 * dt)
        return x + dt * (b[0] * k1 + b[1] * k2 + b[2] * k3)
    return step


def test_other_third_order_tableaus_and_rk4_fail_by_a_wide_margin():
    """They differ from Kutta's step by O(dt^4) ~ 1e-5: the tolerance must be well below that (with the
    default 1e-6 + 1e-5 |x|, RK4 failed on only 5 of the 27 entries of trial 1)."""
    def rk4(v, x, t, dt):
        k1 = v(x, t)
        k2 = v(x + dt / 2 * k1, t + dt / 2)
        k3 = v(x + dt / 2 * k2, t + dt / 2)
        return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + v(x + dt * k3, t + dt))

    others = {"Heun's third order": _tableau(1 / 3, 0.0, 2 / 3, 1 / 3, 2 / 3, (0.25, 0.0, 0.75)),
              "Ralston's third order": _tableau(0.5, 0.0, 0.75, 0.5, 0.75, (2 / 9, 1 / 3, 4 / 9)),
              "SSPRK3": _tableau(1.0, 0.25, 0.25, 1.0, 0.5, (1 / 6, 1 / 6, 2 / 3)), "RK4": rk4}
    from tutorlib.exercises.lesson07 import _rk3, _step_inputs

    for name, fn in others.items():
        assert not check_rk3_step(fn).passed, name
        for seed in range(5):  # on other draws too, the step differs by far more than the tolerance
            v, x, t, dt = _step_inputs(torch.Generator().manual_seed(seed)).values()
            ref = _rk3(v, x, t, dt)
            assert bool(((fn(v, x, t, dt) - ref).abs() > 10 * (1e-8 + 1e-7 * ref.abs())).any()), (name, seed)
    assert "classic RK4" in _messages(check_rk3_step, rk4)
    # the tolerance is tight: an error of 5e-7 (inside the old 1e-6 + 1e-5 |x|) fails ...
    assert not check_rk3_step(lambda v, x, t, dt: rk3_step(v, x, t, dt) + 5e-7).passed
    # ... while dt rounded to float32, and a correct step written in another order, still pass
    assert check_rk3_step(lambda v, x, t, dt: rk3_step(v, x, t, torch.tensor(dt, dtype=torch.float32)),
                          strict=True).passed
    assert check_rk3_step(lambda v, x, t, dt: x + dt / 6 * v(x, t) + dt * 4 / 6 * v(x + dt / 2 * v(x, t), t + dt / 2)
                          + dt / 6 * v(x - dt * v(x, t) + 2 * dt * v(x + dt / 2 * v(x, t), t + dt / 2), t + dt),
                          strict=True).passed


def test_meanflow_paper_tangent_mistakes_are_named_and_broadcasts_hinted():
    def jvp_target(tr, tt):
        def fn(u, z_t, r, t, v):
            _, d = torch.func.jvp(u, (z_t, r, t), (v, tr * torch.ones_like(r), tt * torch.ones_like(t)))
            return v - (t - r)[:, None] * d
        return fn

    assert "(v, 1, 1)" in _messages(check_meanflow_target_paper, jvp_target(1.0, 1.0))
    assert "(v, 0, 0)" in _messages(check_meanflow_target_paper, jvp_target(0.0, 0.0))

    def unreshaped(u, z_t, r, t, v):
        _, d = torch.func.jvp(u, (z_t, r, t), (v, torch.zeros_like(r), torch.ones_like(t)))
        return v - (t - r) * d

    assert "(t - r)[:, None]" in _messages(check_meanflow_target_paper, unreshaped)


def test_lesson_specific_bad_submissions_never_pass():
    extra = [("Ralston's RK3", _tableau(0.5, 0.0, 0.75, 0.5, 0.75, (2 / 9, 1 / 3, 4 / 9)), None),
             ("SSPRK3", _tableau(1.0, 0.25, 0.25, 1.0, 0.5, (1 / 6, 1 / 6, 2 / 3)), None),
             ("c3 = 1/2", _tableau(0.5, -1.0, 2.0, 0.5, 0.5, (1 / 6, 4 / 6, 1 / 6)), None)]
    assert_no_bad_submission_passes(check_rk3_step, rk3_step, extra=extra)
