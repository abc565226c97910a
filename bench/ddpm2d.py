"""Case ``ddpm2d``: a DDPM epsilon-model on 2D data, sampled four ways (lessons 01 and 04).

One :class:`~tutorlib.models.TimeMLP` epsilon-model is trained with :func:`tutorlib.losses.ddpm_loss`
on a linear-beta schedule of ``T`` steps, then sampled from the same noise by

* ``ancestral@S``: DDPM's ancestral sampler respaced to ``S`` steps (:func:`tutorlib.ddpm.ancestral_sample`);
* ``ddim@S``: deterministic DDIM (``eta = 0``) with ``S`` steps (:func:`tutorlib.ddpm.ddim_sample`);
* ``pf-ode@N``: the probability-flow ODE of :func:`tutorlib.ddpm.ddpm_to_velocity`, ``N - 1`` Euler steps
  from t = 0 to ``t_max = 1 - 1/T`` and DDPM's final denoising step (N network calls in all);
* ``pf-ode@dopri5``: the same ODE with dopri5 (the JSON records the NFE, denoising step included).
"""

from __future__ import annotations

import dataclasses

import torch

from bench.common import BenchProfile, Run, build, derive_seed, generator, timed, train_config
from tutorlib.data import gaussian, toy_sampler
from tutorlib.ddpm import DDPMSchedule, ancestral_sample, ddim_sample, ddpm_to_velocity, linear_betas
from tutorlib.losses import ddpm_loss
from tutorlib.models import TimeMLP
from tutorlib.solvers import ode_solve
from tutorlib.train import train

DATASETS = ("checkerboard",)


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train one epsilon-model and sample it with ancestral, DDIM and probability-flow ODE samplers."""
    (dataset,) = DATASETS
    run = Run("ddpm2d", bp, seed, device, DATASETS)
    run.set_reference(dataset)
    schedule = DDPMSchedule(linear_betas(bp.ddpm_T))
    B, T = bp.P.batch_2d, schedule.T
    draw, gen = toy_sampler(dataset), generator(seed, dataset, "ddpm", "batches")

    def batches(step: int):
        x_data = draw(B, generator=gen)  # (B, 2)
        k = torch.randint(1, T + 1, (B,), generator=gen)  # (B,) DDPM indices
        noise = torch.randn(B, 2, generator=gen)  # (B, 2)
        return x_data.to(device), k.to(device), noise.to(device)

    model = build(lambda: TimeMLP.from_profile(bp.P), derive_seed(seed, dataset, "ddpm", "init"), device)
    cfg = train_config(bp, f"{dataset} ddpm")
    hist = train(model, lambda m, b: ddpm_loss(m, schedule, *b), batches, cfg)
    run.add_training(dataset, "ddpm", hist)
    eps = hist.ema_model
    x_T = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)

    for steps in bp.ancestral_steps:
        g = generator(seed, dataset, "ancestral", steps)
        sol, s = timed(lambda: ancestral_sample(eps, x_T, schedule, steps=steps, generator=g), device)
        run.add_samples(dataset, "ancestral", "ancestral", sol.nfe, sol.x, s)
    for steps in bp.nfes:
        sol, s = timed(lambda: ddim_sample(eps, x_T, schedule, steps=steps), device)
        run.add_samples(dataset, "ddim", "ddim", sol.nfe, sol.x, s)

    v = ddpm_to_velocity(eps, schedule)

    def pf_ode(method: str, steps: int):
        sol = ode_solve(v, x_T, method=method, steps=steps, t1=v.t_max)
        with torch.no_grad():
            return v.denoise(sol.x, v.t_max), sol.nfe + 1

    for nfe in (n for n in bp.nfes if n >= 2):
        (x, used), s = timed(lambda: pf_ode("euler", nfe - 1), device)
        run.add_samples(dataset, "pf-ode", "euler+denoise", used, x, s)
    (x, used), s = timed(lambda: pf_ode("dopri5", 1), device)
    run.add_samples(dataset, "pf-ode", "dopri5+denoise", used, x, s, label="dopri5")

    run.config = {"datasets": list(DATASETS), "schedule": f"linear_betas({T})", "model": "TimeMLP.from_profile(P), "
              "epsilon prediction", "methods": {"ancestral": "respaced ancestral (beta variance)",
                                                 "ddim": "DDIM eta = 0", "pf-ode": "ddpm_to_velocity, t1 = t_max, "
                                                 "then denoise"}, "train": dataclasses.asdict(cfg)}
    return run
