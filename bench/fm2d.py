"""Case ``fm2d``: flow matching with independent and minibatch-OT couplings on four 2D datasets.

For each of :data:`~bench.common.FM_DATASETS`, two :class:`~tutorlib.models.TimeMLP`
velocity models are trained with :func:`tutorlib.losses.cfm_loss` on the linear path
(:class:`~tutorlib.paths.CondOTPath`): ``fm-ind`` pairs noise and data independently
(:func:`tutorlib.couplings.independent`), ``fm-ot`` re-pairs each batch by the exact minibatch OT
assignment (:func:`tutorlib.couplings.minibatch_ot`). Both models (EMA weights) are sampled from
the same noise with Euler at every NFE of the profile and with dopri5 (lessons 03, 05, 07).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bench.common import FM_DATASETS, BenchProfile, Run, build, derive_seed, generator, train_config
from tutorlib.couplings import independent, minibatch_ot
from tutorlib.data import gaussian, toy_sampler
from tutorlib.losses import cfm_loss
from tutorlib.models import TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.train import train

COUPLINGS = {"fm-ind": independent, "fm-ot": minibatch_ot}


def fm_batches(dataset: str, batch: int, coupling, gen: torch.Generator, device: torch.device):
    """``step -> (x_0, x_1, t)``: fresh noise, data and times each step, paired by ``coupling``."""
    draw = toy_sampler(dataset)

    def sampler(step: int):
        x_1 = draw(batch, generator=gen)  # (B, 2)
        x_0 = gaussian(batch, generator=gen)  # (B, 2)
        t = torch.rand(batch, generator=gen)  # (B,)
        x_0, x_1 = coupling(x_0, x_1)
        return x_0.to(device), x_1.to(device), t.to(device)

    return sampler


def train_fm(run: Run, dataset: str, method: str, coupling, tag: Any = None):
    """Train one TimeMLP by CFM on ``dataset`` with ``coupling``; record it; return the history."""
    bp, seed, device = run.bp, run.seed, run.device
    path = CondOTPath()
    model = build(lambda: TimeMLP.from_profile(bp.P), derive_seed(seed, dataset, method, tag, "init"), device)
    batches = fm_batches(dataset, bp.P.batch_2d, coupling, generator(seed, dataset, method, tag, "batches"), device)
    hist = train(model, lambda m, b: cfm_loss(m, path, *b), batches, train_config(bp, f"{dataset} {method}"))
    run.add_training(dataset, method, hist)
    return hist


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train and sample both couplings on every dataset; returns the run and its config."""
    run = Run("fm2d", bp, seed, device, FM_DATASETS)
    for dataset in FM_DATASETS:
        run.set_reference(dataset)
        x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
        for method, coupling in COUPLINGS.items():
            hist = train_fm(run, dataset, method, coupling)
            run.sample_flow(dataset, method, hist.ema_model, x_0)
    run.config = {"datasets": list(FM_DATASETS), "methods": {"fm-ind": "independent coupling", "fm-ot": "minibatch OT"},
              "path": "CondOTPath", "model": "TimeMLP.from_profile(P)", "sampling": "EMA weights; Euler at nfes, dopri5 "
              "(atol = rtol = 1e-5)", "train": dataclasses.asdict(train_config(bp, "fm"))}
    return run
