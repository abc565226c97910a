"""Case ``solvers2d``: one flow-matching field, every ODE solver and time grid (lesson 07).

For each dataset a :class:`~tutorlib.models.TimeMLP` is trained by flow matching (independent coupling,
as ``fm-ind`` in ``fm2d``) and sampled from the same noise by

* ``euler``, ``midpoint``, ``heun``, ``rk4`` at every NFE of ``NFES`` that the method's stages divide;
* ``dopri5-TOL`` (``TOL`` as in ``1e-3``) at several tolerances, each labelled by the NFE it used;
* ``euler-power`` (:func:`tutorlib.solvers.power_time_grid`, ``rho = 1.5``), ``euler-bellman``
  (:func:`tutorlib.solvers.optimal_time_grid`, the dynamic program on summed local errors) and
  ``euler-fitted`` (:func:`tutorlib.solvers.fit_time_grid`, the grid fitted to the global error) at
  ``GRID_NFES``; both tuned grids are fitted on other noise than the one they are scored on.

Every entry has the energy distance and MMD of the common recorder. ``metrics[DATASET]["solver_error"]``
holds, for each fixed-step method, the RMS distance of its end points to an RK4 reference (1024 steps,
float64 copy of the network) at ``ORDER_NFES`` and the measured order ``log2(e[-2] / e[-1])``; on
``eight_gaussians`` the same for the exact marginal field (``"exact"``), whose orders are the textbook
ones. ``["grid_error"]`` holds the end-point error of each grid against RK4 with 200 steps.
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch

from bench.common import BenchProfile, Run, generator, log, timed, train_config
from bench.fm2d import train_fm
from tutorlib.couplings import independent
from tutorlib.data import gaussian
from tutorlib.paths import CondOTPath, gmm_marginal_velocity
from tutorlib.solvers import fit_time_grid, ode_solve, optimal_time_grid, power_time_grid, steps_for_nfe

DATASETS = ("eight_gaussians", "checkerboard")
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
NFES = (2, 4, 8, 16, 32, 64, 128)
TOLERANCES = (1e-2, 1e-3, 1e-4, 1e-5)
GRID_NFES = (2, 4, 8)
ORDER_NFES = (8, 16, 32, 64, 128, 256, 512)
ORDER_POINTS = 256  # noise points of the order measurement (float64)
REFERENCE_STEPS = 1024  # RK4 steps of the float64 reference


def eight_gaussians_field(dtype: torch.dtype, device: torch.device):
    """The exact marginal velocity of ``data.eight_gaussians`` on the linear path."""
    angles = 2 * math.pi * torch.arange(8, dtype=dtype, device=device) / 8
    means = 2.5 * torch.stack([angles.cos(), angles.sin()], 1)  # (8, 2)
    stds, weights = torch.full((8,), 0.2, dtype=dtype, device=device), torch.ones(8, dtype=dtype, device=device)
    return lambda x, t: gmm_marginal_velocity(CondOTPath(), x, t, means, stds, weights)


def solver_errors(field, x_0: torch.Tensor) -> dict:
    """RMS end-point error of each fixed-step method at ORDER_NFES against an RK4 reference, and the order."""
    ref = ode_solve(field, x_0, method="rk4", steps=REFERENCE_STEPS).x
    rms = lambda x: float((x - ref).square().sum(1).mean().sqrt())  # noqa: E731
    out = {}
    for method in STAGES:
        errs = [rms(ode_solve(field, x_0, method=method, steps=steps_for_nfe(method, n)).x) for n in ORDER_NFES]
        order = math.log2(errs[-2] / errs[-1]) if errs[-1] > 0 else float("nan")
        out[method] = {"nfe": list(ORDER_NFES), "rms_error": errs, "measured_order": order, "theory": {
            "euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}[method]}
    return out


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train one flow per dataset, then sample it with every solver and time grid."""
    run = Run("solvers2d", bp, seed, device, DATASETS)
    for dataset in DATASETS:
        run.set_reference(dataset)
        x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
        v = train_fm(run, dataset, "fm", independent).ema_model
        for method, stages in STAGES.items():
            for nfe in (n for n in NFES if n % stages == 0):
                sol, s = timed(lambda: ode_solve(v, x_0, method=method, steps=steps_for_nfe(method, nfe)), device)
                run.add_samples(dataset, method, method, sol.nfe, sol.x, s)
        for tol in TOLERANCES:
            sol, s = timed(lambda: ode_solve(v, x_0, method="dopri5", atol=tol, rtol=tol), device)
            run.add_samples(dataset, f"dopri5-{tol:.0e}".replace("e-0", "e-"), "dopri5", sol.nfe, sol.x, s)

        x_tune = gaussian(bp.P.n_eval_2d // 4, generator=generator(seed, dataset, "grid_tune")).to(device)
        target_tune = ode_solve(v, x_tune, method="rk4", steps=200).x
        target = ode_solve(v, x_0, method="rk4", steps=200).x
        grid_error: dict = {}
        for nfe in GRID_NFES:
            grids = {"euler": torch.linspace(0, 1, nfe + 1, dtype=torch.float64),
                     "euler-power": power_time_grid(nfe, 1.5)}
            grids["euler-bellman"], tune_s = timed(lambda: optimal_time_grid(v, x_tune, nfe).times, device)
            grids["euler-fitted"], fit_s = timed(lambda: fit_time_grid(v, x_tune, target_tune, nfe).times, device)
            for name, grid in grids.items():
                sol, s = timed(lambda: ode_solve(v, x_0, time_grid=grid), device)
                if name != "euler":  # the uniform grid is the ``euler`` entry already
                    run.add_samples(dataset, name, "euler", sol.nfe, sol.x, s)
                grid_error.setdefault(name, {})[str(nfe)] = {
                    "times": grid.tolist(), "rms_error": float((sol.x - target).square().sum(1).mean().sqrt())}
            grid_error["euler-bellman"][str(nfe)]["tune_s"] = tune_s
            grid_error["euler-fitted"][str(nfe)]["tune_s"] = fit_s
        extra = run.datasets[dataset].extra
        extra["grid_error"] = grid_error

        x_order = gaussian(ORDER_POINTS, generator=generator(seed, dataset, "order")).to(device).double()
        extra["solver_error"] = {"trained": solver_errors(copy.deepcopy(v).double(), x_order)}
        if dataset == "eight_gaussians":
            extra["solver_error"]["exact"] = solver_errors(eight_gaussians_field(torch.float64, device), x_order)
        log(f"[solvers2d] {dataset}: measured orders " + "; ".join(
            f"{field}: " + ", ".join(f"{m} {r['measured_order']:.2f}" for m, r in errs.items())
            for field, errs in extra["solver_error"].items()))

    run.config = {"datasets": list(DATASETS), "nfes": list(NFES), "tolerances": list(TOLERANCES),
                  "grid_nfes": list(GRID_NFES), "order_nfes": list(ORDER_NFES), "order_points": ORDER_POINTS,
                  "reference": f"rk4, {REFERENCE_STEPS} steps, float64", "power_rho": 1.5,
                  "model": "TimeMLP.from_profile(P), flow matching, independent coupling, EMA weights",
                  "train": dataclasses.asdict(train_config(bp, "fm"))}
    return run
