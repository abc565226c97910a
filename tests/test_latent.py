"""tutorlib.latent (appendix B): the autoencoder, the latent statistics, latent flow matching and its sampler."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tutorlib.device import profile
from tutorlib.latent import (LATENT_PRESETS, ConvAutoencoder, LatentConfig, LatentStats, autoencoder_loss,
                             decode_latents, encode_images, encoded_cfm_loss, latent_fm_batches, sample_latent_digits,
                             train_autoencoder, train_latent_fm)
from tutorlib.losses import cfm_loss
from tutorlib.models import count_parameters
from tutorlib.paths import CondOTPath
from tutorlib.recipes import MNISTRecipe, mnist_fm_batches


def _fake_mnist(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, 28, 28, generator=g) * 2 - 1
    labels = torch.arange(n) % 10
    return images, labels


# --- sizes ---


def test_config_from_profile_has_one_preset_per_profile_and_the_recipe_batch():
    for name in ("smoke", "standard", "full"):
        P = profile(name)
        cfg = LatentConfig.from_profile(P)
        assert cfg.batch == P.batch_mnist == MNISTRecipe.large_batch(P).batch  # latent and pixel steps see as many digits
        assert cfg.replace(batch=1) == LATENT_PRESETS[name].replace(batch=1)
    assert LatentConfig.from_profile(profile("standard")) == LatentConfig()  # the defaults are standard's
    smoke, std, full = (LatentConfig.from_profile(profile(n)) for n in ("smoke", "standard", "full"))
    assert smoke.ae_steps < std.ae_steps < full.ae_steps and smoke.fm_steps < std.fm_steps < full.fm_steps
    with pytest.raises(ValueError, match="no latent preset"):
        LatentConfig.from_profile(profile("smoke").replace(name="laptop"))
    fm = std.fm_train_config(40)
    assert fm.steps == 40 and fm.warmup_steps == 4 and fm.cosine_decay and fm.time_budget_s is None
    assert std.ae_train_config().ema_decay is None and std.ae_train_config().steps == std.ae_steps
    with pytest.raises(ValueError, match="steps"):
        std.fm_train_config(0)


def test_seeded_builders_are_reproducible_and_leave_the_global_rng_alone():
    cfg = LatentConfig.from_profile(profile("smoke"))
    state = torch.random.get_rng_state()
    a, b = cfg.build_autoencoder(seed=3), cfg.build_autoencoder(seed=3)
    f, g = cfg.build_flow_model(seed=3), cfg.build_flow_model(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    for m1, m2 in ((a, b), (f, g)):
        for p, q in zip(m1.parameters(), m2.parameters()):
            assert torch.equal(p, q)
    assert f.null_class == 10 and f.dim == cfg.latent_dim


# --- the autoencoder ---


def test_autoencoder_shapes_errors_and_size():
    ae = ConvAutoencoder(latent_dim=16, channels=8)
    x = torch.randn(3, 1, 28, 28)
    z = ae.encode(x)
    assert z.shape == (3, 16) and ae.decode(z).shape == (3, 1, 28, 28) and ae(x).shape == (3, 1, 28, 28)
    assert count_parameters(ConvAutoencoder(32, 8)) < 70_000  # far smaller than the pixel PatchUNet
    assert count_parameters(ConvAutoencoder(32, 8)) < count_parameters(MNISTRecipe().build_model()) / 5
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        ae.encode(torch.randn(3, 28, 28))
    with pytest.raises(ValueError, match=r"\(B, 16\)"):
        ae.decode(torch.randn(3, 8))
    with pytest.raises(ValueError, match="latent_dim"):
        ConvAutoencoder(latent_dim=0)
    torch.testing.assert_close(autoencoder_loss(ae, x), (ae(x) - x).square().mean())


def test_autoencoder_training_reduces_the_error_and_is_reproducible():
    images, _ = _fake_mnist(64)
    images = torch.nn.functional.avg_pool2d(images, 7, 1, 3)  # smooth images: something to learn
    cfg = LatentConfig(latent_dim=8, ae_channels=4, ae_steps=40, batch=16)
    ae = cfg.build_autoencoder(seed=0)
    with torch.no_grad():
        before = float(autoencoder_loss(ae, images))
    hist = train_autoencoder(ae, images, cfg, seed=0)
    assert hist.complete and hist.steps_done == 40 and not ae.training
    assert ae.encoder[0].weight.is_contiguous()  # back in the NCHW layout
    with torch.no_grad():
        assert float(autoencoder_loss(ae, images)) < 0.5 * before
    again = cfg.build_autoencoder(seed=0)
    train_autoencoder(again, images, cfg, seed=0)
    for p, q in zip(ae.parameters(), again.parameters()):
        assert torch.equal(p, q)  # one seed, one model
    with pytest.raises(ValueError, match="images"):
        train_autoencoder(ae, images[:, 0], cfg)


def test_encode_images_equals_the_encoder_in_chunks_without_gradients():
    ae = ConvAutoencoder(8, 4).train()
    images, _ = _fake_mnist(25)
    z = encode_images(ae, images, batch_size=7)
    assert not z.requires_grad and ae.training  # the mode is restored
    with torch.no_grad():
        torch.testing.assert_close(z, ae.eval().encode(images))


# --- the latent statistics ---


@pytest.mark.parametrize("shape", [(5,), (2, 3, 3)])
def test_latent_stats_standardise_exactly_and_round_trip(shape):
    g = torch.Generator().manual_seed(0)
    offset = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
    scale = 0.1 + 5 * torch.rand(shape, generator=g, dtype=torch.float64)
    z = offset + scale * torch.randn(500, *shape, generator=g, dtype=torch.float64)  # (N, *S)
    stats = LatentStats.fit(z)
    assert stats.shape == shape
    u = stats.normalise(z)
    torch.testing.assert_close(u.mean(0), torch.zeros(shape, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(u.std(0), torch.ones(shape, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(stats.denormalise(u), z, atol=1e-12, rtol=0)
    # a new batch is normalised with the fixed statistics, not its own
    batch = z[:4] + 1.0
    torch.testing.assert_close(stats.normalise(batch), (batch - z.mean(0)) / z.std(0))
    # the closed form of an affine latent: z = a + b e  ->  u = (e - mean e) / std e
    e = torch.randn(300, *shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(LatentStats.fit(2.0 + 7.0 * e).normalise(2.0 + 7.0 * e), LatentStats.fit(e).normalise(e))


def test_latent_stats_refuse_bad_shapes_and_survive_a_constant_coordinate():
    z = torch.randn(10, 4)
    z[:, 2] = 5.0  # a coordinate the encoder never uses
    stats = LatentStats.fit(z)
    assert torch.isfinite(stats.normalise(z)).all()
    with pytest.raises(ValueError, match=r"z must have shape \(B, 4\)"):
        stats.normalise(torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"u must have shape \(B, 4\)"):
        stats.denormalise(torch.randn(4))
    with pytest.raises(ValueError, match="N >= 2"):
        LatentStats.fit(torch.randn(1, 4))
    with pytest.raises(ValueError, match="positive"):
        LatentStats(torch.zeros(3), torch.zeros(3))


# --- latent flow matching ---


def test_latent_batches_draw_like_the_pixel_recipe():
    # the same generator gives the same rows, dropped labels and times as mnist_fm_batches with uniform
    # times (the large-batch settings appendix B's pixel baseline uses; lesson 09's recipe draws logit-normal)
    images, labels = _fake_mnist(50)
    cfg = LatentConfig(batch=9, p_uncond=0.3)
    recipe = MNISTRecipe(batch=9, p_uncond=0.3, channels_last=False, time_sampling="uniform")
    u_0, u_1, t, y = latent_fm_batches(images, labels, cfg, generator=torch.Generator().manual_seed(4))(0)
    x_0, x_1, t2, y2 = mnist_fm_batches(images, labels, recipe, generator=torch.Generator().manual_seed(4))(0)
    for a, b in ((u_0, x_0), (u_1, x_1), (t, t2), (y, y2)):
        assert torch.equal(a, b)
    z = torch.randn(50, 3, 2)  # any latent shape
    u_0, u_1, t, y = latent_fm_batches(z, labels, cfg, generator=torch.Generator().manual_seed(0))(0)
    assert u_0.shape == u_1.shape == (9, 3, 2) and t.shape == y.shape == (9,)
    big = LatentConfig(batch=20_000, p_uncond=0.3)
    y = latent_fm_batches(z, labels, big, generator=torch.Generator().manual_seed(0), null_class=10)(0)[3]
    assert abs(float((y == 10).double().mean()) - 0.3) < 0.02
    with pytest.raises(ValueError, match="labels"):
        latent_fm_batches(z, labels.float(), cfg, generator=torch.Generator())


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(784, 6)

    def forward(self, x):
        return self.lin(x.reshape(x.shape[0], -1)) * 4 + 2


def test_encoded_loss_is_the_cfm_loss_of_the_normalised_latent_and_leaves_the_encoder_alone():
    torch.manual_seed(0)
    enc = _Encoder()
    model = LatentConfig(latent_dim=6, fm_hidden=16, fm_depth=1).build_flow_model(seed=0)
    images, labels = _fake_mnist(12)
    with torch.no_grad():
        stats = LatentStats.fit(enc(_fake_mnist(100, seed=1)[0]))
    x_0, t = torch.randn(12, 6), torch.rand(12)
    loss = encoded_cfm_loss(model, enc, stats, images, x_0, t, labels)
    with torch.no_grad():
        u_1 = (enc(images) - stats.mean) / stats.std
    torch.testing.assert_close(loss, cfm_loss(model, CondOTPath(), x_0, u_1, t, y=labels))
    loss.backward()
    assert all(p.grad is None for p in enc.parameters())  # frozen: no gradient reaches it
    assert all(p.grad is not None for p in model.parameters())
    # a model that predicts zero velocity: the loss is the mean squared length of u_1 - u_0 (closed form)
    zero = lambda u, t, y=None: torch.zeros_like(u)  # noqa: E731
    torch.testing.assert_close(encoded_cfm_loss(zero, enc, stats, images, x_0, t, labels), (u_1 - x_0).square().mean())
    with pytest.raises(ValueError, match="x_0 must be noise"):
        encoded_cfm_loss(model, enc, stats, images, torch.randn(12, 5), t, labels)


def test_latent_training_learns_a_two_class_latent_and_is_reproducible():
    # two classes at +-2 in a 4-d latent: after training, guided samples land near their class
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(400) % 2
    centres = torch.tensor([[2.0, 0, 0, 0], [-2.0, 0, 0, 0]])
    latents = centres[labels] + 0.1 * torch.randn(400, 4, generator=g)
    cfg = LatentConfig(latent_dim=4, fm_hidden=64, fm_depth=2, batch=64, fm_lr=3e-3)
    model, hist = train_latent_fm(cfg.build_flow_model(num_classes=2, seed=0), latents, labels, cfg, steps=300)
    assert hist.complete and not model.training
    stats = LatentStats(torch.zeros(4), torch.ones(4))
    out = sample_latent_digits(model, lambda z: z / 4, stats, torch.tensor([0, 1] * 20), w=1.0, nfe=20,
                               generator=torch.Generator().manual_seed(1))  # a "decoder" that shows the latent / 4
    assert (out[0::2, 0] > 0.25).float().mean() > 0.9 and (out[1::2, 0] < -0.25).float().mean() > 0.9
    assert out[:, 1:].abs().max() < 0.25  # the other coordinates stay near 0
    again, _ = train_latent_fm(cfg.build_flow_model(num_classes=2, seed=0), latents, labels, cfg, steps=300)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="class-conditional"):
        train_latent_fm(nn.Linear(4, 4), latents, labels, cfg)


# --- sampling: the ODE in the latent, one decoding at the end ---


class _PointMasses(nn.Module):
    """The exact velocity of the linear path towards a point mass c_y: v(u, t) = (c_y - u) / (1 - t).

    Euler's last step (from t = 1 - h, h = 1 / steps) lands exactly on c_y for any number of steps, and with
    guidance on c_null + w (c_y - c_null): a closed form for the whole sampler.
    """

    def __init__(self, centres):
        super().__init__()
        self.register_buffer("centres", centres)  # (K + 1, *S), the last row for the null class
        self.dummy = nn.Parameter(torch.zeros(()))  # a parameter, so the sampler can find the device

    @property
    def null_class(self):
        return self.centres.shape[0] - 1

    def forward(self, u, t, y=None):
        y = torch.full((u.shape[0],), self.null_class) if y is None else y
        return (self.centres[y] - u) / (1 - t).reshape(-1, *([1] * (u.dim() - 1)))


@pytest.mark.parametrize("nfe", [1, 3, 10])
def test_sampler_lands_on_the_guided_point_and_decodes_once(nfe):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 5, generator=g, dtype=torch.float64)  # 3 classes + the null class
    model = _PointMasses(centres).double()
    stats = LatentStats(torch.randn(5, generator=g, dtype=torch.float64), 0.5 + torch.rand(5, generator=g,
                                                                                           dtype=torch.float64))
    calls = []

    def decoder(z):
        calls.append(z.clone())
        return torch.tanh(z).sum(1).reshape(-1, 1, 1, 1).expand(-1, 1, 28, 28) * 3  # beyond [-1, 1]: clamped
    y, w = torch.tensor([0, 2, 1, 2]), 2.5
    u_0 = torch.randn(4, 5, generator=g, dtype=torch.float64)
    out = sample_latent_digits(model, decoder, stats, y, w=w, nfe=nfe, u_0=u_0)
    u_1 = centres[3] + w * (centres[y] - centres[3])  # (4, 5) the closed form of guided Euler on point masses
    assert len(calls) == 1  # decoded once, after the ODE
    torch.testing.assert_close(calls[0], stats.denormalise(u_1))
    assert out.shape == (4, 1, 28, 28) and out.abs().max() <= 1.0
    torch.testing.assert_close(out, decoder(stats.denormalise(u_1)).clamp(-1, 1))
    torch.testing.assert_close(decode_latents(decoder, stats, u_1), out)
    with pytest.raises(ValueError, match="u_0 must have shape"):
        sample_latent_digits(model, decoder, stats, y, u_0=u_0[:3])


@pytest.mark.parametrize("bad", [(10,), (10, 20, 30), (0, 5), (5.0, 10), [70, 120], (True, 3)])
def test_pixel_steps_are_two_fixed_step_counts(bad):
    with pytest.raises(ValueError, match="pixel_steps must be two whole numbers"):
        LatentConfig(pixel_steps=bad)
    for name, cfg in LATENT_PRESETS.items():
        assert len(cfg.pixel_steps) == 2 and cfg.pixel_steps[0] < cfg.pixel_steps[1], name
