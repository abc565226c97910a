"""Measured recipes: class-conditional flow matching on MNIST in a few CPU minutes (lesson 09).

The recipe is what the bench measured to reach a good model fastest on a laptop CPU (issues 8 and
17, ``python -m bench mnist``, ``mnist_ttq`` and ``mnist_5min``): a :class:`~tutorlib.models.PatchUNet`
(a U-Net on 2x2 patches, levels 14 -> 7, about 0.44 M parameters at ``C = 32``), the linear path
(:class:`~tutorlib.paths.CondOTPath`) with a velocity target and logit-normal training times, labels
dropped with probability 0.1 for classifier-free guidance, small batches (32 digits) with AdamW at 3e-3,
a warm-up and a cosine decay over the run's steps, an EMA of the weights, and sampling by Euler with
guidance at w = 1.75 (:func:`tutorlib.guidance.cfg_velocity`). Its sizes
(steps, batch, width) come from the profile, like every run of the course::

    recipe = MNISTRecipe.from_profile(profile())
    images, labels = load_mnist("train")
    model, hist = train_mnist_fm(recipe, images, labels, seed=0)       # EMA weights, eval mode
    digits = sample_digits(model, torch.arange(10).repeat(8), w=recipe.guidance, nfe=recipe.nfe)

Everything here is built from the public pieces of :mod:`tutorlib.models`, :mod:`tutorlib.losses`,
:mod:`tutorlib.guidance`, :mod:`tutorlib.train` and :mod:`tutorlib.solvers`; lesson 09 writes the
loop out once by hand before using these helpers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from tutorlib.device import Profile, fast_sampling_dtype
from tutorlib.guidance import cfg_velocity, drop_labels
from tutorlib.losses import cfm_loss
from tutorlib.models import PatchUNet
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve, reduced_precision, steps_for_nfe
from tutorlib.train import TrainConfig, TrainHistory, train

__all__ = ["TIME_SAMPLINGS", "MNISTRecipe", "load_or_train_mnist_ddpm", "load_or_train_mnist_fm", "mnist_ddpm_config",
           "mnist_fm_batches", "mnist_fm_config", "mnist_fm_loss", "sample_digits", "sample_times", "train_mnist_ddpm",
           "train_mnist_fm"]

TIME_SAMPLINGS = ("uniform", "logit_normal")


@dataclass(frozen=True)
class MNISTRecipe:
    """Everything that defines a class-conditional MNIST flow-matching run (model, data, optimiser, sampler).

    Build one with :meth:`from_profile` (the sizes of a :class:`~tutorlib.device.Profile`) and change
    fields with :meth:`replace`. The defaults are the standard profile's sizes.
    """

    base_channels: int = 32  # PatchUNet width at 14x14 (7x7 has twice as many)
    mid_blocks: int = 1  # PatchUNet residual blocks at 7x7 between encoder and decoder
    batch: int = 32  # images per training step (small batches, many steps: issue 17's measurements)
    lr: float = 3e-3  # AdamW peak learning rate
    warmup_steps: int = 100  # linear warm-up, in steps
    min_lr_ratio: float = 0.02  # the cosine decay ends at lr * min_lr_ratio
    ema_decay: float = 0.999  # EMA of the weights (sampled from)
    grad_clip: float | None = 1.0  # global gradient-norm clipping
    p_uncond: float = 0.1  # label dropout probability (classifier-free guidance)
    time_sampling: str = "logit_normal"  # training times t: "uniform" on [0, 1] or "logit_normal" (sigmoid of N(0, 1))
    steps: int = 6000  # optimiser steps (the learning rate decays over them)
    channels_last: bool = True  # NHWC memory layout (faster convolutions on CPUs)
    guidance: float = 1.75  # default CFG scale w for sampling
    nfe: int = 20  # default number of function evaluations for sampling (Euler: 20 steps)

    def replace(self, **changes: Any) -> "MNISTRecipe":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_profile(cls, P: Profile) -> "MNISTRecipe":
        """The recipe at the sizes of profile ``P``: width ``P.unet_channels``, a quarter of ``P.batch_mnist``
        per step (at least 8) for twice ``P.steps_mnist`` steps (standard: 6000 steps of 32 digits).

        The warm-up is ``min(100, steps / 10)`` steps; everything else is the measured recipe. Small
        batches and many steps are what the bench measured to be fastest to a good model on a CPU
        (``python -m bench mnist_5min``: 32 digits per step against the earlier 128, at equal time).
        """
        steps = 2 * P.steps_mnist
        return cls(base_channels=P.unet_channels, batch=max(8, P.batch_mnist // 4), steps=steps,
                   warmup_steps=min(100, max(1, steps // 10)))

    @classmethod
    def large_batch(cls, P: Profile) -> "MNISTRecipe":
        """The recipe's large-batch settings at profile ``P``: ``P.batch_mnist`` digits per step for
        ``P.steps_mnist`` steps, AdamW 2e-3, EMA 0.999, uniform times, w = 2 (lesson 09's recipe before the
        bench's second round moved it to small batches).

        Lesson 01's MNIST DDPM is trained with them (its checkpoint was made and checked with them), and
        appendix B's pixel baseline uses them so that a pixel step and a latent step see the same batch.
        """
        return cls(base_channels=P.unet_channels, batch=P.batch_mnist, steps=P.steps_mnist,
                   warmup_steps=min(100, max(1, P.steps_mnist // 10)), lr=2e-3, ema_decay=0.999,
                   time_sampling="uniform", guidance=2.0)

    def build_model(self, num_classes: int = 10, *, seed: int | None = None) -> PatchUNet:
        """A fresh :class:`~tutorlib.models.PatchUNet` of this recipe (on the CPU, NCHW layout).

        Args:
            num_classes: classes of the conditioning (the null class is ``num_classes``).
            seed: initialise from this seed (the global RNG is left as it was); ``None`` draws from
                the global RNG.
        """
        if seed is None:
            return PatchUNet(1, None, base_channels=self.base_channels, num_classes=num_classes,
                             mid_blocks=self.mid_blocks)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.build_model(num_classes)

    def train_config(self, *, progress: bool = True, desc: str = "MNIST FM") -> TrainConfig:
        """The :class:`~tutorlib.train.TrainConfig` of this recipe."""
        return TrainConfig(steps=self.steps, lr=self.lr, warmup_steps=self.warmup_steps, cosine_decay=True,
                           min_lr_ratio=self.min_lr_ratio, grad_clip=self.grad_clip, ema_decay=self.ema_decay,
                           progress=progress, desc=desc)


def sample_times(n: int, kind: str = "uniform", *, generator: torch.Generator | None = None) -> Tensor:
    """Training times ``(n,)`` in ``(0, 1)``: ``uniform``, or ``logit_normal`` = sigmoid of N(0, 1) draws
    (more weight in the middle of the path, where the velocity is hardest to predict)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    if kind == "logit_normal":
        return torch.sigmoid(torch.randn(n, generator=generator))
    raise ValueError(f"unknown time sampling {kind!r}; choose one of {TIME_SAMPLINGS}")


def mnist_fm_batches(images: Tensor, labels: Tensor, recipe: MNISTRecipe, *, generator: torch.Generator,
                     device: torch.device | str = "cpu", null_class: int = 10) -> Callable[[int], tuple]:
    """A sampler ``step -> (x_0, x_1, t, y)`` for class-conditional flow matching on images.

    Each step draws ``recipe.batch`` random training images ``x_1`` with their labels (with
    replacement across steps), fresh Gaussian noise ``x_0``, times ``t`` (``recipe.time_sampling``),
    and replaces labels by ``null_class`` with probability ``recipe.p_uncond``.

    Args:
        images: ``(N, 1, 28, 28)`` in ``[-1, 1]`` (:func:`tutorlib.data.load_mnist`), on the CPU.
        labels: int64 ``(N,)``.
        recipe: batch size, label dropout, time sampling, memory layout.
        generator: CPU generator behind every draw (reproducible batches).
        device: where the batch goes.
        null_class: the model's null label.

    Returns:
        ``sampler(step)`` -> ``x_0`` and ``x_1`` ``(B, 1, 28, 28)``, ``t`` ``(B,)``, ``y`` int64 ``(B,)``.
    """
    if images.dim() != 4 or images.shape[1:] != (1, 28, 28):
        raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
    if labels.shape != (images.shape[0],) or labels.dtype != torch.long:
        raise ValueError(f"labels must be int64 of shape ({images.shape[0]},), got {tuple(labels.shape)} {labels.dtype}")
    if recipe.time_sampling not in TIME_SAMPLINGS:
        raise ValueError(f"unknown time sampling {recipe.time_sampling!r}; choose one of {TIME_SAMPLINGS}")
    n, B = images.shape[0], recipe.batch
    memory = torch.channels_last if recipe.channels_last else torch.contiguous_format

    def sampler(step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.randint(n, (B,), generator=generator)  # (B,)
        x_1 = images[idx]  # (B, 1, 28, 28)
        y = drop_labels(labels[idx], recipe.p_uncond, null_class, generator=generator)  # (B,)
        x_0 = torch.randn(x_1.shape, generator=generator)  # (B, 1, 28, 28)
        t = sample_times(B, recipe.time_sampling, generator=generator)  # (B,)
        x_0 = x_0.to(device, memory_format=memory)
        x_1 = x_1.to(device, memory_format=memory)
        return x_0, x_1, t.to(device), y.to(device)

    return sampler


def mnist_fm_loss(model: torch.nn.Module, batch: tuple[Tensor, Tensor, Tensor, Tensor]) -> Tensor:
    """The CFM loss of a class-conditional velocity model on one ``(x_0, x_1, t, y)`` batch (linear path)."""
    x_0, x_1, t, y = batch
    return cfm_loss(model, _PATH, x_0, x_1, t, y=y)


_PATH = CondOTPath()


def train_mnist_fm(recipe: MNISTRecipe, images: Tensor, labels: Tensor, *, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = True, desc: str = "MNIST FM",
                   model: torch.nn.Module | None = None) -> tuple[torch.nn.Module, TrainHistory]:
    """Train a class-conditional velocity model on MNIST by the recipe; return its EMA weights.

    Args:
        recipe: the run's settings.
        images: training images ``(N, 1, 28, 28)`` in ``[-1, 1]``.
        labels: int64 ``(N,)``.
        seed: seeds the initialisation (of a model built here) and every batch; the global RNG is untouched.
        device: where to train.
        progress: show a progress bar.
        desc: progress-bar label.
        model: train this model (in place) instead of ``recipe.build_model()``; it must take ``(x, t, y)``.

    Returns:
        ``(model, history)``: the model holding the EMA weights (eval mode, NCHW layout) and the
        :class:`~tutorlib.train.TrainHistory`.
    """
    net = recipe.build_model(seed=seed) if model is None else model  # a seeded initialisation
    net = net.to(device)
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    null_class = getattr(net, "null_class", None)
    if null_class is None:
        raise ValueError("train_mnist_fm needs a class-conditional model (built with num_classes=10)")
    gen = torch.Generator().manual_seed(seed + 1)
    batches = mnist_fm_batches(images, labels, recipe, generator=gen, device=device, null_class=null_class)
    hist = train(net, mnist_fm_loss, batches, recipe.train_config(progress=progress, desc=desc))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    net = net.to(memory_format=torch.contiguous_format).eval()
    return net, hist


def mnist_fm_config(recipe: MNISTRecipe, seed: int, train_digits: int) -> dict[str, Any]:
    """The configuration a class-conditional MNIST checkpoint is stored and looked up under.

    The whole recipe, the seed and the number of training digits: :func:`tutorlib.train.load_or_train`
    loads a checkpoint only when its stored configuration equals this one (lesson 09 trains and saves
    ``fm_mnist_<profile>``, lesson 08 loads it).
    """
    return {**dataclasses.asdict(recipe), "seed": int(seed), "train_digits": int(train_digits)}


def load_or_train_mnist_fm(recipe: MNISTRecipe, images: Tensor, labels: Tensor, *, name: str, seed: int = 0,
                           device: torch.device | str = "cpu", progress: bool = True, directory=None):
    """Lesson 09's model: the verified checkpoint ``name`` when its configuration matches, else trained now.

    ``load_or_train(name, ...)`` with :func:`mnist_fm_config` and :func:`train_mnist_fm`; the standard
    profile's ``fm_mnist_standard`` ships with the course, so a lesson that needs a trained MNIST model
    (lesson 08) loads it in seconds. ``directory`` looks and saves only there (``scripts/make_checkpoints.py``).

    Returns:
        The :class:`~tutorlib.train.LoadOrTrain` record (``.model`` in eval mode, ``.loaded``, ``.metadata``).
    """
    from tutorlib.train import load_or_train

    def train_fn(model: torch.nn.Module) -> TrainHistory:
        _, hist = train_mnist_fm(recipe, images, labels, seed=seed, device=device, model=model, progress=progress,
                                 desc=f"MNIST FM ({name})")
        return hist

    model = recipe.build_model(seed=seed).to(device)
    return load_or_train(name, train_fn, model=model, config=mnist_fm_config(recipe, seed, images.shape[0]),
                         directory=directory)


# --------------------------------------------------------------------------------------
# DDPM on MNIST (lesson 01): the same network and optimiser, the epsilon loss, labels as input
# --------------------------------------------------------------------------------------


def mnist_ddpm_config(recipe: MNISTRecipe, T: int, seed: int, train_digits: int) -> dict[str, Any]:
    """The configuration lesson 01's label-conditional MNIST DDPM is stored and looked up under."""
    return {"T": T, "betas": "linear", "model": "PatchUNet", "labels": True, "channels": recipe.base_channels,
            "mid_blocks": recipe.mid_blocks, "steps": recipe.steps, "batch": recipe.batch, "lr": recipe.lr,
            "warmup": recipe.warmup_steps, "min_lr_ratio": recipe.min_lr_ratio, "ema": recipe.ema_decay,
            "grad_clip": recipe.grad_clip, "train_digits": int(train_digits), "seed": int(seed)}


def train_mnist_ddpm(recipe: MNISTRecipe, images: Tensor, labels: Tensor, schedule, *, seed: int = 0,
                     device: torch.device | str = "cpu", model: torch.nn.Module | None = None, progress: bool = True,
                     desc: str = "DDPM, MNIST") -> tuple[torch.nn.Module, TrainHistory]:
    """Train a label-conditional epsilon-model on MNIST by DDPM's loss with the recipe's optimiser; EMA weights.

    Each step draws ``recipe.batch`` digits with their labels, DDPM indices ``k`` uniform on
    ``1..T`` and Gaussian noise, all from a generator seeded by ``seed + 1``, and regresses
    ``model(x_k, t_k, y)`` on the noise (:func:`tutorlib.losses.ddpm_loss`, lesson 01).

    Args:
        schedule: a :class:`tutorlib.ddpm.DDPMSchedule` (lesson 01: linear betas, T = 1000).
        model: train this model in place instead of ``recipe.build_model(seed=seed)``.

    Returns:
        ``(model, history)``: the model holding the EMA weights (eval mode) and the history.
    """
    from tutorlib.losses import ddpm_loss
    from tutorlib.train import batch_sampler

    net = (recipe.build_model(seed=seed) if model is None else model).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    T = schedule.T

    def loss_fn(m: torch.nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        x_data, y = batch  # (B, 1, 28, 28), (B,)
        k = torch.randint(1, T + 1, (x_data.shape[0],), generator=gen).to(x_data.device)  # (B,)
        noise = torch.randn(x_data.shape, generator=gen).to(x_data.device)  # (B, 1, 28, 28)
        return ddpm_loss(lambda x, t: m(x, t, y), schedule, x_data, k, noise)

    batches = batch_sampler(images.to(device), labels.to(device), batch_size=recipe.batch, generator=gen)
    hist = train(net, loss_fn, batches, recipe.train_config(progress=progress, desc=desc))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    return net.eval(), hist


def load_or_train_mnist_ddpm(recipe: MNISTRecipe, images: Tensor, labels: Tensor, schedule, *, name: str,
                             seed: int = 0, device: torch.device | str = "cpu", progress: bool = True,
                             directory=None):
    """Lesson 01's MNIST DDPM: the verified checkpoint ``name`` when its configuration matches, else trained now.

    Returns:
        The :class:`~tutorlib.train.LoadOrTrain` record (``.model`` in eval mode, ``.loaded``, ``.metadata``).
    """
    from tutorlib.train import load_or_train

    def train_fn(model: torch.nn.Module) -> TrainHistory:
        return train_mnist_ddpm(recipe, images, labels, schedule, seed=seed, device=device, model=model,
                                progress=progress, desc=f"DDPM, MNIST ({name})")[1]

    model = recipe.build_model(seed=seed).to(device)
    config = mnist_ddpm_config(recipe, schedule.T, seed, images.shape[0])
    return load_or_train(name, train_fn, model=model, config=config, directory=directory)


@torch.no_grad()
def sample_digits(model: torch.nn.Module, labels: Tensor | list[int], *, w: float = 2.0, nfe: int = 20,
                  generator: torch.Generator | None = None, method: str = "euler", zero_star: bool = False,
                  x_0: Tensor | None = None, precision: str | None = None) -> Tensor:
    """Generate one digit per label with classifier-free guidance.

    Args:
        model: a class-conditional image velocity model (``model(x, t, y)``, with ``null_class``).
        labels: the class of each image, int64 ``(B,)`` or a list.
        w: guidance scale (1: conditional model, 0: unconditional; lesson 08).
        nfe: network evaluations: ``nfe`` Euler steps, ``nfe / 2`` midpoint steps, ... (a call on the
            doubled batch of classifier-free guidance counts as one).
        generator: draws the starting noise (ignored when ``x_0`` is given).
        method: a fixed-step :func:`tutorlib.solvers.ode_solve` method.
        zero_star: use CFG-Zero*'s scale (:func:`tutorlib.guidance.cfg_velocity`).
        x_0: starting noise ``(B, 1, 28, 28)`` (default: drawn from ``generator``).
        precision: the network's precision while sampling: ``"float32"``, ``"bfloat16"``, or
            ``"auto"`` (bfloat16 where the hardware is fast at it; :func:`tutorlib.device.fast_sampling_dtype`);
            ``None`` (the default) reads ``TUTORLIB_SAMPLING_PRECISION``, float32 if unset. The state stays float32
            (:func:`tutorlib.solvers.reduced_precision`).

    Returns:
        Images ``(B, 1, 28, 28)`` clamped to ``[-1, 1]``, on the model's device, float32.
    """
    device = next(model.parameters()).device
    y = torch.as_tensor(labels, dtype=torch.long).to(device)  # (B,)
    if x_0 is None:
        x_0 = torch.randn((y.shape[0], 1, 28, 28), generator=generator).to(device)
    velocity = reduced_precision(cfg_velocity(model, y, w, zero_star=zero_star), fast_sampling_dtype(device, precision))
    return ode_solve(velocity, x_0, method=method, steps=steps_for_nfe(method, nfe)).x.clamp(-1.0, 1.0)
