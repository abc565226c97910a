"""The course's generators on MNIST, trained and sampled alike, for a side-by-side table (appendix A).

Lessons 01-09 each taught one way to generate, mostly on 2D toys; appendix A puts them on one image
problem with one network (:class:`~tutorlib.models.PatchUNet`), one judge and one table of quality
against the number of network evaluations (NFE). Flow matching (lesson 09's recipe) and DDPM (lesson
01's) are trained by :mod:`tutorlib.recipes`; this module adds what the others need at image scale:

* :func:`teacher_pairs`: the deterministic coupling of a guided flow-matching teacher, ``(x_0, y) ->
  x_1``, the data of reflow and distillation (lesson 06);
* :func:`train_reflow` (2-rectified flow: flow matching on those pairs, started from the teacher's
  weights, as *Flow Straight and Fast* does) and :func:`train_distilled` (the one-step generator
  ``x_0 + v(x_0, 0, y)``, started from the 2-RF weights);
* :func:`train_shortcut`: a shortcut model (*One Step Diffusion via Shortcut Models*, lesson 07's best
  few-step model) fine-tuned from the teacher as a :class:`~tutorlib.fewstep.TwoTimePatchUNet`;
* :func:`ot_fm_batches`: flow-matching batches whose noise is paired with the digits by minibatch OT
  *within each class* (lesson 05: plain minibatch OT skews a conditional model's prior);
* samplers with a common signature ``(labels, nfe, x_0) -> images`` and :class:`ScaleConfig`, the
  appendix's sizes per profile.

Images are ``(B, 1, 28, 28)`` in ``[-1, 1]``; labels int64 ``(B,)``; the null class is 10.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from tutorlib.couplings import class_ot_assignment
from tutorlib.ddpm import DDPMSchedule, ddim_sample
from tutorlib.device import Profile
from tutorlib.fewstep import Shortcut, TwoTimePatchUNet, fewstep_sample
from tutorlib.guidance import drop_labels
from tutorlib.paths import CondOTPath
from tutorlib.recipes import MNISTRecipe, sample_digits, sample_times
from tutorlib.reflow import distill_loss, reflow_loss
from tutorlib.train import TrainConfig, TrainHistory, train

__all__ = ["ScaleConfig", "cfg_average_velocity", "ot_fm_batches", "sample_ddpm", "sample_flow", "sample_shortcut",
           "teacher_pairs", "train_distilled", "train_reflow", "train_shortcut", "train_small_fm"]

_PATH = CondOTPath()
Pairs = tuple[Tensor, Tensor, Tensor]  # (x_0, x_1, y)


@dataclass(frozen=True)
class ScaleConfig:
    """Appendix A's sizes: how the models beyond lesson 09's are trained and how all are scored.

    ``from_profile(P)`` gives one entry per profile. The fine-tuned models (2-RF, distilled,
    shortcut) start from the profile's flow-matching model; the two small models (FM and OT-FM) are
    trained from scratch side by side at ``small_channels``.
    """

    pairs: int  # noise-label pairs the guided teacher maps to digits (reflow and distillation data)
    pair_nfe: int  # the teacher's Euler steps per pair
    batch: int  # digits per fine-tuning step
    reflow_steps: int  # optimiser steps of 2-RF (from the teacher's weights)
    distill_steps: int  # optimiser steps of the one-step student (from 2-RF's weights)
    shortcut_steps: int  # optimiser steps of the shortcut model (from the teacher's weights)
    lr: float  # peak AdamW learning rate of the fine-tuning runs
    warmup_steps: int  # linear warm-up of the fine-tuning runs
    ema_decay: float  # EMA of the fine-tuning runs (short runs: a short memory)
    small_channels: int  # width of the FM / OT-FM pair trained from scratch
    small_steps: int  # their optimiser steps
    small_batch: int  # their batch
    n_eval: int  # generated digits behind every score (balanced over the ten classes)
    nfes: tuple[int, ...]  # the NFE budgets of the table

    @classmethod
    def from_profile(cls, P: Profile) -> "ScaleConfig":
        """The sizes of profile ``P`` (``smoke``: seconds; ``standard``: a CPU, minutes; ``full``: one GPU)."""
        table = {
            "smoke": cls(pairs=40, pair_nfe=4, batch=16, reflow_steps=8, distill_steps=8, shortcut_steps=8, lr=5e-4,
                         warmup_steps=2, ema_decay=0.9, small_channels=8, small_steps=30, small_batch=32, n_eval=40,
                         nfes=(1, 2, 4)),
            "standard": cls(pairs=2048, pair_nfe=20, batch=64, reflow_steps=400, distill_steps=300,
                            shortcut_steps=400, lr=5e-4, warmup_steps=20, ema_decay=0.99, small_channels=16,
                            small_steps=600, small_batch=64, n_eval=500, nfes=(1, 2, 4, 20)),
            "full": cls(pairs=50_000, pair_nfe=40, batch=256, reflow_steps=10_000, distill_steps=5_000,
                        shortcut_steps=10_000, lr=3e-4, warmup_steps=200, ema_decay=0.999, small_channels=64,
                        small_steps=20_000, small_batch=256, n_eval=10_000, nfes=(1, 2, 4, 8, 20, 50)),
        }
        if P.name not in table:
            raise ValueError(f"no appendix A sizes for profile {P.name!r}; choose one of {sorted(table)}")
        return table[P.name]

    def replace(self, **changes: Any) -> "ScaleConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def training_fields(self) -> dict[str, Any]:
        """The fields that decide the fine-tuned models (what their checkpoints are stored under): not the
        scoring sizes ``n_eval`` and ``nfes``, which change no weights."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in ("n_eval", "nfes")}

    def train_config(self, steps: int, desc: str, *, progress: bool = False) -> TrainConfig:
        """The :class:`~tutorlib.train.TrainConfig` of a fine-tuning run of ``steps`` steps (cosine decay)."""
        return TrainConfig(steps=steps, lr=self.lr, warmup_steps=min(self.warmup_steps, max(1, steps // 10)),
                           cosine_decay=True, min_lr_ratio=0.05, grad_clip=1.0, ema_decay=self.ema_decay,
                           progress=progress, desc=desc)


def _check_images(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"{name} must be images of shape (B, 1, 28, 28), got {getattr(x, 'shape', type(x).__name__)}")


def _check_pairs(pairs: Pairs) -> None:
    if not isinstance(pairs, tuple) or len(pairs) != 3:
        raise ValueError("pairs must be the (x_0, x_1, y) tuple that teacher_pairs returns")
    x_0, x_1, y = pairs
    _check_images(x_0, "x_0")
    if x_1.shape != x_0.shape or y.shape != (x_0.shape[0],) or y.dtype != torch.long:
        raise ValueError(f"pairs must be (x_0, x_1, y) of shapes (N, 1, 28, 28) twice and (N,) int64, got "
                         f"{tuple(x_0.shape)}, {tuple(x_1.shape)}, {tuple(y.shape)} {y.dtype}")


@torch.no_grad()
def teacher_pairs(teacher: nn.Module, n: int, *, w: float, nfe: int, generator: torch.Generator,
                  chunk: int = 256) -> Pairs:
    """The guided teacher's deterministic coupling: ``n`` noise images, balanced labels, and the digits it draws.

    Labels cycle through ``0..9`` (``n // 10`` of each, the rest from the start); the noise comes from
    ``generator``; each chunk is one :func:`tutorlib.recipes.sample_digits` call (Euler, classifier-free
    guidance ``w``, ``nfe`` steps). 2-RF learns the guided map, so it samples at ``w = 1`` (no
    guidance, one network call per step).

    Returns:
        ``(x_0, x_1, y)``: ``(n, 1, 28, 28)`` twice (on the teacher's device) and int64 ``(n,)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive whole number of pairs, got {n!r}")
    device = next(teacher.parameters()).device
    y = torch.arange(n) % 10  # (n,)
    x_0 = torch.randn((n, 1, 28, 28), generator=generator)  # (n, 1, 28, 28)
    x_1 = torch.cat([sample_digits(teacher, y[i:i + chunk], w=w, nfe=nfe, x_0=x_0[i:i + chunk].to(device))
                     for i in range(0, n, chunk)])
    return x_0.to(device), x_1, y.to(device)


def _pair_sampler(pairs: Pairs, batch: int, generator: torch.Generator) -> Callable[[int], Pairs]:
    x_0, x_1, y = pairs

    def sampler(step: int) -> Pairs:
        idx = torch.randint(x_0.shape[0], (batch,), generator=generator).to(x_0.device)  # (batch,)
        return x_0[idx], x_1[idx], y[idx]

    return sampler


def train_reflow(teacher: nn.Module, pairs: Pairs, cfg: ScaleConfig, *, seed: int = 0,
                 progress: bool = False) -> tuple[nn.Module, TrainHistory]:
    """2-rectified flow on images: flow matching on the teacher's pairs, started from the teacher's weights.

    Each step draws ``cfg.batch`` pairs (with replacement) and uniform times from a generator seeded by
    ``seed``, and minimises :func:`tutorlib.reflow.reflow_loss` of ``v(x_t, t, y)`` on the linear path.
    The teacher is copied, never changed.

    Returns:
        ``(model, history)``: the EMA weights (eval mode) and the history.
    """
    _check_pairs(pairs)
    net = copy.deepcopy(teacher).train()
    gen = torch.Generator().manual_seed(seed)
    draw = _pair_sampler(pairs, cfg.batch, gen)

    def sampler(step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        x_0, x_1, y = draw(step)
        return x_0, x_1, y, torch.rand(cfg.batch, generator=gen).to(x_0.device)

    def loss_fn(m: nn.Module, batch) -> Tensor:
        x_0, x_1, y, t = batch
        return reflow_loss(lambda x, tt: m(x, tt, y), _PATH, x_0, x_1, t)

    hist = train(net, loss_fn, sampler, cfg.train_config(cfg.reflow_steps, "2-RF", progress=progress))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    return net.eval(), hist


def train_distilled(init: nn.Module, pairs: Pairs, cfg: ScaleConfig, *, seed: int = 0,
                    progress: bool = False) -> tuple[nn.Module, TrainHistory]:
    """A one-step generator ``x_0 + v(x_0, 0, y)`` regressed on the pairs (:func:`tutorlib.reflow.distill_loss`).

    Starts from a copy of ``init`` (2-RF: its one Euler step is already close to its pairs' map).

    Returns:
        ``(model, history)``: the EMA weights (eval mode) and the history.
    """
    _check_pairs(pairs)
    net = copy.deepcopy(init).train()
    draw = _pair_sampler(pairs, cfg.batch, torch.Generator().manual_seed(seed))

    def loss_fn(m: nn.Module, batch: Pairs) -> Tensor:
        x_0, x_1, y = batch
        return distill_loss(lambda x, tt: m(x, tt, y), x_0, x_1)

    hist = train(net, loss_fn, draw, cfg.train_config(cfg.distill_steps, "distilled", progress=progress))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    return net.eval(), hist


def train_shortcut(teacher: nn.Module, images: Tensor, labels: Tensor, cfg: ScaleConfig, *,
                   objective: Shortcut = Shortcut(), p_uncond: float = 0.1, seed: int = 0,
                   progress: bool = False) -> tuple[TwoTimePatchUNet, TrainHistory]:
    """A shortcut model fine-tuned from a flow-matching ``PatchUNet`` on real digits (lesson 07's objective).

    :meth:`TwoTimePatchUNet.from_flow` starts it as the teacher's velocity for every step size; each
    step draws ``cfg.batch`` digits, noise, the objective's ``(s, t)`` and label dropout (``p_uncond``,
    so classifier-free guidance still works) from one generator seeded by ``seed``.

    Returns:
        ``(model, history)``: the EMA weights (eval mode) and the history.
    """
    _check_images(images, "images")
    net = TwoTimePatchUNet.from_flow(teacher).train()
    device = next(net.parameters()).device
    gen = torch.Generator().manual_seed(seed)

    def sampler(step: int):
        idx = torch.randint(images.shape[0], (cfg.batch,), generator=gen)
        x_1 = images[idx]
        y = drop_labels(labels[idx], p_uncond, net.null_class, generator=gen)
        x_0 = torch.randn(x_1.shape, generator=gen)
        s, t = objective.times(cfg.batch, generator=gen)
        return tuple(v.to(device) for v in (x_0, x_1, s, t, y))

    def loss_fn(m: nn.Module, batch) -> Tensor:
        x_0, x_1, s, t, y = batch
        return objective.loss(m, x_0, x_1, s, t, y=y)

    hist = train(net, loss_fn, sampler, cfg.train_config(cfg.shortcut_steps, "shortcut", progress=progress))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    return net.eval(), hist


def ot_fm_batches(images: Tensor, labels: Tensor, recipe: MNISTRecipe, *, generator: torch.Generator,
                  device: torch.device | str = "cpu", null_class: int = 10) -> Callable[[int], tuple]:
    """Flow-matching batches ``step -> (x_0, x_1, t, y)`` with noise paired to digits by OT within each class.

    As :func:`tutorlib.recipes.mnist_fm_batches` (the same draws in the same order: digits, label
    dropout, noise, times), then :func:`tutorlib.couplings.class_ot_assignment` re-pairs each class's
    noise with its digits by an exact minimal-cost assignment on the true labels; a dropped label
    still marks a digit of that class, so the pairing is the same whether or not it was dropped.
    """
    _check_images(images, "images")
    n, B = images.shape[0], recipe.batch

    def sampler(step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        idx = torch.randint(n, (B,), generator=generator)
        x_1, y_true = images[idx], labels[idx]
        y = drop_labels(y_true, recipe.p_uncond, null_class, generator=generator)
        x_0 = torch.randn(x_1.shape, generator=generator)
        t = sample_times(B, recipe.time_sampling, generator=generator)
        x_1 = x_1[class_ot_assignment(x_0, x_1, y_true)]  # keeps every row's class, so y still fits
        return x_0.to(device), x_1.to(device), t.to(device), y.to(device)

    return sampler


def train_small_fm(images: Tensor, labels: Tensor, recipe: MNISTRecipe, *, ot: bool, seed: int = 0,
                   device: torch.device | str = "cpu", progress: bool = False) -> tuple[nn.Module, TrainHistory]:
    """Flow matching from scratch by ``recipe``, with independent pairs (``ot=False``) or class-wise OT pairs.

    Both use the same seeded initialisation and the same generator seed for their batches, so the
    pairing is the only difference.

    Returns:
        ``(model, history)``: the EMA weights (eval mode, NCHW) and the history.
    """
    from tutorlib.recipes import mnist_fm_batches, mnist_fm_loss

    net = recipe.build_model(seed=seed).to(device)
    gen = torch.Generator().manual_seed(seed + 1)
    make = ot_fm_batches if ot else mnist_fm_batches
    batches = make(images, labels, recipe.replace(channels_last=False), generator=gen, device=device,
                   null_class=net.null_class)

    hist = train(net, mnist_fm_loss, batches, recipe.train_config(progress=progress, desc="OT-FM" if ot else "FM"))
    if hist.ema is not None:
        hist.ema.copy_to(net)
    return net.eval(), hist


# --------------------------------------------------------------------------------------
# Samplers: (labels, nfe, x_0) -> images in [-1, 1]
# --------------------------------------------------------------------------------------


def sample_flow(model: nn.Module, labels: Tensor, nfe: int, x_0: Tensor, *, w: float = 1.0) -> Tensor:
    """Euler steps of a class-conditional velocity model, guided by ``w`` (``w = 1``: the conditional model)."""
    _check_images(x_0, "x_0")
    return sample_digits(model, labels, w=w, nfe=nfe, x_0=x_0)


@torch.no_grad()
def sample_ddpm(eps_model: nn.Module, schedule: DDPMSchedule, labels: Tensor, nfe: int, x_0: Tensor) -> Tensor:
    """DDIM (``eta = 0``) with ``nfe`` steps of a label-conditional epsilon model (lesson 01)."""
    _check_images(x_0, "x_0")
    y = torch.as_tensor(labels, dtype=torch.long).to(x_0.device)
    return ddim_sample(lambda x, t: eps_model(x, t, y), x_0, schedule, steps=nfe).x.clamp(-1.0, 1.0)


def cfg_average_velocity(model: TwoTimePatchUNet, labels: Tensor, w: float) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """Classifier-free guidance of an average velocity: ``u(., null) + w (u(., y) - u(., null))``.

    The conditional and unconditional rows go through the network as one doubled batch (one NFE), as
    :func:`tutorlib.guidance.cfg_velocity` does for a velocity; ``w = 1`` skips the null rows.
    """
    y = torch.as_tensor(labels, dtype=torch.long)
    if w == 1.0:
        return lambda x, s, t: model(x, s, t, y.to(x.device))
    null = torch.full_like(y, model.null_class)

    def u(x: Tensor, s: Tensor, t: Tensor) -> Tensor:
        both = model(torch.cat([x, x]), torch.cat([s, s]), torch.cat([t, t]), torch.cat([y, null]).to(x.device))
        cond, uncond = both.chunk(2)
        return uncond + w * (cond - uncond)

    return u


@torch.no_grad()
def sample_shortcut(model: TwoTimePatchUNet, labels: Tensor, nfe: int, x_0: Tensor, *, w: float = 1.0) -> Tensor:
    """``nfe`` equal jumps of a (guided) shortcut model from noise ``x_0`` (:func:`tutorlib.fewstep.fewstep_sample`)."""
    _check_images(x_0, "x_0")
    return fewstep_sample(cfg_average_velocity(model, labels, w), x_0, steps=nfe).x.clamp(-1.0, 1.0)

