"""Case ``cnf2d``: a small continuous normalising flow trained by maximum likelihood (lesson 02).

A :class:`~tutorlib.models.TimeMLP` velocity field (``cnf_hidden`` x ``cnf_depth``) is trained on
``-log p(x)`` from :func:`tutorlib.likelihood.log_prob` with ``enable_grad=True``: exact divergence,
RK4 with ``cnf_solver_steps`` steps, back-propagating through the solver. It is sampled with Euler
at every NFE and dopri5 (``cnf@NFE``), and ``metrics[DATASET]["nll"]`` holds the held-out negative
log-likelihood (nats) by dopri5. The cost per step is what simulation-free training avoids.
"""

from __future__ import annotations

import dataclasses

import torch

from bench.common import BenchProfile, Run, build, derive_seed, generator, log, timed, train_config
from tutorlib.data import gaussian, toy_sampler
from tutorlib.likelihood import log_prob
from tutorlib.models import TimeMLP
from tutorlib.train import train

DATASETS = ("moons",)


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train the CNF by maximum likelihood, sample it, and score held-out log-likelihood."""
    (dataset,) = DATASETS
    run = Run("cnf2d", bp, seed, device, DATASETS)
    data = run.set_reference(dataset)
    P = bp.P.replace(hidden_2d=bp.cnf_hidden, depth_2d=bp.cnf_depth, batch_2d=bp.cnf_batch,
                     steps_2d=bp.cnf_train_steps)
    draw, gen = toy_sampler(dataset), generator(seed, dataset, "cnf", "batches")
    solver_steps = bp.cnf_solver_steps

    def batches(step: int):
        return draw(P.batch_2d, generator=gen).to(device)  # (B, 2)

    def nll_loss(m, x):
        return -log_prob(m, x, method="rk4", steps=solver_steps, enable_grad=True).log_prob.mean()

    model = build(lambda: TimeMLP.from_profile(P), derive_seed(seed, dataset, "cnf", "init"), device)
    cfg = train_config(bp, f"{dataset} cnf").replace(steps=P.steps_2d, warmup_steps=min(100, P.steps_2d // 10))
    hist = train(model, nll_loss, batches, cfg)
    run.add_training(dataset, "cnf", hist, nfe_per_step=4 * solver_steps)
    x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    run.sample_flow(dataset, "cnf", hist.ema_model, x_0)

    out, s = timed(lambda: log_prob(hist.ema_model, data[:bp.n_nll], method="dopri5"), device)
    nll = float(-out.log_prob.mean())
    run.datasets[dataset].extra["nll"] = {"nats": nll, "n": int(min(bp.n_nll, len(data))), "nfe": out.nfe,
                                          "seconds": s, "method": "dopri5, exact divergence"}
    log(f"[cnf2d] {dataset}: held-out NLL {nll:.3f} nats ({out.nfe} NFE, {s:.1f} s)")
    run.config = {"datasets": list(DATASETS), "model": f"TimeMLP(hidden={P.hidden_2d}, depth={P.depth_2d})",
                  "loss": f"-log_prob(enable_grad=True), rk4 x {solver_steps} steps, exact divergence",
                  "batch": P.batch_2d, "train": dataclasses.asdict(cfg)}
    return run
