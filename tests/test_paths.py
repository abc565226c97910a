"""Affine paths: conditional velocity, conversions (float64 round trips) and the Gaussian-mixture oracle."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.paths import (
    AffinePath,
    CondOTPath,
    PathSample,
    expand_t,
    gmm_marginal_log_prob,
    gmm_marginal_velocity,
    randn_like,
)
from tutorlib.schedulers import (
    CondOTScheduler,
    CosineScheduler,
    CosineVPScheduler,
    LinearVPScheduler,
    PolynomialScheduler,
)

F64 = torch.float64
PATHS = [CondOTPath(), AffinePath(PolynomialScheduler(2.0)), AffinePath(CosineScheduler()),
         AffinePath(LinearVPScheduler()), AffinePath(CosineVPScheduler())]
PATH_IDS = [repr(p) for p in PATHS]
SHAPES = [(6, 2), (3, 2, 4, 4)]  # points and images


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _pair(shape, seed=0):
    g = _gen(seed)
    return torch.randn(shape, generator=g, dtype=F64), 2.0 + torch.randn(shape, generator=g, dtype=F64)


def test_expand_t():
    x = torch.zeros(4, 3, 5, 5)
    assert expand_t(torch.arange(4.0), x).shape == (4, 1, 1, 1)
    assert expand_t(0.3, x).shape == ()
    with pytest.raises(ValueError):
        expand_t(torch.zeros(3), x)


def test_randn_like_generator_is_reproducible():
    x = torch.zeros(5, 2, dtype=F64)
    a, b = randn_like(x, generator=_gen(3)), randn_like(x, generator=_gen(3))
    assert a.dtype == F64 and torch.equal(a, b)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_sample_is_the_affine_path_and_its_time_derivative(path, shape):
    x_0, x_1 = _pair(shape)
    t = torch.linspace(0.1, 0.9, shape[0], dtype=F64)
    s = path.sample(x_0, x_1, t)
    assert isinstance(s, PathSample) and s.x_t.shape == shape and s.dx_t.shape == shape
    out = path.scheduler(t)
    torch.testing.assert_close(s.x_t, expand_t(out.alpha_t, x_1) * x_1 + expand_t(out.sigma_t, x_1) * x_0)
    h = 1e-6
    fd = (path.sample(x_0, x_1, t + h).x_t - path.sample(x_0, x_1, t - h).x_t) / (2 * h)
    torch.testing.assert_close(s.dx_t, fd, rtol=1e-6, atol=1e-6)


def test_cond_ot_path_closed_form():
    x_0, x_1 = _pair((5, 3))
    t = torch.rand(5, dtype=F64)
    s = CondOTPath().sample(x_0, x_1, t)
    torch.testing.assert_close(s.x_t, t[:, None] * x_1 + (1 - t[:, None]) * x_0)
    torch.testing.assert_close(s.dx_t, x_1 - x_0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_cond_ot_override_agrees_with_the_generic_affine_path(shape, dtype):
    x_0, x_1 = (v.to(dtype) for v in _pair(shape, seed=3))
    t = torch.rand(shape[0], generator=_gen(4), dtype=dtype)
    a, b = CondOTPath().sample(x_0, x_1, t), AffinePath(CondOTScheduler()).sample(x_0, x_1, t)
    torch.testing.assert_close(a.x_t, b.x_t)
    torch.testing.assert_close(a.dx_t, b.dx_t)
    assert a.x_t.dtype == dtype and a.t is t


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("shape", SHAPES)
def test_conversions_recover_the_conditional_quantities(path, shape):
    """Given x_t, each parametrisation maps to the others exactly (float64); VP kept off t = 1."""
    x_0, x_1 = _pair(shape, seed=1)
    t = torch.linspace(0.05, 0.95, shape[0], dtype=F64)
    s = path.sample(x_0, x_1, t)
    v, x_t = s.dx_t, s.x_t
    score = -x_0 / expand_t(path.scheduler(t).sigma_t, x_0)
    close = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.x1_to_velocity(x_1, x_t, t), v, **close)
    torch.testing.assert_close(path.epsilon_to_velocity(x_0, x_t, t), v, **close)
    torch.testing.assert_close(path.score_to_velocity(score, x_t, t), v, **close)
    torch.testing.assert_close(path.velocity_to_x1(v, x_t, t), x_1, **close)
    torch.testing.assert_close(path.velocity_to_epsilon(v, x_t, t), x_0, **close)
    torch.testing.assert_close(path.velocity_to_score(v, x_t, t), score, **close)
    torch.testing.assert_close(path.x1_to_epsilon(x_1, x_t, t), x_0, **close)
    torch.testing.assert_close(path.epsilon_to_x1(x_0, x_t, t), x_1, **close)
    torch.testing.assert_close(path.epsilon_to_score(x_0, x_t, t), score, **close)
    torch.testing.assert_close(path.score_to_epsilon(score, x_t, t), x_0, **close)
    torch.testing.assert_close(path.x1_to_score(x_1, x_t, t), score, **close)
    torch.testing.assert_close(path.score_to_x1(score, x_t, t), x_1, **close)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_conversions_round_trip_arbitrary_predictions(path):
    """Round trips of arbitrary predictions (not on the path): every pair of conversions inverts."""
    g = _gen(2)
    x_t, pred = torch.randn(8, 3, generator=g, dtype=F64), torch.randn(8, 3, generator=g, dtype=F64)
    t = torch.linspace(0.05, 0.95, 8, dtype=F64)
    close = dict(rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path.x1_to_velocity(path.velocity_to_x1(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.velocity_to_x1(path.x1_to_velocity(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.epsilon_to_velocity(path.velocity_to_epsilon(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.velocity_to_epsilon(path.epsilon_to_velocity(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.score_to_velocity(path.velocity_to_score(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.velocity_to_score(path.score_to_velocity(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.epsilon_to_x1(path.x1_to_epsilon(pred, x_t, t), x_t, t), pred, **close)
    torch.testing.assert_close(path.score_to_x1(path.x1_to_score(pred, x_t, t), x_t, t), pred, **close)


# --- Gaussian-mixture oracle ---

MEANS = torch.tensor([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]], dtype=F64)
STDS = torch.tensor([0.3, 0.6, 0.45], dtype=F64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=F64)


def _sample_gmm(n, g):
    comp = torch.multinomial(WEIGHTS, n, replacement=True, generator=g)
    return MEANS[comp] + STDS[comp, None] * torch.randn(n, 2, generator=g, dtype=F64)


@pytest.mark.parametrize("path", PATHS[:4], ids=PATH_IDS[:4])
def test_gmm_velocity_matches_monte_carlo(path):
    """u_t(x) = E[dx_t | x_t = x], estimated by importance weighting over many data samples."""
    g = _gen(4)
    x1 = _sample_gmm(200_000, g)  # (N, 2)
    x = torch.tensor([[0.0, 0.0], [1.0, 0.5], [-1.0, -1.0]], dtype=F64)
    for tv in (0.3, 0.7):
        out = path.scheduler(torch.tensor(tv, dtype=F64))
        a, s, da, ds = out.alpha_t, out.sigma_t, out.d_alpha_t, out.d_sigma_t
        for xi in x:
            x0 = (xi - a * x1) / s  # (N, 2) the noise that puts x1 at xi
            logw = -0.5 * x0.square().sum(1)
            w = torch.softmax(logw, 0)  # proportional to N(xi; a x1, s^2 I)
            dx = da * x1 + ds * x0  # (N, 2) conditional velocities
            mc = (w[:, None] * dx).sum(0)
            ess = 1.0 / w.square().sum()
            assert ess > 300, "too few effective samples for a meaningful check"
            std_err = ((w[:, None] * (dx - mc).square()).sum(0) / ess).sqrt()  # (2,)
            u = gmm_marginal_velocity(path, xi[None], torch.tensor([tv], dtype=F64), MEANS, STDS, WEIGHTS)[0]
            assert ((u - mc).abs() < 4 * std_err).all(), (u, mc, std_err)


def test_gmm_log_prob_at_t1_is_the_mixture_density():
    x = torch.randn(50, 2, generator=_gen(5), dtype=F64) * 2
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(WEIGHTS),
        torch.distributions.Independent(torch.distributions.Normal(MEANS, STDS[:, None].expand(3, 2)), 1))
    lp = gmm_marginal_log_prob(CondOTPath(), x, torch.ones(50, dtype=F64), MEANS, STDS, WEIGHTS)
    torch.testing.assert_close(lp, mix.log_prob(x))
    lp0 = gmm_marginal_log_prob(CondOTPath(), x, 0.0, MEANS, STDS, WEIGHTS)  # N(0, I)
    torch.testing.assert_close(lp0, -0.5 * x.square().sum(1) - math.log(2 * math.pi))


@pytest.mark.parametrize("path", PATHS[:3], ids=PATH_IDS[:3])
def test_gmm_density_integrates_to_one(path):
    n, L = 241, 8.0
    u = torch.linspace(-L, L, n, dtype=F64)
    grid = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
    p = gmm_marginal_log_prob(path, grid, 0.6, MEANS, STDS, WEIGHTS).exp()
    assert (p.sum() * (u[1] - u[0]) ** 2).item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_gmm_velocity_and_density_solve_the_continuity_equation(path):
    """d/dt log p_t + div u_t + u_t . grad log p_t = 0, with d/dt by finite differences."""
    x = torch.randn(20, 2, generator=_gen(6), dtype=F64).requires_grad_(True)
    for tv in (0.25, 0.5, 0.8):
        t = torch.full((20,), tv, dtype=F64)
        h = 1e-5
        dlogp_dt = (gmm_marginal_log_prob(path, x, t + h, MEANS, STDS, WEIGHTS)
                    - gmm_marginal_log_prob(path, x, t - h, MEANS, STDS, WEIGHTS)) / (2 * h)
        logp = gmm_marginal_log_prob(path, x, t, MEANS, STDS, WEIGHTS)
        (grad_logp,) = torch.autograd.grad(logp.sum(), x)
        u = gmm_marginal_velocity(path, x, t, MEANS, STDS, WEIGHTS)
        div = sum(torch.autograd.grad(u[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
        residual = dlogp_dt + div + (u * grad_logp).sum(1)
        assert residual.abs().max().item() < 1e-6


@pytest.mark.parametrize("path", PATHS, ids=PATH_IDS)
def test_gmm_velocity_to_score_is_grad_log_density(path):
    x = torch.randn(20, 2, generator=_gen(7), dtype=F64).requires_grad_(True)
    t = torch.linspace(0.1, 0.9, 20, dtype=F64)
    (score,) = torch.autograd.grad(gmm_marginal_log_prob(path, x, t, MEANS, STDS, WEIGHTS).sum(), x)
    u = gmm_marginal_velocity(path, x, t, MEANS, STDS, WEIGHTS)
    torch.testing.assert_close(path.velocity_to_score(u.detach(), x.detach(), t), score, rtol=1e-9, atol=1e-9)


def test_gmm_image_shaped_and_float32():
    means = torch.randn(2, 1, 2, 2, generator=_gen(8))
    x = torch.randn(5, 1, 2, 2, generator=_gen(9))
    u = gmm_marginal_velocity(CondOTPath(), x, torch.full((5,), 0.5), means, torch.tensor([0.5, 1.0]),
                              torch.tensor([1.0, 1.0]))
    flat = gmm_marginal_velocity(CondOTPath(), x.reshape(5, 4), torch.full((5,), 0.5), means.reshape(2, 4),
                                 torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]))
    assert u.shape == x.shape and u.dtype == torch.float32
    torch.testing.assert_close(u.reshape(5, 4), flat)


def test_gmm_single_gaussian_velocity_closed_form():
    """One component N(mu, s^2 I) on the OT path: u = mu + (t s^2 - (1 - t)) (x - t mu) / v(t)."""
    mu, s = torch.tensor([[1.0, -2.0]], dtype=F64), 0.5
    x = torch.randn(7, 2, generator=_gen(10), dtype=F64)
    t = torch.rand(7, generator=_gen(11), dtype=F64)[:, None]
    var = t**2 * s**2 + (1 - t) ** 2
    expected = mu + (t * s**2 - (1 - t)) * (x - t * mu) / var
    u = gmm_marginal_velocity(CondOTPath(), x, t[:, 0], mu, torch.tensor([s], dtype=F64), torch.ones(1, dtype=F64))
    torch.testing.assert_close(u, expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_paths_on_cuda():
    x_0, x_1 = (v.cuda().float() for v in _pair((4, 1, 3, 3)))
    t = torch.rand(4, device="cuda")
    path = AffinePath(CosineScheduler())
    s = path.sample(x_0, x_1, t)
    assert s.x_t.device.type == "cuda"
    torch.testing.assert_close(path.velocity_to_x1(s.dx_t, s.x_t, t), x_1, rtol=1e-4, atol=1e-4)
    u = gmm_marginal_velocity(path, x_1, t, MEANS.cuda()[:, :1, None, None].expand(3, 1, 3, 3), STDS.cuda(),
                              WEIGHTS.cuda())
    assert u.device.type == "cuda" and u.dtype == torch.float32


# --- one path seen as another (lesson 04) ---

from tutorlib.paths import PathTransfer, snr_match  # noqa: E402


@pytest.mark.parametrize("source", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("target", [CondOTPath(), AffinePath(CosineScheduler()), AffinePath(LinearVPScheduler())],
                         ids=repr)
def test_snr_match_maps_points_of_one_path_onto_the_other(source, target):
    """x'_s = scale * x_t for the same (x_0, x_1), at s of equal SNR (kept inside both SNR ranges)."""
    x_0, x_1 = _pair((7, 3), seed=5)
    t = torch.linspace(0.15, 0.9, 7, dtype=F64)
    m = snr_match(t, source, target)
    torch.testing.assert_close(target.scheduler.snr(m.t), source.scheduler.snr(t), rtol=1e-9, atol=0)
    torch.testing.assert_close(target.sample(x_0, x_1, m.t).x_t, expand_t(m.scale, x_0) * source.sample(x_0, x_1, t).x_t,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("source", PATHS, ids=PATH_IDS)
@pytest.mark.parametrize("target", PATHS, ids=PATH_IDS)
def test_path_transfer_of_an_exact_field_is_the_exact_field_of_the_target(source, target):
    """The closed-form mixture velocity of one path, transferred, equals the other path's (float64)."""
    g = _gen(6)
    means, stds, w = torch.randn(3, 2, generator=g, dtype=F64) * 2, torch.tensor([0.3, 0.5, 0.2], dtype=F64), \
        torch.tensor([1.0, 2.0, 1.5], dtype=F64)
    x = torch.randn(40, 2, generator=g, dtype=F64) * 1.5
    t = torch.linspace(0.1, 0.95, 40, dtype=F64)
    field = lambda x, t: gmm_marginal_velocity(source, x, t, means, stds, w)  # noqa: E731
    got = PathTransfer(field, source, target)(x, t)
    torch.testing.assert_close(got, gmm_marginal_velocity(target, x, t, means, stds, w), rtol=1e-7, atol=1e-7)


def test_path_transfer_is_finite_at_both_ends_and_takes_a_shared_time():
    """Neither conversion divides by alpha or sigma: t = 0 and t = 1 of the linear path are fine."""
    cos, lin = AffinePath(CosineScheduler()), CondOTPath()
    means, stds, w = torch.tensor([[1.0, -1.0]], dtype=F64), torch.tensor([0.5], dtype=F64), torch.ones(1, dtype=F64)
    field = lambda x, t: gmm_marginal_velocity(cos, x, t, means, stds, w)  # noqa: E731
    v = PathTransfer(field, cos, lin)
    x = torch.randn(5, 2, generator=_gen(7), dtype=F64)
    for tv in (0.0, 1.0):
        got = v(x, torch.full((5,), tv, dtype=F64))
        assert torch.isfinite(got).all()
        want = gmm_marginal_velocity(lin, x, torch.full((5,), tv, dtype=F64), means, stds, w) if tv == 0.0 else None
        if want is not None:
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(v(x, torch.tensor(0.4, dtype=F64)), v(x, torch.full((5,), 0.4, dtype=F64)))
    assert "CondOT" in repr(v)
