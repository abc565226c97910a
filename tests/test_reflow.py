"""tutorlib.reflow against closed forms: time distributions, pair batches, losses, couplings (lesson 06)."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.couplings import Coupling
from tutorlib.losses import cfm_loss
from tutorlib.paths import CondOTPath
from tutorlib.reflow import (TimeDistribution, UniformTime, UShapedTime, backward_coupling, distill_loss, one_step,
                             pair_batches, reflow_loss, transport_cost)
from tutorlib.solvers import ode_solve, reflow_coupling

F64 = torch.float64


def _cdf(dist: TimeDistribution, t: torch.Tensor, n: int = 20001) -> torch.Tensor:
    """The CDF by integrating the density (trapezoid rule on a fine grid)."""
    grid = torch.linspace(0, 1, n, dtype=F64)
    dens = dist.density(grid)
    cum = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum((dens[1:] + dens[:-1]) / 2 * (grid[1] - grid[0]), 0)])
    return torch.from_numpy(__import__("numpy").interp(t.numpy(), grid.numpy(), cum.numpy()))


@pytest.mark.parametrize("dist", [UniformTime(), UShapedTime(), UShapedTime(a=1.0), UShapedTime(a=8.0)])
def test_density_integrates_to_one_and_icdf_inverts_its_cdf(dist):
    grid = torch.linspace(0, 1, 20001, dtype=F64)
    assert float(torch.trapezoid(dist.density(grid), grid)) == pytest.approx(1.0, abs=1e-7)  # trapezoid error ~ h^2
    u = torch.linspace(0.001, 0.999, 101, dtype=F64)
    torch.testing.assert_close(_cdf(dist, dist.icdf(u)), u, atol=1e-6, rtol=0)


def test_u_shape_closed_form():
    a = 4.0
    d = UShapedTime(a)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ends = a / (2 * math.tanh(a / 2))
    torch.testing.assert_close(d.density(t), torch.tensor([ends, a / (2 * math.sinh(a / 2)), ends], dtype=F64))
    # the even mixture of a e^{at} / (e^a - 1) and its mirror image
    s = torch.rand(50, dtype=F64)
    mix = 0.5 * a * (torch.exp(a * s) + torch.exp(a * (1 - s))) / math.expm1(a)
    torch.testing.assert_close(d.density(s), mix)
    torch.testing.assert_close(d.icdf(torch.tensor([0.0, 0.5, 1.0], dtype=F64)), t)
    torch.testing.assert_close(UShapedTime(0.0).icdf(s), s)
    torch.testing.assert_close(UShapedTime(0.0).density(s), torch.ones_like(s))


@pytest.mark.parametrize("dist", [UniformTime(), UShapedTime()])
def test_samples_follow_the_density(dist):
    g = torch.Generator().manual_seed(0)
    n = 200_000
    t = dist.sample(n, generator=g, dtype=F64)
    assert t.shape == (n,) and t.dtype == F64 and float(t.min()) >= 0 and float(t.max()) <= 1
    # Kolmogorov-Smirnov distance to the CDF: below 1.6 / sqrt(n) (p ~ 0.01 critical value)
    ts, _ = t.sort()
    ecdf = torch.arange(1, n + 1, dtype=F64) / n
    ks = float((ecdf - _cdf(dist, ts)).abs().max())
    assert ks < 1.63 / math.sqrt(n), ks
    # the U shape: more mass in the outer fifths than in the middle fifth, as its CDF says
    if isinstance(dist, UShapedTime):
        outer = float(((t < 0.2) | (t > 0.8)).double().mean())
        expect = 2 * float(_cdf(dist, torch.tensor([0.2], dtype=F64)))
        assert outer == pytest.approx(expect, abs=5 * math.sqrt(expect * (1 - expect) / n))
        assert outer > 0.55  # uniform would give 0.4


def test_sampling_is_reproducible_and_uses_the_generator():
    d = UShapedTime()
    a = d.sample(64, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(0)
    b = d.sample(64, generator=torch.Generator().manual_seed(3))
    c = d.sample(64, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.dtype == torch.float32
    assert d.sample(0).shape == (0,)


def test_bad_time_distributions_are_refused():
    for a in (-1.0, float("nan"), float("inf"), True, "4"):
        with pytest.raises(ValueError, match="UShapedTime"):
            UShapedTime(a)
    with pytest.raises(ValueError, match="non-negative whole number"):
        UniformTime().sample(-1)
    with pytest.raises(ValueError, match="non-negative whole number"):
        UniformTime().sample(2.5)


def test_pair_batches_draws_rows_of_the_coupling_with_fresh_times():
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn(50, 3, dtype=F64)
    x_1 = x_0 * 2 + 1  # a deterministic map, so rows must stay paired
    sampler = pair_batches(Coupling(x_0, x_1), 17, generator=g, times=UShapedTime())
    b0, b1, t = sampler(0)
    assert b0.shape == b1.shape == (17, 3) and t.shape == (17,) and t.dtype == F64
    torch.testing.assert_close(b1, b0 * 2 + 1)
    assert all(bool((x_0 == row).all(1).any()) for row in b0)  # every row comes from the coupling
    again = pair_batches(Coupling(x_0, x_1), 17, generator=torch.Generator().manual_seed(0), times=UShapedTime())(0)
    assert all(torch.equal(u, v) for u, v in zip((b0, b1, t), again))
    c0, _, t2 = sampler(1)
    assert not torch.equal(c0, b0) and not torch.equal(t2, t)
    # over many steps every row is used and the times follow their distribution
    seen = torch.cat([sampler(k)[0] for k in range(40)])
    assert len(torch.unique(seen, dim=0)) == 50


def test_pair_batches_refuses_bad_input():
    x = torch.randn(8, 2)
    with pytest.raises(ValueError, match="same shape"):
        pair_batches(Coupling(x, x[:4]), 4)
    with pytest.raises(ValueError, match="batch_size"):
        pair_batches(Coupling(x, x), 0)
    with pytest.raises(TypeError, match="TimeDistribution"):
        pair_batches(Coupling(x, x), 4, times="u-shaped")


def test_reflow_loss_is_cfm_and_pseudo_huber():
    path = CondOTPath()
    g = torch.Generator().manual_seed(1)
    x_0, x_1 = torch.randn(32, 2, generator=g, dtype=F64), torch.randn(32, 2, generator=g, dtype=F64)
    t = torch.rand(32, generator=g, dtype=F64)
    model = lambda x, tt: torch.sin(x) * tt[:, None]  # noqa: E731
    torch.testing.assert_close(reflow_loss(model, path, x_0, x_1, t), cfm_loss(model, path, x_0, x_1, t))
    d = model((1 - t[:, None]) * x_0 + t[:, None] * x_1, t) - (x_1 - x_0)
    c = 0.3
    torch.testing.assert_close(reflow_loss(model, path, x_0, x_1, t, huber=c),
                               ((d.square().sum(1) + c * c).sqrt() - c).mean())
    # small errors: ||d||^2 / (2c); large errors: ||d|| - c
    exact = lambda x, tt: x_1 - x_0  # noqa: E731 (only right where x_t was built from these pairs)
    tiny = lambda x, tt: exact(x, tt) + 1e-4  # noqa: E731
    torch.testing.assert_close(reflow_loss(tiny, path, x_0, x_1, t, huber=1.0), torch.tensor(1e-8, dtype=F64),
                               rtol=1e-3, atol=0)
    big = lambda x, tt: exact(x, tt) + 1e3  # noqa: E731
    torch.testing.assert_close(reflow_loss(big, path, x_0, x_1, t, huber=1.0),
                               torch.tensor(1e3 * math.sqrt(2) - 1, dtype=F64), rtol=1e-6, atol=0)
    assert float(reflow_loss(exact, path, x_0, x_1, t, huber=0.1)) == 0.0
    for bad in (0.0, -1.0, True):
        with pytest.raises(ValueError, match="huber"):
            reflow_loss(model, path, x_0, x_1, t, huber=bad)


def test_reflow_loss_huber_works_on_images():
    path = CondOTPath()
    x_0, x_1 = torch.randn(4, 1, 3, 3), torch.randn(4, 1, 3, 3)
    t = torch.rand(4)
    model = lambda x, tt: torch.zeros_like(x)  # noqa: E731
    c = 0.5
    expected = (((x_1 - x_0).reshape(4, -1).square().sum(1) + c * c).sqrt() - c).mean()
    torch.testing.assert_close(reflow_loss(model, path, x_0, x_1, t, huber=c), expected)


def test_one_step_and_distill_loss():
    x_0 = torch.randn(10, 2, dtype=F64)
    shift = torch.tensor([1.0, -2.0], dtype=F64)
    seen = {}

    def model(x, t):
        seen["t"] = t
        return torch.ones_like(x) * shift

    torch.testing.assert_close(one_step(model, x_0), x_0 + shift)
    assert seen["t"].shape == (10,) and float(seen["t"].abs().max()) == 0.0 and seen["t"].dtype == F64
    assert float(distill_loss(model, x_0, x_0 + shift)) == 0.0
    torch.testing.assert_close(distill_loss(model, x_0, x_0), shift.square().mean())
    with pytest.raises(ValueError, match="same shape"):
        distill_loss(model, x_0, x_0[:3])


def test_one_step_of_a_straight_flow_is_its_exact_map():
    A = torch.tensor([[0.5, 0.2], [-0.1, 1.5]], dtype=F64)
    b = torch.tensor([1.0, -1.0], dtype=F64)
    # the straight flow x_t = x_0 + t (A x_0 + b - x_0): its velocity at x_t is constant along each path
    M = A - torch.eye(2, dtype=F64)

    def v(x, t):  # solve x = x_0 + t (M x_0 + b) for x_0, return M x_0 + b
        x0 = torch.linalg.solve((torch.eye(2, dtype=F64) + t[:, None, None] * M), (x - t[:, None] * b)[..., None])
        return (M @ x0)[..., 0] + b

    x_0 = torch.randn(20, 2, dtype=F64)
    target = x_0 @ A.T + b
    torch.testing.assert_close(one_step(v, x_0), target)
    torch.testing.assert_close(ode_solve(v, x_0, method="rk4", steps=20).x, target)
    torch.testing.assert_close(reflow_coupling(v, x_0, steps=3).x_1, target)


def test_backward_coupling_inverts_the_flow():
    mu = torch.tensor([2.0, -1.0], dtype=F64)
    v = lambda x, t: torch.ones_like(x) * mu  # noqa: E731  (a translation by mu)
    x_1 = torch.randn(7, 2, dtype=F64)
    x_0, back = backward_coupling(v, x_1, steps=5)
    assert back is x_1
    torch.testing.assert_close(x_0, x_1 - mu)
    # on a nonlinear field, backward then forward comes back (rk4 on a smooth field)
    w = lambda x, t: torch.tanh(x) * (1 + t[:, None])  # noqa: E731
    x0b, _ = backward_coupling(w, x_1, steps=200, method="rk4")
    torch.testing.assert_close(reflow_coupling(w, x0b, steps=200, method="rk4").x_1, x_1, atol=1e-8, rtol=0)
    # Euler backwards evaluates the field at the current (decreasing) time
    seen = []
    backward_coupling(lambda x, t: seen.append(float(t[0])) or torch.zeros_like(x), x_1, steps=4)
    assert seen == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(ValueError, match="batch"):
        backward_coupling(v, torch.zeros(3))


def test_transport_cost():
    x_0 = torch.zeros(4, 2)
    x_1 = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    assert float(transport_cost(x_0, x_1)) == pytest.approx((25 + 0 + 1 + 4) / 4)
    imgs = torch.ones(3, 1, 2, 2)
    assert float(transport_cost(torch.zeros_like(imgs), imgs)) == pytest.approx(4.0)
    with pytest.raises(ValueError):
        transport_cost(x_0, x_1[:2])
