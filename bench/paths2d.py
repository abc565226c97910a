"""Case ``paths2d``: affine paths side by side, one DDPM network under many samplers, SDE noise levels and
stochastic interpolants (lesson 04).

On the checkerboard, with the same seeds as each other (every model's initial weights and training draws
come from its own generator; every sample set of one NFE starts from the same noise):

* ``fm-P@N`` for P in ``linear``, ``cosine``, ``vp``: a :class:`~tutorlib.models.TimeMLP` velocity field
  trained by CFM on that path (same initial weights and draws for the three), sampled by ``N`` Euler steps on
  its own path; ``fm-P-on-Q@N``: the same field seen on path Q (:class:`tutorlib.paths.PathTransfer`) and
  sampled by Euler there (lesson 04's table: the integrating path matters more than the training path);
* lesson 01's DDPM epsilon-model (linear betas, ``ddpm_T`` steps), at equal NFE: ``ancestral@N``,
  ``ddim@N``, ``pf-ode@N`` (``N - 1`` Euler steps on DDPM's path to ``t_max``, then the denoising step),
  ``pf-ode-linear@N`` and ``pf-ode-linear-midpoint@N`` (the same field on the linear path from DDPM's start,
  Euler / midpoint); ``fm-linear-ddpmgrid@N``: the flow-matching field with Euler on DDPM's grid mapped to the
  linear path (DDIM's grid: DDIM is Euler on the linear path);
* ``sde-etaE@N``: the DDPM network's SDE with the same marginals, diffusion ``E`` times
  :func:`tutorlib.solvers.reverse_diffusion` (``E = 0`` is the ODE), Euler-Maruyama with ``N - 1`` steps and
  the denoising step (``eta0_5`` for 0.5);
* two-sided stochastic interpolants from eight Gaussians to the checkerboard, gamma_t = a t (1 - t):
  ``si-a0@N`` (no latent noise) and ``si-a2@N`` by their ODE (Euler), ``si-a2-sdeS@N`` by the SDE of noise
  level ``S`` (:meth:`tutorlib.interpolants.InterpolantModel.sde`).

The reference (``data``) is held-out checkerboard data for every entry. ``metrics["checkerboard"]`` adds
``ddim_equals_linear_euler``: the largest difference between DDIM and Euler on the linear path on DDPM's grid
(both networks), which must be round-off.
"""

from __future__ import annotations

import dataclasses

import torch

from bench.common import BenchProfile, Run, build, derive_seed, generator, log, timed, train_config
from tutorlib.data import checkerboard, eight_gaussians, gaussian
from tutorlib.ddpm import DDPMSchedule, ancestral_sample, ddim_sample, ddpm_to_velocity, linear_betas
from tutorlib.interpolants import InterpolantModel, QuadraticNoise, StochasticInterpolant, interpolant_loss
from tutorlib.losses import cfm_loss, ddpm_loss
from tutorlib.models import TimeMLP
from tutorlib.paths import AffinePath, CondOTPath, PathTransfer, snr_match
from tutorlib.schedulers import CosineScheduler, LinearVPScheduler
from tutorlib.solvers import affine_sde_drift, ode_solve, reverse_diffusion, sde_solve, steps_for_nfe
from tutorlib.train import train

DATASETS = ("checkerboard",)
PATHS = {"linear": CondOTPath, "cosine": lambda: AffinePath(CosineScheduler()),
         "vp": lambda: AffinePath(LinearVPScheduler())}
NFES = (10, 20, 100)  # every comparison's budgets
ETAS = (0.0, 0.5, 1.0, 1.5)  # SDE noise levels of the DDPM network
SI_A = 2.0  # the interpolant's latent noise scale: gamma_t = a t (1 - t)
SI_NOISES = (0.5, 1.0, 2.0)  # its SDE noise levels


def tag(value: float) -> str:
    """A number as it appears in an entry name: ``0_5`` for 0.5, ``2`` for 2.0."""
    return f"{value:g}".replace("-", "m").replace(".", "_")


def _train(run: Run, method: str, make, loss_fn, batches, init_seed: int):
    """Train ``make()`` (initialised from ``init_seed``) and record it; returns the EMA model."""
    model = build(make, init_seed, run.device)
    hist = train(model, loss_fn, batches, train_config(run.bp, f"paths2d {method}"))
    run.add_training(DATASETS[0], method, hist)
    return hist.ema_model


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train the six models of lesson 04 and sample each of them the lesson's ways."""
    (dataset,) = DATASETS
    run = Run("paths2d", bp, seed, device, DATASETS)
    run.set_reference(dataset)
    P, B, n = bp.P, bp.P.batch_2d, bp.P.n_eval_2d
    paths = {name: make() for name, make in PATHS.items()}
    x_0 = gaussian(n, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    x_src = eight_gaussians(n, generator=generator(seed, dataset, "x0_eval_source")).to(device)  # (n, 2)

    def add(method: str, solver: str, nfe: int, sample) -> None:
        x, s = timed(sample, device)
        run.add_samples(dataset, method, solver, nfe, x, s)

    # --- three affine paths, trained side by side (one generator seed for all: same draws) ---
    fields = {}
    for name, path in paths.items():
        g = generator(seed, dataset, "fm", "batches")

        def batches(step: int, g=g):
            x_1 = checkerboard(B, generator=g)  # (B, 2)
            return gaussian(B, generator=g).to(device), x_1.to(device), torch.rand(B, generator=g).to(device)

        fields[name] = _train(run, f"fm-{name}", lambda: TimeMLP.from_profile(P),
                              lambda m, b, path=path: cfm_loss(m, path, *b), batches, derive_seed(seed, "fm", "init"))
    for trained, field in fields.items():
        for on, path in paths.items():
            v = field if on == trained else PathTransfer(field, paths[trained], path)
            method = f"fm-{trained}" if on == trained else f"fm-{trained}-on-{on}"
            for nfe in NFES:
                add(method, "euler", nfe, lambda: ode_solve(v, x_0, method="euler", steps=nfe).x)
    log(f"[paths2d] flow-matching fields sampled on every path")

    # --- lesson 01's DDPM network, many samplers at equal NFE ---
    schedule = DDPMSchedule(linear_betas(bp.ddpm_T))
    T = schedule.T
    g_ddpm = generator(seed, dataset, "ddpm", "batches")

    def ddpm_batches(step: int):
        x_data = checkerboard(B, generator=g_ddpm)  # (B, 2)
        k = torch.randint(1, T + 1, (B,), generator=g_ddpm)  # (B,)
        return x_data.to(device), k.to(device), torch.randn(B, 2, generator=g_ddpm).to(device)

    eps = _train(run, "ddpm", lambda: TimeMLP.from_profile(P), lambda m, b: ddpm_loss(m, schedule, *b), ddpm_batches,
                 derive_seed(seed, "ddpm", "init"))
    v = ddpm_to_velocity(eps, schedule)
    linear = paths["linear"]
    start = snr_match(0.0, v.path, linear)
    v_lin = PathTransfer(v, v.path, linear)
    x_lin = float(start.scale) * x_0

    def on_linear(field, method: str, nfe: int, grid=None):
        grid = torch.linspace(float(start.t), 1.0, steps_for_nfe(method, nfe) + 1, dtype=torch.float64) \
            if grid is None else grid
        return ode_solve(field, x_lin, method=method, time_grid=grid).x

    def pf_ode(nfe: int):
        return v.denoise(ode_solve(v, x_0, steps=nfe - 1, t1=v.t_max).x, v.t_max)

    for nfe in NFES:
        g = generator(seed, dataset, "ancestral", nfe)
        add("ancestral", "ancestral", nfe, lambda: ancestral_sample(eps, x_0, schedule, steps=nfe, generator=g).x)
        add("ddim", "ddim", nfe, lambda: ddim_sample(eps, x_0, schedule, steps=nfe).x)
        add("pf-ode", "euler+denoise", nfe, lambda: pf_ode(nfe))
        add("pf-ode-linear", "euler", nfe, lambda: on_linear(v_lin, "euler", nfe))
        add("pf-ode-linear-midpoint", "midpoint", nfe, lambda: on_linear(v_lin, "midpoint", nfe))
        grid = snr_match(schedule.time(torch.tensor(schedule.step_indices(nfe))).double(), v.path, linear).t
        add("fm-linear-ddpmgrid", "euler", nfe, lambda: on_linear(fields["linear"], "euler", nfe, grid))
    grid10 = snr_match(schedule.time(torch.tensor(schedule.step_indices(10))).double(), v.path, linear).t
    fm_on_ddpm = PathTransfer(fields["linear"], linear, v.path)
    fm_eps = lambda x, t: v.path.velocity_to_epsilon(fm_on_ddpm(x, t), x, t)  # noqa: E731
    gap = max(float((ddim_sample(eps, x_0, schedule, steps=10).x - on_linear(v_lin, "euler", 10, grid10)).abs().max()),
              float((ddim_sample(fm_eps, x_0, schedule, steps=10).x
                     - on_linear(fields["linear"], "euler", 10, grid10)).abs().max()))
    run.datasets[dataset].extra["ddim_equals_linear_euler"] = gap
    log(f"[paths2d] DDPM network sampled; DDIM vs Euler on the linear path: {gap:.1e}")

    # --- SDEs with the probability-flow ODE's marginals ---
    for eta in ETAS:
        diff = reverse_diffusion(v.path, eta)
        drift = affine_sde_drift(v, v.path, diff)
        for nfe in NFES:
            g = generator(seed, dataset, "sde", nfe)  # the same Brownian noise for every eta

            def sde(diff=diff, drift=drift, nfe=nfe, g=g):
                return v.denoise(sde_solve(drift, diff, x_0, steps=nfe - 1, t1=v.t_max, generator=g).x, v.t_max)

            add(f"sde-eta{tag(eta)}", "euler-maruyama+denoise", nfe, sde)

    # --- stochastic interpolants, eight Gaussians -> checkerboard ---
    si = {}
    for a in (0.0, SI_A):
        interp = StochasticInterpolant(noise=QuadraticNoise(a))
        g = generator(seed, dataset, "si", "batches")

        def si_batches(step: int, g=g):
            x_1 = checkerboard(B, generator=g)  # (B, 2)
            return (eight_gaussians(B, generator=g).to(device), x_1.to(device), torch.randn(B, 2, generator=g).to(device),
                    torch.rand(B, generator=g).to(device))

        model = _train(run, f"si-a{tag(a)}", lambda: TimeMLP.from_profile(P, out_dim=4),
                       lambda m, b, interp=interp: interpolant_loss(m, interp, *b), si_batches, derive_seed(seed, "si", "init"))
        si[a] = InterpolantModel(model, interp)
    for a, im in si.items():
        for nfe in NFES:
            add(f"si-a{tag(a)}", "euler", nfe, lambda: ode_solve(im.velocity, x_src, steps=nfe).x)
    for noise in SI_NOISES:
        drift, diff = si[SI_A].sde(noise)
        for nfe in NFES:
            g = generator(seed, dataset, "si-sde", nfe)
            add(f"si-a{tag(SI_A)}-sde{tag(noise)}", "euler-maruyama", nfe,
                lambda: sde_solve(drift, diff, x_src, steps=nfe, generator=g).x)

    run.config = {
        "datasets": list(DATASETS), "nfes": list(NFES), "etas": list(ETAS), "si_a": SI_A, "si_noises": list(SI_NOISES),
        "paths": {"linear": "CondOTPath", "cosine": "AffinePath(CosineScheduler())",
                  "vp": "AffinePath(LinearVPScheduler())"},
        "model": "TimeMLP.from_profile(P) (out_dim 4 for the interpolants)", "schedule": f"linear_betas({T})",
        "interpolant": "StochasticInterpolant(CondOTScheduler, QuadraticNoise(a)), source eight_gaussians",
        "train": dataclasses.asdict(train_config(bp, "paths2d")),
    }
    return run
