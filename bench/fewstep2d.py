"""Case ``fewstep2d``: few-step generators against reflow and distillation (lesson 07).

On each dataset, all from the same noise and with the same recipe (:func:`bench.common.train_config`):

* ``fm``: flow matching (independent coupling, as ``fm-ind`` in ``fm2d``), Euler at ``NFES``;
* ``meanflow``: a :class:`~tutorlib.fewstep.TwoTimeMLP` trained from scratch by :class:`~tutorlib.fewstep.MeanFlow`,
  sampled in ``K`` jumps (:func:`~tutorlib.fewstep.fewstep_sample`), ``K`` in ``NFES``;
* ``shortcut``: the same network trained by :class:`~tutorlib.fewstep.Shortcut`, ``K`` jumps;
* ``2rf``: reflow on ``fm``'s coupling (:func:`tutorlib.solvers.reflow_coupling`, 100 Euler steps, ``reflow_pairs``
  pairs), initialised from ``fm``, ``steps_2d // 2`` steps, Euler at ``NFES``;
* ``distill``: a one-step generator ``x_0 + v(x_0, 0)`` regressing ``2rf``'s map on its own coupling, initialised
  from ``2rf``, ``steps_2d // 2`` steps (``distill@1`` only).

``metrics[DATASET]["as_flow"]`` holds the energy distance / floor of each two-time model's instantaneous field
``u(x, t, t)`` integrated by 100 Euler steps.
"""

from __future__ import annotations

import dataclasses

import torch

from bench.common import BenchProfile, Run, build, derive_seed, generator, log, timed, train_config
from bench.fm2d import train_fm
from bench.reflow2d import _trainable_copy
from tutorlib.couplings import independent
from tutorlib.data import gaussian, toy_sampler
from tutorlib.fewstep import MeanFlow, Shortcut, TwoTimeMLP, fewstep_sample
from tutorlib.losses import cfm_loss
from tutorlib.metrics import energy_distance
from tutorlib.paths import CondOTPath
from tutorlib.reflow import distill_loss, pair_batches
from tutorlib.solvers import ode_solve, reflow_coupling
from tutorlib.train import train

DATASETS = ("eight_gaussians", "checkerboard")
NFES = (1, 2, 4, 8)
OBJECTIVES = {"meanflow": MeanFlow(), "shortcut": Shortcut()}


def train_two_time(run: Run, dataset: str, name: str, objective) -> torch.nn.Module:
    """Train a TwoTimeMLP on ``dataset`` with ``objective``; record it; return the EMA model."""
    bp, seed, device = run.bp, run.seed, run.device
    model = build(lambda: TwoTimeMLP.from_profile(bp.P), derive_seed(seed, dataset, name, "init"), device)
    gen, draw, B = generator(seed, dataset, name, "batches"), toy_sampler(dataset), bp.P.batch_2d

    def loss(m, step):
        x_1, x_0 = draw(B, generator=gen).to(device), gaussian(B, generator=gen).to(device)
        return objective.loss(m, x_0, x_1, *objective.times(B, generator=gen, device=device))

    hist = train(model, loss, lambda step: step, train_config(bp, f"{dataset} {name}"))
    run.add_training(dataset, name, hist, objective=repr(objective))
    return hist.ema_model


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train flow matching, MeanFlow, shortcut, 2-RF and the distilled model; sample each at few NFE."""
    run = Run("fewstep2d", bp, seed, device, DATASETS)
    path = CondOTPath()
    for dataset in DATASETS:
        ref = run.set_reference(dataset)
        x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
        fm = train_fm(run, dataset, "fm", independent).ema_model
        run.sample_flow(dataset, "fm", fm, x_0, nfes=NFES, dopri5=False)

        floor = run.datasets[dataset].floors["energy"]["mean"]
        as_flow = {}
        for name, objective in OBJECTIVES.items():
            model = train_two_time(run, dataset, name, objective)
            for K in NFES:
                sol, s = timed(lambda: fewstep_sample(model, x_0, steps=K), device)
                run.add_samples(dataset, name, "jumps", sol.nfe, sol.x, s)
            x = ode_solve(model.velocity, x_0, steps=100).x
            as_flow[name] = float(energy_distance(x, ref)) / floor

        noise = gaussian(bp.reflow_pairs, generator=generator(seed, dataset, "2rf", "pairs")).to(device)
        pairs, coupling_s = timed(lambda: reflow_coupling(fm, noise, steps=100), device)
        rf = _trainable_copy(fm)
        batches = pair_batches(pairs, bp.P.batch_2d, generator=generator(seed, dataset, "2rf", "batches"))
        cfg = train_config(bp, f"{dataset} 2rf")
        hist = train(rf, lambda m, b: cfm_loss(m, path, *b), batches, cfg.replace(steps=bp.P.steps_2d // 2))
        run.add_training(dataset, "2rf", hist, coupling_s=coupling_s, init="fm")
        rf = hist.ema_model
        run.sample_flow(dataset, "2rf", rf, x_0, nfes=NFES, dopri5=False)

        noise = gaussian(bp.reflow_pairs, generator=generator(seed, dataset, "distill", "pairs")).to(device)
        pairs, coupling_s = timed(lambda: reflow_coupling(rf, noise, steps=100), device)
        student = _trainable_copy(rf)
        batches = pair_batches(pairs, bp.P.batch_2d, generator=generator(seed, dataset, "distill", "batches"))
        hist = train(student, lambda m, b: distill_loss(m, b[0], b[1]), batches, cfg.replace(steps=bp.P.steps_2d // 2, desc=f"{dataset} distill"))
        run.add_training(dataset, "distill", hist, coupling_s=coupling_s, init="2rf")
        sol, s = timed(lambda: ode_solve(hist.ema_model, x_0, method="euler", steps=1), device)
        run.add_samples(dataset, "distill", "euler", sol.nfe, sol.x, s)

        run.datasets[dataset].extra["as_flow"] = as_flow
        entries = run.datasets[dataset].entries
        log(f"[fewstep2d] {dataset}: energy x floor at 2 NFE " + ", ".join(
            f"{m} {entries[f'{m}@2']['energy_x_floor']:.2f}" for m in ("fm", "meanflow", "shortcut", "2rf")))

    run.config = {"datasets": list(DATASETS), "nfes": list(NFES), "reflow_pairs": bp.reflow_pairs,
                  "objectives": {k: dataclasses.asdict(v) for k, v in OBJECTIVES.items()},
                  "methods": {"fm": "flow matching, Euler", "meanflow": "TwoTimeMLP, MeanFlow, K jumps",
                              "shortcut": "TwoTimeMLP, shortcut self-consistency, K jumps",
                              "2rf": "reflow on fm's coupling, init fm, steps_2d // 2 steps, Euler",
                              "distill": "one step x0 + v(x0, 0) regressing 2rf's map, init 2rf, steps_2d // 2"},
                  "train": dataclasses.asdict(train_config(bp, "fewstep"))}
    return run
