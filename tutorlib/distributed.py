"""Training past one machine: the MNIST recipe under ``torchrun`` with DistributedDataParallel (appendix A).

One process per device (``torchrun --nproc_per_node=N``; NCCL between GPUs, gloo between CPU
processes); each process holds a full copy of the model and trains on its share of every global
batch, and DistributedDataParallel averages the gradients across processes during ``backward``, so
every process applies the same update and all copies stay identical::

    torchrun --nproc_per_node=2 scripts/train_mnist_ddp.py --profile smoke --out runs/ddp

What changes against one process (and what does not):

* **The global batch** is what the recipe says (``recipe.batch``); each of the ``W`` processes draws
  its ``1 / W`` share. :class:`GlobalBatches` draws the whole global batch from a generator seeded by
  ``(seed, step)`` and hands each rank its rows, so the data of a step does not depend on the number
  of processes: W processes train the same model as one process would on the same global batch (up to
  the order of floating-point sums), and a run restarted at step ``k`` sees exactly the batches an
  uninterrupted run would.
* **The learning rate** follows the same step schedule; with a larger global batch one would scale it
  (the recipe is tuned for its batch, so it is left alone here).
* **EMA, logging, evaluation and checkpoints**: the EMA is updated identically on every rank; only
  rank 0 prints, evaluates and writes checkpoints (atomically, sha256-verified, like every checkpoint
  of the course: :func:`tutorlib.checkpoints.save_state`), the other ranks wait at a barrier.
* **Failure and resume**: when a process dies, ``torchrun`` stops the others and exits non-zero;
  running the same command again with ``--resume`` loads the last checkpoint (weights, EMA, optimiser
  state, step) on every rank and continues.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from tutorlib.checkpoints import load_state, save_state
from tutorlib.guidance import drop_labels
from tutorlib.recipes import MNISTRecipe, mnist_fm_loss, sample_times
from tutorlib.train import EMA, lr_at

__all__ = ["DistributedRun", "GlobalBatches", "init_distributed", "train_distributed"]


@dataclass(frozen=True)
class DistributedRun:
    """Where this process stands in the job."""

    rank: int  # 0 .. world - 1
    world: int  # number of processes
    local_rank: int  # index of this process on its machine (its GPU)
    device: torch.device  # the device this process trains on
    backend: str | None  # "nccl", "gloo", or None when the job is a single process without torchrun

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, evaluates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.backend is not None:
            dist.barrier()


def init_distributed(device: str | None = None) -> DistributedRun:
    """Join the job ``torchrun`` started (its ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or run alone.

    NCCL when CUDA is available (one GPU per process, ``cuda:LOCAL_RANK``), gloo otherwise (CPU
    processes). Without ``torchrun`` (no ``WORLD_SIZE``) this is a single process and nothing is
    initialised.

    Args:
        device: force ``"cpu"`` (gloo) even where CUDA is available.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dev = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if world == 1 and "MASTER_ADDR" not in os.environ:
        return DistributedRun(rank=0, world=1, local_rank=0, device=dev, backend=None)
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistributedRun(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local_rank, device=dev,
                          backend=backend)


def _step_seed(seed: int, step: int) -> int:
    return zlib.crc32(f"{seed}:{step}".encode())


class GlobalBatches:
    """Each rank's share of the global batch of a step, the same whatever the number of processes.

    For step ``k`` the global batch (image indices, noise, times, dropped labels) is drawn from a
    generator seeded by ``(seed, k)``; rank ``r`` of ``W`` takes rows ``r B/W .. (r+1) B/W``. So the
    data depends on the step alone: a restarted run continues with the batches an uninterrupted run
    would have seen, and one process with the whole batch sees what ``W`` processes see together.

    Args:
        images: training images ``(N, 1, 28, 28)`` in ``[-1, 1]`` (on the CPU).
        labels: int64 ``(N,)``.
        recipe: batch size (global), label dropout and time sampling.
        seed: the run's seed.
        rank, world: this process and the number of processes; ``recipe.batch`` must divide by ``world``.
        device: where the shard goes.
        null_class: the model's null label.
    """

    def __init__(self, images: Tensor, labels: Tensor, recipe: MNISTRecipe, *, seed: int, rank: int = 0,
                 world: int = 1, device: torch.device | str = "cpu", null_class: int = 10):
        if recipe.batch % world:
            raise ValueError(f"the global batch {recipe.batch} must divide by the number of processes {world}: "
                             f"choose a batch that is a multiple of {world}")
        if images.dim() != 4 or labels.shape != (images.shape[0],):
            raise ValueError(f"images must be (N, 1, 28, 28) and labels (N,), got {tuple(images.shape)}, "
                             f"{tuple(labels.shape)}")
        self.images, self.labels, self.recipe = images, labels, recipe
        self.seed, self.rank, self.world, self.device, self.null_class = seed, rank, world, device, null_class
        self.shard = recipe.batch // world

    def __call__(self, step: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        g = torch.Generator().manual_seed(_step_seed(self.seed, step))
        B = self.recipe.batch
        idx = torch.randint(self.images.shape[0], (B,), generator=g)  # (B,) the global batch
        y = drop_labels(self.labels[idx], self.recipe.p_uncond, self.null_class, generator=g)  # (B,)
        x_0 = torch.randn((B, *self.images.shape[1:]), generator=g)  # (B, 1, 28, 28)
        t = sample_times(B, self.recipe.time_sampling, generator=g)  # (B,)
        rows = slice(self.rank * self.shard, (self.rank + 1) * self.shard)
        x_1 = self.images[idx[rows]]
        return (x_0[rows].to(self.device), x_1.to(self.device), t[rows].to(self.device), y[rows].to(self.device))


def train_distributed(recipe: MNISTRecipe, images: Tensor, labels: Tensor, run: DistributedRun, *, out: str | Path,
                      seed: int = 0, checkpoint_every: int = 100, resume: bool = False, log_every: int = 50,
                      on_step: Callable[[int], None] | None = None) -> tuple[nn.Module, nn.Module, dict]:
    """Train the MNIST recipe on every process of ``run``; rank 0 checkpoints to ``out/state.pt``.

    Args:
        recipe: the run's settings (``recipe.steps`` steps on global batches of ``recipe.batch``).
        images, labels: the training set (every rank holds it; each draws its share of a batch).
        run: from :func:`init_distributed`.
        out: the folder of the checkpoint ``state.pt`` (+ ``state.sha256``) and the final ``model.pt``.
        seed: seeds the initialisation and, with the step, every batch.
        checkpoint_every: steps between checkpoints (rank 0 writes, every rank waits).
        resume: continue from ``out/state.pt`` if it exists and verifies.
        log_every: steps between rank 0's log lines.
        on_step: called with the step index after each step (tests use it to stop a rank on purpose).

    Returns:
        ``(model, ema_model, summary)``: the trained weights and their EMA (identical on every rank),
        and ``{"steps", "resumed_from", "seconds", "final_loss", "world"}``.
    """
    out = Path(out)
    state_path = out / "state.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = recipe.build_model()
    model = model.to(run.device)
    ema = EMA(model, recipe.ema_decay)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr)
    start_step = 0
    if resume and state_path.is_file():
        state = load_state(state_path)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
    net = model
    if run.backend is not None:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    batches = GlobalBatches(images, labels, recipe, seed=seed + 1, rank=run.rank, world=run.world, device=run.device,
                            null_class=model.null_class)
    cfg = recipe.train_config(progress=False)
    start, loss = time.perf_counter(), None
    model.train()
    for step in range(start_step, recipe.steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        loss = mnist_fm_loss(net, batches(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients of all ranks here
        if recipe.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        optimizer.step()
        ema.update(model)
        done = step + 1
        if on_step is not None:
            on_step(step)
        if run.is_main and (done % log_every == 0 or done == recipe.steps):
            print(f"[rank 0 of {run.world}] step {done}/{recipe.steps} loss {float(loss.detach()):.4f} "
                  f"({time.perf_counter() - start:.1f} s)", flush=True)
        if done % checkpoint_every == 0 or done == recipe.steps:
            if run.is_main:
                save_state(state_path, {"model": model.state_dict(), "ema": ema.state_dict(),
                                        "optimizer": optimizer.state_dict(), "step": done,
                                        "world": run.world, "recipe": dataclasses.asdict(recipe)})
            run.barrier()  # nobody runs ahead of the last checkpoint
    model.eval()
    summary = {"steps": recipe.steps, "resumed_from": start_step, "seconds": time.perf_counter() - start,
               "final_loss": float(loss.detach()) if loss is not None else None, "world": run.world}
    return model, ema.model, summary
