"""Case ``peers2d``: the same flow-matching task done by tutorlib, plain PyTorch and two peer libraries.

All four train one :class:`ConcatMLP` (a plain ``nn.Sequential``, time concatenated to the input;
``hidden_2d`` x ``depth_2d``), initialised from the same weights, on the same pre-drawn batches
``(x_0, x_1, t)`` of the checkerboard (independent coupling, linear path, velocity target), with
AdamW at a constant learning rate, no clipping and no EMA, for the same number of steps:

* ``project``: :class:`tutorlib.paths.CondOTPath` + :func:`tutorlib.losses.cfm_loss` through
  :func:`tutorlib.train.train`; sampled by :func:`tutorlib.solvers.ode_solve`;
* ``plain``: the path, loss, loop and Euler sampler written inline in PyTorch;
* ``flow_matching`` (facebookresearch): ``AffineProbPath(CondOTScheduler())`` and ``ODESolver``;
* ``torchcfm``: ``ConditionalFlowMatcher(sigma=0)``; it has no sampler of its own (its examples use
  torchdyn or torchdiffeq), so it samples with ``torchdiffeq.odeint`` (Euler on the same grid).

Training is split into ``timing_repeats + 1`` blocks; in each round every implementation trains one
block (the order rotates), the first round is the untimed warm-up. Sampling (100 Euler steps from
the same ``peer_sample_n`` noise points) is timed the same way. Each timed round gives one ratio
``project / peer``; the JSON's ``peers`` record holds their median, min and max, and every value.
Metrics use the first ``n_eval_2d`` of the samples, named ``IMPL@100``. An implementation that cannot
be imported is ``skipped`` (with the reason); one that raises while running is ``failed``.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import statistics
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

import tutorlib
from bench.common import BenchProfile, Run, build, derive_seed, dist_version, generator, log, sync
from tutorlib.data import gaussian, toy_sampler
from tutorlib.losses import cfm_loss
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve
from tutorlib.train import TrainConfig, train

DATASETS = ("checkerboard",)
SAMPLE_STEPS = 100  # Euler steps of every timed sample
PEER_DISTRIBUTIONS = ("flow_matching", "torchcfm", "torchdiffeq", "POT")


class ConcatMLP(nn.Module):
    """v(x, t) = MLP([x, t]): ``depth`` hidden SiLU layers of ``hidden`` units, one ``nn.Sequential``.

    ``t`` may be (B,), (1,) or a 0-d tensor (torchdiffeq passes a scalar); it is broadcast to (B, 1).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        width = dim + 1
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, dim))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1).expand(x.shape[0], 1)  # (B, 1)
        return self.net(torch.cat([x, tt], dim=1))  # (B, dim)


@dataclass
class Impl:
    """One implementation: how it trains a block of steps and how it samples."""

    name: str
    train_block: Callable[[list[int]], float]  # trains on the given batch indices, returns the last loss
    sample: Callable[[Tensor], Tensor]  # x_0 (n, 2) -> samples after SAMPLE_STEPS Euler steps
    model: nn.Module
    status: str = "ok"  # "ok", "skipped" (not importable) or "failed" (raised while running)
    reason: str | None = None
    version: str | None = None
    train_s: list[float] = field(default_factory=list)  # seconds per step, one per timed round
    sample_s: list[float] = field(default_factory=list)  # seconds per sample, one per timed round
    train_total_s: float = 0.0
    steps: int = 0
    last_loss: float = float("nan")


def import_peer(module: str):
    """Import a peer library; raises ImportError (or whatever its import raises) when unusable."""
    return importlib.import_module(module)


def _adamw(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def _plain_loop(model: nn.Module, opt: torch.optim.Optimizer, loss_fn, batches) -> Callable[[list[int]], float]:
    """The hand-written training loop the plain and peer implementations share."""

    def train_block(idx: list[int]) -> float:
        model.train()
        loss = None
        for i in idx:
            loss = loss_fn(model, *batches(i))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        model.eval()
        return float(loss.detach()) if loss is not None else float("nan")

    return train_block


def _make_impls(base: nn.Module, cfg: TrainConfig, batches, device: torch.device) -> list[Impl]:
    impls = []

    # (a) the project: tutorlib's path, loss, training loop and solver.
    model = copy.deepcopy(base)
    opt = _adamw(model, cfg)
    path = CondOTPath()

    def project_block(idx: list[int], model=model, opt=opt) -> float:
        hist = train(model, lambda m, b: cfm_loss(m, path, *b), lambda step: batches(idx[step]),
                     cfg.replace(steps=len(idx)), optimizer=opt)
        return hist.losses[-1] if hist.losses else float("nan")

    impls.append(Impl("project", project_block,
                      lambda x0, model=model: ode_solve(model, x0, method="euler", steps=SAMPLE_STEPS).x, model))

    # (b) plain PyTorch.
    model = copy.deepcopy(base)

    def plain_loss(m, x0, x1, t):
        tt = t[:, None]  # (B, 1)
        x_t = (1 - tt) * x0 + tt * x1  # (B, 2)
        return (m(x_t, t) - (x1 - x0)).square().mean()

    @torch.no_grad()
    def plain_sample(x0: Tensor, model=model) -> Tensor:
        x, h = x0, 1.0 / SAMPLE_STEPS
        for k in range(SAMPLE_STEPS):
            x = x + h * model(x, torch.full((x.shape[0],), k * h, dtype=x.dtype, device=x.device))
        return x

    impls.append(Impl("plain", _plain_loop(model, _adamw(model, cfg), plain_loss, batches), plain_sample, model))

    grid = torch.linspace(0.0, 1.0, SAMPLE_STEPS + 1, device=device)

    # (c) facebookresearch/flow_matching.
    model = copy.deepcopy(base)
    try:
        fm_path = import_peer("flow_matching.path")
        fm_sched = import_peer("flow_matching.path.scheduler")
        fm_solver = import_peer("flow_matching.solver")
        path_c = fm_path.AffineProbPath(scheduler=fm_sched.CondOTScheduler())
        solver_c = fm_solver.ODESolver(velocity_model=model)

        def fm_loss(m, x0, x1, t):
            s = path_c.sample(x_0=x0, x_1=x1, t=t)
            return (m(s.x_t, s.t) - s.dx_t).square().mean()

        impls.append(Impl("flow_matching", _plain_loop(model, _adamw(model, cfg), fm_loss, batches),
                          lambda x0: solver_c.sample(x_init=x0, step_size=None, method="euler", time_grid=grid),
                          model))
    except Exception as err:  # not installed, or an import-time failure: report, do not crash
        impls.append(Impl("flow_matching", None, None, model, status="skipped", reason=f"{type(err).__name__}: {err}"))

    # (d) torchcfm (+ torchdiffeq for sampling).
    model = copy.deepcopy(base)
    try:
        cfm = import_peer("torchcfm.conditional_flow_matching")
        odeint = import_peer("torchdiffeq").odeint
        matcher = cfm.ConditionalFlowMatcher(sigma=0.0)

        def tc_loss(m, x0, x1, t):
            t, xt, ut = matcher.sample_location_and_conditional_flow(x0, x1, t)
            return (m(xt, t) - ut).square().mean()

        @torch.no_grad()
        def tc_sample(x0: Tensor, model=model) -> Tensor:
            return odeint(lambda t, x: model(x, t), x0, grid, method="euler")[-1]

        impls.append(Impl("torchcfm", _plain_loop(model, _adamw(model, cfg), tc_loss, batches), tc_sample, model))
    except Exception as err:
        impls.append(Impl("torchcfm", None, None, model, status="skipped", reason=f"{type(err).__name__}: {err}"))
    return impls


def _guarded(impl: Impl, fn: Callable[[], Any]) -> Any:
    """Run ``fn``; on an exception mark ``impl`` failed (with the traceback's last line) and return None."""
    try:
        return fn()
    except Exception as err:
        impl.status = "failed"
        impl.reason = f"{type(err).__name__}: {err} ({traceback.format_exc().strip().splitlines()[-2].strip()})"
        log(f"[peers2d] {impl.name} failed: {impl.reason}")
        return None


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median": None, "min": None, "max": None, "values": []}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "values": values}


def _order(r: int, k: int) -> list[int]:
    """The order of ``k`` implementations in round ``r``: rotated by ``r``."""
    return [(i + r) % k for i in range(k)]


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train and sample the four implementations in interleaved rounds; record speed and quality."""
    (dataset,) = DATASETS
    run = Run("peers2d", bp, seed, device, DATASETS)
    run.extra_versions = PEER_DISTRIBUTIONS
    run.set_reference(dataset)
    P = bp.P
    S, B = P.steps_2d, P.batch_2d
    gen = generator(seed, dataset, "peers", "batches")
    x1s = toy_sampler(dataset)(S * B, generator=gen).reshape(S, B, 2).to(device)  # (S, B, 2)
    x0s = gaussian(S * B, generator=gen).reshape(S, B, 2).to(device)  # (S, B, 2)
    ts = torch.rand(S, B, generator=gen).to(device)  # (S, B)

    def batches(i: int):
        return x0s[i], x1s[i], ts[i]

    cfg = TrainConfig.from_profile(P).replace(warmup_steps=0, cosine_decay=False, grad_clip=None, ema_decay=None,
                                        time_budget_s=None, progress=False, desc="peers2d")
    base = build(lambda: ConcatMLP(2, P.hidden_2d, P.depth_2d), derive_seed(seed, dataset, "peers", "init"), device)
    impls = _make_impls(base, cfg, batches, device)
    for impl in impls:
        if impl.status == "skipped":
            log(f"[peers2d] {impl.name} skipped: {impl.reason}")
    live = lambda: [i for i in impls if i.status == "ok"]

    # Training: round 0 is the warm-up, rounds 1..R are timed.
    R = bp.timing_repeats
    blocks = [b.tolist() for b in torch.arange(S).tensor_split(R + 1)]
    for r, idx in enumerate(blocks):
        for j in _order(r, len(impls)):
            impl = impls[j]
            if impl.status != "ok" or not idx:
                continue
            sync(device)
            start = time.perf_counter()
            loss = _guarded(impl, lambda: impl.train_block(idx))
            sync(device)
            elapsed = time.perf_counter() - start
            if loss is None:
                continue
            impl.train_total_s += elapsed
            impl.steps += len(idx)
            impl.last_loss = loss
            if r > 0:
                impl.train_s.append(elapsed / len(idx))
    for impl in live():
        run.add_training_record(dataset, impl.name, steps=impl.steps, wall_s=impl.train_total_s,
                                final_loss=impl.last_loss, ms_per_step_median=1e3 * statistics.median(impl.train_s)
                                if impl.train_s else None)

    # Sampling: one warm-up sample each, then R timed rounds.
    x_0 = gaussian(bp.peer_sample_n, generator=generator(seed, dataset, "peers", "x0")).to(device)  # (N, 2)
    samples: dict[str, Tensor] = {}
    for r in range(R + 1):
        for j in _order(r, len(impls)):
            impl = impls[j]
            if impl.status != "ok":
                continue
            sync(device)
            start = time.perf_counter()
            x = _guarded(impl, lambda: impl.sample(x_0))
            sync(device)
            if x is None:
                continue
            if r > 0:
                impl.sample_s.append(time.perf_counter() - start)
            samples[impl.name] = x
    n = P.n_eval_2d
    for impl in live():
        run.add_samples(dataset, impl.name, "euler", SAMPLE_STEPS, samples[impl.name][:n],
                        statistics.median(impl.sample_s))

    # The peers record: times, per-round ratios project / peer, quality.
    project = impls[0]
    entries = run.datasets[dataset].entries
    peers: dict[str, Any] = {}
    for impl in impls:
        rec: dict[str, Any] = {"status": impl.status, "reason": impl.reason,
                               "version": _dist_version(impl.name)}
        if impl.status == "ok":
            ok = project.status == "ok"
            rec.update({
                "train_ms_per_step": _spread([1e3 * v for v in impl.train_s]),
                "sample_s": _spread(impl.sample_s),
                "train_ratio": _spread([p / q for p, q in zip(project.train_s, impl.train_s)] if ok else []),
                "sample_ratio": _spread([p / q for p, q in zip(project.sample_s, impl.sample_s)] if ok else []),
                "energy": entries[f"{impl.name}@{SAMPLE_STEPS}"]["energy"],
                "energy_x_floor": entries[f"{impl.name}@{SAMPLE_STEPS}"]["energy_x_floor"],
                "mmd": entries[f"{impl.name}@{SAMPLE_STEPS}"]["mmd"],
            })
            log(f"[peers2d] {impl.name}: train {rec['train_ms_per_step']['median']:.3f} ms/step "
                f"(project/this {rec['train_ratio']['median']:.3f}), sample {rec['sample_s']['median']:.3f} s "
                f"(project/this {rec['sample_ratio']['median']:.3f}), energy {rec['energy']:.4g} "
                f"({rec['energy_x_floor']:.2f} x floor)")
        peers[impl.name] = rec
    run.extra = {"peers": peers}
    run.config = {
        "datasets": list(DATASETS), "model": f"ConcatMLP(hidden={P.hidden_2d}, depth={P.depth_2d}), nn.Sequential "
        "with t concatenated", "steps": S, "batch": B, "optimizer": "AdamW, constant lr, no clipping, no EMA",
        "train": dataclasses.asdict(cfg), "timing_rounds": R, "warmup_rounds": 1, "sample_points": bp.peer_sample_n,
        "sample_steps": SAMPLE_STEPS, "sampler": {"project": "tutorlib.solvers.ode_solve(euler)",
                                                  "plain": "inline Euler loop", "flow_matching":
                                                  "ODESolver.sample(euler, time_grid)", "torchcfm":
                                                  "torchdiffeq.odeint(euler, same grid)"},
        "ratios": "per timed round, project time / peer time; median, min, max over rounds"}
    return run


def _dist_version(name: str) -> str | None:
    return {"project": tutorlib.__version__, "plain": torch.__version__}.get(name) or dist_version(name)
