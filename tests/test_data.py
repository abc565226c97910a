import pytest
import torch

from tutorlib import data

SAMPLERS = [getattr(data, name) for name in data.TOY_DATASETS]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=list(data.TOY_DATASETS))
def test_toy_sampler_contract(sampler):
    x = sampler(1000, generator=torch.Generator().manual_seed(0))
    assert x.shape == (1000, 2) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    # Scaled for a N(0, I) source: inside [-5, 5]^2, per-coordinate std between 0.7 and 2.5.
    assert x.abs().max() < 5.5
    std = x.std(0)
    assert (std > 0.7).all() and (std < 2.5).all(), std


@pytest.mark.parametrize("sampler", SAMPLERS, ids=list(data.TOY_DATASETS))
def test_toy_sampler_deterministic_under_generator(sampler):
    a = sampler(64, generator=torch.Generator().manual_seed(5))
    b = sampler(64, generator=torch.Generator().manual_seed(5))
    c = sampler(64, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("name", list(data.TOY_DATASETS))
def test_labelled_variant(name):
    ds = data.TOY_DATASETS[name]
    x, y = data.sample_labelled(name, 4000, generator=torch.Generator().manual_seed(1))
    assert x.shape == (4000, 2) and y.shape == (4000,) and y.dtype == torch.int64
    counts = torch.bincount(y, minlength=ds.num_classes)
    assert len(counts) == ds.num_classes and (counts > 0).all()
    # Classes are spatially meaningful: their means of (x, y, radius) differ (radius for rings).
    feats = torch.cat([x, x.norm(dim=1, keepdim=True)], 1)
    means = torch.stack([feats[y == k].mean(0) for k in range(ds.num_classes)])
    assert torch.cdist(means, means).fill_diagonal_(1e9).min() > 0.05
    # The unlabelled sampler draws the same points from the same generator.
    x2 = getattr(data, name)(4000, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x2)


def test_checkerboard_points_lie_on_the_filled_squares():
    x = data.checkerboard(5000, generator=torch.Generator().manual_seed(0))
    cell = torch.floor((x + 4) / 2).long()  # (n, 2) in 0..3
    assert ((cell[:, 0] + cell[:, 1]) % 2 == 0).all()
    assert (x.abs() <= 4).all()


def test_eight_gaussians_has_eight_modes():
    x, y = data.sample_labelled("eight_gaussians", 8000, generator=torch.Generator().manual_seed(0))
    radius = x.norm(dim=1)
    assert (radius - 2.5).abs().mean() < 0.25


def test_gaussian_source():
    x = data.gaussian(20000, dim=3, generator=torch.Generator().manual_seed(0))
    assert x.shape == (20000, 3) and x.dtype == torch.float32
    assert x.mean(0).abs().max() < 0.05 and (x.std(0) - 1).abs().max() < 0.05


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="unknown toy dataset"):
        data.sample_labelled("spiral", 10)
    with pytest.raises(ValueError, match="non-negative int"):
        data.moons(-3)
    with pytest.raises(ValueError, match="non-negative int"):
        data.moons(2.5)
    assert data.moons(0).shape == (0, 2)


def test_device_argument():
    x = data.rings(10, device="cpu")
    assert x.device.type == "cpu"
    if torch.cuda.is_available():
        assert data.rings(10, device="cuda").device.type == "cuda"
