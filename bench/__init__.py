"""Speed and quality benchmarks of the course's methods, and of tutorlib against peer libraries.

Command line (``python -m bench --help``)::

    python -m bench --list
    python -m bench CASE [--profile smoke|standard|full] [--seed N] [--out DIR] [--threads N] [--device D]
    python -m bench report DIR_OR_JSON... [--out bench/RESULTS.md]

A run writes two files into ``DIR`` (default ``bench/out/CASE-PROFILE``, ignored by git):

* ``results.json``: ``schema``, ``case``, ``profile``, ``seed``, ``date`` (UTC), ``device``,
  ``machine`` (platform, CPU, cpu count, torch threads), ``versions`` (python, tutorlib, torch, numpy,
  scipy and any peer library), ``config`` (the sizes and settings used), ``timings`` and ``metrics``;
* ``samples.npz``: the held-out real samples and every generated sample set, ``(n, 2)`` float32.

Cases available now (sizes from :data:`bench.common.BENCH_PROFILES`):

* ``fm2d``: flow matching, independent (``fm-ind``) and minibatch-OT (``fm-ot``) couplings, on
  checkerboard, eight_gaussians, moons and two_spirals; Euler at NFE 1, 2, 4, 8, 16, 32, 100 and dopri5.
* ``ddpm2d``: a DDPM epsilon-model: ``ancestral``, ``ddim`` and the probability-flow ODE ``pf-ode``
  (via :func:`tutorlib.ddpm.ddpm_to_velocity`) at several step counts.
* ``cnf2d``: a small maximum-likelihood CNF (:func:`tutorlib.likelihood.log_prob` with ``enable_grad``);
  samples at each NFE and the held-out negative log-likelihood.
* ``reflow2d``: ``1rf`` (flow matching), ``2rf`` and ``3rf`` trained on couplings from
  :func:`tutorlib.solvers.reflow_coupling`, ``distill@1``, a one-step model regressing the 2-RF
  map x_0 -> x_1, and 2-RF trained with U-shaped times, the pseudo-Huber loss or data-side pairs
  (see :mod:`bench.reflow2d`).
* ``peers2d``: one plain MLP trained and sampled identically by tutorlib, plain PyTorch,
  ``flow_matching`` and ``torchcfm`` (``pip install --no-deps flow_matching torchcfm torchdiffeq``,
  plus POT); time per training step and per 100-step Euler sample (ratios tutorlib / peer, median
  and range over interleaved repeats) and the energy distance each reaches. A peer that cannot be
  imported is reported as skipped, with the reason.
* ``ttq2d``: time to quality: the project's recipe (TimeMLP, warm-up + cosine over the time budget, EMA)
  against facebookresearch/flow_matching's checkerboard example (4 x 512 MLP, batch 4096, Adam 1e-3),
  each trained for the same wall-clock budget with scored snapshots (evaluation time excluded), several
  seeds per dataset; a top-level ``ttq`` record holds the curves and ``ttq_summary`` the time to
  2 x floor and the final ratio (see :mod:`bench.ttq`).

* ``guidance2d``: a class-conditional model trained with label dropout and a noisy classifier on labelled
  2D data; classifier-free guidance (``cfg-wW``), CFG-Zero* (``cfgzero-wW``) and classifier guidance
  (``clf-wW``) swept over the guidance scale ``W`` (``1_5`` for 1.5); each set is stored with its labels
  and scored by class accuracy and within-class spread too (see :mod:`bench.guidance2d`).

* ``discrete2d``: discrete flow matching on tokenised 2D data (see :mod:`bench.discrete2d`).
* ``solvers2d``: one flow-matching field under every ODE solver and tuned time grid, with measured orders
  (see :mod:`bench.solvers2d`); ``fewstep2d``: MeanFlow and shortcut models against flow matching, 2-RF
  and one-step distillation at 1-8 NFE (see :mod:`bench.fewstep2d`).
* ``text``: character-level models of the ``pydoc_data`` texts in held-out bits per character; its
  document holds ``bpc`` entries instead of energy distances (see :mod:`bench.text`).
* ``mnist``: lesson 09's class-conditional recipe (:mod:`tutorlib.recipes`) trained for the profile's
  wall-clock budget and scored by the judge (accuracy, Frechet distance, spread) on the way, then swept
  over NFE and guidance; ``mnist_ttq``: the same budget for the recipe and a baseline U-Net (see
  :mod:`bench.mnist`); ``mnist_5min``: issue 17's five-minute bar for the recipe against the previous recipe
  and the baseline, one seed per run. Their arrays are images ``(n, 1, 28, 28)`` in ``[-1, 1]``.

Naming of sample arrays and JSON keys
-------------------------------------
Each generated set is an *entry* named ``METHOD@NFE``: the method, then the number of network
evaluations, e.g. ``fm-ot@4``, ``2rf@1``, ``ddim@16``, ``distill@1``. Adaptive solves are named
``METHOD@dopri5`` and their actual NFE is in the JSON (``metrics[DATASET]["entries"][ENTRY]["nfe"]``).
The held-out reference is ``data``. A class-conditional set also stores its labels, int64 ``(n,)``, as
``METHOD@NFE:labels`` (named in the entry's ``labels`` field). When a case uses several datasets
(``fm2d``), every array name is prefixed with ``DATASET/`` (``checkerboard/fm-ot@4``,
``checkerboard/data``); the JSON is keyed by dataset in every case::

    metrics[DATASET] = {"n": ..., "noise_floor": {"energy": {"mean", "std", "n", "repeats"}, "mmd": {...}},
                        "entries": {ENTRY: {"array", "method", "solver", "nfe", "energy", "mmd",
                                            "energy_x_floor", "mmd_x_floor"}}}
    timings = {"total_s": ..., "train": {DATASET: {METHOD: {"steps", "steps_per_s", "wall_s", "final_loss",
                                                            "stop_reason"}}},
               "sample_s": {DATASET: {ENTRY: seconds}}}

Energy distance and MMD are tutorlib.metrics' V-statistics against the held-out set, with the
noise floor (:func:`tutorlib.metrics.noise_floor`) at the same ``n``; ``*_x_floor`` is the ratio.
``peers2d`` adds a top-level ``peers`` record (status, versions, per-repeat times and ratios).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CASES", "PLANNED", "Case", "PlannedCaseError", "run"]

ISSUE = "issue 7"


@dataclass(frozen=True)
class Case:
    """A runnable bench case: its name, one-line summary and implementing module."""

    name: str  # the CLI name, e.g. "fm2d"
    summary: str  # one line for --list
    module: str  # module whose run_case(bp, seed, device) returns a filled-in common.Run
    takes_datasets: bool = False  # run_case also takes datasets= (a subset of the case's datasets)


CASES: dict[str, Case] = {c.name: c for c in [
    Case("fm2d", "flow matching, independent vs minibatch-OT coupling, 4 datasets, Euler NFE sweep + dopri5",
         "bench.fm2d"),
    Case("ddpm2d", "DDPM eps-model: ancestral, DDIM and probability-flow ODE vs steps", "bench.ddpm2d"),
    Case("cnf2d", "maximum-likelihood CNF (exact divergence), samples vs NFE and held-out NLL",
         "bench.cnf2d"),
    Case("paths2d", "affine paths side by side, one DDPM network under ancestral/DDIM/PF-ODE/linear-path samplers, "
         "SDE noise levels and stochastic interpolants", "bench.paths2d"),
    Case("couplings2d", "couplings side by side: independent, exact minibatch OT, Sinkhorn and block OT (straightness, "
         "transport cost, cost per training step, Euler NFE sweep + dopri5), and minibatch OT with class labels judged "
         "by the Bayes classifier", "bench.couplings2d"),
    Case("reflow2d", "1-, 2-, 3-rectified flow, a one-step distilled model and reflow's training variants "
         "(U-shaped times, pseudo-Huber, data-side pairs)", "bench.reflow2d"),
    Case("solvers2d", "one flow-matching field under Euler, midpoint, Heun, RK4, dopri5 and tuned time grids: "
         "quality per NFE and measured orders", "bench.solvers2d"),
    Case("fewstep2d", "few-step generators: MeanFlow and shortcut models against flow matching, 2-RF and "
         "distillation at 1-8 NFE", "bench.fewstep2d"),
    Case("peers2d", "tutorlib vs plain PyTorch, flow_matching and torchcfm on one MLP: speed and quality",
         "bench.peers2d"),
    Case("ttq2d", "time to quality: project recipe vs flow_matching's example on equal wall-clock budgets, 4 datasets",
         "bench.ttq", takes_datasets=True),
    Case("ttq2d_worst", "the worst seed of the project's 2D recipe: ttq2d's loop alone, with a noise floor and scores "
         "precise enough to rank ratios below 1.5, 4 datasets x 3 seeds", "bench.ttq_worst", takes_datasets=True),
    Case("guidance2d", "classifier-free guidance, CFG-Zero* and classifier guidance: guidance-scale sweeps on "
         "labelled 2D data", "bench.guidance2d"),
    Case("discrete2d", "discrete flow matching on tokenised 2D data: masked vs uniform source, discrete Euler NFE sweep",
         "bench.discrete2d"),
    Case("text", "character-level text (pydoc_data): bigram, autoregressive transformer and masked/uniform "
         "discrete flows in held-out bits per character", "bench.text"),
    Case("mnist", "class-conditional flow matching on MNIST by lesson 09's recipe: judge accuracy and Frechet "
         "distance over training time, NFE and guidance scale", "bench.mnist"),
    Case("mnist_ttq", "time to quality on MNIST: the recipe's PatchUNet vs a 0.5 M-parameter U-Net baseline on equal "
         "wall-clock budgets", "bench.mnist_ttq"),
    Case("mnist_5min", "MNIST in five minutes: lesson 09's recipe, the previous recipe and the U-Net baseline, each "
         "trained 300 s from one seed (run once per seed; the report takes the median)", "bench.mnist_5min"),
]}

PLANNED: dict[str, str] = {}


class PlannedCaseError(ValueError):
    """A case that is planned but not built yet (or not known at all)."""


def _case(name: str) -> Case:
    if name in CASES:
        return CASES[name]
    if name in PLANNED:
        raise PlannedCaseError(f"bench case {name!r} is planned ({ISSUE}) but not available yet: {PLANNED[name]}. "
                               f"Available cases: {', '.join(CASES)}.")
    raise PlannedCaseError(f"unknown bench case {name!r}; available: {', '.join(CASES)}; "
                           f"planned ({ISSUE}): {', '.join(PLANNED)}.")


def run(case: str, profile: str = "standard", seed: int = 0, out: str | Path | None = None,
        device: Any = None, datasets: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run one case and write ``results.json`` and ``samples.npz`` into ``out``.

    Args:
        case: a key of :data:`CASES`.
        profile: ``smoke``, ``standard`` or ``full``.
        seed: the run's seed (every generator and initialisation derives from it).
        out: output folder (default ``bench/out/CASE-PROFILE`` under the current directory).
        device: a torch device or its name (default: :func:`tutorlib.device.get_device`).
        datasets: run only these datasets (cases with ``takes_datasets``; ``None``: all of them).

    Returns:
        The ``results.json`` document.

    Raises:
        PlannedCaseError: ``case`` is planned or unknown.
    """
    import torch

    from bench.common import bench_profile
    from tutorlib.device import get_device

    spec = _case(case)
    if datasets and not spec.takes_datasets:
        raise ValueError(f"bench case {case!r} does not take a dataset subset")
    bp = bench_profile(profile)
    dev = get_device() if device is None else torch.device(device)
    module = importlib.import_module(spec.module)
    run_obj = module.run_case(bp, seed, dev, datasets) if spec.takes_datasets else module.run_case(bp, seed, dev)
    doc = run_obj.result()
    run_obj.write(Path(out) if out is not None else Path("bench") / "out" / f"{case}-{profile}", doc)
    return doc
