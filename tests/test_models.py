"""Models: output shapes, class / null-class handling, sizes per profile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tutorlib.device import profile
from tutorlib.models import (
    MNISTClassifier,
    NoisyClassifier2D,
    NoisyImageClassifier,
    PatchUNet,
    TimeMLP,
    UNet,
    count_parameters,
    sinusoidal_embedding,
)


def test_sinusoidal_embedding_shape_and_values():
    t = torch.tensor([0.0, 0.5, 1.0])
    e = sinusoidal_embedding(t, 16)
    assert e.shape == (3, 16)
    assert torch.allclose(e[0, :8], torch.ones(8)) and torch.allclose(e[0, 8:], torch.zeros(8))
    assert torch.allclose(e.pow(2).view(3, 2, 8).sum(1), torch.ones(3, 8), atol=1e-5)  # cos^2 + sin^2
    with pytest.raises(ValueError):
        sinusoidal_embedding(t, 15)


@pytest.mark.parametrize("out_dim", [None, 2, 24])
def test_time_mlp_shapes(out_dim):
    # the model is built from its own seed (never the global RNG), so the test is the same in any order
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        m = TimeMLP(dim=2, hidden=32, depth=2, out_dim=out_dim)
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(5, 2, generator=g), torch.rand(5, generator=g)
    assert m(x, t).shape == (5, out_dim or 2)
    out_scalar = m(x, 0.3)  # a scalar t is broadcast (and embedded once: the shared-time path)
    out_rows = m(x, torch.full((5,), 0.3))  # the same time, one row each
    assert out_scalar.shape == (5, out_dim or 2)
    # the two paths round differently; outputs are O(0.1), so compare with an absolute tolerance
    torch.testing.assert_close(out_scalar, out_rows, rtol=0, atol=1e-6)
    assert not torch.allclose(m(x, 0.3), m(x, 0.9), rtol=0, atol=1e-3)  # and t matters
    with pytest.raises(ValueError):
        m(x, torch.rand(4))
    with pytest.raises(ValueError):
        m(x, t, torch.zeros(5, dtype=torch.long))  # unconditional model given labels


def test_time_mlp_shapes_do_not_depend_on_the_global_seed():
    """The flaky version of the test above failed for 35 of 200 global seeds; this one never may."""
    for seed in range(200):
        torch.manual_seed(seed)
        test_time_mlp_shapes(24)


def test_time_mlp_from_profile_and_time_dependence():
    P = profile("standard")
    m = TimeMLP.from_profile(P)
    assert len(m.blocks) == P.depth_2d and m.inp.out_features == P.hidden_2d
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(m(x, torch.zeros(4)), m(x, torch.ones(4)))


def test_class_conditioning_and_null_class():
    torch.manual_seed(0)
    m = TimeMLP(hidden=32, depth=2, num_classes=3)
    assert m.null_class == 3
    x, t = torch.randn(6, 2), torch.rand(6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    null = torch.full((6,), m.null_class)
    assert torch.allclose(m(x, t), m(x, t, null))  # y=None is the null class
    assert not torch.allclose(m(x, t, y), m(x, t))
    mixed = y.clone()
    mixed[::2] = m.null_class  # label dropout: some rows unconditional
    out = m(x, t, mixed)
    assert torch.allclose(out[::2], m(x, t)[::2]) and torch.allclose(out[1::2], m(x, t, y)[1::2])
    with pytest.raises(ValueError):
        m(x, t, torch.full((6,), 4))
    with pytest.raises(ValueError):
        m(x, t, y.float())


def test_categorical_head_for_tokens():
    D, K = 2, 8  # two tokens, eight categories (+ mask in the input one-hot)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        m = TimeMLP(dim=D * (K + 1), hidden=32, depth=1, out_dim=D * K)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, K + 1, (5, D), generator=g)
    x = F.one_hot(tokens, K + 1).float().reshape(5, -1)  # (5, 18)
    out = m(x, torch.rand(5, generator=g))
    assert out.shape == (5, D * K)  # the model's own output, before any reshape
    logits = out.reshape(5, D, K)
    # the head is per token: changing token 1 of the input changes both tokens' logits, and the
    # cross-entropy over categories (dim 1 after a transpose) is finite and positive
    tokens2 = tokens.clone()
    tokens2[:, 1] = (tokens2[:, 1] + 1) % (K + 1)
    out2 = m(F.one_hot(tokens2, K + 1).float().reshape(5, -1), torch.rand(5, generator=g)).reshape(5, D, K)
    assert (out2 - logits).abs().amax() > 1e-4
    loss = F.cross_entropy(logits.transpose(1, 2), tokens.clamp(max=K - 1))
    assert torch.isfinite(loss) and loss > 0


def test_unet_shapes_null_class_and_heads():
    torch.manual_seed(0)
    u = UNet(base_channels=8, num_classes=10)
    x, t = torch.randn(3, 1, 28, 28), torch.rand(3)
    y = torch.tensor([1, 2, 3])
    assert u(x, t, y).shape == (3, 1, 28, 28)
    assert torch.allclose(u(x, t), u(x, t, torch.full((3,), u.null_class)))
    assert not torch.allclose(u(x, t), u(x, t, y))
    K = 4
    cat = UNet(in_channels=K + 1, out_channels=K, base_channels=8)
    logits = cat(torch.randn(3, K + 1, 28, 28), t)
    assert logits.shape == (3, K, 28, 28)
    loss = F.cross_entropy(logits, torch.randint(0, K, (3, 28, 28)))  # category axis is dim 1
    assert loss.dim() == 0
    with pytest.raises(ValueError):
        u(torch.randn(3, 1, 32, 32), t)


def test_parameter_counts_per_profile():
    """Exact counts: the docstrings quote them (0.58 M U-Net, 0.44 M PatchUNet, 0.17 M TimeMLP)."""
    expected = {  # profile: (UNet, PatchUNet, TimeMLP), class-conditional image models
        "smoke": (38_369, 30_244, 33_602),
        "standard": (584_321, 439_684, 174_082),
        "full": (2_325_761, 1_729_284, 873_218),
    }
    for name, (n_unet, n_patch, n_mlp) in expected.items():
        P = profile(name)
        assert count_parameters(UNet.from_profile(P, num_classes=10)) == n_unet, name
        assert count_parameters(PatchUNet.from_profile(P, num_classes=10)) == n_patch, name
        assert count_parameters(TimeMLP.from_profile(P)) == n_mlp, name


def test_unet_gradients_flow_to_every_parameter():
    u = UNet(base_channels=8, num_classes=10)
    out = u(torch.randn(2, 1, 28, 28), torch.rand(2), torch.tensor([0, 10]))
    out.square().mean().backward()
    missing = [n for n, p in u.named_parameters() if p.grad is None]
    assert not missing, missing


def test_mnist_classifier_and_features():
    m = MNISTClassifier().eval()
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert m(x).shape == (4, 10)
    assert m.features(x).shape == (4, m.feature_dim) == (4, 128)
    assert count_parameters(m) == 131_178  # 0.5 MB in float32


def test_noisy_classifiers():
    c2 = NoisyClassifier2D(num_labels=8, hidden=32, depth=2)
    x = torch.randn(5, 2, requires_grad=True)
    logits = c2(x, torch.rand(5))
    assert logits.shape == (5, 8)
    (g,) = torch.autograd.grad(logits.log_softmax(1)[:, 0].sum(), x)  # classifier-guidance gradient
    assert g.shape == x.shape and torch.isfinite(g).all()
    ci = NoisyImageClassifier(num_labels=10, base_channels=8)
    xi = torch.randn(3, 1, 28, 28, requires_grad=True)
    out = ci(xi, torch.rand(3))
    assert out.shape == (3, 10)
    (gi,) = torch.autograd.grad(out[:, 3].sum(), xi)
    assert gi.shape == xi.shape
    # per-sample independence (GroupNorm, no batch statistics)
    assert torch.allclose(ci(xi[:1], torch.rand(1).fill_(0.5)), ci(xi, torch.full((3,), 0.5))[:1], atol=1e-5)


def test_float64_models_run_end_to_end():
    m = TimeMLP(hidden=16, depth=1, num_classes=2).double()
    out = m(torch.randn(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64), torch.tensor([0, 1, 2]))
    assert out.dtype == torch.float64
    u = UNet(base_channels=8).double()
    assert u(torch.randn(1, 1, 28, 28, dtype=torch.float64), 0.5).dtype == torch.float64


def test_timemlp_shared_time_fast_path_matches_per_row_times():
    # solvers pass one t expanded over the batch (stride 0); the model embeds it once
    torch.manual_seed(0)
    model = TimeMLP(dim=2, hidden=32, depth=2).eval()
    x = torch.randn(64, 2)
    shared = torch.full((1,), 0.37).expand(64)
    per_row = torch.full((64,), 0.37)
    assert shared.stride(0) == 0 and per_row.stride(0) == 1
    with torch.no_grad():
        torch.testing.assert_close(model(x, shared), model(x, per_row), rtol=1e-6, atol=1e-6)
    # gradients w.r.t. x are unchanged too (the likelihood lesson differentiates through the model)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    model(xa, shared).sum().backward()
    model(xb, per_row).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("make", [
    lambda: UNet(1, None, base_channels=4, num_classes=10),
    lambda: PatchUNet(1, None, base_channels=4, num_classes=10),
])
def test_narrow_image_models_still_see_time_and_label(make):
    # with one channel per GroupNorm group, a shift added before the norm would vanish entirely
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        base = model(x, torch.tensor([0.3, 0.3]), torch.tensor([1, 1]))
        other_t = model(x, torch.tensor([0.8, 0.8]), torch.tensor([1, 1]))
        other_y = model(x, torch.tensor([0.3, 0.3]), torch.tensor([7, 7]))
    assert (base - other_t).abs().max() > 1e-4
    assert (base - other_y).abs().max() > 1e-4
