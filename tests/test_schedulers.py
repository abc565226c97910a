"""Schedulers against their closed forms: boundary values and derivatives (finite differences)."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.schedulers import (
    CondOTScheduler,
    CosineScheduler,
    CosineVPScheduler,
    LinearVPScheduler,
    PolynomialScheduler,
    SchedulerOutput,
    VPScheduler,
)

SCHEDULERS = [
    CondOTScheduler(),
    PolynomialScheduler(2.0),
    PolynomialScheduler(0.5),
    CosineScheduler(),
    LinearVPScheduler(),
    LinearVPScheduler(beta_min=0.5, beta_max=5.0),
    CosineVPScheduler(),
]
IDS = [repr(s) for s in SCHEDULERS]


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=IDS)
def test_derivatives_match_finite_differences(scheduler):
    t = torch.linspace(0.02, 0.98, 25, dtype=torch.float64)
    h = 1e-6
    out, up, down = scheduler(t), scheduler(t + h), scheduler(t - h)
    fd_alpha = (up.alpha_t - down.alpha_t) / (2 * h)
    fd_sigma = (up.sigma_t - down.sigma_t) / (2 * h)
    torch.testing.assert_close(out.d_alpha_t, fd_alpha, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.d_sigma_t, fd_sigma, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("scheduler", [CondOTScheduler(), PolynomialScheduler(3.0), CosineScheduler(),
                                       CosineVPScheduler()], ids=repr)
def test_exact_boundary_values(scheduler):
    out = scheduler(torch.tensor([0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out.alpha_t, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.sigma_t, torch.tensor([1.0, 0.0], dtype=torch.float64), atol=1e-7, rtol=0)


def test_linear_vp_boundaries_are_approximate():
    sch = LinearVPScheduler()  # beta 0.1 -> 20
    out = sch(torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert out.alpha_t[0].item() == pytest.approx(math.exp(-(0.1 + 20.0) / 4))
    assert out.alpha_t[0] < 0.01 and out.sigma_t[0] > 0.9999
    assert out.alpha_t[1].item() == 1.0 and out.sigma_t[1].item() == 0.0
    assert out.d_alpha_t[1].item() == pytest.approx(0.05)  # beta_min / 2
    assert out.d_sigma_t[1].item() == -math.inf  # documented singularity at the data end


@pytest.mark.parametrize("scheduler", [CosineScheduler(), LinearVPScheduler(), CosineVPScheduler()], ids=repr)
def test_variance_preserving(scheduler):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    out = scheduler(t)
    torch.testing.assert_close(out.alpha_t**2 + out.sigma_t**2, torch.ones_like(t), atol=1e-12, rtol=0)


def test_vp_sigma_is_accurate_near_data_end_in_float32():
    """sigma_t^2 = 1 - alpha_t^2 computed without cancellation (expm1 / product forms)."""
    t64 = torch.tensor([1 - 1e-5, 1 - 1e-4, 1 - 1e-3], dtype=torch.float64)
    for sch in (LinearVPScheduler(), CosineVPScheduler()):
        s32 = sch(t64.float()).sigma_t.double()
        s64 = sch(t64).sigma_t
        # float32 t itself is only accurate to ~6e-8, i.e. relative 6e-3 in 1 - t = 1e-5.
        torch.testing.assert_close(s32, s64, rtol=5e-3, atol=0)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_dtype(scheduler, dtype):
    t = torch.rand(3, 4, dtype=dtype)
    out = scheduler(t)
    assert isinstance(out, SchedulerOutput)
    for v in (out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t):
        assert v.shape == t.shape and v.dtype == dtype


def test_polynomial_one_is_cond_ot():
    t = torch.rand(10, dtype=torch.float64)
    a, b = PolynomialScheduler(1.0)(t), CondOTScheduler()(t)
    for f in ("alpha_t", "sigma_t", "d_alpha_t", "d_sigma_t"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f))


def test_python_float_time():
    out = CosineScheduler()(0.5)
    assert out.alpha_t.item() == pytest.approx(math.sqrt(0.5))


def test_invalid_arguments():
    with pytest.raises(ValueError):
        PolynomialScheduler(0.0)
    with pytest.raises(ValueError):
        LinearVPScheduler(beta_min=2.0, beta_max=1.0)
    with pytest.raises(ValueError):
        CosineVPScheduler(s=-1.0)
    assert isinstance(CosineVPScheduler(), VPScheduler)


# --- signal-to-noise ratio and its inverse (lesson 04) ---


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=IDS)
def test_time_at_snr_inverts_snr(scheduler):
    t = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    torch.testing.assert_close(scheduler.time_at_snr(scheduler.snr(t)), t, rtol=0, atol=1e-10)
    assert scheduler.time_at_snr(math.inf).item() == 1.0
    assert scheduler.time_at_snr(torch.tensor([math.inf, 1.0])).shape == (2,)


@pytest.mark.parametrize("scheduler", [CondOTScheduler(), PolynomialScheduler(2.0), PolynomialScheduler(0.5),
                                       CosineScheduler(), LinearVPScheduler(), LinearVPScheduler(1.0, 1.0)], ids=repr)
def test_closed_form_time_at_snr_matches_the_bisection(scheduler):
    from tutorlib.schedulers import Scheduler

    snr = torch.tensor([0.0, 1e-3, 0.3, 1.0, 4.0, 250.0], dtype=torch.float64)
    torch.testing.assert_close(scheduler.time_at_snr(snr), Scheduler.time_at_snr(scheduler, snr), rtol=0, atol=1e-12)


def test_time_at_snr_below_the_smallest_snr_is_zero_and_bad_ratios_fail():
    vp = LinearVPScheduler()
    floor = float(vp.snr(torch.tensor(0.0, dtype=torch.float64)))  # alpha_0 / sigma_0 > 0
    assert 0.005 < floor < 0.01
    assert vp.time_at_snr(floor / 2).item() == 0.0
    for bad in (-1.0, math.nan):
        with pytest.raises(ValueError, match="non-negative"):
            CondOTScheduler().time_at_snr(bad)
        with pytest.raises(ValueError, match="non-negative"):
            vp.time_at_snr(torch.tensor([0.5, bad]))
