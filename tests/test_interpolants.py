"""Stochastic interpolants against closed forms: the path and its derivative, the Gaussian-source
equivalence (density and velocity), the score from the denoiser, and SDEs that keep the marginals."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.interpolants import (
    GaussianEquivalentScheduler,
    InterpolantModel,
    QuadraticNoise,
    SqrtNoise,
    StochasticInterpolant,
    interpolant_loss,
)
from tutorlib.paths import AffinePath, gmm_marginal_log_prob, gmm_marginal_velocity
from tutorlib.schedulers import CondOTScheduler, CosineScheduler
from tutorlib.solvers import ode_solve, sde_solve

F64 = torch.float64
INTERPOLANTS = [StochasticInterpolant(), StochasticInterpolant(CosineScheduler(), QuadraticNoise(2.0)),
                StochasticInterpolant(CondOTScheduler(), SqrtNoise(0.5))]


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("noise", [QuadraticNoise(1.5), SqrtNoise(0.7)], ids=repr)
def test_latent_noise_vanishes_at_the_ends_and_its_derivative_is_exact(noise):
    ends = noise(torch.tensor([0.0, 1.0], dtype=F64))
    assert torch.equal(ends.gamma_t, torch.zeros(2, dtype=F64))
    t = torch.linspace(0.05, 0.95, 19, dtype=F64)
    h = 1e-6
    fd = (noise(t + h).gamma_t - noise(t - h).gamma_t) / (2 * h)
    torch.testing.assert_close(noise(t).d_gamma_t, fd, rtol=1e-6, atol=1e-8)
    assert bool((noise(t).gamma_t > 0).all())


def test_bad_latent_noise_and_parts_fail_clearly():
    for bad in (-1.0, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="scale a"):
            QuadraticNoise(bad)
    with pytest.raises(TypeError, match="LatentNoise"):
        StochasticInterpolant(noise=0.5)
    with pytest.raises(TypeError, match="Scheduler"):
        StochasticInterpolant(scheduler="linear")
    with pytest.raises(ValueError, match="one shape"):
        StochasticInterpolant().sample(torch.zeros(4, 2), torch.zeros(4, 2), torch.zeros(4, 3), torch.rand(4))


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=repr)
def test_sample_is_the_path_and_dx_t_its_time_derivative(interp):
    g = _gen(1)
    x_0, x_1, z = (torch.randn(6, 3, generator=g, dtype=F64) for _ in range(3))
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    s = interp.sample(x_0, x_1, z, t)
    out, gm = interp.scheduler(t), interp.noise(t)
    torch.testing.assert_close(s.x_t, out.alpha_t[:, None] * x_1 + out.sigma_t[:, None] * x_0 + gm.gamma_t[:, None] * z)
    h = 1e-6
    fd = (interp.sample(x_0, x_1, z, t + h).x_t - interp.sample(x_0, x_1, z, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, rtol=1e-6, atol=1e-6)
    ends = interp.sample(x_0, x_1, z, torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=F64))
    torch.testing.assert_close(ends.x_t[:3], x_0[:3])  # no latent noise at the ends
    torch.testing.assert_close(ends.x_t[3:], x_1[3:])


@pytest.mark.parametrize("interp", INTERPOLANTS, ids=repr)
def test_gaussian_source_equivalent_has_the_same_density_and_velocity(interp):
    """For x_0 ~ N(0, I): the interpolant's p_t is the equivalent path's mixture density (checked on samples,
    by the mean log-density of the closed form against the sample's own), and E[dx_t | x_t] is that path's
    marginal velocity (checked by least squares on 200,000 samples of one Gaussian, where it is affine)."""
    g = _gen(2)
    mu, s = torch.tensor([1.5, -0.5], dtype=F64), 0.4
    means, stds, w = mu[None], torch.tensor([s], dtype=F64), torch.ones(1, dtype=F64)
    eq = AffinePath(interp.gaussian_equivalent())
    assert isinstance(eq.scheduler, GaussianEquivalentScheduler)
    n = 200_000
    for tv in (0.3, 0.6):
        x_0, z = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
        x_1 = mu + s * torch.randn(n, 2, generator=g, dtype=F64)
        t = torch.full((n,), tv, dtype=F64)
        smp = interp.sample(x_0, x_1, z, t)
        # density: the mixture formula must describe the samples: mean and covariance of p_t
        o = eq.scheduler(t[:1])
        torch.testing.assert_close(smp.x_t.mean(0), o.alpha_t * mu, atol=0.01, rtol=0)
        var = o.alpha_t**2 * s**2 + o.sigma_t**2
        torch.testing.assert_close(smp.x_t.var(0), var.expand(2), rtol=0.02, atol=0)
        lp = gmm_marginal_log_prob(eq, smp.x_t[:2000], t[:2000], means, stds, w)
        assert torch.isfinite(lp).all()
        # velocity: E[dx_t | x_t] is affine in x_t for Gaussian data; regress and compare with the closed form
        A = torch.cat([smp.x_t, torch.ones(n, 1, dtype=F64)], 1)  # (n, 3)
        coef = torch.linalg.lstsq(A, smp.dx_t).solution  # (3, 2)
        probe = torch.randn(50, 2, generator=g, dtype=F64) + o.alpha_t * mu
        fitted = torch.cat([probe, torch.ones(50, 1, dtype=F64)], 1) @ coef
        exact = gmm_marginal_velocity(eq, probe, torch.full((50,), tv, dtype=F64), means, stds, w)
        torch.testing.assert_close(fitted, exact, atol=0.03, rtol=0)


def test_score_from_the_exact_denoiser_is_grad_log_density():
    """E[z | x_t] for a Gaussian source and data (closed form) gives -eta / gamma = grad log p_t."""
    interp = StochasticInterpolant(CondOTScheduler(), QuadraticNoise(1.0))
    mu, s = torch.tensor([1.0, 2.0], dtype=F64), 0.5
    eq = AffinePath(interp.gaussian_equivalent())
    x = torch.randn(30, 2, generator=_gen(3), dtype=F64)
    t = torch.linspace(0.1, 0.9, 30, dtype=F64)
    o, gm = eq.scheduler(t), interp.noise(t)
    var = (o.alpha_t**2 * s**2 + o.sigma_t**2)[:, None]  # (B, 1): p_t = N(alpha mu, var I)
    eta = gm.gamma_t[:, None] * (x - o.alpha_t[:, None] * mu) / var  # E[z | x_t = x]: Cov(z, x_t) = gamma I
    score = interp.denoiser_to_score(eta, x, t)
    xr = x.clone().requires_grad_(True)
    lp = gmm_marginal_log_prob(eq, xr, t, mu[None], torch.tensor([s], dtype=F64), torch.ones(1, dtype=F64))
    (grad,) = torch.autograd.grad(lp.sum(), xr)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-9)


class _ExactGaussianModel(torch.nn.Module):
    """The exact (velocity, denoiser) pair of a one-sided interpolant to N(mu, s^2 I), stacked along dim 1."""

    def __init__(self, interp, mu, s):
        super().__init__()
        self.interp, self.mu, self.s = interp, mu, s
        self.eq = AffinePath(interp.gaussian_equivalent())

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        o, gm = self.eq.scheduler(t), self.interp.noise(t)
        var = (o.alpha_t**2 * self.s**2 + o.sigma_t**2)[:, None]
        b = gmm_marginal_velocity(self.eq, x, t, self.mu[None], torch.tensor([self.s], dtype=x.dtype),
                                  torch.ones(1, dtype=x.dtype))
        eta = gm.gamma_t[:, None] * (x - o.alpha_t[:, None] * self.mu) / var
        return torch.cat([b, eta], 1)


def test_sdes_of_every_noise_level_keep_the_marginals():
    """With the exact velocity and denoiser, the ODE and the SDEs of noise 0.5 and 2 all end at N(mu, s^2 I)."""
    interp = StochasticInterpolant(CondOTScheduler(), QuadraticNoise(2.0))
    mu, s = torch.tensor([1.0, -2.0], dtype=F64), 0.5
    m = InterpolantModel(_ExactGaussianModel(interp, mu, s), interp)
    x_0 = torch.randn(6000, 2, generator=_gen(4), dtype=F64)
    ends = [ode_solve(m.velocity, x_0, method="rk4", steps=50).x]
    for noise in (0.5, 2.0):
        drift, diffusion = m.sde(noise)
        assert torch.isfinite(drift(x_0, torch.zeros(6000, dtype=F64))).all()  # gamma_0 = 0: no division
        assert diffusion(x_0, torch.zeros(6000, dtype=F64)).shape == (6000,)
        ends.append(sde_solve(drift, diffusion, x_0, steps=400, generator=_gen(5)).x)
    for x in ends:
        torch.testing.assert_close(x.mean(0), mu, atol=0.04, rtol=0)
        torch.testing.assert_close(x.std(0), torch.full((2,), s, dtype=F64), atol=0.03, rtol=0)
    assert (ends[2] - ends[0]).abs().mean() > 0.1  # the SDE moved the points: another coupling, same marginal
    with pytest.raises(ValueError, match="noise"):
        m.sde(-1.0)


def test_interpolant_loss_is_zero_for_the_exact_targets_and_checks_the_model_shape():
    interp = StochasticInterpolant()
    g = _gen(6)
    x_0, x_1, z = (torch.randn(8, 2, generator=g, dtype=F64) for _ in range(3))
    t = torch.rand(8, generator=g, dtype=F64)
    s = interp.sample(x_0, x_1, z, t)
    cheat = lambda x, tt: torch.cat([s.dx_t, z], 1)  # noqa: E731  the conditional targets themselves
    assert interpolant_loss(cheat, interp, x_0, x_1, z, t).item() == 0.0
    half = lambda x, tt: torch.cat([s.dx_t + 1, z], 1)  # noqa: E731
    assert interpolant_loss(half, interp, x_0, x_1, z, t).item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="out_dim = 2"):
        interpolant_loss(lambda x, tt: s.dx_t, interp, x_0, x_1, z, t)


def test_gaussian_equivalent_scheduler_derivative_and_its_data_end():
    for interp in INTERPOLANTS:
        sch = interp.gaussian_equivalent()
        t = torch.linspace(0.05, 0.95, 19, dtype=F64)
        h = 1e-6
        fd = (sch(t + h).sigma_t - sch(t - h).sigma_t) / (2 * h)
        torch.testing.assert_close(sch(t).d_sigma_t, fd, rtol=1e-5, atol=1e-7)
    sch = StochasticInterpolant(CondOTScheduler(), QuadraticNoise(2.0)).gaussian_equivalent()
    one = torch.tensor([1.0], dtype=F64)
    assert sch(one).sigma_t.item() == 0.0
    # sigma' = (1 - t) sqrt(1 + 4 t^2): one-sided derivative at t = 1 is -sqrt(5)
    assert sch(one).d_sigma_t.item() == pytest.approx(-math.sqrt(5.0))
    assert sch(one - 1e-7).d_sigma_t.item() == pytest.approx(-math.sqrt(5.0), rel=1e-5)
