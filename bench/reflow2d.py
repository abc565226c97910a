"""Case ``reflow2d``: rectified flow, reflow, one-step distillation and reflow's training variants (lesson 06).

On each of :data:`DATASETS` (lesson 06 uses the checkerboard; eight_gaussians is the easy case):

* ``1rf``: flow matching with the independent coupling (as ``fm-ind`` in ``fm2d``), ``steps_2d`` steps.
* ``2rf``: trained on the coupling ``(x_0, 1rf(x_0))`` from :func:`tutorlib.solvers.reflow_coupling`
  (``reflow_pairs`` pairs, 100 Euler steps), initialised from 1-RF's weights, as Liu et al. do.
* ``3rf``: the same again from 2-RF's coupling (the same noise).
* ``distill@1``: a one-step generator x_1 = x_0 + v(x_0, 0) trained, from 2-RF's weights, to regress
  the 2-RF map x_0 -> x_1 on 2-RF's coupling (:func:`tutorlib.reflow.distill_loss`); ``distill-1rf@1``
  the same from 1-RF's weights on 1-RF's coupling (distillation without reflow, InstaFlow's baseline).
* ``2rf-ushape``, ``2rf-huber``, ``2rf-both``: 2-RF trained like ``2rf`` (same pairs, initial weights,
  batches and steps) with the U-shaped time distribution of *Improving the Training of Rectified Flows*
  (:class:`tutorlib.reflow.UShapedTime`, a = 4), with the pseudo-Huber loss (c = :data:`HUBER_C`), or both.
* ``2rf-data``: 2-RF on data-side pairs (real data with the noise 1-RF maps it to, integrated backwards:
  :func:`tutorlib.reflow.backward_coupling`), lesson 06's exercise 3.

Every reflow round and the distillation train for :data:`ROUND_FRACTION` of ``steps_2d`` steps, like the
lesson. Each flow is sampled with Euler at every NFE and dopri5 from the same noise. Case-specific records
in ``metrics[DATASET]``:

* ``straightness``: :func:`tutorlib.metrics.straightness` of the 100-step Euler paths of ``1rf``, ``2rf``,
  ``3rf``; ``straightness_variants`` the same for the other 2-RFs;
* ``transport_cost``: E||x_1 - x_0||^2 of the independent pairs, of 1-RF's and 2-RF's couplings, of the
  data-side pairs, and of the exact optimal assignment of ``n_eval_2d`` noise and data points;
* ``coupling_x1``: energy distance / floor of each coupling's x_1 (its first ``n_eval_2d`` rows) against
  the held-out data, and ``encoded_noise_energy``: the energy distance of the data-side pairs' x_0 to
  N(0, I) samples;
* ``loss_by_time``: the trained ``2rf``'s reflow loss at t = 0, 0.1, ..., 1 on fresh 1-RF pairs;
* ``endpoint_drift``: per round, the mean over paths of the largest distance between the endpoint
  predicted from a point of the path, x_t + (1 - t) v(x_t, t), and the path's end;
* checkerboard only, ``outside_share``: for every entry and for each coupling's x_1, the share of points in
  an empty square (0 for the data), on ``10 * n_eval_2d`` fixed noise points (entries of the form
  ``METHOD@NFE``; the couplings as ``pairs-1rf`` and ``pairs-2rf``).
"""

from __future__ import annotations

import copy
import dataclasses

import torch

from bench.common import BenchProfile, Run, generator, log, timed, train_config
from bench.fm2d import train_fm
from tutorlib.couplings import Coupling, independent, ot_assignment
from tutorlib.data import gaussian, in_checkerboard, toy_sampler
from tutorlib.metrics import energy_distance, straightness
from tutorlib.paths import CondOTPath
from tutorlib.reflow import (TimeDistribution, UniformTime, UShapedTime, backward_coupling, distill_loss, one_step,
                             pair_batches, reflow_loss, transport_cost)
from tutorlib.solvers import ode_solve, reflow_coupling
from tutorlib.train import batch_sampler, train

DATASETS = ("eight_gaussians", "checkerboard")
COUPLING_STEPS = 100  # Euler steps used to generate each reflow coupling
ROUND_FRACTION = 3  # every reflow round and the distillation train for steps_2d // ROUND_FRACTION steps
HUBER_C = 0.003  # the pseudo-Huber constant of ``2rf-huber`` (data units), as in lesson 06
VARIANTS: dict[str, dict] = {  # 2-RF training variants: keyword arguments of the round
    "2rf-ushape": {"times": UShapedTime(4.0)},
    "2rf-huber": {"huber": HUBER_C},
    "2rf-both": {"times": UShapedTime(4.0), "huber": HUBER_C},
}


def _trainable_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A fresh trainable copy of (EMA) weights, to initialise the next round."""
    return copy.deepcopy(model).requires_grad_(True).train()


def _round(run: Run, dataset: str, name: str, pairs: Coupling, init: torch.nn.Module, *, init_name: str,
           times: TimeDistribution = UniformTime(), huber: float | None = None, **extra) -> torch.nn.Module:
    """One reflow round on fixed ``pairs`` from ``init``'s weights; the same batches for every call on a dataset."""
    bp, path = run.bp, CondOTPath()
    cfg = train_config(bp, f"{dataset} {name}").replace(steps=bp.P.steps_2d // ROUND_FRACTION)
    batches = pair_batches(pairs, bp.P.batch_2d, generator=generator(run.seed, dataset, "round", "batches"),
                           times=times)
    hist = train(_trainable_copy(init), lambda m, b: reflow_loss(m, path, *b, huber=huber), batches, cfg)
    run.add_training(dataset, name, hist, init=init_name, **extra)
    return hist.ema_model


def _paths(v, x_0: torch.Tensor):
    return ode_solve(v, x_0, method="euler", steps=100, return_trajectory=True)


def _endpoint_drift(v, sol) -> float:
    """Mean over paths of max_k ||x_k + (1 - t_k) v(x_k, t_k) - x_end|| along a stored trajectory."""
    worst = torch.zeros(sol.x.shape[0], device=sol.x.device)
    with torch.no_grad():
        for x, t in zip(sol.trajectory[:-1], sol.times[:-1].tolist()):
            pred = x + (1.0 - t) * v(x, torch.full((x.shape[0],), t, device=x.device))  # (n, 2)
            worst = torch.maximum(worst, (pred - sol.x).norm(dim=-1))
    return float(worst.mean())


def _case_dataset(run: Run, dataset: str) -> None:
    bp, seed, device = run.bp, run.seed, run.device
    held = run.set_reference(dataset)
    floor_e = run.datasets[dataset].floors["energy"]["mean"]
    draw = toy_sampler(dataset)
    path = CondOTPath()
    x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    flows = {"1rf": train_fm(run, dataset, "1rf", independent).ema_model}
    run.sample_flow(dataset, "1rf", flows["1rf"], x_0)

    noise = gaussian(bp.reflow_pairs, generator=generator(seed, dataset, "pairs")).to(device)  # the same each round
    couplings: dict[str, Coupling] = {}
    for k in (2, 3):
        prev, name = f"{k - 1}rf", f"{k}rf"
        pairs, coupling_s = timed(lambda: reflow_coupling(flows[prev], noise, steps=COUPLING_STEPS), device)
        couplings[prev] = pairs
        log(f"[reflow2d] {dataset}: {len(noise)} pairs from {k - 1}-RF in {coupling_s:.1f} s")
        flows[name] = _round(run, dataset, name, pairs, flows[prev], init_name=prev, coupling_s=coupling_s)
        run.sample_flow(dataset, name, flows[name], x_0)

    # One-step distillation of the 2-RF map on its coupling (the pairs 3-RF trained on), and of the 1-RF map.
    students = {}
    for name, teacher in (("distill", "2rf"), ("distill-1rf", "1rf")):
        cfg = train_config(bp, f"{dataset} {name}").replace(steps=bp.P.steps_2d // ROUND_FRACTION)
        batches = batch_sampler(*couplings[teacher], batch_size=bp.P.batch_2d,
                                generator=generator(seed, dataset, "distill", "batches"))
        hist = train(_trainable_copy(flows[teacher]), lambda m, b: distill_loss(m, *b), batches, cfg)
        run.add_training(dataset, name, hist, init=teacher)
        students[name] = hist.ema_model
        sol, s = timed(lambda: ode_solve(students[name], x_0, method="euler", steps=1), device)
        run.add_samples(dataset, name, "euler", sol.nfe, sol.x, s)

    # Training variants of the 2-RF round, and 2-RF on data-side pairs.
    for name, kw in VARIANTS.items():
        flows[name] = _round(run, dataset, name, couplings["1rf"], flows["1rf"], init_name="1rf", **kw)
        run.sample_flow(dataset, name, flows[name], x_0)
    x1_data = draw(bp.reflow_pairs, generator=generator(seed, dataset, "data-pairs")).to(device)
    data_pairs, coupling_s = timed(lambda: backward_coupling(flows["1rf"], x1_data, steps=COUPLING_STEPS), device)
    flows["2rf-data"] = _round(run, dataset, "2rf-data", data_pairs, flows["1rf"], init_name="1rf",
                               coupling_s=coupling_s)
    run.sample_flow(dataset, "2rf-data", flows["2rf-data"], x_0)

    extra = run.datasets[dataset].extra
    sols = {name: _paths(v, x_0) for name, v in flows.items()}
    straight = {name: float(straightness(sol.trajectory, sol.times)) for name, sol in sols.items()}
    extra["straightness"] = {k: straight[k] for k in ("1rf", "2rf", "3rf")}
    extra["straightness_variants"] = {k: v for k, v in straight.items() if k not in extra["straightness"]}
    extra["endpoint_drift"] = {k: _endpoint_drift(flows[k], sols[k]) for k in ("1rf", "2rf", "3rf")}
    log(f"[reflow2d] {dataset}: straightness " + ", ".join(f"{k} {v:.3g}" for k, v in straight.items()))

    n = bp.P.n_eval_2d
    x1_ind = draw(n, generator=generator(seed, dataset, "independent")).to(device)  # (n, 2)
    sigma = ot_assignment(noise[:n], x1_ind)
    extra["transport_cost"] = {
        "independent": float(transport_cost(noise[:n], x1_ind)),
        "1rf": float(transport_cost(*couplings["1rf"])),
        "2rf": float(transport_cost(*couplings["2rf"])),
        "data-side": float(transport_cost(*data_pairs)),
        "optimal_assignment": float(transport_cost(noise[:n], x1_ind[sigma])),
    }
    extra["coupling_x1"] = {k: float(energy_distance(c.x_1[:n], held)) / floor_e for k, c in couplings.items()}
    extra["encoded_noise_energy"] = float(energy_distance(data_pairs.x_0[:n], noise[:n]))

    fresh = reflow_coupling(flows["1rf"], gaussian(n, generator=generator(seed, dataset, "fresh")).to(device),
                            steps=COUPLING_STEPS)
    grid = [k / 10 for k in range(11)]
    with torch.no_grad():
        extra["loss_by_time"] = {"t": grid, "2rf": [float(reflow_loss(flows["2rf"], path, *fresh,
                                                                    torch.full((n,), t, device=device)))
                                                    for t in grid]}

    if dataset == "checkerboard":
        x_big = gaussian(10 * n, generator=generator(seed, dataset, "x0_big")).to(device)  # (10 n, 2)
        share = {}
        for name, v in flows.items():
            for nfe in (1, 2, 4, 100):
                x = ode_solve(v, x_big, method="euler", steps=nfe).x
                share[f"{name}@{nfe}"] = float(1.0 - in_checkerboard(x).float().mean())
        for name, m in students.items():
            share[f"{name}@1"] = float(1.0 - in_checkerboard(one_step(m, x_big)).float().mean())
        for k, c in couplings.items():
            share[f"pairs-{k}"] = float(1.0 - in_checkerboard(c.x_1).float().mean())
        extra["outside_share"] = share
        log(f"[reflow2d] {dataset}: in an empty square " + ", ".join(f"{k} {v:.2%}" for k, v in share.items()
                                                                     if k.endswith("@1") or k.endswith("@100")))


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train 1-, 2-, 3-RF, the distilled one-step model and the 2-RF variants on each dataset; sample and score."""
    run = Run("reflow2d", bp, seed, device, DATASETS)
    for dataset in DATASETS:
        _case_dataset(run, dataset)
    methods = {"1rf": "flow matching, independent coupling", "2rf": "reflow on 1rf's coupling, init 1rf",
               "3rf": "reflow on 2rf's coupling, init 2rf",
               "distill": "one step x0 + v(x0, 0) regressing 2rf's map, init 2rf",
               "distill-1rf": "one step x0 + v(x0, 0) regressing 1rf's map, init 1rf",
               "2rf-ushape": "2rf with U-shaped times (a = 4)", "2rf-huber": f"2rf with pseudo-Huber loss (c = {HUBER_C})",
               "2rf-both": "2rf with both", "2rf-data": "reflow on data-side pairs (backward from data), init 1rf"}
    run.config = {"datasets": list(DATASETS), "reflow_pairs": bp.reflow_pairs, "coupling_steps": COUPLING_STEPS,
                  "round_steps": bp.P.steps_2d // ROUND_FRACTION, "huber_c": HUBER_C, "methods": methods,
                  "train": dataclasses.asdict(train_config(bp, "reflow"))}
    return run
