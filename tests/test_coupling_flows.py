"""Coupling flows (appendix D) against closed forms, brute-force Jacobians, and a maintained peer (zuko)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from tutorlib import coupling_flows as cf
from tutorlib.device import PROFILES
from tutorlib.likelihood import standard_normal_log_prob

torch.set_default_dtype(torch.float32)


def _randomise(module: nn.Module, seed: int, std: float = 0.3) -> nn.Module:
    """Give every parameter random values (the zero-initialised last layers would make the flow the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _brute_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    """log |det J| of ``fn`` at each row of ``x`` (B, ...), from the full Jacobian of one sample at a time."""
    out = []
    for row in x:
        J = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0].reshape(-1), row)  # (D, *shape)
        out.append(torch.linalg.slogdet(J.reshape(J.shape[0], -1)).logabsdet)
    return torch.stack(out)


# --- the affine coupling ---------------------------------------------------------------------------


def test_affine_coupling_inverts_and_its_log_det_is_the_jacobians():
    g = torch.Generator().manual_seed(0)
    for parity in (0, 1):
        layer = _randomise(cf.AffineCoupling(cf.alternating_mask(2, parity), cf.ConditionerMLP(2, 16, 2)), parity)
        layer = layer.double()
        x = 2 * torch.randn(7, 2, generator=g, dtype=torch.float64)
        y, logdet = layer(x)
        torch.testing.assert_close(layer.inverse(y), x, atol=1e-12, rtol=0)
        assert logdet.shape == (7,)
        torch.testing.assert_close(logdet, _brute_log_det(lambda v: layer(v)[0], x), atol=1e-10, rtol=0)
        kept = cf.alternating_mask(2, parity).bool()
        torch.testing.assert_close(y[:, kept], x[:, kept], atol=0, rtol=0)  # the kept coordinate passes unchanged
        assert not torch.allclose(y[:, ~kept], x[:, ~kept])


def test_affine_coupling_params_depend_only_on_the_kept_part():
    g = torch.Generator().manual_seed(1)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    layer = _randomise(cf.AffineCoupling(mask, cf.ConditionerMLP(5, 16, 2)), 1).double()
    x = torch.randn(4, 5, generator=g, dtype=torch.float64)
    x2 = x.clone()
    x2[:, mask == 0] += torch.randn(4, 3, generator=g, dtype=torch.float64)  # change only the transformed part
    for a, b in zip(layer.params(x), layer.params(x2)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert bool((a[:, mask == 1] == 0).all())  # s and t vanish on the kept part


def test_realnvp_2d_log_prob_is_base_plus_brute_force_log_det():
    flow = _randomise(cf.realnvp_2d(couplings=4, hidden=16, depth=2), 2).double()
    flow.eval()
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    brute = standard_normal_log_prob(flow(x).z) + _brute_log_det(lambda v: flow(v).z, x)
    torch.testing.assert_close(flow.log_prob(x), brute, atol=1e-10, rtol=0)
    torch.testing.assert_close(flow.inverse(flow(x).z), x, atol=1e-10, rtol=0)


def test_flow_density_of_a_known_affine_map_is_the_gaussian():
    # one ActNorm is the affine map z = (x + b) exp(l): the flow's density is N(-b, exp(-2 l)) exactly
    flow = cf.CouplingFlow([cf.ActNorm(2)], 2).double().eval()
    with torch.no_grad():
        flow.layers[0].bias.copy_(torch.tensor([0.5, -1.0], dtype=torch.float64))
        flow.layers[0].log_scale.copy_(torch.tensor([0.3, -0.2], dtype=torch.float64))
    x = torch.randn(9, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    truth = torch.distributions.Normal(torch.tensor([-0.5, 1.0], dtype=torch.float64),
                                       torch.exp(-torch.tensor([0.3, -0.2], dtype=torch.float64)))
    torch.testing.assert_close(flow.log_prob(x), truth.log_prob(x).sum(1), atol=1e-12, rtol=0)


def test_sampling_is_the_inverse_of_the_base_draws_and_uses_the_generator():
    flow = _randomise(cf.realnvp_2d(couplings=2, hidden=8, depth=1), 4).eval()
    a = flow.sample(5, generator=torch.Generator().manual_seed(0))
    b = flow.sample(5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    z = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, flow.inverse(z))
    cold = flow.sample(5, generator=torch.Generator().manual_seed(0), temperature=0.5)
    torch.testing.assert_close(cold, flow.inverse(0.5 * z))


# --- the image layers -----------------------------------------------------------------------------


def test_actnorm_initialises_from_the_first_batch_once():
    g = torch.Generator().manual_seed(5)
    layer = cf.ActNorm(3).train()
    x = 3 + 2 * torch.randn(64, 3, 4, 4, generator=g)
    y, logdet = layer(x)
    torch.testing.assert_close(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std((0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(logdet, torch.full((64,), 16 * float(layer.log_scale.detach().sum())))
    before = [p.clone() for p in layer.parameters()]
    layer(x + 10)  # a second batch does not re-initialise
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    fresh = cf.ActNorm(3)
    fresh.load_state_dict(layer.state_dict())  # a loaded layer is initialised: no re-initialisation either
    fresh.train()(x + 10)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))


def test_invertible_1x1_conv_log_det_and_inverse():
    g = torch.Generator().manual_seed(6)
    layer = cf.Invertible1x1Conv(4, generator=g).double()
    with torch.no_grad():
        layer.weight.add_(0.3 * torch.randn(4, 4, generator=g, dtype=torch.float64))  # not just a rotation
    x = torch.randn(3, 4, 2, 2, generator=g, dtype=torch.float64)
    y, logdet = layer(x)
    torch.testing.assert_close(layer.inverse(y), x, atol=1e-12, rtol=0)
    torch.testing.assert_close(logdet, _brute_log_det(lambda v: layer(v)[0], x), atol=1e-10, rtol=0)
    v = torch.randn(3, 4, generator=g, dtype=torch.float64)  # vectors: a linear map with the same determinant
    torch.testing.assert_close(layer(v)[1], torch.linalg.slogdet(layer.weight).logabsdet.expand(3))


def test_masks():
    cb = cf.checkerboard_mask(2, 4, 4, 0)
    assert cb.shape == (2, 4, 4) and cb[0, 0, 0] == 1 and cb[0, 0, 1] == 0 and cb[1, 1, 1] == 1
    torch.testing.assert_close(cb + cf.checkerboard_mask(2, 4, 4, 1), torch.ones(2, 4, 4))
    ch = cf.channel_mask(4, 2, 2, 0)
    assert ch[:2].eq(1).all() and ch[2:].eq(0).all()
    torch.testing.assert_close(ch + cf.channel_mask(4, 2, 2, 1), torch.ones(4, 2, 2))
    torch.testing.assert_close(cf.alternating_mask(5, 1), torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize("invertible_conv", [True, False])
def test_multiscale_flow_inverts_and_matches_the_brute_force_jacobian(invertible_conv):
    torch.manual_seed(7)
    flow = cf.MultiScaleFlow((1, 4, 4), levels=2, steps_per_level=2, hidden=4, checkerboard_steps=2,
                             invertible_conv=invertible_conv)
    flow = _randomise(flow, 7, std=0.2).double().eval()
    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    out = flow(x)
    assert out.z.shape == (3, 16) and out.logdet.shape == (3,)
    torch.testing.assert_close(flow.inverse(out.z), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(out.logdet, _brute_log_det(lambda v: flow(v).z, x), atol=1e-9, rtol=0)
    torch.testing.assert_close(flow.log_prob(x), standard_normal_log_prob(out.z) + out.logdet)


def test_multiscale_flow_factors_out_half_the_channels_per_level():
    flow = cf.MultiScaleFlow((1, 8, 8), levels=3, steps_per_level=1, hidden=4, checkerboard_steps=0)
    assert flow.split_shapes == [(2, 4, 4), (4, 2, 2)] and flow.final_shape == (16, 1, 1)
    assert sum(math.prod(s) for s in flow.split_shapes) + math.prod(flow.final_shape) == 64


# --- pixels: dequantisation, logit, bits per dimension ------------------------------------------------


def test_pixels_from_images_and_dequantize():
    k = torch.tensor([[0.0, 1.0, 128.0, 255.0]])
    images = k / 127.5 - 1  # load_mnist's scaling
    torch.testing.assert_close(cf.pixels_from_images(images), k, atol=0, rtol=0)
    x = cf.dequantize(k.repeat(500, 1), generator=torch.Generator().manual_seed(0))
    assert x.min() >= 0 and x.max() < 1
    torch.testing.assert_close(torch.floor(256 * x), k.repeat(500, 1), atol=0, rtol=0)  # each bin holds its pixel
    assert abs(float((256 * x - k).mean()) - 0.5) < 0.02  # uniform noise in the bin: mean 1/2
    y = cf.dequantize(k.repeat(500, 1), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, y, atol=0, rtol=0)
    assert cf.dequantize(k.to(torch.uint8)).dtype == torch.float32


def test_logit_transform_log_det_and_inverse():
    g = torch.Generator().manual_seed(9)
    x = torch.rand(4, 1, 2, 3, generator=g, dtype=torch.float64)
    for alpha in (0.0, 0.05, 1e-6):
        y, logdet = cf.logit_transform(x, alpha)
        torch.testing.assert_close(cf.inverse_logit_transform(y, alpha), x, atol=1e-12, rtol=0)
        torch.testing.assert_close(logdet, _brute_log_det(lambda v: cf.logit_transform(v, alpha)[0], x),
                                   atol=1e-10, rtol=0)


class _UniformOnTheCube(nn.Module):
    """The density on logit space of x ~ U[0, 1]^D, in closed form: p = alpha + (1 - 2 alpha) x is uniform on
    [alpha, 1 - alpha], so y = logit(p) has density sigmoid(y) (1 - sigmoid(y)) / (1 - 2 alpha) per coordinate."""

    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha
        self.dummy = nn.Parameter(torch.zeros(()))

    def log_prob(self, y):
        per = nn.functional.logsigmoid(y) + nn.functional.logsigmoid(-y) - math.log(1 - 2 * self.alpha)
        return per.reshape(y.shape[0], -1).sum(1)


def test_a_uniform_density_on_the_pixel_cube_scores_exactly_8_bits_per_dim():
    x = cf.dequantize(torch.randint(0, 256, (5, 1, 4, 4), generator=torch.Generator().manual_seed(0)).double(),
                      generator=torch.Generator().manual_seed(1))
    for alpha in (0.05, 1e-6):
        bpd = cf.pixel_bits_per_dim(_UniformOnTheCube(alpha), x, alpha)
        torch.testing.assert_close(bpd, torch.full((5,), 8.0, dtype=torch.float64), atol=1e-9, rtol=0)


def test_bits_per_dim_bookkeeping_by_hand():
    # a flow that is the identity on logit space: log p(y) = log N(y; 0, I); by hand, in nats then bits
    flow = cf.CouplingFlow([cf.ActNorm(3)], 3).double().eval()
    x = torch.tensor([[0.1, 0.5, 0.97], [0.01, 0.3, 0.6]], dtype=torch.float64)
    alpha = 0.05
    p = alpha + (1 - 2 * alpha) * x
    y = torch.log(p / (1 - p))
    log_py = (-0.5 * y**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    log_px = log_py + (math.log(1 - 2 * alpha) - torch.log(p) - torch.log(1 - p)).sum(1)  # density on [0, 1)^3
    log_p_pixels = log_px - 3 * math.log(256)  # density on [0, 256)^3
    by_hand = -log_p_pixels / (3 * math.log(2))
    torch.testing.assert_close(cf.pixel_bits_per_dim(flow, x, alpha), by_hand, atol=1e-12, rtol=0)


def test_sample_images_are_images_in_range():
    torch.manual_seed(0)
    flow = cf.MultiScaleFlow((1, 4, 4), levels=1, steps_per_level=1, hidden=4, checkerboard_steps=1).eval()
    imgs = cf.sample_images(flow, 6, generator=torch.Generator().manual_seed(0))
    assert imgs.shape == (6, 1, 4, 4) and imgs.min() >= -1 and imgs.max() <= 1


# --- sizes and bad input ----------------------------------------------------------------------------


def test_flow_config_from_every_profile():
    for P in PROFILES.values():
        c = cf.FlowConfig.from_profile(P)
        assert c.hidden_2d == P.hidden_2d // 4 and c.batch_2d == P.batch_2d // 2 and c.steps_cnf <= c.steps_fm
        assert c.hidden_mnist == P.unet_channels and 28 % 2 ** c.levels == 0
    assert cf.FlowConfig.from_profile(PROFILES["smoke"]).steps_mnist < cf.FlowConfig.from_profile(
        PROFILES["standard"]).steps_mnist
    with pytest.raises(ValueError, match="unknown profile name"):
        cf.FlowConfig.from_profile(PROFILES["smoke"].replace(name="tiny"))


def test_bad_input_is_refused_with_a_clear_message():
    net = cf.ConditionerMLP(2, 4, 1)
    with pytest.raises(ValueError, match="mask must keep some"):
        cf.AffineCoupling(torch.ones(2), net)
    with pytest.raises(ValueError, match="only 0"):
        cf.AffineCoupling(torch.tensor([0.5, 1.0]), net)
    with pytest.raises(ValueError, match=r"input must have shape \(B, 2\)"):
        cf.AffineCoupling(cf.alternating_mask(2, 0), net)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* levels"):
        cf.MultiScaleFlow((1, 28, 28), levels=3)
    with pytest.raises(ValueError, match="x must lie in \\[0, 1\\]"):
        cf.logit_transform(torch.tensor([[1.5]]))
    with pytest.raises(ValueError, match="alpha must lie"):
        cf.logit_transform(torch.tensor([[0.5]]), alpha=0.5)
    with pytest.raises(ValueError, match="whole numbers"):
        cf.dequantize(torch.tensor([[0.5]]))
    with pytest.raises(ValueError, match="0..255"):
        cf.dequantize(torch.tensor([[256.0]]))
    with pytest.raises(ValueError, match="\\[-1, 1\\]"):
        cf.pixels_from_images(torch.tensor([[2.0]]))
    with pytest.raises(ValueError, match="even"):
        cf.channel_mask(3, 2, 2, 0)
    with pytest.raises(ValueError, match="couplings must be at least 2"):
        cf.realnvp_2d(couplings=1)


# --- the peer: zuko's coupling transform and normalizing flow, with the same conditioner ------------


def test_log_density_agrees_with_zuko():
    """The same affine couplings (the very same conditioner networks, so identical weights) built in zuko from
    its CouplingTransform (index split and merge, its own log-det bookkeeping) and NormalizingFlow: the
    log-densities must agree. zuko is a test-only peer: install it with `pip install --no-deps zuko`."""
    zuko = pytest.importorskip("zuko", reason="zuko is not installed (pip install --no-deps zuko); the log-det is "
                                              "still checked against brute-force Jacobians above")
    from torch.distributions import AffineTransform, ComposeTransform

    torch.manual_seed(10)
    D = 5
    flow = _randomise(cf.CouplingFlow([cf.AffineCoupling(torch.tensor([1.0, 0, 1, 0, 0]), cf.ConditionerMLP(D, 16, 2)),
                                       cf.AffineCoupling(torch.tensor([0.0, 1, 0, 1, 1]), cf.ConditionerMLP(D, 16, 2)),
                                       cf.AffineCoupling(torch.tensor([1.0, 1, 0, 0, 1]), cf.ConditionerMLP(D, 16, 2))],
                                      D), 10).double().eval()

    def zuko_coupling(layer):
        mask = layer.mask.bool()

        def meta(x_a):  # zuko hands over the kept part only; rebuild m * x for our conditioner
            full = x_a.new_zeros(x_a.shape[:-1] + (D,))
            full[..., mask] = x_a
            s, t = layer.params(full)
            return zuko.transforms.DependentTransform(AffineTransform(t[..., ~mask], torch.exp(s[..., ~mask])), 1)

        return zuko.transforms.CouplingTransform(meta, mask)

    transform = ComposeTransform([zuko_coupling(layer) for layer in flow.layers])
    base = zuko.distributions.DiagNormal(torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64))
    peer = zuko.distributions.NormalizingFlow(transform, base)
    x = 1.5 * torch.randn(8, D, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flow.log_prob(x), peer.log_prob(x), atol=1e-10, rtol=0)
        z = torch.randn(8, D, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
        torch.testing.assert_close(flow.inverse(z), transform.inv(z), atol=1e-10, rtol=0)
