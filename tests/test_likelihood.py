"""Likelihood: divergences (exact, Hutchinson unbiased) and log_prob of flows with known densities."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.likelihood import (
    LikelihoodOutput,
    bits_per_dim,
    divergence_exact,
    divergence_hutchinson,
    log_prob,
    standard_normal_log_prob,
)
from tutorlib.paths import AffinePath, CondOTPath, gmm_marginal_log_prob, gmm_marginal_velocity
from tutorlib.schedulers import CosineScheduler

F64 = torch.float64


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _mlp_field(D, seed=0):
    g = _gen(seed)
    W1, b1 = torch.randn(D + 1, 16, generator=g, dtype=F64), torch.randn(16, generator=g, dtype=F64)
    W2 = torch.randn(16, D, generator=g, dtype=F64) / 4

    def f(x, t):
        shape = x.shape
        h = torch.tanh(torch.cat([x.reshape(shape[0], -1), t[:, None]], 1) @ W1 + b1)
        return (h @ W2).reshape(shape)

    return f


def _jacobian_trace(f, x, t):
    return torch.stack([torch.autograd.functional.jacobian(lambda z: f(z[None], t[i:i + 1])[0], x[i]).reshape(
        x[i].numel(), x[i].numel()).trace() for i in range(len(x))])


def test_standard_normal_log_prob():
    x = torch.randn(6, 1, 2, 2, dtype=F64)
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).reshape(6, -1).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(x), expected)


@pytest.mark.parametrize("shape", [(5, 3), (4, 1, 2, 2)])
def test_divergence_exact_is_the_jacobian_trace(shape):
    f = _mlp_field(math.prod(shape[1:]))
    x = torch.randn(shape, generator=_gen(1), dtype=F64)
    t = torch.rand(shape[0], generator=_gen(2), dtype=F64)
    out = divergence_exact(f, x, t)
    torch.testing.assert_close(out.divergence, _jacobian_trace(f, x, t))
    torch.testing.assert_close(out.dx_t, f(x, t))
    assert not out.divergence.requires_grad and not x.requires_grad


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    """Mean over many probes matches the exact divergence within 4 standard errors."""
    D, P = 5, 4000
    f = _mlp_field(D, seed=3)
    x = torch.randn(3, D, generator=_gen(4), dtype=F64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    exact = divergence_exact(f, x, t).divergence
    # P probes for each of the 3 points as one batch of 3P (one estimate per row)
    xr, tr = x.repeat(P, 1), t.repeat(P)
    eps = torch.randn(xr.shape, generator=_gen(5), dtype=F64)
    if noise == "rademacher":
        eps = eps.sign()
    est = divergence_hutchinson(f, xr, tr, eps).divergence.reshape(P, 3)  # (P, 3)
    mean, se = est.mean(0), est.std(0) / math.sqrt(P)
    assert ((mean - exact).abs() < 4 * se).all(), (mean, exact, se)
    # several probes at once average the single-probe estimates
    multi = divergence_hutchinson(f, x, t, eps.reshape(P, 3, D)[:7]).divergence
    torch.testing.assert_close(multi, est[:7].mean(0))


MU, S = torch.tensor([1.0, -2.0], dtype=F64), 0.5


def _gaussian_velocity(path, mu=MU, s=S):
    means, stds, w = mu[None], torch.tensor([s], dtype=mu.dtype), torch.ones(1, dtype=mu.dtype)
    return lambda x, t: gmm_marginal_velocity(path, x, t, means.to(x), stds.to(x), w.to(x))


@pytest.mark.parametrize("path", [CondOTPath(), AffinePath(CosineScheduler())], ids=repr)
@pytest.mark.parametrize("method,steps,tol", [("dopri5", 0, 1e-4), ("rk4", 20, 1e-4), ("midpoint", 50, 2e-3)])
def test_log_prob_of_gaussian_flow_is_the_gaussian_density(path, method, steps, tol):
    x_1 = MU + S * torch.randn(16, 2, generator=_gen(6), dtype=F64)
    out = log_prob(_gaussian_velocity(path), x_1, method=method, steps=steps or 1, atol=1e-7, rtol=1e-7)
    assert isinstance(out, LikelihoodOutput) and out.log_prob.shape == (16,)
    expected = torch.distributions.Normal(MU, S).log_prob(x_1).sum(1)
    torch.testing.assert_close(out.log_prob, expected, atol=tol, rtol=0)
    torch.testing.assert_close(out.x_0, (x_1 - MU) / S, atol=tol, rtol=0)  # the inverse flow map
    # divergence of this field is 2 d/dt log(sqrt(alpha^2 s^2 + sigma^2)) integrated: D log s in total
    torch.testing.assert_close(out.divergence_integral, torch.full((16,), 2 * math.log(S), dtype=F64),
                               atol=tol, rtol=0)


def test_rademacher_hutchinson_is_exact_for_isotropic_jacobians():
    """The Gaussian path's velocity has Jacobian c(t) I, so eps^T J eps = c ||eps||^2 = c D for +-1 probes."""
    x_1 = MU + S * torch.randn(8, 2, generator=_gen(7), dtype=F64)
    v = _gaussian_velocity(CondOTPath())
    exact = log_prob(v, x_1, method="rk4", steps=20).log_prob
    rad = log_prob(v, x_1, method="rk4", steps=20, divergence="hutchinson", noise="rademacher",
                   generator=_gen(8)).log_prob
    torch.testing.assert_close(rad, exact, rtol=1e-10, atol=1e-10)


def test_log_prob_of_gaussian_mixture_flow():
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=F64)
    stds, w = torch.tensor([0.5, 0.8], dtype=F64), torch.tensor([0.6, 0.4], dtype=F64)
    path = CondOTPath()
    v = lambda x, t: gmm_marginal_velocity(path, x, t, means, stds, w)  # noqa: E731
    x_1 = torch.randn(12, 2, generator=_gen(9), dtype=F64) * 2
    out = log_prob(v, x_1, method="dopri5", atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(out.log_prob, gmm_marginal_log_prob(path, x_1, 1.0, means, stds, w), atol=1e-4, rtol=0)
    # Hutchinson log-likelihoods are unbiased: P independent one-probe solves per point (a batch of
    # 12 P rows) average to the exact-divergence solve within 4 standard errors.
    P = 256
    exact = log_prob(v, x_1, method="rk4", steps=20).log_prob
    hut = log_prob(v, x_1.repeat(P, 1), method="rk4", steps=20, divergence="hutchinson", generator=_gen(10))
    est = hut.log_prob.reshape(P, 12)
    mean, se = est.mean(0), est.std(0) / math.sqrt(P)
    assert ((mean - exact).abs() < 4 * se).all(), (mean - exact, se)
    assert (se < 0.5).all()  # the check is not vacuous (per-probe std up to ~6 nats here)


def test_image_shaped_log_prob():
    mu = torch.linspace(-1, 1, 4, dtype=F64).reshape(1, 2, 2)
    x_1 = mu + S * torch.randn(5, 1, 2, 2, generator=_gen(11), dtype=F64)
    out = log_prob(_gaussian_velocity(CondOTPath(), mu, S), x_1, method="rk4", steps=20)
    expected = torch.distributions.Normal(mu, S).log_prob(x_1).reshape(5, -1).sum(1)
    torch.testing.assert_close(out.log_prob, expected, atol=1e-4, rtol=0)
    assert out.x_0.shape == x_1.shape


def test_gradients_through_log_prob_match_finite_differences():
    """Maximum likelihood (lesson 02): d log p / d s for the Gaussian flow to N(MU, s^2 I)."""
    x_1 = MU + S * torch.randn(4, 2, generator=_gen(12), dtype=F64)
    path = CondOTPath()

    def lp(s, grad):
        def v(x, t):
            return gmm_marginal_velocity(path, x, t, MU[None], s.reshape(1), torch.ones(1, dtype=F64))

        return log_prob(v, x_1, method="rk4", steps=20, enable_grad=grad).log_prob.sum()

    s = torch.tensor(0.7, dtype=F64, requires_grad=True)
    total = lp(s, True)
    (grad,) = torch.autograd.grad(total, s)
    h = 1e-5
    fd = (lp(torch.tensor(0.7 + h, dtype=F64), False) - lp(torch.tensor(0.7 - h, dtype=F64), False)) / (2 * h)
    assert grad.item() == pytest.approx(fd.item(), rel=1e-6)
    # analytic: sum_i d/ds log N(x_i; MU, s^2 I) = sum_i (-2/s + ||x_i - MU||^2 / s^3)
    analytic = (-2 / 0.7 + (x_1 - MU).square().sum(1) / 0.7**3).sum()
    assert grad.item() == pytest.approx(analytic.item(), rel=1e-4)
    assert not lp(s, False).requires_grad


def test_bits_per_dim():
    lp = torch.tensor([-2 * math.log(2.0), -4 * math.log(2.0)])
    torch.testing.assert_close(bits_per_dim(lp, 2), torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(bits_per_dim(lp, 2, data_scale=1 / 256), torch.tensor([9.0, 10.0]))


def test_bad_options():
    v = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="exact"):
        log_prob(v, torch.zeros(2, 2), divergence="trace")
    with pytest.raises(ValueError, match="rademacher"):
        log_prob(v, torch.zeros(2, 2), divergence="hutchinson", noise="uniform")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_prob_on_cuda(divergence):
    x_1 = (MU + S * torch.randn(16, 2, dtype=F64)).cuda()
    out = log_prob(_gaussian_velocity(CondOTPath(), MU.cuda()), x_1, divergence=divergence, noise="rademacher",
                   generator=_gen(0), atol=1e-7, rtol=1e-7)
    expected = torch.distributions.Normal(MU.cuda(), S).log_prob(x_1).sum(1)
    torch.testing.assert_close(out.log_prob, expected, atol=1e-4, rtol=0)
