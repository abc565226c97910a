"""Appendix C's exercise checks: the correct solutions pass, no bad submission does, known mistakes are named."""

from __future__ import annotations

import math

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lessonC import check_sphere_exp_step, check_torus_path


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them ---


def wrap(a):
    return math.pi - torch.remainder(math.pi - a, 2 * math.pi)


def torus_path(x_0, x_1, t):
    v = wrap(x_1 - x_0)
    return wrap(x_0 + t[:, None] * v), v


def sphere_exp_step(x, v, dt):
    u = dt * (v - (v * x).sum(-1, keepdim=True) * x)
    n = u.norm(dim=-1, keepdim=True)
    return torch.cos(n) * x + torch.sinc(n / math.pi) * u


CORRECT = [(check_torus_path, torus_path), (check_sphere_exp_step, sphere_exp_step)]
IDS = [c.__name__ for c, _ in CORRECT]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_correct_solutions_pass_also_strictly(checker, fn):
    assert checker(fn).passed
    assert checker(fn, strict=True).passed


def test_other_correct_ways_pass():
    def atan2_path(x_0, x_1, t):  # wrapping by atan2(sin, cos), velocity as log_{x_t}(x_1) / (1 - t)
        w = lambda a: torch.atan2(torch.sin(a), torch.cos(a))  # noqa: E731
        x_t = w(x_0 + t.unsqueeze(1) * w(x_1 - x_0))
        return x_t, w(x_1 - x_t) / (1 - t).unsqueeze(1)

    def where_step(x, v, dt):  # a guarded division instead of sinc, and a renormalisation
        u = dt * (v - (v * x).sum(-1, keepdim=True) * x)
        n = u.norm(dim=-1, keepdim=True)
        y = torch.cos(n) * x + torch.where(n > 0, torch.sin(n) / n.clamp_min(1e-300), torch.ones_like(n)) * u
        return y / y.norm(dim=-1, keepdim=True)

    assert check_torus_path(atan2_path).passed
    assert check_sphere_exp_step(where_step).passed


def _torus_bad():
    to_2pi = lambda a: torch.remainder(a, 2 * math.pi)  # noqa: E731
    return [
        ("no wrapping", lambda x0, x1, t: (wrap(x0 + t[:, None] * (x1 - x0)), x1 - x0), None),
        ("x_t unwrapped", lambda x0, x1, t: (x0 + t[:, None] * wrap(x1 - x0), wrap(x1 - x0)), None),
        ("[0, 2 pi)", lambda x0, x1, t: (to_2pi(x0 + t[:, None] * to_2pi(x1 - x0)), to_2pi(x1 - x0)), None),
        ("1 - t", lambda x0, x1, t: torus_path(x0, x1, 1 - t), None),
        ("reversed velocity", lambda x0, x1, t: (torus_path(x0, x1, t)[0], wrap(x0 - x1)), None),
        ("swapped outputs", lambda x0, x1, t: torus_path(x0, x1, t)[::-1], None),
        ("only x_t", lambda x0, x1, t: torus_path(x0, x1, t)[0], None),
        ("fixed dimension 2", lambda x0, x1, t: torus_path(x0[:, :2], x1[:, :2], t), None),
    ]


def _sphere_bad():
    def no_projection(x, v, dt):  # the exp formula applied to the raw velocity
        u = dt * v
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sinc(n / math.pi) * u

    def naive(x, v, dt):  # sin(n) / n: NaN where the tangent part vanishes
        u = dt * (v - (v * x).sum(-1, keepdim=True) * x)
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sin(n) / n * u

    def retraction(x, v, dt):
        y = x + dt * (v - (v * x).sum(-1, keepdim=True) * x)
        return y / y.norm(dim=-1, keepdim=True)

    return [
        ("no projection", no_projection, None),
        ("0 / 0", naive, None),
        ("projected Euler", retraction, None),
        ("backwards", lambda x, v, dt: sphere_exp_step(x, -v, dt), None),
        ("dt squared", lambda x, v, dt: sphere_exp_step(x, v, dt * dt), None),
        ("3D only", lambda x, v, dt: sphere_exp_step(x[:, :3], v[:, :3], dt), None),
    ]


@pytest.mark.parametrize("checker, fn, extra", [(check_torus_path, torus_path, _torus_bad()),
                                                 (check_sphere_exp_step, sphere_exp_step, _sphere_bad())], ids=IDS)
def test_no_bad_submission_passes(checker, fn, extra):
    assert_no_bad_submission_passes(checker, fn, extra=extra)


def test_strict_raises_on_a_failure():
    with pytest.raises(AssertionError, match="FAILED"):
        check_torus_path(lambda x0, x1, t: (x0, x1 - x0), strict=True)


def test_torus_mistakes_are_named():
    to_2pi = lambda a: torch.remainder(a, 2 * math.pi)  # noqa: E731
    cases = [
        (lambda x0, x1, t: (wrap(x0 + t[:, None] * (x1 - x0)), x1 - x0), "not wrapped (the long way"),
        (lambda x0, x1, t: (x0 + t[:, None] * wrap(x1 - x0), wrap(x1 - x0)), "x_t not wrapped back"),
        (lambda x0, x1, t: (to_2pi(x0 + t[:, None] * to_2pi(x1 - x0)), to_2pi(x1 - x0)), "[0, 2 pi)"),
        (lambda x0, x1, t: torus_path(x0, x1, 1 - t), "t and 1 - t swapped"),
        (lambda x0, x1, t: (torus_path(x0, x1, t)[0], wrap(x0 - x1)), "pointing from x_1 to x_0"),
        (lambda x0, x1, t: torus_path(x0, x1, t)[::-1], "x_t and dx_t swapped"),
    ]
    for fn, text in cases:
        result = check_torus_path(fn)
        assert not result.passed and text in result.message, (text, result.message)
    unknown = check_torus_path(lambda x0, x1, t: (torus_path(x0, x1, t)[0], 2 * wrap(x1 - x0)))
    assert not unknown.passed and "the inputs there" in unknown.message and "hint:" in unknown.message
    assert "hint: on the torus" not in check_torus_path(lambda x0, x1, t: x0).message  # a structure error: no value hint


def test_sphere_mistakes_are_named():
    def raw(x, u):
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sinc(n / math.pi) * u

    def tan(x, v):
        return v - (v * x).sum(-1, keepdim=True) * x

    cases = [
        (lambda x, v, dt: raw(x, dt * v), "not of its tangent part"),
        (lambda x, v, dt: (lambda y: y / y.norm(dim=-1, keepdim=True))(raw(x, dt * v)), "renormalised"),
        (lambda x, v, dt: (lambda y: y / y.norm(dim=-1, keepdim=True))(x + dt * tan(x, v)), "projected Euler step"),
        (lambda x, v, dt: x + dt * tan(x, v), "ordinary Euler step"),
        (lambda x, v, dt: sphere_exp_step(x, -v, dt), "backwards in time"),
        (lambda x, v, dt: torch.cos((dt * tan(x, v)).norm(dim=-1, keepdim=True)) * x
         + torch.sin((dt * tan(x, v)).norm(dim=-1, keepdim=True)) * dt * tan(x, v), "without dividing by |u|"),
        (lambda x, v, dt: sphere_exp_step(x, v, 1.0), "the step dt left out"),
    ]
    for fn, text in cases:
        result = check_sphere_exp_step(fn)
        assert not result.passed and text in result.message, (text, result.message)

    def naive(x, v, dt):
        u = dt * tan(x, v)
        n = u.norm(dim=-1, keepdim=True)
        return torch.cos(n) * x + torch.sin(n) / n * u

    nan = check_sphere_exp_step(naive)
    assert not nan.passed and nan.kind == "nonfinite" and "torch.sinc" in nan.message
