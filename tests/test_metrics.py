"""2D metrics against closed forms; trajectory straightness; Frechet distance of Gaussians."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.data import gmm_log_prob
from tutorlib.metrics import (
    NoiseFloor,
    curvature,
    energy_distance,
    frechet_distance_features,
    mmd_rbf,
    noise_floor,
    straightness,
)


def _gauss(n, seed, shift=0.0, dim=2):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)) + shift


def _sampler(n, generator=None):
    return torch.randn(n, 2, generator=generator)


@pytest.mark.parametrize("metric", [energy_distance, mmd_rbf])
def test_zero_for_identical_sets_positive_for_shifted(metric):
    x = _gauss(300, 0)
    assert float(metric(x, x)) == pytest.approx(0.0, abs=1e-12)
    near, far = float(metric(x, _gauss(300, 1))), float(metric(x, _gauss(300, 1, shift=1.0)))
    assert far > 10 * near > 0
    assert float(metric(x, _gauss(300, 1, shift=1.0))) == pytest.approx(float(metric(_gauss(300, 1, shift=1.0), x)))


def test_energy_distance_closed_form_1d_point_masses():
    # P = delta_0, Q = delta_a: D^2 = 2|a| - 0 - 0
    x, y = torch.zeros(50, 1), torch.full((70, 1), 3.0)
    assert float(energy_distance(x, y)) == pytest.approx(6.0)
    # unbiased version: no diagonal terms; unbiased expectation of two independent N(0,1) sets is ~0
    vals = [float(energy_distance(_gauss(200, 2 * s), _gauss(200, 2 * s + 1), unbiased=True)) for s in range(8)]
    assert abs(sum(vals) / len(vals)) < 3 * (max(vals) - min(vals)) / math.sqrt(len(vals))


def test_mmd_closed_form_two_points():
    # x = {0}, y = {d}: MMD^2 = 2 - 2 k(d), k(d) = mean_h exp(-d^2 / (2 h^2))
    d, hs = 0.7, (0.5, 1.0)
    k = sum(math.exp(-d * d / (2 * h * h)) for h in hs) / len(hs)
    assert float(mmd_rbf(torch.zeros(1, 1), torch.full((1, 1), d), hs)) == pytest.approx(2 - 2 * k)
    with pytest.raises(ValueError):
        mmd_rbf(torch.zeros(2, 1), torch.zeros(2, 1), ())


def test_noise_floor_shrinks_with_n_and_ratio():
    g = torch.Generator().manual_seed(0)
    small = noise_floor(_sampler, 100, energy_distance, generator=g, repeats=6)
    large = noise_floor(_sampler, 800, energy_distance, generator=g, repeats=6)
    assert isinstance(small, NoiseFloor) and len(small.values) == 6 and small.n == 100
    assert large.mean < 0.3 * small.mean  # V-statistic bias ~ 1/n
    model_score = float(energy_distance(_sampler(800, g), _sampler(800, g) + 0.5))
    assert large.ratio(model_score) > 5
    mmd_floor = noise_floor(_sampler, 200, mmd_rbf, generator=g, repeats=3)
    assert mmd_floor.mean > 0 and mmd_floor.std >= 0


def test_noise_floor_reproducible_with_generator():
    a = noise_floor(_sampler, 50, energy_distance, generator=torch.Generator().manual_seed(3), repeats=2)
    b = noise_floor(_sampler, 50, energy_distance, generator=torch.Generator().manual_seed(3), repeats=2)
    assert a.values == b.values


def test_gmm_log_prob_single_gaussian_and_mixture():
    x = _gauss(100, 4, dim=3).double()
    mu, s = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64), 1.5
    ref = torch.distributions.Normal(mu[0], s).log_prob(x).sum(-1)
    assert torch.allclose(gmm_log_prob(x, mu, s), ref)
    assert torch.allclose(gmm_log_prob(x, mu, torch.tensor([s])), ref)
    # NLL of a known Gaussian on its own samples -> its entropy D/2 log(2 pi e s^2)
    samples = mu + s * _gauss(20000, 5, dim=3).double()
    nll = -gmm_log_prob(samples, mu, s).mean()
    assert float(nll) == pytest.approx(1.5 * math.log(2 * math.pi * math.e * s * s), rel=0.01)
    # two-component diagonal mixture against torch.distributions
    means = torch.tensor([[0.0, 0.0], [3.0, 1.0]], dtype=torch.float64)
    stds = torch.tensor([[1.0, 0.5], [0.3, 2.0]], dtype=torch.float64)
    w = torch.tensor([1.0, 3.0], dtype=torch.float64)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(w / w.sum()),
        torch.distributions.Independent(torch.distributions.Normal(means, stds), 1))
    y = _gauss(50, 6).double() * 2
    assert torch.allclose(gmm_log_prob(y, means, stds, w), mix.log_prob(y))


def _line_trajectory(S=10, B=4, D=2, speed=None):
    t = torch.linspace(0, 1, S + 1)
    x0, x1 = _gauss(B, 7, dim=D), _gauss(B, 8, dim=D)
    s = t if speed is None else speed(t)
    return x0[None] + s[:, None, None] * (x1 - x0)[None], t  # (S+1, B, D)


def test_straightness_and_curvature_zero_for_straight_paths():
    traj, t = _line_trajectory()
    assert float(straightness(traj, t)) == pytest.approx(0.0, abs=1e-10)
    assert float(curvature(traj, t)) == pytest.approx(0.0, abs=1e-5)
    # image-shaped states are flattened
    img = traj.reshape(11, 4, 2, 1, 1)
    assert float(straightness(img, t)) == pytest.approx(0.0, abs=1e-10)


def test_straightness_penalises_speed_changes_curvature_does_not():
    traj, t = _line_trajectory(S=200, speed=lambda t: t**2)  # straight, accelerating
    x0, x1 = traj[0], traj[-1]
    # v = 2t (x1 - x0): int_0^1 (2t - 1)^2 dt = 1/3
    expected = (1 / 3) * ((x1 - x0) ** 2).sum(-1).mean()
    assert float(straightness(traj, t)) == pytest.approx(float(expected), rel=1e-3)
    assert float(curvature(traj, t)) == pytest.approx(0.0, abs=1e-5)


def test_curved_paths_semicircle():
    # half circle from (1, 0) to (-1, 0): length pi, chord 2 -> curvature pi/2 - 1
    t = torch.linspace(0, 1, 2001)
    traj = torch.stack([torch.cos(math.pi * t), torch.sin(math.pi * t)], -1)[:, None, :]  # (S+1, 1, 2)
    assert float(curvature(traj, t)) == pytest.approx(math.pi / 2 - 1, rel=1e-4)
    # v = pi(-sin, cos), chord = (-2, 0): int ||v - chord||^2 = pi^2 + 4 - 4 pi int sin(pi t) dt = pi^2 - 4
    assert float(straightness(traj, t)) == pytest.approx(math.pi**2 - 4, rel=1e-3)
    with pytest.raises(ValueError):
        straightness(traj, t[:-1])


def test_frechet_distance_of_gaussian_features_closed_form():
    # diagonal covariances: FD = ||mu_a - mu_b||^2 + sum (s_a - s_b)^2 (s = standard deviations)
    g = torch.Generator().manual_seed(0)
    n, F = 200_000, 4
    sa, sb = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 1.0, 3.0])
    mu = torch.tensor([1.0, 0.0, 0.0, -1.0])
    a = torch.randn(n, F, generator=g, dtype=torch.float64) * sa
    b = torch.randn(n, F, generator=g, dtype=torch.float64) * sb + mu
    expected = float((mu**2).sum() + ((sa - sb) ** 2).sum())
    assert frechet_distance_features(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance_features(a, a) == pytest.approx(0.0, abs=1e-6)
    # rotation-invariance with full covariances
    q, _ = torch.linalg.qr(torch.randn(F, F, generator=g, dtype=torch.float64))
    assert frechet_distance_features(a @ q, b @ q) == pytest.approx(frechet_distance_features(a, b), rel=1e-6)


def test_model_score_matches_floor_for_a_perfect_sampler_and_exceeds_it_for_a_bad_one():
    from tutorlib import data
    from tutorlib.metrics import model_score, noise_floor

    g = torch.Generator().manual_seed(0)
    floor = noise_floor(data.moons, 400, generator=g, repeats=6)
    perfect = model_score(data.moons, data.moons, 400, generator=g, repeats=6)
    shifted = model_score(lambda n, generator=None: data.moons(n, generator=generator) + 0.5, data.moons, 400,
                          generator=g, repeats=6)
    assert len(perfect.values) == 6 and perfect.n == 400 and perfect.std > 0
    assert 0.5 < floor.ratio(perfect) < 2.0
    assert floor.ratio(shifted) > 10
    assert f"{perfect:.3f}".count("±") == 1
