"""ODE/SDE solvers: Gaussian transport, measured orders, adaptive efficiency, reversibility, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.paths import AffinePath, CondOTPath, gmm_marginal_velocity
from tutorlib.schedulers import CosineScheduler
from tutorlib.solvers import (
    METHODS,
    ODESolution,
    SDESolution,
    ode_solve,
    reflow_coupling,
    sde_solve,
    velocity_to_sde_drift,
)

F64 = torch.float64
EXPECTED_ORDER = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
# steps per method for the Gaussian transport test and the error each must reach
GAUSS_STEPS = {"euler": 200, "midpoint": 20, "heun": 20, "rk4": 10, "dopri5": None}
GAUSS_TOL = {"euler": 2e-2, "midpoint": 3e-3, "heun": 1e-2, "rk4": 1e-4, "dopri5": 1e-5}


def gaussian_field(path, mu, s):
    """The marginal velocity of the path from N(0, I) to N(mu, s^2 I); mu has the trailing shape of x."""
    means, stds, w = mu[None], torch.tensor([s], dtype=mu.dtype), torch.ones(1, dtype=mu.dtype)
    return lambda x, t: gmm_marginal_velocity(path, x, t, means.to(x), stds.to(x), w.to(x))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("path", [CondOTPath(), AffinePath(CosineScheduler())], ids=repr)
@pytest.mark.parametrize("shape", [(2000, 2), (500, 1, 2, 2)])
def test_solvers_transport_gaussian_to_gaussian(method, path, shape):
    """N(0, I) -> N(mu, s^2 I): the flow map is x -> mu + s x, so the solution is known pointwise;
    the samples then have mean mu and covariance s^2 I."""
    mu = torch.linspace(-1.0, 2.0, math.prod(shape[1:]), dtype=F64).reshape(shape[1:])
    s = 0.5
    x_0 = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    sol = ode_solve(gaussian_field(path, mu, s), x_0, method=method, steps=GAUSS_STEPS[method] or 1,
                    atol=1e-7, rtol=1e-7)
    assert isinstance(sol, ODESolution) and sol.x.shape == shape and sol.trajectory is None
    assert (sol.x - (mu + s * x_0)).abs().max().item() < GAUSS_TOL[method]
    flat = sol.x.reshape(shape[0], -1)
    exact_flat = (mu + s * x_0).reshape(shape[0], -1)
    torch.testing.assert_close(flat.mean(0), exact_flat.mean(0), atol=GAUSS_TOL[method], rtol=0)
    torch.testing.assert_close(torch.cov(flat.T), torch.cov(exact_flat.T), atol=GAUSS_TOL[method], rtol=0)
    # and the exact map itself gives the target moments up to sampling error
    torch.testing.assert_close(flat.mean(0), mu.flatten(), atol=4 * s / math.sqrt(shape[0]), rtol=0)


def _riccati(x, t):
    """dx/dt = -2 t x^2, solution x(t) = 1 / (t^2 + 1 / x(0))."""
    return -2.0 * t[:, None] * x.square()


def measured_order(method: str, n: int = 16) -> float:
    x_0 = torch.tensor([[0.5], [1.0], [2.0]], dtype=F64)
    exact = 1.0 / (1.0 + 1.0 / x_0)
    err = [(ode_solve(_riccati, x_0, method=method, steps=k).x - exact).abs().max().item() for k in (n, 2 * n)]
    return math.log2(err[0] / err[1])


@pytest.mark.parametrize("method", list(EXPECTED_ORDER))
def test_measured_order_of_accuracy(method):
    assert measured_order(method) == pytest.approx(EXPECTED_ORDER[method], abs=0.2)


def test_dopri5_meets_tolerance_with_far_fewer_evaluations_than_euler():
    x_0 = torch.tensor([[0.5], [1.0], [2.0]], dtype=F64)
    exact = 1.0 / (1.0 + 1.0 / x_0)
    errors = []
    for tol in (1e-4, 1e-6, 1e-8):
        sol = ode_solve(_riccati, x_0, method="dopri5", atol=tol, rtol=tol)
        errors.append((sol.x - exact).abs().max().item())
        assert errors[-1] < 10 * tol
    assert errors[0] > errors[1] > errors[2]
    sol = ode_solve(_riccati, x_0, method="dopri5", atol=1e-6, rtol=1e-6)
    err_dopri = (sol.x - exact).abs().max().item()
    euler = ode_solve(_riccati, x_0, method="euler", steps=20 * sol.nfe)
    assert (euler.x - exact).abs().max().item() > err_dopri  # 20x the evaluations, still less accurate
    assert sol.nfe < 100


@pytest.mark.parametrize("method", METHODS)
def test_backward_integration_inverts_forward(method):
    mu, s = torch.tensor([1.0, -2.0], dtype=F64), 0.5
    v = gaussian_field(CondOTPath(), mu, s)
    x_0 = torch.randn(100, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    steps = {"euler": 400, "midpoint": 50, "heun": 50, "rk4": 20, "dopri5": 1}[method]
    fwd = ode_solve(v, x_0, method=method, steps=steps, atol=1e-8, rtol=1e-8)
    back = ode_solve(v, fwd.x, method=method, steps=steps, t0=1.0, t1=0.0, atol=1e-8, rtol=1e-8)
    assert back.times[0].item() == 1.0 and back.times[-1].item() == 0.0
    tol = {"euler": 5e-2, "midpoint": 1e-4, "heun": 1e-4, "rk4": 1e-6, "dopri5": 1e-6}[method]
    assert (back.x - x_0).abs().max().item() < tol


def test_time_grid_overrides_steps_and_trajectory():
    grid = torch.tensor([0.0, 0.1, 0.3, 0.6, 1.0], dtype=F64)
    x_0 = torch.randn(4, 1, 2, 2, dtype=F64)
    v = lambda x, t: -x * t[:, None, None, None]  # noqa: E731
    sol = ode_solve(v, x_0, method="euler", steps=999, time_grid=grid, return_trajectory=True)
    assert sol.nfe == 4 and sol.trajectory.shape == (5, 4, 1, 2, 2)
    torch.testing.assert_close(sol.times, grid)
    x = x_0
    for a, b in zip(grid[:-1], grid[1:]):
        x = x + (b - a) * v(x, torch.full((4,), a.item(), dtype=F64))
    torch.testing.assert_close(sol.x, x)
    assert torch.equal(sol.trajectory[0], x_0) and torch.equal(sol.trajectory[-1], sol.x)
    # dopri5 lands on every grid time and records accepted steps
    sol = ode_solve(v, x_0, method="dopri5", time_grid=grid, return_trajectory=True)
    assert set(grid.tolist()) <= set(sol.times.tolist())
    assert sol.trajectory.shape[0] == len(sol.times)
    torch.testing.assert_close(sol.x, x_0 * math.exp(-0.5), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError):
        ode_solve(v, x_0, time_grid=torch.tensor([0.0, 0.5, 0.2]))


def test_unknown_method_and_max_steps_errors():
    v = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="euler.*midpoint.*heun.*rk4.*dopri5"):
        ode_solve(v, torch.zeros(2, 2), method="rk45")
    stiff = lambda x, t: -1e5 * (x - torch.cos(t)[:, None])  # noqa: E731
    with pytest.raises(RuntimeError, match="max_steps"):
        ode_solve(stiff, torch.zeros(2, 1, dtype=F64), method="dopri5", max_steps=20)


def test_no_grad_by_default_and_gradients_when_enabled():
    theta = torch.tensor(0.7, dtype=F64, requires_grad=True)
    v = lambda x, t: theta * x  # noqa: E731
    x_0 = torch.tensor([[1.0], [2.0]], dtype=F64)
    assert not ode_solve(v, x_0, method="rk4", steps=10).x.requires_grad
    for method in METHODS:
        sol = ode_solve(v, x_0, method=method, steps=200, enable_grad=True, atol=1e-9, rtol=1e-9)
        (grad,) = torch.autograd.grad(sol.x.sum(), theta)
        assert grad.item() == pytest.approx(3.0 * math.exp(0.7), rel=1e-2 if method == "euler" else 1e-5)


def test_float32_and_nfe_counts():
    v = lambda x, t: -x  # noqa: E731
    x_0 = torch.ones(3, 2)
    for method, per_step in (("euler", 1), ("midpoint", 2), ("heun", 2), ("rk4", 4)):
        sol = ode_solve(v, x_0, method=method, steps=10)
        assert sol.x.dtype == torch.float32 and sol.nfe == 10 * per_step
    calls = []
    ode_solve(lambda x, t: calls.append(1) or -x, x_0, method="dopri5")
    sol = ode_solve(v, x_0, method="dopri5")
    assert sol.nfe == len(calls) and sol.x.dtype == torch.float32
    torch.testing.assert_close(sol.x, torch.full((3, 2), math.exp(-1)), rtol=1e-4, atol=1e-5)


def test_sde_with_probability_flow_drift_keeps_the_marginals():
    """dx = [v + g^2/2 score] dt + g dW has the marginals of the flow: it ends at N(mu, s^2 I)."""
    mu, s = torch.tensor([1.0, -2.0], dtype=F64), 0.5
    path = CondOTPath()
    v = gaussian_field(path, mu, s)
    score = lambda x, t: path.velocity_to_score(v(x, t), x, t)  # noqa: E731
    g = lambda x, t: 0.8 * (1 - t)  # noqa: E731  vanishes at the data end, where the score is singular
    drift = velocity_to_sde_drift(v, score, g)
    x_0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    sol = sde_solve(drift, g, x_0, steps=200, generator=torch.Generator().manual_seed(3), return_trajectory=True)
    assert isinstance(sol, SDESolution) and sol.nfe == 200 and sol.trajectory.shape == (201, 4000, 2)
    torch.testing.assert_close(sol.x.mean(0), mu, atol=0.05, rtol=0)
    torch.testing.assert_close(sol.x.std(0), torch.full((2,), s, dtype=F64), atol=0.03, rtol=0)
    again = sde_solve(drift, g, x_0, steps=200, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sol.x, again.x)


def test_sde_brownian_motion_variance():
    x_0 = torch.zeros(20_000, 1, dtype=F64)
    sol = sde_solve(lambda x, t: torch.zeros_like(x), lambda x, t: torch.full_like(t, 2.0), x_0, steps=10,
                    generator=torch.Generator().manual_seed(4))
    assert sol.x.var().item() == pytest.approx(4.0, rel=0.05)


def test_reflow_coupling():
    v = lambda x, t: torch.ones_like(x)  # noqa: E731
    x_0 = torch.randn(5, 2)
    a, b = reflow_coupling(v, x_0, steps=4)
    assert a is x_0
    torch.testing.assert_close(b, x_0 + 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", METHODS)
def test_solvers_on_cuda(method, dtype):
    mu = torch.tensor([1.0, -2.0], dtype=dtype, device="cuda")
    v = gaussian_field(CondOTPath(), mu, 0.5)
    x_0 = torch.randn(256, 2, dtype=dtype, device="cuda")
    sol = ode_solve(v, x_0, method=method, steps=50, return_trajectory=True)
    assert sol.x.device.type == "cuda" and sol.x.dtype == dtype and sol.trajectory.device.type == "cuda"
    cpu = ode_solve(lambda x, t: v(x.cuda(), t.cuda()).cpu(), x_0.cpu(), method=method, steps=50)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(sol.x.cpu(), cpu.x, atol=tol, rtol=tol)
    theta = torch.tensor(0.5, dtype=dtype, device="cuda", requires_grad=True)
    out = ode_solve(lambda x, t: theta * x, x_0, method=method, steps=20, enable_grad=True)
    out.x.sum().backward()
    assert theta.grad is not None and torch.isfinite(theta.grad)
    cuda_gen = torch.Generator(device="cuda").manual_seed(0)
    sde = sde_solve(v, lambda x, t: 0.1 * (1 - t), x_0, steps=20, generator=cuda_gen)
    assert sde.x.device.type == "cuda"
    sde = sde_solve(v, lambda x, t: 0.1 * (1 - t), x_0, steps=20, generator=torch.Generator().manual_seed(0))
    assert sde.x.device.type == "cuda"


def test_dopri5_agrees_with_torchdiffeq_on_a_learned_like_field():
    """The same Dormand-Prince 5(4) pair as torchdiffeq (a maintained peer): same answer to the tolerance,
    and a comparable number of evaluations."""
    torchdiffeq = pytest.importorskip("torchdiffeq")
    g = torch.Generator().manual_seed(0)
    W1, W2 = torch.randn(3, 16, generator=g, dtype=F64), torch.randn(16, 3, generator=g, dtype=F64) / 4
    b = torch.randn(16, generator=g, dtype=F64)

    def field(x, t):  # x (B, 3), t (B,)
        return torch.tanh(x @ W1 + b * t[:, None]) @ W2 - 0.3 * x

    x_0 = torch.randn(64, 3, generator=g, dtype=F64)
    ours = ode_solve(field, x_0, method="dopri5", atol=1e-9, rtol=1e-9)
    peer_calls = []

    def peer_field(t, x):
        peer_calls.append(1)
        return field(x, t.expand(x.shape[0]))

    peer = torchdiffeq.odeint(peer_field, x_0, torch.tensor([0.0, 1.0], dtype=F64), method="dopri5",
                              atol=1e-9, rtol=1e-9)[-1]
    torch.testing.assert_close(ours.x, peer, atol=1e-7, rtol=0)
    assert 0.5 < ours.nfe / len(peer_calls) < 2.0, (ours.nfe, len(peer_calls))
    # and against an accurate fixed-step reference
    ref = ode_solve(field, x_0, method="rk4", steps=2000).x
    torch.testing.assert_close(ours.x, ref, atol=1e-7, rtol=0)


def test_steps_for_nfe_counts_evaluations():
    from tutorlib.solvers import steps_for_nfe

    assert [steps_for_nfe(m, 20) for m in ("euler", "midpoint", "heun", "rk4")] == [20, 10, 10, 5]
    calls = []
    ode_solve(lambda x, t: calls.append(1) or -x, torch.ones(2, 1), method="rk4", steps=steps_for_nfe("rk4", 8))
    assert len(calls) == 8
    for method, nfe in (("midpoint", 3), ("rk4", 2), ("dopri5", 10), ("euler", 0)):
        with pytest.raises(ValueError):
            steps_for_nfe(method, nfe)


# --- time grids (lesson 07) ---


def test_power_time_grid():
    from tutorlib.solvers import power_time_grid

    torch.testing.assert_close(power_time_grid(5, 1.0), torch.linspace(0, 1, 6, dtype=F64))
    g = power_time_grid(8, 2.5)
    assert g[0].item() == 0.0 and g[-1].item() == 1.0 and bool((g.diff() > 0).all())
    assert bool((g.diff().diff() < 0).all())  # rho > 1: the steps shrink towards t = 1
    torch.testing.assert_close(g, 1 - (1 - torch.arange(9, dtype=F64) / 8) ** 2.5)
    back = power_time_grid(4, 2.0, t0=1.0, t1=0.0)
    assert back[0].item() == 1.0 and back[-1].item() == 0.0 and bool((back.diff() < 0).all())
    for steps, rho in ((0, 1.0), (3, 0.0), (2.5, 1.0)):
        with pytest.raises(ValueError):
            power_time_grid(steps, rho)


def _cubic(x, t):
    """dx/dt = 3 t^2 (every coordinate): x(t) = x(0) + t^3, and an Euler jump from t by h misses by 3 t h^2 + h^3."""
    return (3.0 * t**2)[:, None].expand_as(x)


def test_euler_jump_costs_closed_form():
    from tutorlib.solvers import euler_jump_costs

    times = torch.linspace(0, 1, 9, dtype=F64)
    x_0 = torch.randn(5, 2, dtype=F64)
    traj = x_0[None] + times[:, None, None] ** 3  # (9, 5, 2) exact states
    vel = torch.stack([_cubic(x, torch.full((5,), float(t), dtype=F64)) for x, t in zip(traj, times)])
    C = euler_jump_costs(traj, vel, times)
    ti, tj = times[:, None], times[None, :]
    h = tj - ti
    expected = math.sqrt(2) * (3 * ti * h**2 + h**3)  # the same miss in both coordinates
    upper = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1)
    torch.testing.assert_close(C[upper], expected[upper])
    assert bool(torch.isinf(C[~upper]).all())
    # a constant field: Euler is exact, every jump is free
    const = torch.ones_like(traj)
    C0 = euler_jump_costs(x_0[None] + times[:, None, None] * 1.0, const, times)
    assert C0[upper].abs().max().item() < 1e-12
    with pytest.raises(ValueError, match="increase"):
        euler_jump_costs(traj, vel, times.flip(0))
    with pytest.raises(ValueError, match="both"):
        euler_jump_costs(traj, vel[:, :3], times)


def test_bellman_grid_is_the_brute_force_optimum():
    import itertools

    from tutorlib.solvers import bellman_grid

    g = torch.Generator().manual_seed(0)
    n = 9
    C = torch.rand(n + 1, n + 1, generator=g, dtype=F64)
    C[~torch.triu(torch.ones(n + 1, n + 1, dtype=torch.bool), 1)] = math.inf
    for K in (1, 2, 3, 4, n):
        best = min((sum(C[a, b].item() for a, b in zip((0, *mid), (*mid, n))), (0, *mid, n))
                   for mid in itertools.combinations(range(1, n), K - 1))
        out = bellman_grid(C, K)
        assert out.indices == list(best[1]) and out.cost == pytest.approx(best[0])
        torch.testing.assert_close(out.times, torch.tensor(best[1], dtype=F64) / n)
    # a convex cost of the step alone: the uniform grid is optimal
    t = torch.arange(13, dtype=F64) / 12
    Cq = (t[None] - t[:, None]) ** 2
    Cq[~torch.triu(torch.ones(13, 13, dtype=torch.bool), 1)] = math.inf
    assert bellman_grid(Cq, 4, t).indices == [0, 3, 6, 9, 12]
    for bad in (0, 13, 2.0):
        with pytest.raises(ValueError, match="steps"):
            bellman_grid(Cq, bad)
    with pytest.raises(ValueError, match="square"):
        bellman_grid(Cq[:, :5], 2)


def _sixth(x, t):
    """dx/dt = 6 t^5: x(t) = x(0) + t^6, a field that changes fastest near t = 1."""
    return (6.0 * t**5)[:, None].expand_as(x)


def test_optimal_time_grid_beats_the_uniform_grid_where_the_field_bends():
    """On dx/dt = 6 t^5 the Euler error of a step grows with t, so the best grid crowds towards t = 1,
    and its Euler solution is more accurate than the uniform grid's at the same number of steps."""
    from tutorlib.solvers import optimal_time_grid

    x_0 = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = x_0 + 1.0
    best = optimal_time_grid(_sixth, x_0, 4, candidates=64)
    assert best.indices[0] == 0 and best.indices[-1] == 64 and len(best.times) == 5
    assert bool((best.times.diff().diff() < 0).all())  # shrinking steps
    err = lambda sol: (sol.x - exact).abs().max().item()  # noqa: E731
    uniform = ode_solve(_sixth, x_0, method="euler", steps=4)
    tuned = ode_solve(_sixth, x_0, method="euler", time_grid=best.times)
    assert err(tuned) < 0.6 * err(uniform)
    # the summed local errors it minimised equal the global error here (the errors add up: v ignores x)
    assert best.cost == pytest.approx(math.sqrt(2) * err(tuned), rel=1e-6)
    with pytest.raises(ValueError, match="fixed-step"):
        optimal_time_grid(_sixth, x_0, 4, reference_method="dopri5")


@pytest.mark.parametrize("method", list(EXPECTED_ORDER))
def test_measured_order_holds_on_a_non_uniform_grid(method):
    from tutorlib.solvers import power_time_grid

    x_0 = torch.tensor([[0.5], [1.0], [2.0]], dtype=F64)
    exact = 1.0 / (1.0 + 1.0 / x_0)
    err = [(ode_solve(_riccati, x_0, method=method, time_grid=power_time_grid(k, 1.3)).x - exact).abs().max().item()
           for k in (32, 64)]
    assert math.log2(err[0] / err[1]) == pytest.approx(EXPECTED_ORDER[method], abs=0.2)


# --- the reverse-SDE family of noise levels (lesson 04) ---


def test_reverse_diffusion_on_a_vp_path_is_the_noise_rate_and_keeps_the_marginals():
    """On DDPM's path g^2 = 2 d log alpha / dt = -T log(1 - beta_j) (about T beta_j); with the exact field of
    Gaussian data, Euler-Maruyama at noise 0, 1 and 2 all end at N(mu, s^2 I)."""
    from tutorlib.ddpm import DDPMSchedule, DDPMScheduler, linear_betas
    from tutorlib.solvers import reverse_diffusion

    schedule = DDPMSchedule(linear_betas(1000))
    path = AffinePath(DDPMScheduler(schedule))
    j = torch.tensor([1, 10, 500, 1000])
    t = 1 - (j.double() - 0.5) / 1000  # inside the piece of beta_j
    x = torch.zeros(4, 2, dtype=F64)
    g = reverse_diffusion(path, 1.0)(x, t)
    torch.testing.assert_close(g.square(), -1000 * torch.log1p(-schedule.betas[j - 1]), rtol=1e-9, atol=0)
    torch.testing.assert_close(reverse_diffusion(path, 2.0)(x, t), 2 * g)
    mu, s = torch.tensor([1.0, -2.0], dtype=F64), 0.5
    v = gaussian_field(path, mu, s)
    score = lambda x, t: path.velocity_to_score(v(x, t), x, t)  # noqa: E731
    x_0 = torch.randn(3000, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    t1 = 1 - 1e-3
    for noise in (0.0, 1.0, 2.0):
        diff = reverse_diffusion(path, noise)
        sol = sde_solve(velocity_to_sde_drift(v, score, diff), diff, x_0, steps=300, t1=t1,
                        generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(sol.x.mean(0), mu, atol=0.05, rtol=0)
        torch.testing.assert_close(sol.x.std(0), torch.full((2,), s, dtype=F64), atol=0.03, rtol=0)


def test_reverse_diffusion_vanishes_at_the_data_end_and_refuses_bad_noise():
    from tutorlib.solvers import reverse_diffusion

    diff = reverse_diffusion(CondOTPath(), 1.0)
    x = torch.zeros(3, 2, dtype=F64)
    g = diff(x, torch.tensor([0.25, 0.5, 1.0], dtype=F64))
    # linear path: g^2 = 2 (1 - t) / t
    torch.testing.assert_close(g.square(), torch.tensor([6.0, 2.0, 0.0], dtype=F64))
    assert g.shape == (3,) and diff(x, torch.tensor(0.5, dtype=F64)).shape == (3,)
    for bad in (-0.5, math.nan, True):
        with pytest.raises(ValueError, match="noise"):
            reverse_diffusion(CondOTPath(), bad)


def test_fit_time_grid_reduces_the_global_error():
    """On dx/dt = 6 t^5 (no x dependence) the Euler error is the sum of the local errors: the fitted grid
    matches the dynamic program's (on fine candidates) and beats the uniform grid; on dx/dt = 2 t, where
    each step's error is its length squared, the uniform grid is already optimal and stays put."""
    from tutorlib.solvers import fit_time_grid, optimal_time_grid

    x_0 = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    target = x_0 + 1.0
    fitted = fit_time_grid(_sixth, x_0, target, 4, iters=400, lr=0.05)
    assert fitted.times[0].item() == 0.0 and fitted.times[-1].item() == 1.0 and bool((fitted.times.diff() > 0).all())
    assert fitted.losses[-1] < 0.35 * fitted.losses[0]  # 0.34^2 against 0.60^2 for the uniform grid
    err = lambda g: (ode_solve(_sixth, x_0, time_grid=g).x - target).abs().max().item()  # noqa: E731
    best = optimal_time_grid(_sixth, x_0, 4, candidates=256)
    assert err(fitted.times) <= err(best.times) * 1.01 < err(torch.linspace(0, 1, 5, dtype=F64))
    torch.testing.assert_close(fitted.times, best.times, atol=0.01, rtol=0)

    linear = lambda x, t: (2 * t)[:, None].expand_as(x)  # noqa: E731
    stay = fit_time_grid(linear, x_0, x_0 + 1.0, 4, iters=100)
    torch.testing.assert_close(stay.times, torch.linspace(0, 1, 5, dtype=F64), atol=1e-3, rtol=0)
    start = fit_time_grid(linear, x_0, x_0 + 1.0, 2, iters=1, init=torch.tensor([0.0, 0.8, 1.0]))
    assert start.losses[0] == pytest.approx(2 * (0.8**2 + 0.2**2) ** 2, rel=1e-6)  # Euler misses by sum h_k^2 per coordinate
    with pytest.raises(ValueError, match="init"):
        fit_time_grid(linear, x_0, x_0, 2, init=torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="target"):
        fit_time_grid(linear, x_0, x_0[:3], 2)


def test_affine_sde_drift_is_velocity_to_sde_drift_with_one_evaluation():
    from tutorlib.solvers import affine_sde_drift, reverse_diffusion

    path = AffinePath(CosineScheduler())
    v = gaussian_field(path, torch.tensor([0.5, 1.0], dtype=F64), 0.3)
    calls = []
    counted = lambda x, t: calls.append(1) or v(x, t)  # noqa: E731
    diff = reverse_diffusion(path, 0.7)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(8), dtype=F64)
    t = torch.linspace(0.2, 0.8, 6, dtype=F64)
    got = affine_sde_drift(counted, path, diff)(x, t)
    assert len(calls) == 1
    want = velocity_to_sde_drift(v, lambda x, t: path.velocity_to_score(v(x, t), x, t), diff)(x, t)
    torch.testing.assert_close(got, want)


def test_reduced_precision_keeps_the_state_float32_and_stays_close():
    """bfloat16 inside the network (autocast), float32 outside: the velocity comes back in x's dtype, within
    bfloat16's rounding of the float32 one, and a whole Euler solve lands within a few 1e-2 of it."""
    from tutorlib.models import TimeMLP
    from tutorlib.solvers import reduced_precision

    torch.manual_seed(0)
    model = TimeMLP(2, 64, 2).eval()
    x = torch.randn(256, 2)
    t = torch.full((256,), 0.3)
    low = reduced_precision(model, torch.bfloat16)
    with torch.no_grad():
        v, v_low = model(x, t), low(x, t)
        assert v_low.dtype == torch.float32 and v_low.shape == v.shape
        rel = ((v_low - v).norm() / v.norm()).item()
        assert 0 < rel < 2e-2, rel  # not bit-identical (it did run in bfloat16) and close
        a = ode_solve(model, x, method="euler", steps=20).x
        b = ode_solve(low, x, method="euler", steps=20).x
    assert b.dtype == torch.float32
    assert 0 < (a - b).abs().max().item() < 5e-2
    assert reduced_precision(model, None) is model
    with pytest.raises(ValueError, match="bfloat16 or torch.float16"):
        reduced_precision(model, torch.float64)
