"""Few-step models (tutorlib.fewstep): the two-time network, jumps, MeanFlow's identity and shortcut
self-consistency, checked against the exact average velocity of a Gaussian flow."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.fewstep import (MeanFlow, Shortcut, TwoTimeMLP, average_velocity_jump, fewstep_sample,
                              meanflow_target)
from tutorlib.losses import cfm_loss
from tutorlib.paths import CondOTPath, gmm_marginal_velocity
from tutorlib.solvers import ode_solve

F64 = torch.float64


class GaussianFlow(torch.nn.Module):
    """The marginal flow of the linear path from N(0, I) to N(mu, s^2 I), in closed form.

    p_t = N(t mu, sig_t^2 I) with sig_t^2 = (1 - t)^2 + t^2 s^2; the flow map is affine,
    x_t = t mu + sig_t z, so the average velocity from s to t is (x_t - x_s) / (t - s) with
    x_t = t mu + sig_t / sig_s (x_s - s mu), and at t = s the marginal velocity.
    """

    def __init__(self, mu: torch.Tensor, s: float):
        super().__init__()
        self.mu, self.s = mu, s

    def sig(self, t):
        return ((1 - t) ** 2 + t**2 * self.s**2).sqrt()

    def velocity(self, x, t):
        means, stds, w = self.mu[None], torch.tensor([self.s], dtype=x.dtype), torch.ones(1, dtype=x.dtype)
        return gmm_marginal_velocity(CondOTPath(), x, t, means, stds, w)

    def forward(self, x, s, t):
        s, t = s[:, None], t[:, None]
        x_t = t * self.mu + self.sig(t) / self.sig(s) * (x - s * self.mu)
        gap = t - s
        safe = torch.where(gap > 0, gap, torch.ones_like(gap))
        # at s = t: the derivative of the map, i.e. the marginal velocity (written out to stay differentiable)
        dsig = (-(1 - t) + t * self.s**2) / self.sig(t)
        v = self.mu + dsig / self.sig(t) * (x - t * self.mu)
        return torch.where(gap > 0, (x_t - x) / safe, v)


@pytest.fixture
def flow():
    return GaussianFlow(torch.tensor([1.5, -1.0], dtype=F64), 0.4)


def _inputs(B=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 2, generator=g, dtype=F64)
    a, b = torch.rand(2, B, generator=g, dtype=F64)
    return g, x, torch.minimum(a, b), torch.maximum(a, b)


def test_gaussian_flow_is_what_it_claims(flow):
    """The closed form: u(x, t, t) is the marginal velocity, and the jump equals a fine ODE solve."""
    _, x, s, t = _inputs()
    torch.testing.assert_close(flow(x, t, t), flow.velocity(x, t))
    x_s = ode_solve(flow.velocity, x, method="rk4", steps=200, t1=0.3).x
    sol = ode_solve(flow.velocity, x_s, method="rk4", steps=200, t0=0.3, t1=0.9).x
    jump = average_velocity_jump(flow, x_s, 0.3, 0.9)
    torch.testing.assert_close(jump, sol, atol=1e-9, rtol=0)


def test_meanflow_target_is_exact_for_the_exact_average_velocity(flow):
    """u = v + (t - s) d/ds u holds for the true u: the target equals the model's output."""
    _, x, s, t = _inputs()
    u, target = meanflow_target(flow, x, s, t, flow.velocity(x, s))
    torch.testing.assert_close(u, flow(x, s, t))
    torch.testing.assert_close(target, u, atol=1e-10, rtol=0)
    assert not target.requires_grad
    # and the sign of the correction matters: v - (t - s) du/ds is far from it
    _, du_ds = torch.func.jvp(flow, (x, s, t), (flow.velocity(x, s), torch.ones_like(s), torch.zeros_like(t)))
    wrong = flow.velocity(x, s) - (t - s)[:, None] * du_ds
    assert (wrong - u).abs().max() > 0.05


def test_meanflow_target_matches_finite_differences():
    """The JVP is the derivative along (v, 1, 0): compare with a central difference on a random network."""
    torch.manual_seed(0)
    net = TwoTimeMLP(hidden=32, depth=2).double()
    _, x, s, t = _inputs(16)
    v = torch.randn(16, 2, dtype=F64)
    u, target = meanflow_target(net, x, s, t, v)
    eps = 1e-6
    with torch.no_grad():
        fd = (net(x + eps * v, s + eps, t) - net(x - eps * v, s - eps, t)) / (2 * eps)
    torch.testing.assert_close(target, v + (t - s)[:, None] * fd, atol=1e-7, rtol=0)
    torch.testing.assert_close(u, net(x, s, t))


def test_meanflow_loss_on_the_diagonal_is_flow_matching():
    """With s = t and no adaptive weight, MeanFlow's loss is D times the CFM loss of v(x, t) = u(x, t, t)."""
    torch.manual_seed(1)
    net = TwoTimeMLP(hidden=32, depth=2).double()
    g, x_0, _, t = _inputs(32)
    x_1 = 2 * torch.randn(32, 2, generator=g, dtype=F64)
    mf = MeanFlow(weight_power=0.0)
    torch.testing.assert_close(mf.loss(net, x_0, x_1, t, t), 2 * cfm_loss(net.velocity, CondOTPath(), x_0, x_1, t))
    # the adaptive weight: each sample's squared error e becomes e / (e + eps)^p
    mf1 = MeanFlow(weight_power=1.0, weight_eps=0.5)
    x_t = (1 - t[:, None]) * x_0 + t[:, None] * x_1
    e = (net.velocity(x_t, t) - (x_1 - x_0)).square().sum(1)
    torch.testing.assert_close(mf1.loss(net, x_0, x_1, t, t), (e / (e + 0.5)).mean())
    loss = mf1.loss(net, x_0, x_1, *_inputs(32, 3)[2:])
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_meanflow_times():
    g = torch.Generator().manual_seed(0)
    mf = MeanFlow(equal_fraction=0.6, logit_mean=0.4, logit_std=1.0)
    s, t = mf.times(40_000, generator=g)
    assert s.shape == t.shape == (40_000,) and bool((s <= t).all()) and bool((s > 0).all()) and bool((t < 1).all())
    assert (s == t).double().mean().item() == pytest.approx(0.6, abs=0.01)
    # t is the later of two logit-normal draws: P(t <= sigmoid(0.4 + z)) = Phi(z)^2, s the earlier one
    for z in (-1.0, 0.0, 1.0):
        c = torch.sigmoid(torch.tensor(0.4 + z))
        phi = 0.5 * (1 + math.erf(z / math.sqrt(2)))
        assert (t <= c).double().mean().item() == pytest.approx(phi**2, abs=0.01)
        off = s < t
        assert (s[off] <= c).double().mean().item() == pytest.approx(1 - (1 - phi) ** 2, abs=0.015)
    again = mf.times(40_000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], s) and torch.equal(again[1], t)
    with pytest.raises(ValueError, match="equal_fraction"):
        MeanFlow(equal_fraction=1.5)


def test_shortcut_times_lie_on_their_grids():
    g = torch.Generator().manual_seed(0)
    sc = Shortcut(levels=5, bootstrap_fraction=0.25)
    s, t = sc.times(40_000, generator=g)
    jump = t > s
    assert jump.double().mean().item() == pytest.approx(0.25, abs=0.01)
    D = (t - s)[jump].double()
    k = -torch.log2(D)
    torch.testing.assert_close(k, k.round(), atol=1e-5, rtol=0)
    counts = torch.bincount(k.round().long(), minlength=6)
    assert counts.shape == (6,) and counts.min() > 0.8 * counts.float().mean()  # every level, evenly
    half = D / 2
    pos = s[jump].double() / half
    torch.testing.assert_close(pos, pos.round(), atol=1e-4, rtol=0)  # s on the grid of D / 2
    assert bool((t <= 1 + 1e-6).all()) and bool((s >= 0).all())
    assert s[~jump].double().mean().item() == pytest.approx(0.5, abs=0.01)  # flow-matching rows: uniform times
    assert s[~jump].double().var().item() == pytest.approx(1 / 12, abs=0.005)
    with pytest.raises(ValueError, match="levels"):
        Shortcut(levels=0)


def test_shortcut_targets_vanish_for_the_exact_average_velocity(flow):
    """The exact u is self-consistent: the average over 2d is the mean of the averages over the halves."""
    B = 48
    g, x_0, _, _ = _inputs(B)
    x_1 = 2 * torch.randn(B, 2, generator=g, dtype=F64)
    sc = Shortcut(levels=4, bootstrap_fraction=1.0)
    D = torch.tensor([1.0, 0.5, 0.25, 0.125], dtype=F64).repeat(B // 4)  # none is the smallest step 1/16
    s = torch.floor(torch.rand(B, generator=g, dtype=F64) * (2 / D - 1)) * D / 2
    assert sc.loss(flow, x_0, x_1, s, s + D).item() < 1e-20
    # the smallest step ends the recursion with two instantaneous velocities (a Heun-like average)
    m = 1 / 16
    s = torch.full((B,), 0.5, dtype=F64)
    x_s = x_0 + s[:, None] * (x_1 - x_0)
    v1 = flow.velocity(x_s, s)
    v2 = flow.velocity(x_s + m / 2 * v1, s + m / 2)
    expected = (flow(x_s, s, s + m) - 0.5 * (v1 + v2)).square().mean()
    torch.testing.assert_close(sc.loss(flow, x_0, x_1, s, s + m), expected)
    # on the diagonal it is flow matching
    t = torch.rand(B, generator=g, dtype=F64)
    torch.testing.assert_close(sc.loss(flow, x_0, x_1, t, t), cfm_loss(flow.velocity, CondOTPath(), x_0, x_1, t))


def test_shortcut_target_model_and_gradients():
    torch.manual_seed(2)
    net, frozen = TwoTimeMLP(hidden=16, depth=1).double(), TwoTimeMLP(hidden=16, depth=1).double()
    g, x_0, _, _ = _inputs(16)
    x_1 = torch.randn(16, 2, generator=g, dtype=F64)
    sc = Shortcut(levels=3, bootstrap_fraction=0.5)
    s, t = sc.times(16, generator=g)
    s, t = s.double(), t.double()
    a, b = sc.loss(net, x_0, x_1, s, t), sc.loss(net, x_0, x_1, s, t, target_model=frozen)
    assert (t > s).any() and not torch.isclose(a, b)
    a.backward()
    assert all(p.grad is not None for p in net.parameters())


def test_fewstep_sample_is_exact_for_any_grid(flow):
    _, x_0, _, _ = _inputs(200)
    exact = flow.mu + flow.sig(torch.tensor(1.0, dtype=F64)) * x_0
    for steps in (1, 2, 5):
        sol = fewstep_sample(flow, x_0, steps=steps)
        assert sol.nfe == steps and sol.times.tolist() == pytest.approx([k / steps for k in range(steps + 1)])
        torch.testing.assert_close(sol.x, exact)
    sol = fewstep_sample(flow, x_0, time_grid=torch.tensor([0.0, 0.7, 0.9, 1.0]), return_trajectory=True)
    assert sol.trajectory.shape == (4, 200, 2) and sol.nfe == 3
    torch.testing.assert_close(sol.x, exact)
    for bad in (torch.tensor([0.0, 0.5, 0.4, 1.0]), torch.tensor([0.1, 1.0]), torch.tensor([0.0, 0.9])):
        with pytest.raises(ValueError, match="time_grid"):
            fewstep_sample(flow, x_0, time_grid=bad)
    with pytest.raises(ValueError, match="steps"):
        fewstep_sample(flow, x_0, steps=0)


def test_two_time_mlp_shapes_and_errors():
    torch.manual_seed(3)
    net = TwoTimeMLP(dim=3, hidden=16, depth=2)
    x = torch.randn(5, 3)
    assert net(x, torch.rand(5), torch.rand(5)).shape == (5, 3)
    assert net(x, 0.2, 0.7).shape == (5, 3)  # floats are broadcast
    torch.testing.assert_close(net.velocity(x, torch.full((5,), 0.3)), net(x, 0.3, 0.3))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        net(torch.randn(5, 2), 0.1, 0.2)
    with pytest.raises(ValueError, match="freq_dim"):
        TwoTimeMLP(freq_dim=7)
    with pytest.raises(ValueError, match="s <= t"):
        MeanFlow().loss(net, x, x, torch.full((5,), 0.5), torch.full((5,), 0.2))
    with pytest.raises(ValueError, match="s and t"):
        Shortcut().loss(net, x, x, torch.rand(4), torch.rand(4))
    from tutorlib.device import PROFILES

    m = TwoTimeMLP.from_profile(PROFILES["smoke"])
    assert m.blocks[0].fc1.in_features == PROFILES["smoke"].hidden_2d and len(m.blocks) == PROFILES["smoke"].depth_2d


@pytest.mark.parametrize("objective, jumps", [(MeanFlow(), 2), (Shortcut(levels=4), 1)], ids=["meanflow", "shortcut"])
def test_training_learns_few_step_generation(objective, jumps):
    """A short run on a Gaussian target: ``jumps`` jumps from noise land near N(mu, s^2 I) (mean and spread),
    which an untrained network does not. MeanFlow gets two: after 600 steps its single jump still misses the
    mean by ~0.5 (its logit-normal times rarely pair s near 0 with t near 1; measured on 2026-12-02 with
    weight powers 0 and 1 and equal fractions 0.25-0.75), while its two jumps land within ~0.03."""
    from tutorlib.train import TrainConfig, train

    torch.manual_seed(4)
    g = torch.Generator().manual_seed(5)
    mu, sd = torch.tensor([2.0, -1.0]), 0.3
    net = TwoTimeMLP(hidden=64, depth=2)

    def loss(model, step):
        x_1 = mu + sd * torch.randn(256, 2, generator=g)
        x_0 = torch.randn(256, 2, generator=g)
        return objective.loss(model, x_0, x_1, *objective.times(256, generator=g))

    x_0 = torch.randn(2000, 2, generator=g)
    before, before_one = fewstep_sample(net, x_0, steps=jumps).x, fewstep_sample(net, x_0).x
    hist = train(net, loss, lambda step: step, TrainConfig(steps=600, lr=3e-3, warmup_steps=50, cosine_decay=True,
                                                          progress=False))
    after = fewstep_sample(hist.ema_model, x_0, steps=jumps).x
    assert (after.mean(0) - mu).norm() < 0.15 < (before.mean(0) - mu).norm()
    spread = (after - after.median(0).values).abs().median(0).values / 0.6745  # robust sd: s = 0.3 for the target
    assert 0.1 < spread.min() and spread.max() < 0.5
    one = fewstep_sample(hist.ema_model, x_0).x  # one jump: better than untrained for either objective
    assert (one.mean(0) - mu).norm() < 0.4 * (before_one.mean(0) - mu).norm()
    assert math.isfinite(hist.final_loss)
