"""Latent flow matching: an autoencoder on MNIST, and flow matching in its latent space (appendix B).

*Flow Matching in Latent Space* (Dao, Phung, Nguyen, Tran, 2023) trains flow matching not on pixels
but on the latents of a pretrained, frozen autoencoder: encode the data once, learn the flow from
Gaussian noise to the (normalised) latents with a small network, and decode only at the end of
sampling. Each training step is then as cheap as the latent is small; the price is the decoder's
own error, which no latent model can undo. The pipeline::

    cfg = LatentConfig.from_profile(profile())
    ae = cfg.build_autoencoder(seed=0)                              # 28x28 -> d numbers -> 28x28
    train_autoencoder(ae, images, cfg, seed=0)                      # mean squared reconstruction error
    z = encode_images(ae, images)                                   # (N, d), once, no gradient
    stats = LatentStats.fit(z)                                      # fixed per-coordinate mean and std
    model = cfg.build_flow_model(seed=0)                            # TimeMLP on d numbers, 10 classes
    train_latent_fm(model, stats.normalise(z), labels, cfg, seed=0) # class-conditional CFM, label dropout
    digits = sample_latent_digits(model, ae.decode, stats, labels, w=2.0, nfe=20)  # ODE, then decode

Why normalise: flow matching starts from ``N(0, I)``. An autoencoder's latent has an arbitrary
offset and scale (multiply the encoder's output by 10 and the decoder's input by 1/10: the same
autoencoder), and the linear path ``u_t = (1 - t) u_0 + t u_1`` between unit noise and latents ten
times larger, or smaller, is a different and harder regression problem. Standardising each latent
coordinate with statistics fitted once on the training set (:class:`LatentStats`) removes that
arbitrariness; Stable Diffusion's fixed latent scale factor does the same with one number.

The training loss is :func:`tutorlib.recipes.mnist_fm_loss` (the CFM loss on the linear path,
which does not care about the shape of ``x``) on batches from :func:`latent_fm_batches`;
:func:`encoded_cfm_loss` is the same loss on images, encoded inside the step without a gradient
into the frozen encoder. Guidance and solvers are those of lessons 07-09
(:func:`tutorlib.guidance.cfg_velocity`, :func:`tutorlib.solvers.ode_solve`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tutorlib.device import Profile
from tutorlib.guidance import cfg_velocity, drop_labels
from tutorlib.losses import cfm_loss
from tutorlib.models import TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.recipes import mnist_fm_loss
from tutorlib.solvers import ode_solve, steps_for_nfe
from tutorlib.train import TrainConfig, TrainHistory, batch_sampler, train

__all__ = [
    "LATENT_PRESETS",
    "ConvAutoencoder",
    "LatentConfig",
    "LatentStats",
    "autoencoder_loss",
    "decode_latents",
    "encode_images",
    "encoded_cfm_loss",
    "latent_fm_batches",
    "sample_latent_digits",
    "train_autoencoder",
    "train_latent_fm",
]


def _positive_int(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentConfig:
    """Every size of appendix B's runs: the autoencoder, the latent flow model and the evaluation.

    Build one with :meth:`from_profile` (one preset per profile, :data:`LATENT_PRESETS`; the
    batch is the profile's ``batch_mnist``, the pixel recipe's, so that a latent step and a pixel
    step see as many digits) and change fields with :meth:`replace`. The defaults are the standard
    profile's sizes.
    """

    latent_dim: int = 32  # d: numbers per digit in the latent
    ae_channels: int = 8  # autoencoder width c: c channels at 14x14, 2c at 7x7
    ae_steps: int = 800  # autoencoder optimiser steps
    ae_lr: float = 1e-2  # autoencoder AdamW peak learning rate (warm-up, then cosine decay)
    fm_hidden: int = 256  # width of the latent velocity MLP (TimeMLP)
    fm_depth: int = 3  # residual blocks of the latent velocity MLP
    fm_steps: int = 800  # optimiser steps of the longest latent flow-matching run
    fm_lr: float = 2e-3  # latent flow model AdamW peak learning rate
    batch: int = 128  # digits (or latents) per training step, both models
    min_lr_ratio: float = 0.02  # the cosine decays end at lr * min_lr_ratio
    ema_decay: float = 0.999  # EMA of the latent flow model's weights (sampled from)
    grad_clip: float | None = 1.0  # global gradient-norm clipping
    p_uncond: float = 0.1  # label dropout probability (classifier-free guidance)
    n_eval: int = 300  # generated digits behind every judge score (30 per class)
    # the pixel baseline's steps at appendix B's two equal-time budgets (the latent flow model alone, the whole
    # latent pipeline): fixed step counts, never derived from a clock, chosen so that on the reference 2-core
    # CPU they take about as long as the latent runs (the appendix measures and claims how close)
    pixel_steps: tuple[int, int] = (70, 120)

    def __post_init__(self):
        steps = self.pixel_steps
        if (not isinstance(steps, tuple) or len(steps) != 2
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in steps)):
            raise ValueError(f"pixel_steps must be two whole numbers >= 1 (the pixel baseline's steps for the latent "
                             f"flow model alone and for the whole latent pipeline), got {steps!r}")

    def replace(self, **changes: Any) -> "LatentConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_profile(cls, P: Profile) -> "LatentConfig":
        """The preset of profile ``P`` (by ``P.name``), with ``batch = P.batch_mnist``.

        Raises:
            ValueError: ``P.name`` has no preset.
        """
        if P.name not in LATENT_PRESETS:
            raise ValueError(f"no latent preset for profile {P.name!r}; LatentConfig.from_profile knows "
                             f"{', '.join(LATENT_PRESETS)} (or build LatentConfig(...) yourself)")
        return LATENT_PRESETS[P.name].replace(batch=P.batch_mnist)

    def warmup(self, steps: int) -> int:
        """Warm-up steps of a run of ``steps`` steps: ``min(100, steps // 10)``, at least 1."""
        return max(1, min(100, steps // 10))

    def ae_train_config(self, *, progress: bool = False) -> TrainConfig:
        """The :class:`~tutorlib.train.TrainConfig` of the autoencoder (no EMA: it is evaluated as trained)."""
        return TrainConfig(steps=self.ae_steps, lr=self.ae_lr, warmup_steps=self.warmup(self.ae_steps),
                           cosine_decay=True, min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip,
                           ema_decay=None, progress=progress, desc="autoencoder")

    def fm_train_config(self, steps: int | None = None, *, progress: bool = False) -> TrainConfig:
        """The :class:`~tutorlib.train.TrainConfig` of a latent flow-matching run of ``steps`` steps.

        ``steps`` defaults to ``fm_steps``; the warm-up is :meth:`warmup` of it.
        """
        steps = self.fm_steps if steps is None else steps
        _positive_int(steps, "steps")
        return TrainConfig(steps=steps, lr=self.fm_lr, warmup_steps=self.warmup(steps), cosine_decay=True,
                           min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, ema_decay=self.ema_decay,
                           progress=progress, desc="latent FM")

    def build_autoencoder(self, *, seed: int | None = None) -> "ConvAutoencoder":
        """A fresh :class:`ConvAutoencoder` of these sizes; ``seed`` initialises it without touching the global RNG."""
        if seed is None:
            return ConvAutoencoder(self.latent_dim, self.ae_channels)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ConvAutoencoder(self.latent_dim, self.ae_channels)

    def build_flow_model(self, num_classes: int = 10, *, seed: int | None = None) -> TimeMLP:
        """A fresh class-conditional :class:`~tutorlib.models.TimeMLP` on ``latent_dim`` numbers.

        Its null class is ``num_classes``; ``seed`` initialises it without touching the global RNG.
        """
        if seed is None:
            return TimeMLP(dim=self.latent_dim, hidden=self.fm_hidden, depth=self.fm_depth, num_classes=num_classes)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_flow_model(num_classes)


LATENT_PRESETS: dict[str, LatentConfig] = {
    "smoke": LatentConfig(ae_steps=120, fm_hidden=64, fm_depth=2, fm_steps=80, n_eval=40, pixel_steps=(4, 12)),
    "standard": LatentConfig(),
    # full: the standard counts scaled with the latent runs' steps (not yet measured on a GPU)
    "full": LatentConfig(ae_channels=32, ae_steps=6000, fm_hidden=512, fm_depth=4, fm_steps=10000, n_eval=2000,
                         pixel_steps=(875, 1500)),
}


# --------------------------------------------------------------------------------------
# The autoencoder
# --------------------------------------------------------------------------------------


class ConvAutoencoder(nn.Module):
    """A small deterministic convolutional autoencoder: ``(B, 1, 28, 28) <-> (B, d)``.

    Encoder: ``pixel_unshuffle`` to 2x2 patches ``(B, 4, 14, 14)`` (lossless, as in
    :class:`~tutorlib.models.PatchUNet`), a 3x3 conv to ``c`` channels, a strided 3x3 conv to
    ``(2c, 7, 7)``, a 3x3 conv, and a linear map to ``d`` numbers. Decoder: the mirror image, a
    linear map to ``(2c, 7, 7)``, a 3x3 conv, nearest-neighbour upsampling to 14x14, two 3x3 convs
    to 4 channels and ``pixel_shuffle`` back to 28x28. SiLU between layers; no output squashing
    (images in ``[-1, 1]`` are matched by the squared error; :func:`decode_latents` clamps). At
    ``d = 32``, ``c = 8`` about 0.06 M parameters (the pixel recipe's PatchUNet: 0.44 M); no 28x28
    convolution at all.

    Args:
        latent_dim: ``d``.
        channels: ``c``.
    """

    def __init__(self, latent_dim: int = 32, channels: int = 8):
        super().__init__()
        _positive_int(latent_dim, "latent_dim")
        _positive_int(channels, "channels")
        c = channels
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(4, c, 3, padding=1), nn.SiLU(),  # (B, c, 14, 14)
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.SiLU(),  # (B, 2c, 7, 7)
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(2 * c * 49, latent_dim),  # (B, d)
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * c * 49), nn.Unflatten(1, (2 * c, 7, 7)), nn.SiLU(),  # (B, 2c, 7, 7)
            nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU(),
            nn.Upsample(scale_factor=2.0, mode="nearest"),  # (B, 2c, 14, 14)
            nn.Conv2d(2 * c, c, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c, 4, 3, padding=1),  # (B, 4, 14, 14): one 2x2 patch per position
        )

    def encode(self, x: Tensor) -> Tensor:
        """Images ``(B, 1, 28, 28)`` -> latents ``(B, d)``."""
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(f"x must be images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return self.encoder(F.pixel_unshuffle(x, 2))  # (B, d)

    def decode(self, z: Tensor) -> Tensor:
        """Latents ``(B, d)`` -> images ``(B, 1, 28, 28)`` (not clamped)."""
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be latents of shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return F.pixel_shuffle(self.decoder(z), 2)  # (B, 1, 28, 28)

    def forward(self, x: Tensor) -> Tensor:
        """The reconstruction ``decode(encode(x))`` ``(B, 1, 28, 28)``."""
        return self.decode(self.encode(x))


def autoencoder_loss(ae: ConvAutoencoder, x: Tensor) -> Tensor:
    """Mean squared reconstruction error over batch and pixels, ``mean (decode(encode(x)) - x)^2``."""
    return (ae(x) - x).square().mean()


def train_autoencoder(ae: ConvAutoencoder, images: Tensor, config: LatentConfig, *, seed: int = 0,
                      device: torch.device | str = "cpu", progress: bool = False) -> TrainHistory:
    """Train ``ae`` in place on reconstruction for ``config.ae_steps`` steps of ``config.batch`` images.

    AdamW with a warm-up and a cosine decay (:meth:`LatentConfig.ae_train_config`), batches drawn
    with replacement by a generator seeded with ``seed + 1``, channels-last memory (faster CPU
    convolutions). The model is left in eval mode and the NCHW layout.

    Args:
        ae: the autoencoder.
        images: ``(N, 1, 28, 28)`` in ``[-1, 1]``, on the CPU.
        config: sizes and optimiser.
        seed: seeds the batches.
        device: where to train.
        progress: show a progress bar.

    Returns:
        The :class:`~tutorlib.train.TrainHistory`.
    """
    if images.dim() != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    ae.to(device, memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(seed + 1)
    draw = batch_sampler(images, batch_size=config.batch, generator=gen)

    def batches(step: int) -> Tensor:
        return draw(step)[0].to(device, memory_format=torch.channels_last)  # (B, 1, 28, 28)

    hist = train(ae, autoencoder_loss, batches, config.ae_train_config(progress=progress))
    ae.to(memory_format=torch.contiguous_format).eval()
    return hist


@torch.no_grad()
def encode_images(ae: ConvAutoencoder, images: Tensor, *, batch_size: int = 1000) -> Tensor:
    """Latents ``(N, d)`` of ``images`` ``(N, 1, 28, 28)``, in chunks, without gradients, on ``ae``'s device."""
    _positive_int(batch_size, "batch_size")
    device = next(ae.parameters()).device
    was_training = ae.training
    ae.eval()
    out = torch.cat([ae.encode(images[i:i + batch_size].to(device)) for i in range(0, images.shape[0], batch_size)])
    ae.train(was_training)
    return out


# --------------------------------------------------------------------------------------
# The latent normalisation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LatentStats:
    """Fixed per-coordinate statistics of a latent: ``normalise(z) = (z - mean) / std`` and back.

    Fitted once on the encoded training set (:meth:`fit`), never on the batch at hand: a per-batch
    standardisation would change the target of flow matching from batch to batch, and sampling
    has no batch of data to standardise against. Works for any latent shape ``(B, *S)``: ``mean``
    and ``std`` have shape ``S``.
    """

    mean: Tensor  # (*S,) per-coordinate mean of the training latents
    std: Tensor  # (*S,) per-coordinate standard deviation (floored at eps)

    def __post_init__(self):
        if not isinstance(self.mean, Tensor) or not isinstance(self.std, Tensor) or self.mean.shape != self.std.shape:
            raise ValueError("mean and std must be tensors of the same shape (the latent shape S)")
        if not bool((self.std > 0).all()):
            raise ValueError("std must be positive everywhere (fit floors it at eps)")

    @classmethod
    def fit(cls, latents: Tensor, eps: float = 1e-6) -> "LatentStats":
        """The mean and (unbiased) standard deviation over the first axis of ``latents`` ``(N, *S)``, ``N >= 2``."""
        if not isinstance(latents, Tensor) or latents.dim() < 2 or latents.shape[0] < 2:
            shape = tuple(latents.shape) if isinstance(latents, Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor (N, *S) with N >= 2 training latents, got {shape}")
        lat = latents.detach()
        return cls(mean=lat.mean(0), std=lat.std(0).clamp_min(eps))

    @property
    def shape(self) -> torch.Size:
        """The latent shape ``S``."""
        return self.mean.shape

    def _check(self, z: Tensor, name: str) -> None:
        if not isinstance(z, Tensor) or z.dim() != len(self.shape) + 1 or z.shape[1:] != self.shape:
            shape = tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, self.shape))}) (the statistics were "
                             f"fitted on latents of that shape), got {shape}")

    def normalise(self, z: Tensor) -> Tensor:
        """``(z - mean) / std``, ``z`` ``(B, *S)`` -> ``(B, *S)``: about zero mean and unit variance per coordinate."""
        self._check(z, "z")
        return (z - self.mean.to(z)) / self.std.to(z)

    def denormalise(self, u: Tensor) -> Tensor:
        """``u * std + mean``, ``u`` ``(B, *S)`` -> ``(B, *S)``: back to the decoder's latent."""
        self._check(u, "u")
        return u * self.std.to(u) + self.mean.to(u)

    def to(self, device: torch.device | str) -> "LatentStats":
        """The statistics on ``device``."""
        return LatentStats(self.mean.to(device), self.std.to(device))


# --------------------------------------------------------------------------------------
# Flow matching in the latent
# --------------------------------------------------------------------------------------


def latent_fm_batches(latents: Tensor, labels: Tensor, config: LatentConfig, *, generator: torch.Generator,
                      device: torch.device | str = "cpu", null_class: int = 10) -> Callable[[int], tuple]:
    """A sampler ``step -> (u_0, u_1, t, y)`` for class-conditional flow matching on (normalised) latents.

    The draws of :func:`tutorlib.recipes.mnist_fm_batches`, in the same order: ``config.batch``
    random rows ``u_1`` with their labels, label dropout to ``null_class`` with probability
    ``config.p_uncond``, Gaussian noise ``u_0`` of the latent's shape, uniform times ``t``.

    Args:
        latents: ``(N, *S)`` normalised training latents, on the CPU.
        labels: int64 ``(N,)``.
        config: batch size and label dropout.
        generator: CPU generator behind every draw.
        device: where the batch goes.
        null_class: the model's null label.

    Returns:
        ``sampler(step)`` -> ``u_0``, ``u_1`` ``(B, *S)``, ``t`` ``(B,)``, ``y`` int64 ``(B,)``.
    """
    if latents.dim() < 2:
        raise ValueError(f"latents must have shape (N, *S), got {tuple(latents.shape)}")
    if labels.shape != (latents.shape[0],) or labels.dtype != torch.long:
        raise ValueError(f"labels must be int64 of shape ({latents.shape[0]},), got {tuple(labels.shape)} "
                         f"{labels.dtype}")
    n, B = latents.shape[0], config.batch

    def sampler(step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.randint(n, (B,), generator=generator)  # (B,)
        u_1 = latents[idx]  # (B, *S)
        y = drop_labels(labels[idx], config.p_uncond, null_class, generator=generator)  # (B,)
        u_0 = torch.randn(u_1.shape, generator=generator)  # (B, *S)
        t = torch.rand(B, generator=generator)  # (B,)
        return u_0.to(device), u_1.to(device), t.to(device), y.to(device)

    return sampler


def encoded_cfm_loss(model: nn.Module, encoder: Callable[[Tensor], Tensor], stats: LatentStats, x_1: Tensor,
                     x_0: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
    """The latent CFM loss on images: encode ``x_1`` (no gradient), normalise, flow-match on the linear path.

    ``u_1 = normalise(encoder(x_1))`` under ``torch.no_grad`` (the encoder is frozen: no gradient
    reaches it, and none of its activations are kept for the backward pass), then
    ``mean || model(u_t, t, y) - (u_1 - u_0) ||^2`` with ``u_t = (1 - t) u_0 + t u_1`` and
    ``u_0 = x_0``, the noise, of the latent's shape.

    Args:
        model: a (class-conditional) latent velocity model.
        encoder: images ``(B, 1, 28, 28)`` -> latents ``(B, *S)``, e.g. ``ae.encode``.
        stats: the fixed latent statistics.
        x_1: images ``(B, 1, 28, 28)``.
        x_0: noise ``(B, *S)``.
        t: times ``(B,)``.
        y: labels ``(B,)`` (may hold the null class), or ``None`` for an unconditional model.

    Returns:
        The scalar loss.
    """
    with torch.no_grad():
        u_1 = stats.normalise(encoder(x_1))  # (B, *S)
    if x_0.shape != u_1.shape:
        raise ValueError(f"x_0 must be noise of the latent's shape {tuple(u_1.shape)}, got {tuple(x_0.shape)}")
    return cfm_loss(model, _PATH, x_0, u_1, t, y=y)


_PATH = CondOTPath()


def train_latent_fm(model: nn.Module, latents: Tensor, labels: Tensor, config: LatentConfig, *,
                    steps: int | None = None, seed: int = 0, device: torch.device | str = "cpu",
                    progress: bool = False) -> tuple[nn.Module, TrainHistory]:
    """Train a class-conditional latent velocity model; leave its EMA weights in it.

    Batches from :func:`latent_fm_batches` (generator seeded with ``seed + 1``), the loss
    :func:`tutorlib.recipes.mnist_fm_loss`, the optimiser of :meth:`LatentConfig.fm_train_config`.

    Args:
        model: ``model(u, t, y)`` with a ``null_class`` (e.g. :meth:`LatentConfig.build_flow_model`).
        latents: normalised training latents ``(N, *S)``.
        labels: int64 ``(N,)``.
        config: sizes and optimiser.
        steps: optimiser steps (default ``config.fm_steps``); the learning rate decays over them.
        seed: seeds the batches.
        device: where to train.
        progress: show a progress bar.

    Returns:
        ``(model, history)``: the model holding the EMA weights, in eval mode, and the history.
    """
    null_class = getattr(model, "null_class", None)
    if null_class is None:
        raise ValueError("train_latent_fm needs a class-conditional model with a null class (build it with "
                         "LatentConfig.build_flow_model(), or TimeMLP(..., num_classes=10))")
    model.to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    batches = latent_fm_batches(latents, labels, config, generator=gen, device=device, null_class=null_class)
    hist = train(model, mnist_fm_loss, batches, config.fm_train_config(steps, progress=progress))
    if hist.ema is not None:
        hist.ema.copy_to(model)
    return model.eval(), hist


@torch.no_grad()
def decode_latents(decoder: Callable[[Tensor], Tensor], stats: LatentStats, u: Tensor) -> Tensor:
    """Images ``(B, 1, 28, 28)`` in ``[-1, 1]`` of normalised latents ``u`` ``(B, *S)``.

    ``decoder(stats.denormalise(u))``, clamped to the data's range.
    """
    return decoder(stats.denormalise(u)).clamp(-1.0, 1.0)


@torch.no_grad()
def sample_latent_digits(model: nn.Module, decoder: Callable[[Tensor], Tensor], stats: LatentStats,
                         labels: Tensor | list[int], *, w: float = 2.0, nfe: int = 20,
                         generator: torch.Generator | None = None, u_0: Tensor | None = None,
                         method: str = "euler", zero_star: bool = False) -> Tensor:
    """Generate one digit per label: solve the guided latent ODE from noise, then decode once.

    ``u_1 = ode_solve(cfg_velocity(model, y, w), u_0)`` in the normalised latent (``nfe``
    evaluations of ``method``; a call on the doubled batch of classifier-free guidance counts as
    one), then ``decoder(stats.denormalise(u_1))`` clamped to ``[-1, 1]``. Nothing is decoded
    before the ODE ends: intermediate latents are not digits.

    Args:
        model: a class-conditional latent velocity model with a ``null_class``.
        decoder: latents ``(B, *S)`` -> images, e.g. ``ae.decode``.
        stats: the latent statistics the model was trained under.
        labels: the class of each digit, int64 ``(B,)`` or a list.
        w: guidance scale (0: unconditional, 1: conditional).
        nfe: network evaluations.
        generator: draws ``u_0`` (ignored when ``u_0`` is given).
        u_0: starting noise ``(B, *S)``.
        method: a fixed-step :func:`tutorlib.solvers.ode_solve` method.
        zero_star: CFG-Zero*'s scale (:func:`tutorlib.guidance.cfg_velocity`).

    Returns:
        Images ``(B, 1, 28, 28)`` in ``[-1, 1]``, on the model's device.
    """
    device = next(model.parameters()).device
    y = torch.as_tensor(labels, dtype=torch.long).to(device)  # (B,)
    if u_0 is None:
        u_0 = torch.randn((y.shape[0], *stats.shape), generator=generator).to(device)  # (B, *S)
    elif u_0.shape != (y.shape[0], *stats.shape):
        raise ValueError(f"u_0 must have shape {(y.shape[0], *stats.shape)} (one latent per label), "
                         f"got {tuple(u_0.shape)}")
    velocity = cfg_velocity(model, y, w, zero_star=zero_star)
    u_1 = ode_solve(velocity, u_0.to(device), method=method, steps=steps_for_nfe(method, nfe)).x  # (B, *S)
    return decode_latents(decoder, stats.to(device), u_1)
