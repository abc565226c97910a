"""One training loop for every lesson, EMA of weights, and verified load-or-train checkpoints.

Every lesson trains through :func:`train`::

    cfg = TrainConfig.from_profile(P)                            # steps and lr from the profile
    hist = train(model, loss_fn, sampler, cfg)                  # loss_fn(model, batch) -> scalar
    samples = sample(hist.ema_model, ...)                        # EMA weights for sampling

and expensive models go through :func:`load_or_train`, which loads a checkpoint whose sha256
checks out and trains (then saves atomically) otherwise (CONTRIBUTING.md, "Checkpoints and downloads").

The loop draws no random numbers itself: randomness lives in the sampler and the loss closure,
which take explicit generators (CONTRIBUTING.md, "Conventions of the library"). The device is the model's.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from tutorlib.checkpoints import (  # re-exported: lessons call tutorlib.train.load_or_train
    LoadOrTrain,
    checkpoint_dirs,
    file_sha256,
    load_checkpoint,
    load_or_train,
    save_checkpoint,
    shipped_checkpoint_dir,
)

__all__ = [
    "EMA",
    "LoadOrTrain",
    "Prefetcher",
    "TrainConfig",
    "TrainHistory",
    "TrainingDiverged",
    "batch_sampler",
    "checkpoint_dirs",
    "file_sha256",
    "load_checkpoint",
    "load_or_train",
    "lr_at",
    "save_checkpoint",
    "shipped_checkpoint_dir",
    "train",
]


DIVERGENCE_FACTOR = 1e3  # a loss this many times its start is a run that diverged


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite, or grew by orders of magnitude; the message names the step."""


# --------------------------------------------------------------------------------------
# EMA
# --------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a model's weights, kept in a frozen copy ``ema.model``.

    After each optimiser step, ``update(model)`` sets, for every floating parameter and buffer,

    ``theta_ema <- d_n theta_ema + (1 - d_n) theta``,  with ``d_n = min(decay, (1 + n) / (10 + n))``

    where ``n`` is the number of updates made so far (the warm-up keeps short runs from being
    dominated by the initial weights; ``warmup=False`` uses ``d_n = decay``). Non-floating
    buffers (e.g. BatchNorm's counter) are copied.

    Args:
        model: the model being trained (copied; never modified by the EMA).
        decay: the asymptotic decay ``d`` in ``[0, 1)``; the average covers about ``1 / (1 - d)`` steps.
        warmup: use the ``(1 + n) / (10 + n)`` warm-up.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    def current_decay(self) -> float:
        """The decay ``d_n`` the next :meth:`update` will use."""
        if not self.warmup:
            return self.decay
        return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after ``optimizer.step()``)."""
        d = self.current_decay()
        ema_state = self.model.state_dict()
        targets, values = [], []
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                targets.append(target)
                values.append(value.detach())
            else:
                target.copy_(value)
        if targets:
            torch._foreach_lerp_(targets, values, 1.0 - d)  # theta_ema += (1 - d) (theta - theta_ema)
        self.num_updates += 1

    def copy_to(self, model: nn.Module) -> None:
        """Overwrite ``model``'s weights with the averaged ones."""
        model.load_state_dict(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Averaged weights plus the update count (for checkpoints)."""
        return {"model": self.model.state_dict(), "num_updates": self.num_updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict`."""
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])


# --------------------------------------------------------------------------------------
# Configuration, history
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of :func:`train`. Build one from a profile, then ``.replace(...)``.

    Training runs for ``steps`` optimiser steps and the learning rate is a function of the step
    alone (see :func:`lr_at`): a linear warm-up over ``warmup_steps`` and then, when
    ``cosine_decay`` is set, a cosine decay to ``lr * min_lr_ratio`` at ``steps``. So one seed and
    one config give one model on every machine, fast or slow (CONTRIBUTING.md, "Reproducible runs").
    ``time_budget_s`` is for time-to-quality benchmarks only: a run it stops early says so in its
    :class:`TrainHistory` (``stop_reason``, ``steps_done``) and is never loaded by :func:`load_or_train`
    as if it were complete.
    """

    steps: int = 1000  # optimiser steps
    lr: float = 1e-3  # peak learning rate of AdamW
    weight_decay: float = 0.0  # AdamW's decoupled weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW's moment decays
    warmup_steps: int = 0  # linear learning-rate warm-up from 0 over this many steps
    cosine_decay: bool = False  # after warm-up, decay the learning rate along a half cosine
    min_lr_ratio: float = 0.0  # final learning rate / lr when cosine_decay is set
    grad_clip: float | None = 1.0  # clip the global gradient norm to this (None: no clipping)
    ema_decay: float | None = 0.999  # EMA decay of the weights (None: no EMA)
    time_budget_s: float | None = None  # benchmarks only: stop after this many seconds (None: run every step)
    compile: bool = False  # wrap the model in torch.compile for the loss (same weights)
    check_every: int = 25  # check the loss for NaN/inf and refresh the progress bar every this many steps
    progress: bool = True  # show a tqdm progress bar
    desc: str = "train"  # progress-bar label

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_profile(cls, P) -> "TrainConfig":
        """The course's 2D recipe under profile ``P``: ``P.steps_2d`` steps.

        AdamW at 3e-3 with a warm-up of ``min(200, steps / 10)`` steps and a cosine decay to 2 %,
        gradient clipping 1, EMA 0.999: the recipe the ``ttq2d`` bench measured best on the 2D toys
        (bench/RESULTS.md). MNIST models train by :class:`tutorlib.recipes.MNISTRecipe` instead.
        """
        return cls(steps=P.steps_2d, lr=3e-3, warmup_steps=min(200, P.steps_2d // 10), cosine_decay=True,
                   min_lr_ratio=0.02, desc="2D")


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate used at optimiser step ``step`` (0-based): a function of the step alone.

    ``lr * (step + 1) / warmup_steps`` during warm-up; then ``lr`` or, with ``cosine_decay``,
    ``lr * (r + (1 - r) * (1 + cos(pi * p)) / 2)`` with ``r = min_lr_ratio`` and ``p`` the fraction of
    post-warm-up steps done (``p = 1`` from step ``steps`` on).
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if not config.cosine_decay:
        return config.lr
    span = max(1, config.steps - config.warmup_steps)
    p = min(1.0, (step - config.warmup_steps) / span)
    r = config.min_lr_ratio
    return config.lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * p)))


@dataclass
class TrainHistory:
    """What :func:`train` returns: the loss curve and the models, for plotting and sampling."""

    steps: list[int]  # optimiser step index (0-based) of each recorded loss
    losses: list[float]  # the loss at each of those steps
    wall_times: list[float]  # seconds since the start of training when each loss was recorded
    lrs: list[float]  # learning rate used at each step
    steps_per_s: float  # optimiser steps per second over the whole run
    total_time_s: float  # wall-clock duration of the run, in seconds
    stop_reason: str  # "steps" (all steps done) or "time_budget" (stopped early by a benchmark's budget)
    steps_requested: int  # the config's number of steps
    model: nn.Module  # the trained model (the same object that was passed in)
    ema: EMA | None  # the weight average, or None when ema_decay was None

    @property
    def ema_model(self) -> nn.Module:
        """The model to sample from: the EMA copy if there is one, else the trained model."""
        return self.ema.model if self.ema is not None else self.model

    @property
    def steps_done(self) -> int:
        """Optimiser steps taken (``steps_requested`` unless a time budget stopped the run)."""
        return len(self.losses)

    @property
    def complete(self) -> bool:
        """Whether every requested step ran (the model is the one its config and seed define)."""
        return self.stop_reason == "steps" and self.steps_done == self.steps_requested

    @property
    def final_loss(self) -> float:
        """Mean of the last 10% of the recorded losses (at least one)."""
        if not self.losses:
            return float("nan")
        k = max(1, len(self.losses) // 10)
        return sum(self.losses[-k:]) / k

    def smoothed(self, window: int = 50) -> list[float]:
        """Running mean of the losses over ``window`` steps (for plots)."""
        out, acc = [], 0.0
        for i, v in enumerate(self.losses):
            acc += v
            if i >= window:
                acc -= self.losses[i - window]
            out.append(acc / min(i + 1, window))
        return out

    def summary(self) -> dict[str, Any]:
        """A small JSON-friendly dict (stored in checkpoints)."""
        return {"steps_done": self.steps_done, "steps_requested": self.steps_requested, "complete": self.complete,
                "final_loss": self.final_loss, "steps_per_s": self.steps_per_s, "total_time_s": self.total_time_s,
                "stop_reason": self.stop_reason}

    def describe(self) -> str:
        """One line for a lesson's output: steps, time, speed, final loss (and an early stop, if any)."""
        text = (f"{self.steps_done} steps in {self.total_time_s:.1f} s ({self.steps_per_s:.1f} steps/s), "
                f"final loss {self.final_loss:.4g}")
        if not self.complete:
            text += (f"; STOPPED EARLY after {self.steps_done} of {self.steps_requested} steps "
                     f"({self.stop_reason}): not the model this config defines")
        return text


# --------------------------------------------------------------------------------------
# Data samplers
# --------------------------------------------------------------------------------------


def batch_sampler(
    *tensors: torch.Tensor, batch_size: int, generator: torch.Generator | None = None
) -> Callable[[int], tuple[torch.Tensor, ...]]:
    """A sampler ``step -> batch`` drawing random minibatches (with replacement across steps).

    Args:
        *tensors: tensors sharing their first dimension ``N`` (e.g. images and labels).
        batch_size: rows per batch.
        generator: CPU generator for the indices (reproducible batches).

    Returns:
        ``sampler(step)`` returning a tuple of tensors ``(batch_size, ...)``, on the tensors' device.
    """
    if not tensors:
        raise ValueError("batch_sampler needs at least one tensor")
    n = tensors[0].shape[0]
    if any(t.shape[0] != n for t in tensors):
        raise ValueError(f"all tensors must share their first dimension, got {[t.shape[0] for t in tensors]}")

    def sampler(step: int) -> tuple[torch.Tensor, ...]:
        idx = torch.randint(n, (batch_size,), generator=generator)  # (batch_size,) on the CPU
        return tuple(t[idx.to(t.device)] for t in tensors)

    return sampler


class Prefetcher:
    """Run a sampler ``step -> batch`` ahead of the training loop in a background thread.

    ``Prefetcher(sampler)`` is itself a sampler: calling it with ``step = 0, 1, 2, ...`` returns
    ``sampler(0), sampler(1), ...`` in that order (the same batches as without it), while a daemon
    thread already computes the next ``depth`` batches. Worth it only when building a batch is
    long, native work that releases the GIL: with the exact minibatch-OT coupling at batch 256
    (SciPy's assignment solver) the 2D training step drops from 3.4 x to 2.3 x the independent
    step on two cores, and with :func:`tutorlib.couplings.block_ot` at batch 4096 from 1.12 x to
    1.03 x (``bench/bench_ot_step.py``). Batches built from many small Python-level operations gain
    nothing (``block_ot`` at batch 256: 1.16 x in line, 1.21 x prefetched): the thread then mostly
    waits for the GIL that the training loop holds.

    On a single core it only reorders the same work; with two busy torch threads in the training step
    it competes with them (set the training to one thread, :func:`tutorlib.device.set_threads`).

    Args:
        sampler: ``step -> batch``; called from the background thread with consecutive steps.
        depth: batches computed ahead (the queue length).
        start: the first step it will be asked for.

    Raises:
        ValueError: called out of order (steps must be consecutive from ``start``).
        RuntimeError: the sampler raised (re-raised in the caller with the original as its cause).
    """

    def __init__(self, sampler: Callable[[int], Any], depth: int = 8, start: int = 0):
        import queue
        import threading

        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._sampler = sampler
        self._queue: "queue.Queue[tuple[int, Any, BaseException | None]]" = queue.Queue(maxsize=depth)
        self._next = start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(start,), daemon=True, name="tutorlib-prefetch")
        self._thread.start()

    def _work(self, step: int) -> None:
        import queue

        while not self._stop.is_set():
            try:
                item = (step, self._sampler(step), None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                item = (step, None, exc)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def __call__(self, step: int) -> Any:
        if step != self._next:
            raise ValueError(f"Prefetcher expects consecutive steps: asked for {step}, next is {self._next}")
        got, batch, exc = self._queue.get()
        if exc is not None:
            self.close()
            raise RuntimeError(f"the prefetched sampler failed at step {got}: {exc}") from exc
        self._next += 1
        return batch

    def close(self) -> None:
        """Stop the background thread (also done when the object is garbage-collected)."""
        self._stop.set()

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)  # absent when __init__ raised
        if stop is not None:
            stop.set()


def _as_batch_fn(sampler: Callable[[int], Any] | Iterable[Any]) -> Callable[[int], Any]:
    """Turn a sampler (callable ``step -> batch``, iterator or re-iterable) into ``step -> batch``."""
    if isinstance(sampler, Iterator):
        return lambda step: next(sampler)
    if callable(sampler):
        return sampler
    if isinstance(sampler, Iterable):
        state = {"it": iter(sampler)}

        def cycle(step: int) -> Any:
            try:
                return next(state["it"])
            except StopIteration:
                state["it"] = iter(sampler)
                return next(state["it"])

        return cycle
    raise TypeError(f"sampler must be a callable step -> batch or an iterable, got {type(sampler).__name__}")


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def train(
    model: nn.Module,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    sampler: Callable[[int], Any] | Iterable[Any],
    config: TrainConfig | None = None,
    *,
    optimizer: torch.optim.Optimizer | None = None,
) -> TrainHistory:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` with AdamW.

    Each step: ``batch = sampler(step)`` (or ``next(sampler)``), ``loss = loss_fn(model, batch)``,
    backward, gradient-norm clipping, optimiser step with the scheduled learning rate, EMA update.
    Runs ``config.steps`` steps (a benchmark's ``config.time_budget_s`` may stop it earlier; the
    history then says so). The model is left in eval mode at the end.

    Args:
        model: any ``nn.Module``; trained in place, on its own device.
        loss_fn: ``(model, batch) -> scalar tensor``. With ``config.compile`` it receives the
            compiled wrapper, which shares the weights.
        sampler: a callable ``step -> batch``, an iterator, or an iterable (cycled), e.g.
            :func:`batch_sampler` or a ``DataLoader``.
        config: hyperparameters; ``None`` means ``TrainConfig.from_profile(profile())``.
        optimizer: use this optimiser instead of a new AdamW (its learning rate is still set
            each step from the schedule).

    Returns:
        A :class:`TrainHistory` with the per-step losses, times, learning rates, steps/s,
        the model and its EMA.

    Raises:
        TrainingDiverged: the loss was NaN or infinite, or its mean over the last ``check_every`` steps
            grew past :data:`DIVERGENCE_FACTOR` times the first step's loss (at least 1e-3); the message names
            the step. It is detected at the next check (every ``config.check_every`` steps, one sync
            each), so a few more steps may have run. Nothing is saved (``load_or_train`` caches
            only runs that finish).
        TypeError, ValueError: ``loss_fn`` returned something that is not a differentiable scalar
            tensor, or the config is malformed (``check_every`` below 1, ...).
    """
    if config is None:
        from tutorlib.device import profile

        config = TrainConfig.from_profile(profile())
    if isinstance(config.steps, bool) or not isinstance(config.steps, int) or config.steps < 0:
        raise ValueError(f"steps must be a whole number >= 0, got {config.steps!r}")
    if isinstance(config.check_every, bool) or not isinstance(config.check_every, int) or config.check_every < 1:
        raise ValueError(f"check_every must be a whole number >= 1 (check the loss every this many steps), "
                         f"got {config.check_every!r}")
    if config.time_budget_s is not None and not config.time_budget_s > 0:
        raise ValueError(f"time_budget_s must be a positive number of seconds or None, got {config.time_budget_s!r}")
    get_batch = _as_batch_fn(sampler)
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer is None:
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    ema = EMA(model, config.ema_decay) if config.ema_decay is not None else None
    net = torch.compile(model) if config.compile else model

    steps: list[int] = []
    losses: list[float] = []
    wall: list[float] = []
    lrs: list[float] = []
    pending: list[torch.Tensor] = []  # detached losses not yet moved to the host
    pending_t: list[float] = []

    def flush() -> None:
        if not pending:
            return
        values = torch.stack(pending).float().tolist()  # one host sync per check
        for v, t in zip(values, pending_t):
            if not math.isfinite(v):
                step = len(losses)
                raise TrainingDiverged(
                    f"training diverged: loss = {v} at step {step} (of {config.steps}); lower the learning "
                    f"rate (now {lrs[step]:.3g}), enable grad_clip, or check the loss and data for NaNs."
                )
            losses.append(v)
            wall.append(t)
        pending.clear()
        pending_t.clear()
        # a loss that grows by orders of magnitude over its start has diverged even if it is still finite
        k = config.check_every
        if len(losses) >= k:
            start_level = max(abs(losses[0]), 1e-3)  # the loss at the initial parameters (NLLs can be negative)
            now = sum(losses[-k:]) / k
            if now > DIVERGENCE_FACTOR * start_level:
                step = len(losses) - 1
                raise TrainingDiverged(
                    f"training diverged: the loss grew from {start_level:.3g} (at the first step) to "
                    f"{now:.3g} (mean of the last {k}, up to step {step} of {config.steps}), more than "
                    f"{DIVERGENCE_FACTOR:g} times its start; lower the learning rate (now {lrs[step]:.3g}) or "
                    "enable grad_clip. Nothing was saved.")

    from tqdm.auto import tqdm

    # TQDM_DISABLE=1 (set by the book build) turns bars off: tqdm's notebook bar ignores that variable itself
    quiet = os.environ.get("TQDM_DISABLE", "").strip().lower() in ("1", "true", "yes")
    bar = tqdm(total=config.steps, desc=config.desc, disable=quiet or not config.progress, leave=True,
               dynamic_ncols=True)
    model.train()
    stop_reason = "steps"
    start = time.perf_counter()
    elapsed, current_lr = 0.0, None
    try:
        for step in range(config.steps):
            if config.time_budget_s is not None and elapsed >= config.time_budget_s:
                stop_reason = "time_budget"
                break
            lr = lr_at(step, config)
            if lr != current_lr:  # a constant schedule touches the optimiser once
                for group in optimizer.param_groups:
                    group["lr"] = lr
                current_lr = lr
            batch = get_batch(step)
            loss = loss_fn(net, batch)
            if not isinstance(loss, torch.Tensor):
                raise TypeError(f"loss_fn must return a scalar torch.Tensor that autograd can differentiate, got "
                                f"{type(loss).__name__} {loss!r}: return the loss tensor itself, not loss.item()")
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a scalar, got shape {tuple(loss.shape)}: reduce it, e.g. "
                                 ".mean()")
            if not loss.requires_grad:
                raise ValueError("loss_fn returned a tensor that does not depend on the model's parameters "
                                 "(requires_grad is False): was it computed under torch.no_grad(), or detached?")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            steps.append(step)
            lrs.append(lr)
            pending.append(loss.detach())
            elapsed = time.perf_counter() - start  # one clock read per step: this step's end, the next one's start
            pending_t.append(elapsed)
            if (step + 1) % config.check_every == 0 or step + 1 == config.steps:
                flush()
                bar.update(len(losses) - bar.n)
                tail = losses[-config.check_every:]
                bar.set_postfix(loss=f"{sum(tail) / len(tail):.4g}", lr=f"{lr:.2g}", refresh=False)
        flush()
    finally:
        bar.close()
        model.eval()
    total = time.perf_counter() - start
    if stop_reason == "time_budget":
        warnings.warn(f"training stopped on its time budget of {config.time_budget_s} s after {len(losses)} of "
                      f"{config.steps} steps: a slower machine stops elsewhere (time budgets are for benchmarks)",
                      stacklevel=2)
    return TrainHistory(
        steps=steps[: len(losses)], losses=losses, wall_times=wall, lrs=lrs[: len(losses)],
        steps_per_s=len(losses) / total if total > 0 else float("nan"), total_time_s=total,
        stop_reason=stop_reason, steps_requested=config.steps, model=model, ema=ema,
    )
