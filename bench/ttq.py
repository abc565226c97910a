"""Case ``ttq2d``: time to quality, the project's 2D recipe against flow_matching's, on equal wall-clock budgets.

For each dataset and seed two recipes train for the same wall-clock budget (60 s in ``standard``):

* ``project``: :class:`~tutorlib.models.TimeMLP` (``hidden``/``depth`` below), :class:`~tutorlib.paths.CondOTPath`
  and :func:`tutorlib.losses.cfm_loss`, AdamW at ``lr`` with a linear warm-up and a cosine decay over the
  *time* budget, gradient clipping 1 and an EMA (:class:`tutorlib.train.EMA`); both the EMA
  (``project``) and the raw weights (``project-raw``) are scored.
* ``peer``: facebookresearch/flow_matching's checkerboard example: a plain 4 x 512 SiLU MLP with the time
  concatenated (:class:`~bench.peers2d.ConcatMLP`), batch 4096, Adam at 1e-3 constant, trained
  through ``flow_matching.path.AffineProbPath(CondOTScheduler())`` when that package imports (else the same
  arithmetic in plain PyTorch; ``config.peer_path`` says which).

Both run through one loop (:func:`train_timed`: the step of :func:`tutorlib.train.train` with pauses) that
stops training at each snapshot time, scores the model, and resumes; the scoring time is excluded from
the budget. Each snapshot records ``(train seconds, steps, energy distance / noise floor)``: 100 Euler
steps, :func:`tutorlib.metrics.model_score` against :func:`tutorlib.metrics.noise_floor` at the same ``n``
and number of repeats. ``results.json`` gets a top-level ``ttq`` record::

    ttq[DATASET][RECIPE][SEED] = [{"train_s", "steps", "energy_x_floor", "energy"}, ...]   # one per snapshot
    ttq_summary[DATASET][RECIPE] = {"time_to_target_s": {median, min, max, values}, "final_x_floor": {...}}

(``time_to_target_s`` is the first snapshot time at or below ``target_x_floor``, ``null`` if never.)
The final samples of each recipe and seed are also stored as the usual entries ``RECIPE-sSEED@100``.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from bench.common import FM_DATASETS, BenchProfile, Run, build, derive_seed, generator, log
from bench.peers2d import ConcatMLP, import_peer
from tutorlib.data import gaussian, toy_sampler
from tutorlib.losses import cfm_loss
from tutorlib.metrics import energy_distance, model_score, noise_floor
from tutorlib.models import TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve
from tutorlib.train import EMA


@dataclass(frozen=True)
class TTQConfig:
    """Sizes of the ``ttq2d`` case for one bench profile."""

    budget_s: float  # wall-clock training budget of every recipe (evaluation excluded)
    snapshots_s: tuple[float, ...]  # training times at which the model is scored (the last is the budget)
    seeds: int  # seeds per dataset (the run's seed, seed + 1, ...)
    n: int  # points per draw for the energy distance (and its noise floor)
    repeats: int  # independent draws behind each score and the floor
    euler_steps: int = 100  # Euler steps of each scored sample
    target_x_floor: float = 2.0  # quality target: energy distance <= this x the noise floor
    hidden: int = 128  # project TimeMLP width
    depth: int = 3  # project TimeMLP residual blocks
    batch: int = 512  # project batch size
    lr: float = 3e-3  # project peak learning rate
    warmup_steps: int = 200  # project linear warm-up, in optimiser steps
    min_lr_ratio: float = 0.02  # project final learning rate / lr (cosine over the time budget)
    ema_decay: float = 0.999  # project EMA decay (with tutorlib's EMA warm-up)
    peer_hidden: int = 512  # flow_matching example: 4 hidden layers of 512
    peer_depth: int = 4
    peer_batch: int = 4096
    peer_lr: float = 1e-3
    floor_repeats: int | None = None  # draws behind the noise floor (None: ``repeats``)
    peer_repeats: int | None = None  # draws behind each peer score (None: ``repeats``)
    recipes: tuple[str, ...] = ("project", "peer")  # which recipes train
    worst_x_floor: float = 1.5  # worst-seed target: every seed at most this x the floor ...
    worst_from_s: float = 10.0  # ... at every snapshot from this training time on


TTQ_CONFIGS: dict[str, TTQConfig] = {
    "smoke": TTQConfig(budget_s=0.4, snapshots_s=(0.2, 0.4), seeds=1, n=200, repeats=2, euler_steps=20, hidden=32,
                       depth=2, batch=128, warmup_steps=10, peer_hidden=32, peer_depth=2, peer_batch=256),
    "standard": TTQConfig(budget_s=60.0, snapshots_s=(5.0, 10.0, 20.0, 40.0, 60.0), seeds=3, n=1500, repeats=5),
    "full": TTQConfig(budget_s=60.0, snapshots_s=(5.0, 10.0, 20.0, 40.0, 60.0), seeds=5, n=2000, repeats=10),
}

# ``ttq2d_worst``: the project recipe alone, every seed scored precisely enough to rank ratios below 1.5 (the
# energy distance between two draws of n points has a standard deviation of about 0.7 of its mean on these
# datasets, so 5 draws leave the floor's standard error near 0.3 of its mean: 25 draws bring it under a fifth)
WORST_CONFIGS: dict[str, TTQConfig] = {
    "smoke": dataclasses.replace(TTQ_CONFIGS["smoke"], repeats=3, floor_repeats=4, recipes=("project",),
                                 worst_from_s=0.2),
    "standard": dataclasses.replace(TTQ_CONFIGS["standard"], repeats=20, floor_repeats=25, recipes=("project",)),
    "full": dataclasses.replace(TTQ_CONFIGS["full"], repeats=25, floor_repeats=40, recipes=("project",)),
}


def cosine_time_lr(step: int, frac: float, lr: float, warmup_steps: int, min_lr_ratio: float) -> float:
    """Linear warm-up over ``warmup_steps`` steps, then a half cosine from ``lr`` to ``lr * min_lr_ratio``
    as the used fraction ``frac`` of the time budget goes from 0 to 1."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    r = min_lr_ratio
    return lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, frac))))


def train_timed(model: nn.Module, loss_fn: Callable[[nn.Module, Any], Tensor], batches: Callable[[int], Any],
                opt: torch.optim.Optimizer, budget_s: float, snapshots_s: tuple[float, ...],
                evaluate: Callable[[float, int], None], *, lr_fn: Callable[[int, float], float] | None = None,
                grad_clip: float | None = None, ema: EMA | None = None) -> tuple[int, float]:
    """Train until ``budget_s`` seconds of training have passed, calling ``evaluate(train_s, steps)`` at
    each snapshot time (the clock is paused while it runs). Returns (steps taken, last loss)."""
    params = [p for p in model.parameters() if p.requires_grad]
    pending = sorted(snapshots_s)
    trained, step = 0.0, 0
    while pending:
        model.train()
        start = time.perf_counter()
        while trained + (time.perf_counter() - start) < pending[0]:
            if lr_fn is not None:
                lr = lr_fn(step, (trained + time.perf_counter() - start) / budget_s)
                for group in opt.param_groups:
                    group["lr"] = lr
            loss = loss_fn(model, batches(step))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            opt.step()
            if ema is not None:
                ema.update(model)
            step += 1
        trained += time.perf_counter() - start
        model.eval()
        if not math.isfinite(float(loss.detach())):
            raise FloatingPointError(f"loss {float(loss)} after {step} steps")
        evaluate(trained, step)
        pending.pop(0)
    return step, float(loss.detach())


def _ema_copy(model: nn.Module, ema: EMA) -> nn.Module:
    import copy

    shadow = copy.deepcopy(model)
    ema.copy_to(shadow)
    return shadow.eval()


def _spread(values: list[float | None]) -> dict[str, Any]:
    finite = [v for v in values if v is not None]
    if len(finite) < len(values):  # a run that never got there counts as +inf for the median
        ranked = sorted(values, key=lambda v: math.inf if v is None else v)
        med = ranked[(len(ranked) - 1) // 2] if len(ranked) % 2 else None
        if len(ranked) % 2 == 0:
            a, b = ranked[len(ranked) // 2 - 1], ranked[len(ranked) // 2]
            med = None if a is None or b is None else (a + b) / 2
        return {"median": med, "min": min(finite) if finite else None, "max": None, "values": values}
    return {"median": statistics.median(finite), "min": min(finite), "max": max(finite), "values": values}


def summarise(curves: dict[str, dict[str, list[dict[str, Any]]]], target: float, worst_from_s: float = 10.0,
              worst_target: float = 1.5) -> dict[str, Any]:
    """Per recipe: time to first reach ``target`` x floor and the final ratio, medians over seeds; and the
    worst seed: each seed's highest ratio at the snapshots from ``worst_from_s`` on, their maximum, and whether
    every seed stayed at most ``worst_target`` x the floor there."""
    out = {}
    for recipe, by_seed in curves.items():
        if not by_seed:
            continue
        ttt, final, worst = [], [], []
        for curve in by_seed.values():
            hit = [p["train_s"] for p in curve if p["energy_x_floor"] <= target]
            ttt.append(hit[0] if hit else None)
            final.append(curve[-1]["energy_x_floor"])
            late = [p["energy_x_floor"] for p in curve if p["train_s"] >= worst_from_s - 1e-9]
            worst.append(max(late) if late else None)
        finite = [w for w in worst if w is not None]
        out[recipe] = {"time_to_target_s": _spread(ttt), "final_x_floor": _spread(final),
                       "worst_x_floor_from": {"from_s": worst_from_s, "per_seed": worst,
                                              "max": max(finite) if finite else None,
                                              "target": worst_target,
                                              "met": bool(finite) and len(finite) == len(worst)
                                              and max(finite) <= worst_target}}
    return out


def run_case(bp: BenchProfile, seed: int, device: torch.device, datasets: tuple[str, ...] | None = None, *,
             cfg: TTQConfig | None = None, case: str = "ttq2d") -> Run:
    """Train the recipes on every dataset and seed with snapshots; returns the run."""
    cfg = cfg or TTQ_CONFIGS[bp.name]
    datasets = tuple(datasets) if datasets else FM_DATASETS
    run = Run(case, bp, seed, device, datasets)
    path = CondOTPath()
    try:
        fm_path = import_peer("flow_matching.path")
        fm_sched = import_peer("flow_matching.path.scheduler")
        peer_path = fm_path.AffineProbPath(scheduler=fm_sched.CondOTScheduler())
        peer_path_name = "flow_matching.path.AffineProbPath(CondOTScheduler())"

        def peer_loss(m, b):
            s = peer_path.sample(x_0=b[0], x_1=b[1], t=b[2])
            return (m(s.x_t, s.t) - s.dx_t).square().mean()
    except Exception as err:  # not installed: the same arithmetic in plain PyTorch
        peer_path_name = f"plain PyTorch (flow_matching unavailable: {type(err).__name__})"

        def peer_loss(m, b):
            x_0, x_1, t = b
            x_t = (1 - t[:, None]) * x_0 + t[:, None] * x_1
            return (m(x_t, t) - (x_1 - x_0)).square().mean()

    ttq: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    for dataset in datasets:
        run.set_reference(dataset)
        draw = toy_sampler(dataset)

        def data_sampler(k, generator=None, draw=draw):
            return draw(k, generator=generator, device=device)

        floor_repeats = cfg.floor_repeats or cfg.repeats
        floor = noise_floor(data_sampler, cfg.n, energy_distance, generator=generator(seed, dataset, "ttq-floor"),
                            repeats=floor_repeats)
        log(f"[{case}] {dataset}: noise floor {floor.mean:.5f}, sd {floor.std:.5f}, standard error "
            f"{floor.std / floor_repeats ** 0.5 / floor.mean:.2f} of the mean ({floor_repeats} draws of {cfg.n})")
        x_0_final = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
        curves: dict[str, dict[str, list]] = {"project": {}, "project-raw": {}, "peer": {}}
        for s in range(seed, seed + cfg.seeds):

            def score(model: nn.Module, tag: str, repeats: int = cfg.repeats) -> tuple[float, float]:
                def sample_fn(k, generator=None):
                    with torch.no_grad():
                        x = gaussian(k, generator=generator).to(device)  # (k, 2)
                        return ode_solve(model, x, method="euler", steps=cfg.euler_steps).x

                r = model_score(sample_fn, data_sampler, cfg.n, energy_distance, generator=generator(s, dataset, tag),
                                repeats=repeats)
                return r.mean, r.mean / floor.mean

            for recipe in cfg.recipes:
                gen = generator(s, dataset, recipe, "batches")
                batch = cfg.batch if recipe == "project" else cfg.peer_batch

                def batches(step: int, gen=gen, batch=batch):
                    x_1 = draw(batch, generator=gen)  # (B, 2)
                    x_0 = gaussian(batch, generator=gen)  # (B, 2)
                    t = torch.rand(batch, generator=gen)  # (B,)
                    return x_0.to(device), x_1.to(device), t.to(device)

                if recipe == "project":
                    model = build(lambda: TimeMLP(hidden=cfg.hidden, depth=cfg.depth),
                                  derive_seed(s, dataset, recipe, "init"), device)
                    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
                    ema = EMA(model, cfg.ema_decay)
                    points: dict[str, list] = {"project": [], "project-raw": []}

                    def evaluate(train_s, steps, model=model, ema=ema, points=points):
                        for name, m in (("project", _ema_copy(model, ema)), ("project-raw", model)):
                            e, x = score(m, f"ttq-eval-{name}-{steps}")
                            points[name].append({"train_s": train_s, "steps": steps, "energy": e, "energy_x_floor": x})
                        log(f"[{case}] {dataset} s{s} project {train_s:.1f}s {steps} steps: "
                            f"EMA {points['project'][-1]['energy_x_floor']:.2f}x, "
                            f"raw {points['project-raw'][-1]['energy_x_floor']:.2f}x floor")

                    steps, last_loss = train_timed(model, lambda m, b: cfm_loss(m, path, *b), batches, opt, cfg.budget_s,
                                        cfg.snapshots_s, evaluate,
                                        lr_fn=lambda k, f: cosine_time_lr(k, f, cfg.lr, cfg.warmup_steps,
                                                                          cfg.min_lr_ratio),
                                        grad_clip=1.0, ema=ema)
                    final = {"project": _ema_copy(model, ema), "project-raw": model}
                else:
                    model = build(lambda: ConcatMLP(2, cfg.peer_hidden, cfg.peer_depth),
                                  derive_seed(s, dataset, recipe, "init"), device)
                    opt = torch.optim.Adam(model.parameters(), lr=cfg.peer_lr)
                    points = {"peer": []}

                    def evaluate(train_s, steps, model=model, points=points):
                        e, x = score(model, f"ttq-eval-peer-{steps}", cfg.peer_repeats or cfg.repeats)
                        points["peer"].append({"train_s": train_s, "steps": steps, "energy": e, "energy_x_floor": x})
                        log(f"[{case}] {dataset} s{s} peer {train_s:.1f}s {steps} steps: {x:.2f}x floor")

                    steps, last_loss = train_timed(model, peer_loss, batches, opt, cfg.budget_s, cfg.snapshots_s, evaluate)
                    final = {"peer": model}
                for name, curve in points.items():
                    curves[name][str(s)] = curve
                for name, m in final.items():
                    t0 = time.perf_counter()
                    with torch.no_grad():
                        sol = ode_solve(m, x_0_final, method="euler", steps=cfg.euler_steps)
                    run.add_samples(dataset, f"{name}-s{s}", "euler", sol.nfe, sol.x, time.perf_counter() - t0)
                last = points[recipe][-1]
                run.add_training_record(dataset, f"{recipe}-s{s}", steps=steps, wall_s=last["train_s"],
                                        final_loss=last_loss, stop_reason="time_budget")
        ttq[dataset] = curves
        summary[dataset] = summarise(curves, cfg.target_x_floor, cfg.worst_from_s, cfg.worst_x_floor)
        run.datasets[dataset].extra["ttq_floor"] = {"energy": floor.mean, "std": floor.std, "n": cfg.n,
                                                     "repeats": floor_repeats,
                                                     "se_over_mean": floor.std / floor_repeats ** 0.5 / floor.mean}
    run.extra_versions = ("flow_matching",)
    run.config = {"datasets": list(datasets), "ttq": asdict(cfg), "peer_path": peer_path_name,
                  "recipes": {"project": "TimeMLP, CondOTPath + cfm_loss, AdamW, warm-up + cosine over the time "
                                         "budget, grad clip 1, EMA weights",
                              "project-raw": "the same run, raw weights",
                              "peer": "ConcatMLP (SiLU, time concatenated), Adam constant lr, no clip, no EMA"}}
    run.extra = {"ttq": ttq, "ttq_summary": summary}
    return run
