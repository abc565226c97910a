"""Lesson 04's exercise checks: the correct solutions pass, the sweep of bad submissions fails, and the
known mistakes are named with their fix."""

from __future__ import annotations

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lesson04 import check_equivalent_sigma, check_linear_path_time, check_x1_to_velocity
from tutorlib.interpolants import QuadraticNoise, SqrtNoise, StochasticInterpolant
from tutorlib.paths import AffinePath, CondOTPath, snr_match
from tutorlib.schedulers import CosineScheduler, LinearVPScheduler


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them -------------------------------------------


def x1_to_velocity(x1_hat, x_t, alpha, sigma, d_alpha, d_sigma):
    a, s, da, ds = (c[:, None] for c in (alpha, sigma, d_alpha, d_sigma))
    eps_hat = (x_t - a * x1_hat) / s
    return da * x1_hat + ds * eps_hat


def equivalent_sigma(sigma, d_sigma, gamma, d_gamma):
    sigma_eq = torch.sqrt(sigma**2 + gamma**2)
    return sigma_eq, (sigma * d_sigma + gamma * d_gamma) / sigma_eq


def linear_path_time(alpha_bar):
    a, s = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()
    return a / (a + s), 1 / (a + s)


CHECKS = [(check_x1_to_velocity, x1_to_velocity), (check_equivalent_sigma, equivalent_sigma),
          (check_linear_path_time, linear_path_time)]


@pytest.mark.parametrize("checker, fn", CHECKS, ids=lambda v: getattr(v, "__name__", ""))
def test_correct_solutions_pass_strictly(checker, fn, capsys):
    result = checker(fn, strict=True)
    assert result.passed, result.message
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("checker, fn", CHECKS, ids=lambda v: getattr(v, "__name__", ""))
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


# --- the references are the library's maths ---------------------------------------------------------


@pytest.mark.parametrize("path", [CondOTPath(), AffinePath(CosineScheduler()), AffinePath(LinearVPScheduler())], ids=repr)
def test_x1_to_velocity_solution_is_the_library_conversion(path):
    g = torch.Generator().manual_seed(0)
    x1_hat, x_t = torch.randn(7, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    t = torch.linspace(0.1, 0.9, 7, dtype=torch.float64)
    o = path.scheduler(t)
    torch.testing.assert_close(x1_to_velocity(x1_hat, x_t, o.alpha_t, o.sigma_t, o.d_alpha_t, o.d_sigma_t),
                               path.x1_to_velocity(x1_hat, x_t, t))


@pytest.mark.parametrize("noise", [QuadraticNoise(2.0), SqrtNoise(0.5)], ids=repr)
def test_equivalent_sigma_solution_is_the_library_scheduler(noise):
    interp = StochasticInterpolant(CosineScheduler(), noise)
    t = torch.linspace(0.1, 0.9, 9, dtype=torch.float64)
    o, gm, eq = interp.scheduler(t), interp.noise(t), interp.gaussian_equivalent()(t)
    s, ds = equivalent_sigma(o.sigma_t, o.d_sigma_t, gm.gamma_t, gm.d_gamma_t)
    torch.testing.assert_close(s, eq.sigma_t)
    torch.testing.assert_close(ds, eq.d_sigma_t)


def test_linear_path_time_solution_is_snr_match_from_a_vp_path():
    vp = AffinePath(LinearVPScheduler())
    t = torch.linspace(0.05, 0.95, 9, dtype=torch.float64)
    alpha_bar = vp.scheduler(t).alpha_t.square()
    m = snr_match(t, vp, CondOTPath())
    got_t, got_scale = linear_path_time(alpha_bar)
    torch.testing.assert_close(got_t, m.t)
    torch.testing.assert_close(got_scale, m.scale)


# --- known mistakes are named -------------------------------------------------------------------------


def _bc(*c):
    return (v[:, None] for v in c)


@pytest.mark.parametrize("wrong, expected", [
    (lambda x1, xt, a, s, da, ds: (lambda a, s, da, ds: (da / a) * xt + (ds - da * s / a) * x1)(*_bc(a, s, da, ds)),
     "epsilon conversion"),
    (lambda x1, xt, a, s, da, ds: (lambda a, s, da, ds: da * x1)(*_bc(a, s, da, ds)), "noise term missing"),
    (lambda x1, xt, a, s, da, ds: (lambda a, s, da, ds: da * x1 + ds * (a * x1 - xt) / s)(*_bc(a, s, da, ds)),
     "wrong sign"),
    (lambda x1, xt, a, s, da, ds: (lambda a, s, da, ds: (x1 - xt) / s)(*_bc(a, s, da, ds)), "linear path"),
])
def test_x1_to_velocity_names_known_mistakes(wrong, expected):
    result = check_x1_to_velocity(wrong)
    assert not result.passed and expected in result.message, result.message


@pytest.mark.parametrize("wrong, expected", [
    (lambda s, ds, g, dg: (s + g, ds + dg), "standard deviations added"),
    (lambda s, ds, g, dg: ((s * s + g * g).sqrt(), ds + dg), "d_sigma + d_gamma"),
    (lambda s, ds, g, dg: ((s * s + g * g).sqrt(), s * ds + g * dg), "without the division"),
    (lambda s, ds, g, dg: (s * s + g * g, 2 * (s * ds + g * dg)), "instead of its square root"),
])
def test_equivalent_sigma_names_known_mistakes(wrong, expected):
    result = check_equivalent_sigma(wrong)
    assert not result.passed and expected in result.message, result.message


@pytest.mark.parametrize("wrong, expected", [
    (lambda ab: (ab.sqrt(), 1 / (ab.sqrt() + (1 - ab).sqrt())), "VP path's alpha_t"),
    (lambda ab: (ab, 1 / (ab.sqrt() + (1 - ab).sqrt())), "t = alpha_bar"),
    (lambda ab: (ab.sqrt() / (ab.sqrt() + (1 - ab).sqrt()), ab.sqrt() + (1 - ab).sqrt()), "scale inverted"),
    (lambda ab: (1 / (ab.sqrt() + (1 - ab).sqrt()), ab.sqrt() / (ab.sqrt() + (1 - ab).sqrt())), "outputs swapped"),
])
def test_linear_path_time_names_known_mistakes(wrong, expected):
    result = check_linear_path_time(wrong)
    assert not result.passed and expected in result.message, result.message


def test_hints_and_shapes():
    # a per-batch coefficient broadcast the wrong way raises; the broadcast hint is attached
    result = check_x1_to_velocity(lambda x1, xt, a, s, da, ds: da * x1 + ds * (xt - a * x1) / s)
    assert not result.passed and "t[:, None]" in result.message, result.message
    # an answer that only works at alpha_bar = 1/2 fails elsewhere, with the value hint
    result = check_linear_path_time(lambda ab: (torch.full_like(ab, 0.5), torch.full_like(ab, 2 ** -0.5)))
    assert not result.passed and "t = 1/2" in result.message
