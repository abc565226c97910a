"""Losses: CFM vanishes at the exact target, its gradient equals FM's, DDPM's by hand."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.ddpm import DDPMSchedule, cosine_betas
from tutorlib.losses import Parametrisation, cfm_loss, ddpm_loss
from tutorlib.paths import AffinePath, CondOTPath, expand_t, gmm_marginal_velocity
from tutorlib.schedulers import CosineScheduler, PolynomialScheduler

F64 = torch.float64
PATHS = [CondOTPath(), AffinePath(CosineScheduler()), AffinePath(PolynomialScheduler(2.0))]
SHAPES = [(64, 2), (16, 1, 3, 3)]


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("target", list(Parametrisation))
def test_cfm_loss_vanishes_for_the_exact_marginal_target_of_point_data(path, shape, target):
    """Data = a single point c: the marginal target is a function of (x_t, t), and the loss is 0."""
    g = torch.Generator().manual_seed(0)
    c = torch.randn(shape[1:], generator=g, dtype=F64)
    x_1 = c.expand(shape)
    x_0 = torch.randn(shape, generator=g, dtype=F64)
    t = torch.rand(shape[0], generator=g, dtype=F64) * 0.98 + 0.01

    def model(x_t, t):
        if target is Parametrisation.X1:
            return c.expand(x_t.shape)
        eps = path.x1_to_epsilon(c.expand(x_t.shape), x_t, t)
        return eps if target is Parametrisation.EPSILON else path.epsilon_to_velocity(eps, x_t, t)

    assert cfm_loss(model, path, x_0, x_1, t, target=target).item() < 1e-20
    assert cfm_loss(model, path, x_0, x_1, t, target=target.value).item() < 1e-20  # string form too
    wrong = lambda x_t, t: model(x_t, t) + 0.1  # noqa: E731
    assert cfm_loss(wrong, path, x_0, x_1, t, target=target).item() == pytest.approx(0.01)


def test_cfm_loss_hand_computation():
    g = torch.Generator().manual_seed(1)
    x_0, x_1 = torch.randn(8, 2, generator=g, dtype=F64), torch.randn(8, 2, generator=g, dtype=F64)
    t = torch.rand(8, generator=g, dtype=F64)
    model = lambda x, t: 0.5 * x + t[:, None]  # noqa: E731
    x_t = t[:, None] * x_1 + (1 - t[:, None]) * x_0
    expected = ((0.5 * x_t + t[:, None] - (x_1 - x_0)) ** 2).mean()
    torch.testing.assert_close(cfm_loss(model, CondOTPath(), x_0, x_1, t), expected)
    expected_x1 = ((0.5 * x_t + t[:, None] - x_1) ** 2).mean()
    torch.testing.assert_close(cfm_loss(model, CondOTPath(), x_0, x_1, t, target="x1"), expected_x1)
    with pytest.raises(ValueError):
        cfm_loss(model, CondOTPath(), x_0, x_1, t, target="score")


@pytest.mark.parametrize("path", PATHS[:2], ids=repr)
def test_cfm_gradient_equals_fm_gradient(path):
    """grad CFM = grad FM, where FM regresses on the marginal velocity of a Gaussian mixture (closed
    form). With a model linear in its parameters, pred = phi(x_t, t) W, the gradient difference is the
    sample mean of phi_i^T (u_i - dx_t_i), whose expectation is zero: checked within
    4 standard errors, and against a gradient far larger than that error."""
    g = torch.Generator().manual_seed(2)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]], dtype=F64)
    stds, weights = torch.tensor([0.4, 0.7], dtype=F64), torch.tensor([0.6, 0.4], dtype=F64)
    n = 20_000
    comp = torch.multinomial(weights, n, replacement=True, generator=g)
    x_1 = means[comp] + stds[comp, None] * torch.randn(n, 2, generator=g, dtype=F64)
    x_0 = torch.randn(n, 2, generator=g, dtype=F64)
    t = torch.rand(n, generator=g, dtype=F64) * 0.9 + 0.05

    def features(x, t):  # (n, 6)
        return torch.cat([x, t[:, None], torch.ones_like(t)[:, None], x * t[:, None]], 1)

    W = (0.1 * torch.randn(6, 2, generator=g, dtype=F64)).requires_grad_(True)
    model = lambda x, t: features(x, t) @ W  # noqa: E731
    (grad_cfm,) = torch.autograd.grad(cfm_loss(model, path, x_0, x_1, t), W)
    s = path.sample(x_0, x_1, t)
    u = gmm_marginal_velocity(path, s.x_t, t, means, stds, weights)  # (n, 2) the marginal target
    (grad_fm,) = torch.autograd.grad((model(s.x_t, t) - u).square().mean(), W)

    phi = features(s.x_t, t)  # (n, 6)
    # loss = sum ||.||^2 / (2 n): d/dW = (2 / 2) mean_i phi_i^T (pred_i - target_i); the preds cancel
    per_sample = phi[:, :, None] * (u - s.dx_t)[:, None, :]  # (n, 6, 2)
    torch.testing.assert_close(grad_cfm - grad_fm, per_sample.mean(0))  # the difference is exactly this mean
    std_err = per_sample.std(0) / math.sqrt(n)  # (6, 2)
    assert ((grad_cfm - grad_fm).abs() < 4 * std_err).all()
    assert grad_fm.norm() > 20 * std_err.norm()


def test_ddpm_loss_hand_computation():
    sched = DDPMSchedule(cosine_betas(20))
    g = torch.Generator().manual_seed(3)
    x_data = torch.randn(6, 1, 2, 2, generator=g, dtype=F64)
    noise = torch.randn(6, 1, 2, 2, generator=g, dtype=F64)
    k = torch.tensor([1, 3, 7, 12, 19, 20])
    model = lambda x, t: 0.3 * x - expand_t(t, x)  # noqa: E731
    total = 0.0
    for i, ki in enumerate(k.tolist()):
        ab = float(torch.prod(1 - sched.betas[:ki]))
        x_noisy = math.sqrt(ab) * x_data[i] + math.sqrt(1 - ab) * noise[i]
        pred = 0.3 * x_noisy - (1 - ki / 20)
        total += ((pred - noise[i]) ** 2).sum().item()
    expected = total / x_data.numel()
    assert ddpm_loss(model, sched, x_data, k, noise).item() == pytest.approx(expected, rel=1e-12)
