"""DDPM in discrete time, and its continuous-time velocity (exact epsilon-model for Gaussian data)."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.ddpm import (
    DDPMSchedule,
    DDPMScheduler,
    ancestral_sample,
    cosine_betas,
    ddim_sample,
    ddpm_to_velocity,
    linear_betas,
)
from tutorlib.schedulers import CosineVPScheduler, LinearVPScheduler
from tutorlib import metrics
from tutorlib.solvers import ode_solve

F64 = torch.float64
MU = torch.tensor([1.5, -1.0], dtype=F64)  # data N(MU, S^2 I)
S = 0.5


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """The course's metric (V-statistic) as a float."""
    return float(metrics.energy_distance(x, y))


def exact_eps_model(schedule: DDPMSchedule):
    """E[eps | x_noisy] for data N(MU, S^2 I): sigma (x - alpha MU) / (alpha^2 S^2 + sigma^2).

    alpha, sigma at the course time t come from DDPMScheduler, which at t = 1 - k/T gives exactly
    sqrt(alpha_bar_k), sqrt(1 - alpha_bar_k), so this is the exact DDPM epsilon-model too.
    """
    sch = DDPMScheduler(schedule)

    def eps_model(x, t):
        out = sch(t)
        a, s = out.alpha_t[:, None], out.sigma_t[:, None]
        return s * (x - a * MU.to(x)) / (a**2 * S**2 + s**2)

    return eps_model


def test_linear_betas_endpoints():
    b = linear_betas(1000)
    assert b.shape == (1000,) and b.dtype == F64
    assert b[0].item() == pytest.approx(1e-4) and b[-1].item() == pytest.approx(0.02)


def test_cosine_betas_alpha_bar_formula():
    T, s = 100, 0.008
    sched = DDPMSchedule(cosine_betas(T, s))
    k = torch.arange(1, T + 1, dtype=F64)
    f = lambda k: torch.cos((k / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    expected = f(k) / f(torch.zeros(1, dtype=F64))
    # clipping at 0.999 only touches the very last step
    torch.testing.assert_close(sched.alpha_bars[:-1], expected[:-1])
    assert sched.betas.max().item() <= 0.999


def test_schedule_fields():
    sched = DDPMSchedule(linear_betas(50))
    torch.testing.assert_close(sched.alphas, 1 - sched.betas)
    torch.testing.assert_close(sched.alpha_bars, torch.cumprod(1 - sched.betas, 0))
    assert sched.T == 50 and sched.alpha_bar(0).item() == 1.0
    assert sched.time(torch.tensor([50, 0])).tolist() == [0.0, 1.0]
    with pytest.raises(ValueError):
        DDPMSchedule(torch.tensor([0.5, 1.5]))


def test_q_sample_hand_computation():
    sched = DDPMSchedule(linear_betas(10))
    g = torch.Generator().manual_seed(0)
    x_data = torch.randn(4, 1, 2, 2, generator=g, dtype=F64)
    noise = torch.randn(4, 1, 2, 2, generator=g, dtype=F64)
    k = torch.tensor([0, 1, 5, 10])
    out = sched.q_sample(x_data, k, noise)
    for i, ki in enumerate(k.tolist()):
        ab = 1.0
        for j in range(ki):
            ab *= 1 - (1e-4 + j * (0.02 - 1e-4) / 9)
        torch.testing.assert_close(out.x_noisy[i], math.sqrt(ab) * x_data[i] + math.sqrt(1 - ab) * noise[i])
    torch.testing.assert_close(out.t, torch.tensor([1.0, 0.9, 0.5, 0.0], dtype=F64))
    assert out.noise is noise and out.x_noisy.dtype == F64


def test_step_indices():
    sched = DDPMSchedule(linear_betas(1000))
    assert sched.step_indices() == list(range(1000, -1, -1))
    ks = sched.step_indices(10)
    assert ks[0] == 1000 and ks[-2] == 1 and ks[-1] == 0 and len(ks) == 11
    with pytest.raises(ValueError):
        sched.step_indices(1001)


def test_ddpm_scheduler_is_exact_at_integer_indices_and_smooth_between():
    sched = DDPMSchedule(linear_betas(100))
    sch = DDPMScheduler(sched)
    k = torch.arange(0, 101)
    out = sch(1 - k.to(F64) / 100)
    torch.testing.assert_close(out.alpha_t**2, sched.alpha_bar(k))
    torch.testing.assert_close(out.sigma_t**2, 1 - sched.alpha_bar(k))
    t = (torch.arange(100, dtype=F64) + 0.37) / 100  # strictly inside the linear pieces
    h = 1e-7
    fd = (sch(t + h).alpha_t - sch(t - h).alpha_t) / (2 * h)
    torch.testing.assert_close(sch(t).d_alpha_t, fd, rtol=1e-6, atol=1e-8)
    fd = (sch(t + h).sigma_t - sch(t - h).sigma_t) / (2 * h)
    torch.testing.assert_close(sch(t).d_sigma_t, fd, rtol=1e-5, atol=1e-8)


def test_continuous_vp_schedulers_are_the_limits_of_ddpm_schedules():
    t = torch.linspace(0.0, 0.99, 50, dtype=F64)
    lin = DDPMScheduler(DDPMSchedule(linear_betas(1000)))(t).alpha_t
    torch.testing.assert_close(lin, LinearVPScheduler()(t).alpha_t, rtol=2e-2, atol=1e-3)
    cos = DDPMScheduler(DDPMSchedule(cosine_betas(1000)))(t[1:]).alpha_t
    torch.testing.assert_close(cos, CosineVPScheduler()(t[1:]).alpha_t, rtol=1e-3, atol=1e-3)


@pytest.fixture(scope="module")
def gaussian_setup():
    sched = DDPMSchedule(linear_betas(1000))
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(2000, 2, generator=g, dtype=F64)
    reference = MU + S * torch.randn(2000, 2, generator=g, dtype=F64)  # true data samples
    other = MU + S * torch.randn(2000, 2, generator=g, dtype=F64)
    floor = energy_distance(reference, other)  # noise floor of the metric at this sample size
    return sched, x_T, reference, floor


def _check_gaussian(x, reference, floor, mean_tol=0.05, std_tol=0.03):
    assert torch.allclose(x.mean(0), MU, atol=mean_tol), x.mean(0)
    assert torch.allclose(x.std(0), torch.full((2,), S, dtype=F64), atol=std_tol), x.std(0)
    ed = energy_distance(x, reference)
    assert ed < max(3 * floor, 5e-3), (ed, floor)
    return ed


def test_ancestral_and_probability_flow_ode_reach_the_same_distribution(gaussian_setup):
    """Exact eps-model for N(MU, S^2 I): DDPM's ancestral sampler, DDIM, and the velocity field of
    ddpm_to_velocity integrated by Heun all land on the data distribution (energy distance against
    true samples within 3x the metric's own noise floor, and within 5e-3 of each other)."""
    sched, x_T, reference, floor = gaussian_setup
    eps_model = exact_eps_model(sched)
    anc = ancestral_sample(eps_model, x_T, sched, generator=torch.Generator().manual_seed(1))
    assert anc.nfe == 1000 and anc.trajectory is None
    _check_gaussian(anc.x, reference, floor)

    v = ddpm_to_velocity(eps_model, sched)
    sol = ode_solve(v, x_T, method="heun", steps=100, t1=v.t_max)
    x_ode = v.denoise(sol.x, v.t_max)
    _check_gaussian(x_ode, reference, floor)
    # the ODE is deterministic: it must be the exact transport map x -> MU + S x up to alpha_0 > 0
    torch.testing.assert_close(x_ode, MU + S * x_T, atol=0.02, rtol=0)
    assert energy_distance(anc.x, x_ode) < 5e-3

    # DDIM (eta = 0) is a first-order solver of the same ODE: max error 0.10, 0.053, 0.028 at 50, 100,
    # 200 steps; with the full chain it meets the Heun solution.
    ddim = ddim_sample(eps_model, x_T, sched, steps=1000)
    _check_gaussian(ddim.x, reference, floor)
    torch.testing.assert_close(ddim.x, x_ode, atol=0.02, rtol=0)


def test_respaced_samplers_and_trajectory(gaussian_setup):
    sched, x_T, reference, floor = gaussian_setup
    eps_model = exact_eps_model(sched)
    x_T = x_T[:500]
    res = ancestral_sample(eps_model, x_T, sched, steps=100, posterior_variance=True,
                           generator=torch.Generator().manual_seed(2), return_trajectory=True)
    assert res.trajectory.shape == (101, 500, 2) and res.nfe == 100
    assert torch.equal(res.trajectory[0], x_T) and torch.equal(res.trajectory[-1], res.x)
    assert res.k[0].item() == 1000 and res.k[-1].item() == 0
    assert res.times[0].item() == 0.0 and res.times[-1].item() == 1.0
    assert torch.allclose(res.x.mean(0), MU, atol=0.1)
    assert torch.allclose(res.x.std(0), torch.tensor(S, dtype=F64), atol=0.06)
    # eta = 1 DDIM is the respaced ancestral sampler with posterior variance: same noise, same result
    a = ancestral_sample(eps_model, x_T, sched, steps=20, posterior_variance=True,
                         generator=torch.Generator().manual_seed(3))
    b = ddim_sample(eps_model, x_T, sched, steps=20, eta=1.0, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a.x, b.x)


def test_ddim_is_deterministic_and_reproducible():
    sched = DDPMSchedule(cosine_betas(200))
    x_T = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(4))
    model = lambda x, t: 0.1 * x * t[:, None, None, None]  # noqa: E731
    a, b = ddim_sample(model, x_T, sched, steps=10), ddim_sample(model, x_T, sched, steps=10)
    assert torch.equal(a.x, b.x) and a.x.shape == x_T.shape and a.x.dtype == torch.float32 and a.nfe == 10
    c = ancestral_sample(model, x_T, sched, steps=10, generator=torch.Generator().manual_seed(5))
    d = ancestral_sample(model, x_T, sched, steps=10, generator=torch.Generator().manual_seed(5))
    assert torch.equal(c.x, d.x)


def test_model_receives_course_time():
    sched = DDPMSchedule(linear_betas(10))
    seen = []

    def model(x, t):
        seen.append(t.clone())
        return torch.zeros_like(x)

    ancestral_sample(model, torch.zeros(3, 2), sched, generator=torch.Generator().manual_seed(0))
    assert [s[0].item() for s in seen] == pytest.approx([1 - k / 10 for k in range(10, 0, -1)])
    assert all(s.shape == (3,) for s in seen)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_ddpm_on_cuda():
    sched = DDPMSchedule(linear_betas(100))
    x = torch.randn(8, 2, device="cuda")
    out = sched.q_sample(x, torch.randint(1, 101, (8,), device="cuda"), torch.randn_like(x))
    assert out.x_noisy.device.type == "cuda"
    res = ancestral_sample(lambda x, t: 0.5 * x, x, sched, steps=10, generator=torch.Generator().manual_seed(0))
    assert res.x.device.type == "cuda" and torch.isfinite(res.x).all()
    v = ddpm_to_velocity(lambda x, t: 0.5 * x, sched)
    assert v(x, torch.full((8,), 0.5, device="cuda")).device.type == "cuda"


def test_ddim_clip_denoised_bounds_the_estimate_under_the_cosine_schedule():
    schedule = DDPMSchedule(cosine_betas(1000))
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bad_eps = lambda x, t: 0.9 * x  # a poor model: its x_data_hat at k = T is huge
    wild = ddim_sample(bad_eps, x_T, schedule, steps=10).x
    tame = ddim_sample(bad_eps, x_T, schedule, steps=10, clip_denoised=5.0).x
    assert wild.abs().max() > 100
    assert tame.abs().max() <= 5.0 + 1e-9
    with pytest.raises(ValueError, match="clip_denoised"):
        ddim_sample(bad_eps, x_T, schedule, steps=10, clip_denoised=0.0)


def test_ddpm_scheduler_time_at_snr_is_the_exact_inverse():
    """The closed-form inverse agrees with the generic bisection, and below alpha_0 / sigma_0 gives t = 0."""
    from tutorlib.schedulers import Scheduler

    for betas in (linear_betas(1000), cosine_betas(200)):
        sch = DDPMScheduler(DDPMSchedule(betas))
        t = torch.cat([torch.linspace(0.0, 0.999, 301, dtype=F64), torch.tensor([1.0], dtype=F64)])
        snr = sch.snr(t)
        torch.testing.assert_close(sch.time_at_snr(snr), t, rtol=0, atol=1e-9)
        torch.testing.assert_close(sch.time_at_snr(snr[1:-1]), Scheduler.time_at_snr(sch, snr[1:-1]), rtol=0, atol=1e-9)
        assert sch.time_at_snr(snr[0] / 2).item() == 0.0 and sch.snr(torch.tensor(1.0, dtype=F64)).item() == math.inf
