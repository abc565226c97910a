"""Case ``reflow2d``: rectified flow, reflow and one-step distillation (lesson 06).

* ``1rf``: flow matching with the independent coupling (as ``fm-ind`` in ``fm2d``).
* ``2rf``: trained on the coupling ``(x_0, 1rf(x_0))`` from :func:`tutorlib.solvers.reflow_coupling`
  (``reflow_pairs`` pairs, 100 Euler steps), initialised from 1-RF's weights, as Liu et al. do.
* ``3rf``: the same again from 2-RF's coupling.
* ``distill@1``: a one-step generator x_1 = x_0 + v(x_0, 0) trained, from 2-RF's weights, to regress
  the 2-RF map x_0 -> x_1 on 2-RF's coupling (mean squared error).

Each flow is sampled with Euler at every NFE and dopri5; ``metrics[DATASET]["straightness"]`` holds
:func:`tutorlib.metrics.straightness` of each flow's 100-step Euler paths.
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from bench.common import BenchProfile, Run, generator, log, timed, train_config
from bench.fm2d import train_fm
from tutorlib.couplings import Coupling, independent
from tutorlib.data import gaussian
from tutorlib.losses import cfm_loss
from tutorlib.metrics import straightness
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve, reflow_coupling
from tutorlib.train import batch_sampler, train

DATASETS = ("eight_gaussians",)
COUPLING_STEPS = 100  # Euler steps used to generate each reflow coupling


def _trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh trainable copy of (EMA) weights, to initialise the next round."""
    return copy.deepcopy(model).requires_grad_(True).train()


def _pair_batches(pairs: Coupling, batch: int, gen: torch.Generator, device: torch.device, with_t: bool):
    """``step -> (x_0, x_1[, t])``: random rows of a fixed coupling (and fresh times)."""
    pick = batch_sampler(pairs.x_0, pairs.x_1, batch_size=batch, generator=gen)

    def sampler(step: int):
        x_0, x_1 = pick(step)
        if not with_t:
            return x_0, x_1
        return x_0, x_1, torch.rand(batch, generator=gen).to(device)

    return sampler


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train 1-, 2-, 3-RF and the distilled one-step model; sample and score each."""
    (dataset,) = DATASETS
    run = Run("reflow2d", bp, seed, device, DATASETS)
    run.set_reference(dataset)
    B, path = bp.P.batch_2d, CondOTPath()
    x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    flows = {"1rf": train_fm(run, dataset, "1rf", independent).ema_model}
    run.sample_flow(dataset, "1rf", flows["1rf"], x_0)

    couplings = {}
    for k in (2, 3):
        prev, name = flows[f"{k - 1}rf"], f"{k}rf"
        noise = gaussian(bp.reflow_pairs, generator=generator(seed, dataset, name, "pairs")).to(device)
        pairs, coupling_s = timed(lambda: reflow_coupling(prev, noise, steps=COUPLING_STEPS), device)
        couplings[f"{k - 1}rf"] = pairs
        log(f"[reflow2d] {dataset}: {len(noise)} pairs from {k - 1}-RF in {coupling_s:.1f} s")
        model = _trainable_copy(prev)
        batches = _pair_batches(pairs, B, generator(seed, dataset, name, "batches"), device, with_t=True)
        hist = train(model, lambda m, b: cfm_loss(m, path, *b), batches, train_config(bp, f"{dataset} {name}"))
        run.add_training(dataset, name, hist, coupling_s=coupling_s, init=f"{k - 1}rf")
        flows[name] = hist.ema_model
        run.sample_flow(dataset, name, flows[name], x_0)

    # One-step distillation of the 2-RF map (its coupling is the one 3-RF trained on).
    pairs = couplings["2rf"]
    model = _trainable_copy(flows["2rf"])
    batches = _pair_batches(pairs, B, generator(seed, dataset, "distill", "batches"), device, with_t=False)

    def distill_loss(m, b):
        x0, x1 = b
        t0 = torch.zeros(x0.shape[0], device=x0.device)  # (B,)
        return (x0 + m(x0, t0) - x1).square().mean()

    hist = train(model, distill_loss, batches, train_config(bp, f"{dataset} distill"))
    run.add_training(dataset, "distill", hist, init="2rf")
    sol, s = timed(lambda: ode_solve(hist.ema_model, x_0, method="euler", steps=1), device)
    run.add_samples(dataset, "distill", "euler", sol.nfe, sol.x, s)

    straight = {}
    for name, v in flows.items():
        sol = ode_solve(v, x_0, method="euler", steps=100, return_trajectory=True)
        straight[name] = float(straightness(sol.trajectory, sol.times))
    run.datasets[dataset].extra["straightness"] = straight
    log(f"[reflow2d] {dataset}: straightness " + ", ".join(f"{k} {v:.4f}" for k, v in straight.items()))

    run.config = {"datasets": list(DATASETS), "reflow_pairs": bp.reflow_pairs, "coupling_steps": COUPLING_STEPS,
                  "methods": {"1rf": "flow matching, independent coupling", "2rf": "reflow on 1rf's coupling, "
                              "init 1rf", "3rf": "reflow on 2rf's coupling, init 2rf", "distill": "one step "
                              "x0 + v(x0, 0) regressing 2rf's map, init 2rf"},
                  "train": dataclasses.asdict(train_config(bp, "reflow"))}
    return run
