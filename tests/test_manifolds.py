"""tutorlib.manifolds against closed forms: the maps, the geodesic path and its velocity, the Euler step on
the manifold, the von Mises-Fisher and wrapped Gaussian laws, the geodesic energy distance; and against geoopt
(the sphere's maps) and SciPy (the von Mises-Fisher density)."""

from __future__ import annotations

import dataclasses
import functools
import math

import pytest
import torch

from tutorlib.device import PROFILES
from tutorlib.manifolds import (ManifoldConfig, Sphere, TangentVelocity, Torus, VonMisesFisherMixture,
                                WrappedGaussianMixture, energy_distance, manifold_euler, rfm_loss, sample_vmf,
                                vmf_mean_resultant_length, wrap)
from tutorlib.models import TimeMLP

F64 = torch.float64
MANIFOLDS = [Sphere(2), Sphere(3), Sphere(5), Torus(1), Torus(2), Torus(3)]
IDS = [repr(m) for m in MANIFOLDS]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def points(manifold, n, seed, dtype=F64):
    """Uniform points in float64 (the samplers draw float64 and round to float32: redraw at full precision)."""
    g = gen(seed)
    if isinstance(manifold, Sphere):
        z = torch.randn(n, manifold.dim, generator=g, dtype=dtype)
        return z / z.norm(dim=-1, keepdim=True)
    return wrap(2 * math.pi * torch.rand(n, manifold.dim, generator=g, dtype=dtype) - math.pi)


def close_pairs(manifold, n, seed, max_dist):
    """Pairs (x, y) with d(x, y) <= max_dist < pi: y = exp_x(v), |v| uniform in [0, max_dist]."""
    x = points(manifold, n, seed)
    g = gen(seed + 1)
    v = manifold.to_tangent(x, torch.randn(n, manifold.dim, generator=g, dtype=F64))
    v = v / v.norm(dim=-1, keepdim=True) * max_dist * torch.rand(n, 1, generator=g, dtype=F64)
    return x, manifold.exp(x, v), v


# --- wrapping ---------------------------------------------------------------------------------------


def test_wrap_lands_in_minus_pi_pi_and_moves_by_whole_turns():
    a = torch.linspace(-20, 20, 4001, dtype=F64)
    w = wrap(a)
    assert float(w.min()) > -math.pi and float(w.max()) <= math.pi
    turns = (w - a) / (2 * math.pi)
    torch.testing.assert_close(turns, turns.round(), atol=1e-12, rtol=0)
    edges = wrap(torch.tensor([math.pi, -math.pi, 3 * math.pi, 0.0, -3 * math.pi + 0.5], dtype=F64))
    torch.testing.assert_close(edges, torch.tensor([math.pi, math.pi, math.pi, 0.0, -math.pi + 0.5], dtype=F64))


def test_torus_log_takes_the_short_way_across_the_seam():
    T = Torus(1)
    x, y = torch.tensor([[3.0]], dtype=F64), torch.tensor([[-3.0]], dtype=F64)
    torch.testing.assert_close(T.log(x, y), torch.tensor([[2 * math.pi - 6.0]], dtype=F64))  # forwards over pi
    torch.testing.assert_close(T.exp(x, T.log(x, y)), y)
    torch.testing.assert_close(T.dist(x, y), torch.tensor([2 * math.pi - 6.0], dtype=F64))
    assert float(T.distance_to_manifold(torch.tensor([[3.5, 0.0]]))) == pytest.approx(3.5 - math.pi)
    assert float(T.distance_to_manifold(T.proj(torch.tensor([[3.5, -7.0]])))) == 0.0


# --- the maps ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("M", MANIFOLDS, ids=IDS)
def test_exp_of_log_is_the_identity_and_log_of_exp_too(M):
    x, y = points(M, 500, 0), points(M, 500, 1)
    torch.testing.assert_close(M.exp(x, M.log(x, y)), y, atol=1e-10, rtol=0)
    x, y, v = close_pairs(M, 500, 2, max_dist=3.0)  # |v| < pi: inside the injectivity radius of both
    torch.testing.assert_close(M.log(x, y), v, atol=1e-10, rtol=0)
    torch.testing.assert_close(M.log(x, x), torch.zeros_like(x), atol=1e-15, rtol=0)  # 0 up to rounding, no NaN
    torch.testing.assert_close(M.exp(x, torch.zeros_like(x)), x, atol=1e-15, rtol=0)


@pytest.mark.parametrize("M", [m for m in MANIFOLDS if isinstance(m, Sphere)], ids=lambda m: repr(m))
def test_sphere_distance_is_the_arccos_of_the_dot_product_and_log_is_tangent(M):
    x, y = points(M, 500, 3), points(M, 500, 4)
    arccos = torch.arccos((x * y).sum(-1))
    torch.testing.assert_close(M.dist(x, y), arccos, atol=1e-10, rtol=0)
    torch.testing.assert_close(M.log(x, y).norm(dim=-1), arccos, atol=1e-10, rtol=0)
    torch.testing.assert_close(M.pairwise_distance(x, y).diagonal(), arccos, atol=1e-7, rtol=0)
    assert float((M.log(x, y) * x).sum(-1).abs().max()) < 1e-10  # tangent at x (rounding grows near antipodes)
    near = M.exp(x, M.to_tangent(x, 1e-7 * torch.randn(500, M.dim, generator=gen(5), dtype=F64)))
    torch.testing.assert_close(M.dist(x, near), M.log(x, near).norm(dim=-1), atol=1e-15, rtol=1e-8)  # no cancellation


def test_sphere_maps_agree_with_geoopt():
    geoopt = pytest.importorskip("geoopt")
    peer, S = geoopt.Sphere(), Sphere(3)
    x, y = points(S, 300, 6), points(S, 300, 7)
    v = S.to_tangent(x, torch.randn(300, 3, generator=gen(8), dtype=F64))
    torch.testing.assert_close(S.log(x, y), peer.logmap(x, y), atol=1e-9, rtol=0)
    torch.testing.assert_close(S.exp(x, v), peer.expmap(x, v), atol=1e-12, rtol=0)
    torch.testing.assert_close(S.dist(x, y), peer.dist(x, y), atol=1e-9, rtol=0)
    torch.testing.assert_close(S.to_tangent(x, y), peer.proju(x, y), atol=1e-14, rtol=0)


@pytest.mark.parametrize("M", [Torus(1), Torus(3)], ids=repr)
def test_torus_pairwise_distance_is_the_sum_of_circle_distances(M):
    x, y = points(M, 40, 9), points(M, 30, 10)
    D = M.pairwise_distance(x, y)
    circle = Torus(1)
    brute = sum(circle.pairwise_distance(x[:, k:k + 1], y[:, k:k + 1]) for k in range(M.dim))
    torch.testing.assert_close(D, brute)
    i, j = 3, 7
    assert float(D[i, j]) == pytest.approx(float(sum(min(abs(a - b), 2 * math.pi - abs(a - b))
                                                     for a, b in zip(x[i].tolist(), y[j].tolist()))))


# --- the geodesic path ------------------------------------------------------------------------------


@pytest.mark.parametrize("M", MANIFOLDS, ids=IDS)
def test_geodesic_velocity_is_the_time_derivative_with_the_closed_form_speed(M):
    n = 400
    x_0, x_1 = points(M, n, 11), points(M, n, 12)
    t = torch.rand(n, generator=gen(13), dtype=F64) * 0.98 + 0.01
    s = M.geodesic(x_0, x_1, t)
    h = 1e-6
    x_minus, x_plus = M.geodesic(x_0, x_1, t - h).x_t, M.geodesic(x_0, x_1, t + h).x_t
    step = M.log(x_minus, x_plus) if isinstance(M, Torus) else x_plus - x_minus  # the angles' step across the seam
    torch.testing.assert_close(s.dx_t, step / (2 * h), atol=1e-7, rtol=0)  # central difference
    d = M.dist(x_0, x_1)
    torch.testing.assert_close(s.dx_t.norm(dim=-1), d, atol=1e-10, rtol=0)  # constant speed d(x_0, x_1)
    torch.testing.assert_close(M.dist(s.x_t, x_1) / (1 - t), d, atol=1e-9, rtol=0)
    torch.testing.assert_close(s.dx_t, M.log(s.x_t, x_1) / (1 - t)[:, None], atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(M.to_tangent(s.x_t, s.dx_t), s.dx_t, atol=1e-12, rtol=0)  # tangent at x_t
    assert float(M.distance_to_manifold(s.x_t).max()) < 1e-12
    torch.testing.assert_close(M.geodesic(x_0, x_1, 0.0).x_t, x_0, atol=1e-12, rtol=0)
    torch.testing.assert_close(M.geodesic(x_0, x_1, 1.0).x_t, x_1, atol=1e-10, rtol=0)
    torch.testing.assert_close(M.geodesic(x_0, x_1, 1.0).dx_t.norm(dim=-1), d, atol=1e-10, rtol=0)  # finite at t = 1


def test_sphere_geodesic_is_the_slerp_formula():
    S = Sphere(3)
    x_0, x_1 = points(S, 200, 14), points(S, 200, 15)
    t = torch.rand(200, generator=gen(16), dtype=F64)
    th = torch.arccos((x_0 * x_1).sum(-1, keepdim=True))
    slerp = (torch.sin((1 - t[:, None]) * th) * x_0 + torch.sin(t[:, None] * th) * x_1) / torch.sin(th)
    torch.testing.assert_close(S.geodesic(x_0, x_1, t).x_t, slerp, atol=1e-10, rtol=0)


@pytest.mark.parametrize("M", MANIFOLDS, ids=IDS)
def test_exp_euler_integrates_the_conditional_field_exactly(M):
    # u_t(x | x_1) = log_x(x_1) / (1 - t): one exp-map step moves x along its geodesic to x_1 by the exact
    # fraction h / (1 - t), so the Euler iterates lie on the geodesic and the last step lands on x_1.
    x_0, x_1 = points(M, 200, 17), points(M, 200, 18)
    field = lambda x, t: M.log(x, x_1) / (1 - t)[:, None]  # noqa: E731  (t < 1 at every Euler step)
    sol = manifold_euler(M, field, x_0, steps=7, return_trajectory=True)
    torch.testing.assert_close(sol.x, x_1, atol=1e-9, rtol=0)
    torch.testing.assert_close(sol.trajectory[3], M.geodesic(x_0, x_1, 3 / 7).x_t, atol=1e-9, rtol=0)
    assert sol.nfe == 7 and sol.trajectory.shape == (8, 200, M.dim) and sol.times.shape == (8,)


def test_euler_steps_stay_on_the_sphere_and_converge_at_first_order():
    S = Sphere(3)
    omega = torch.tensor([0.3, -1.0, 2.0], dtype=F64)
    field = lambda x, t: torch.linalg.cross(omega.expand_as(x), x)  # noqa: E731  a rotation about omega
    x_0 = points(S, 100, 19)
    angle = float(omega.norm())
    k = omega / angle
    exact = (x_0 * math.cos(angle) + torch.linalg.cross(k.expand_as(x_0), x_0) * math.sin(angle)
             + k * (x_0 @ k)[:, None] * (1 - math.cos(angle)))  # Rodrigues' rotation by |omega|
    for step in (S.exp, S.retract):
        errors = [float((manifold_euler(S, field, x_0, steps=n, step=step).x - exact).norm(dim=-1).max())
                  for n in (50, 100, 200)]
        assert 1.8 < errors[0] / errors[1] < 2.2 and 1.8 < errors[1] / errors[2] < 2.2, errors
    om32 = omega.float()
    long = manifold_euler(S, lambda x, t: 3 * torch.linalg.cross(om32.expand_as(x), x), x_0.float(), steps=2000)
    assert float(S.distance_to_manifold(long.x).max()) < 1e-6  # float32, 2000 steps: still on the sphere


def test_torus_euler_with_a_constant_field_wraps_around():
    T = Torus(2)
    x_0 = points(T, 50, 20)
    c = torch.tensor([7.0, -11.0], dtype=F64)
    sol = manifold_euler(T, lambda x, t: c.expand_as(x), x_0, steps=13)
    torch.testing.assert_close(sol.x, wrap(x_0 + c), atol=1e-12, rtol=0)
    assert float(T.distance_to_manifold(sol.x).max()) == 0.0


# --- models and the loss ----------------------------------------------------------------------------


def test_tangent_velocity_is_tangent_and_periodic_on_the_torus():
    torch.manual_seed(0)
    P = PROFILES["smoke"]
    S, T = Sphere(3), Torus(2)
    vs = TangentVelocity.from_profile(P, S)
    x = S.sample_uniform(300, generator=gen(21))
    v = vs(x, torch.rand(300, generator=gen(22)))
    v = v.detach()
    assert v.shape == (300, 3) and float((v * x).sum(-1).abs().max()) < 1e-6 * float(v.norm(dim=-1).max())
    vt = TangentVelocity.from_profile(P, T)
    a = T.sample_uniform(300, generator=gen(23))
    t = torch.rand(300, generator=gen(24))
    torch.testing.assert_close(vt(a, t), vt(a + 2 * math.pi * torch.tensor([1.0, -3.0]), t), atol=1e-4, rtol=1e-4)
    assert isinstance(vt.net, TimeMLP) and vt.net.dim == 4 and vt.net.out_dim == 2
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        vs(torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match="manifold must be"):
        TangentVelocity("sphere", vs.net)


@pytest.mark.parametrize("M", [Sphere(3), Torus(2)], ids=repr)
def test_rfm_loss_of_a_zero_field_is_the_mean_squared_geodesic_distance(M):
    x_0, x_1 = points(M, 300, 25), points(M, 300, 26)
    t = torch.rand(300, generator=gen(27), dtype=F64)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    expected = M.dist(x_0, x_1).square().mean() / M.dim  # |u_t| = d(x_0, x_1) at every t
    torch.testing.assert_close(rfm_loss(zero, M, x_0, x_1, t), expected)
    exact = lambda x, t: M.log(x, x_1) / (1 - t)[:, None]  # noqa: E731  the conditional field itself
    assert float(rfm_loss(exact, M, x_0, x_1, t * 0.99)) < 1e-16


# --- samplers and densities -------------------------------------------------------------------------


@pytest.mark.parametrize("kappa", [0.5, 2.0, 10.0, 200.0])
def test_vmf_mean_resultant_length_matches_coth_minus_one_over_kappa(kappa):
    n = 40_000
    mu = torch.nn.functional.normalize(torch.tensor([[0.3, -0.5, 0.8]], dtype=F64), dim=-1).expand(n, 3)
    x = sample_vmf(mu, torch.tensor(kappa), generator=gen(28))
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(n, dtype=F64))
    w = x @ mu[0]  # (n,)
    expected = float(vmf_mean_resultant_length(kappa))
    assert expected == pytest.approx(1 / math.tanh(kappa) - 1 / kappa)
    assert abs(float(w.mean()) - expected) < 5 * float(w.std()) / math.sqrt(n)
    tangential = x - w[:, None] * mu  # the direction around mu is uniform: mean tangential part ~ 0
    assert float(tangential.mean(0).norm()) < 5 * math.sqrt(max(1 - float((w * w).mean()), 1e-12) / n)
    # w = <mu, x> has the CDF (e^{kappa w} - e^{-kappa}) / (e^kappa - e^{-kappa}): a Kolmogorov-Smirnov distance
    ws = w.sort().values
    cdf = torch.expm1(kappa * (ws + 1)) / math.expm1(2 * kappa)
    ks = float((cdf - torch.arange(1, n + 1, dtype=F64) / n).abs().max())
    assert ks < 1.63 / math.sqrt(n)  # the 1 % critical value


def test_vmf_mixture_log_prob_matches_scipy_and_integrates_to_one():
    stats = pytest.importorskip("scipy.stats")
    if not hasattr(stats, "vonmises_fisher"):
        pytest.skip("scipy >= 1.11 has vonmises_fisher")
    means = torch.tensor([[0, 0, 1.0], [1, 0, 0], [0.2, -0.9, 0.1]], dtype=F64)
    kappas, weights = torch.tensor([5.0, 40.0, 700.0]), torch.tensor([0.5, 0.3, 0.2])
    mix = VonMisesFisherMixture(means, kappas, weights)
    x = points(Sphere(3), 400, 29)
    x = torch.cat([x, mix.sample(100, generator=gen(30)).double()])
    x = x / x.norm(dim=-1, keepdim=True)
    peer = sum(float(w) * stats.vonmises_fisher(mu.numpy(), float(k)).pdf(x.numpy())
               for mu, k, w in zip(mix.means, kappas, mix.weights))
    torch.testing.assert_close(mix.log_prob(x).exp(), torch.from_numpy(peer), rtol=1e-9, atol=1e-300)
    # quadrature over the sphere in (cos theta, phi): 4 pi * mean density of a fine grid (kappa 700 excluded)
    soft = VonMisesFisherMixture(means[:2], kappas[:2], weights[:2])
    m = 800
    u = (torch.arange(m, dtype=F64) + 0.5) / m * 2 - 1  # cos theta, midpoints
    phi = (torch.arange(m, dtype=F64) + 0.5) / m * 2 * math.pi
    U, PH = torch.meshgrid(u, phi, indexing="ij")
    r = torch.sqrt(1 - U * U)
    grid = torch.stack([r * torch.cos(PH), r * torch.sin(PH), U], -1).reshape(-1, 3)
    assert float(soft.log_prob(grid).exp().mean() * 4 * math.pi) == pytest.approx(1.0, abs=1e-5)


def test_vmf_mixture_draws_follow_the_weights_and_the_generator():
    means = torch.eye(3, dtype=F64)
    mix = VonMisesFisherMixture(means, torch.tensor([300.0, 300.0, 300.0]), torch.tensor([0.6, 0.3, 0.1]))
    x = mix.sample(30_000, generator=gen(31))
    assert x.dtype == torch.float32 and x.shape == (30_000, 3)
    frac = torch.bincount(mix.component_log_probs(x).argmax(-1), minlength=3).double() / 30_000
    torch.testing.assert_close(frac, mix.weights, atol=0.012, rtol=0)
    assert torch.equal(mix.sample(50, generator=gen(1)), mix.sample(50, generator=gen(1)))
    assert not torch.equal(mix.sample(50, generator=gen(1)), mix.sample(50, generator=gen(2)))
    assert mix.sample(0).shape == (0, 3)
    with pytest.raises(ValueError, match="kappas must be 3 positive"):
        VonMisesFisherMixture(means, torch.tensor([1.0, -1.0, 2.0]))
    with pytest.raises(ValueError, match="weights must be 3"):
        VonMisesFisherMixture(means, torch.ones(3), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match=r"means must be a \(B, 3\)"):
        VonMisesFisherMixture(torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match="kappa must be positive"):
        sample_vmf(means, torch.tensor([1.0, 0.0, 1.0]))


@pytest.mark.parametrize("std", [0.2, 1.0, 3.0])
def test_wrapped_gaussian_has_the_closed_form_circular_moments(std):
    # for a wrapped normal, E[cos(x - mu)] = exp(-std^2 / 2) and E[sin(x - mu)] = 0
    n = 40_000
    mix = WrappedGaussianMixture(torch.tensor([[2.8, -1.0]]), torch.tensor([std]))
    x = mix.sample(n, generator=gen(32)).double()
    assert float(x.min()) > -math.pi and float(x.max()) <= math.pi
    c, s = torch.cos(x - mix.means).mean(0), torch.sin(x - mix.means).mean(0)
    torch.testing.assert_close(c, torch.full((2,), math.exp(-std * std / 2), dtype=F64), atol=5 / math.sqrt(n), rtol=0)
    torch.testing.assert_close(s, torch.zeros(2, dtype=F64), atol=5 / math.sqrt(n), rtol=0)


def test_wrapped_gaussian_log_prob_integrates_to_one_and_matches_the_series():
    means = torch.tensor([[math.pi, math.pi], [0.5, -2.0], [-1.0, 1.0]])
    mix = WrappedGaussianMixture(means, torch.tensor([0.3, 1.2, 2.5]), torch.tensor([1.0, 2.0, 1.0]))
    m = 120
    a = (torch.arange(m, dtype=F64) + 0.5) / m * 2 * math.pi - math.pi
    grid = torch.cartesian_prod(a, a)
    assert float(mix.log_prob(grid).exp().mean() * (2 * math.pi) ** 2) == pytest.approx(1.0, abs=1e-9)
    # one point by brute force: 41 x 41 copies of the Gaussians
    x = torch.tensor([[3.0, -3.1]], dtype=F64)
    n = torch.arange(-20, 21, dtype=F64) * 2 * math.pi
    total = 0.0
    for mu, sd, w in zip(mix.means, mix.stds, mix.weights):
        g1 = torch.exp(-((x[0, 0] + n - mu[0]) ** 2) / (2 * sd**2)).sum()
        g2 = torch.exp(-((x[0, 1] + n - mu[1]) ** 2) / (2 * sd**2)).sum()
        total += float(w * g1 * g2 / (2 * math.pi * sd**2))
    assert float(mix.log_prob(x).exp()) == pytest.approx(total, rel=1e-12)
    with pytest.raises(ValueError, match="stds must be 3 positive"):
        WrappedGaussianMixture(means, torch.tensor([0.3, 0.0, 1.0]))


def test_uniform_samplers():
    S, T = Sphere(3), Torus(2)
    x = S.sample_uniform(20_000, generator=gen(33))
    assert x.dtype == torch.float32 and float(S.distance_to_manifold(x).max()) < 1e-6
    assert float(x.double().mean(0).norm()) < 5 * math.sqrt(1 / 3 / 20_000) * math.sqrt(3)
    torch.testing.assert_close(x.double().square().mean(0), torch.full((3,), 1 / 3, dtype=F64), atol=0.01, rtol=0)
    a = T.sample_uniform(20_000, generator=gen(34))
    assert float(a.min()) > -math.pi and float(a.max()) <= math.pi
    torch.testing.assert_close(a.double().var(0), torch.full((2,), math.pi**2 / 3, dtype=F64), atol=0.06, rtol=0)
    assert S.volume == pytest.approx(4 * math.pi) and Sphere(2).volume == pytest.approx(2 * math.pi)
    assert T.volume == pytest.approx(4 * math.pi**2)


# --- the energy distance ----------------------------------------------------------------------------


@pytest.mark.parametrize("M", [Sphere(3), Torus(2)], ids=repr)
def test_energy_distance_matches_its_definition_and_is_zero_for_equal_sets(M):
    x, y = points(M, 60, 35), points(M, 45, 36)
    D = lambda a, b: M.pairwise_distance(a, b).mean()  # noqa: E731
    torch.testing.assert_close(energy_distance(M, x, y), 2 * D(x, y) - D(x, x) - D(y, y))
    assert float(energy_distance(M, x, x)) == pytest.approx(0.0, abs=1e-12)
    assert float(energy_distance(M, x, y)) > 0


def test_geodesic_distance_on_the_sphere_is_the_hemisphere_measure():
    # Crofton: d(x, y) / pi = P(a uniformly random hemisphere holds exactly one of x and y), which makes the
    # geodesic distance an L1 metric, hence of negative type (the energy distance is >= 0)
    S = Sphere(3)
    x, y = points(S, 5, 37), points(S, 5, 38)
    normals = S.sample_uniform(200_000, generator=gen(39)).double()  # (H, 3) hemisphere poles
    split = ((x @ normals.T > 0) != (y @ normals.T > 0)).double().mean(1)  # (5,)
    torch.testing.assert_close(split * math.pi, S.dist(x, y), atol=5 * math.pi * 0.5 / math.sqrt(200_000), rtol=0)


def test_geodesic_energy_distance_is_rotation_invariant_and_tells_laws_apart():
    S = Sphere(3)
    mix = VonMisesFisherMixture(torch.tensor([[0, 0, 1.0], [0, 1.0, 0]]), torch.tensor([20.0, 20.0]))
    x, y = mix.sample(400, generator=gen(40)).double(), S.sample_uniform(400, generator=gen(41)).double()
    Q, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen(42), dtype=F64))
    torch.testing.assert_close(energy_distance(S, x @ Q.T, y @ Q.T), energy_distance(S, x, y), atol=1e-10, rtol=0)
    same = energy_distance(S, x, mix.sample(400, generator=gen(43)))
    assert float(energy_distance(S, x, y)) > 10 * float(same)
    ed = functools.partial(energy_distance, S)
    with pytest.raises(ValueError, match=r"y must be a \(B, 3\)"):
        ed(x, y[:, :2])


# --- sizes ------------------------------------------------------------------------------------------


def test_manifold_config_from_every_profile():
    for P in PROFILES.values():
        cfg = ManifoldConfig.from_profile(P)
        assert cfg.steps >= 60 and cfg.batch >= 64 and cfg.n_eval >= 200 and cfg.repeats >= 4
        assert cfg.few_steps < cfg.sample_steps
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.steps = 1  # type: ignore[misc]
    assert ManifoldConfig.from_profile(PROFILES["standard"]).steps > ManifoldConfig.from_profile(PROFILES["smoke"]).steps


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="ambient dimension"):
        Sphere(1)
    with pytest.raises(ValueError, match="torus's dimension"):
        Torus(0)
    with pytest.raises(ValueError, match="steps must be an int"):
        manifold_euler(Sphere(3), lambda x, t: x, Sphere(3).sample_uniform(3), steps=0)
    with pytest.raises(ValueError, match="x_0 and x_1 must have the same shape"):
        Torus(2).geodesic(torch.zeros(3, 2), torch.zeros(4, 2), 0.5)
    with pytest.raises(ValueError, match=r"x_1 must be a \(B, 2\)"):
        Torus(2).geodesic(torch.zeros(3, 2), torch.zeros(3, 3), 0.5)
    with pytest.raises(ValueError, match="n must be a non-negative int"):
        Sphere(3).sample_uniform(-1)
