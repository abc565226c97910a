"""Case ``couplings2d``: lesson 05's couplings side by side, and minibatch OT with class labels.

**checkerboard** (unconditional). Four :class:`~tutorlib.models.TimeMLP` velocity fields, trained by CFM on
the linear path from the same initial weights on the same stream of data, noise and times; only the pairing
inside each batch differs (:data:`COUPLINGS`):

* ``fm-ind``: the independent coupling (:func:`tutorlib.couplings.independent`);
* ``fm-ot``: the exact minibatch OT assignment (:func:`tutorlib.couplings.minibatch_ot`);
* ``fm-sinkhorn``: the entropic coupling at ``epsilon =`` :data:`EPS` (:func:`tutorlib.couplings.sinkhorn_ot`);
* ``fm-block``: the block approximation (:func:`tutorlib.couplings.block_ot`, blocks of 16).

Each is sampled with Euler at every NFE of the profile and with dopri5. ``metrics["checkerboard"]["couplings"]``
holds per method: ``straightness`` (:func:`tutorlib.metrics.straightness` of the 100-step Euler paths),
``transport_x_exact`` (mean pair cost over the exact optimum on :data:`GAP_BATCHES` fresh batches),
``loss_mean`` / ``loss_std`` (the per-step training loss over the second half of training), ``step_ms``
(median seconds per training step over ``timing_repeats`` interleaved timed blocks, in milliseconds) and
``step_x_independent`` (the median over rounds of the ratio to the independent step timed in the same round).

**eight_gaussians** (labelled, class ``k`` = component ``k``). Three class-conditional TimeMLPs
(:data:`LABELLED`): ``cond-ind`` (pairs as drawn), ``cond-ot`` (OT over the whole batch, labels travelling
with their points: *The Curse of Conditions*) and ``cond-classot`` (OT within each class,
:func:`tutorlib.couplings.class_ot_assignment`). Each is sampled with the held-out labels (``ENTRY:labels``) at
every NFE; ``metrics["eight_gaussians"]["conditional"][ENTRY]["accuracy"]`` is the share of samples that the
Bayes classifier of the mixture (:meth:`tutorlib.guidance.LabelledGMM.classify`) puts in the requested class,
``...["straightness"][METHOD]`` the straightness of the 100-step paths, and ``...["noise_skew"][METHOD]`` the
mean over classes of ``|mean of the noise paired with class k|`` on :data:`GAP_BATCHES` training batches.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any, Callable

import torch

from bench.common import BenchProfile, Run, build, derive_seed, generator, log, sync, timed, train_config
from tutorlib.couplings import block_ot, class_ot_assignment, independent, minibatch_ot, ot_assignment, sinkhorn_ot
from tutorlib.data import TOY_DATASETS, gaussian, labelled_batches, sample_labelled, toy_sampler
from tutorlib.guidance import LabelledGMM
from tutorlib.losses import cfm_loss
from tutorlib.metrics import straightness
from tutorlib.models import TimeMLP
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve
from tutorlib.train import train

DATASETS = ("checkerboard", "eight_gaussians")
EPS = 0.5  # the entropic coupling's epsilon, in squared-distance units (as in lesson 05)
GAP_BATCHES = 10  # fresh batches behind the transport-cost gap and the noise skew
COUPLINGS: dict[str, Callable[..., Any]] = {  # method -> (x_0, x_1, generator) -> Coupling
    "fm-ind": lambda x_0, x_1, g: independent(x_0, x_1),
    "fm-ot": lambda x_0, x_1, g: minibatch_ot(x_0, x_1),
    "fm-sinkhorn": lambda x_0, x_1, g: sinkhorn_ot(x_0, x_1, EPS, generator=g),
    "fm-block": lambda x_0, x_1, g: block_ot(x_0, x_1),
}
LABELLED: dict[str, Callable[..., torch.Tensor]] = {  # method -> (x_0, x_1, y) -> sigma
    "cond-ind": lambda x_0, x_1, y: torch.arange(x_0.shape[0]),
    "cond-ot": lambda x_0, x_1, y: ot_assignment(x_0, x_1),
    "cond-classot": class_ot_assignment,
}


def coupled_batches(dataset: str, batch: int, coupling, seed: int, pair_seed: int, device: torch.device):
    """``step -> (x_0, x_1, t)``: fresh data, noise and times from one generator, paired by ``coupling``
    (whose own draws come from a second generator, so that every coupling sees the same data stream)."""
    draw, g, g_pair = toy_sampler(dataset), torch.Generator().manual_seed(seed), torch.Generator().manual_seed(pair_seed)

    def sampler(step: int):
        x_1 = draw(batch, generator=g)  # (B, 2)
        x_0 = gaussian(batch, generator=g)  # (B, 2)
        t = torch.rand(batch, generator=g)  # (B,)
        x_0, x_1 = coupling(x_0, x_1, g_pair)
        return x_0.to(device), x_1.to(device), t.to(device)

    return sampler


def labelled_coupled_batches(dataset: str, batch: int, assign, seed: int, device: torch.device):
    """``step -> (x_0, x_1, t, y)``: labelled batches re-paired by ``assign``; labels travel with their points."""
    draw = labelled_batches(dataset, batch, generator=torch.Generator().manual_seed(seed))

    def sampler(step: int):
        b = draw(step)
        sigma = assign(b.x_0, b.x_1, b.y)
        return b.x_0.to(device), b.x_1[sigma].to(device), b.t.to(device), b.y[sigma].to(device)

    return sampler


def _paths_straightness(velocity, x_0: torch.Tensor) -> float:
    sol = ode_solve(velocity, x_0, method="euler", steps=100, return_trajectory=True)
    return float(straightness(sol.trajectory, sol.times))


def _step_times(run: Run, dataset: str, init_seed: int, data_seed: int) -> dict[str, dict[str, float]]:
    """Median ms per training step of each coupling and its median ratio to the independent step of the same round."""
    bp, device = run.bp, run.device
    path = CondOTPath()
    block_steps = max(10, bp.P.steps_2d // 60)
    cfg = train_config(bp, "timing").replace(steps=block_steps)
    models = {m: build(lambda: TimeMLP.from_profile(bp.P), init_seed, device) for m in COUPLINGS}

    def block(method: str, seed: int) -> float:
        batches = coupled_batches(dataset, bp.P.batch_2d, COUPLINGS[method], seed, seed + 1, device)
        sync(device)
        start = time.perf_counter()
        train(models[method], lambda m, b: cfm_loss(m, path, *b), batches, cfg)
        sync(device)
        return (time.perf_counter() - start) / block_steps

    block("fm-ind", data_seed)  # warm-up
    times: dict[str, list[float]] = {m: [] for m in COUPLINGS}
    order = list(COUPLINGS)
    for r in range(bp.timing_repeats):
        for method in (order if r % 2 == 0 else order[::-1]):
            times[method].append(block(method, data_seed + 1 + r))
    out = {}
    for method, ts in times.items():
        ratios = [a / b for a, b in zip(ts, times["fm-ind"])]
        out[method] = {"step_ms": statistics.median(ts) * 1e3, "step_x_independent": statistics.median(ratios),
                       "step_ms_all": [t * 1e3 for t in ts], "block_steps": block_steps}
    return out


def _unconditional(run: Run, dataset: str) -> None:
    bp, seed, device = run.bp, run.seed, run.device
    B, path = bp.P.batch_2d, CondOTPath()
    run.set_reference(dataset)
    x_0 = gaussian(bp.P.n_eval_2d, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    init, data_seed = derive_seed(seed, dataset, "init"), derive_seed(seed, dataset, "batches")
    records: dict[str, dict[str, Any]] = {}
    for method, coupling in COUPLINGS.items():
        model = build(lambda: TimeMLP.from_profile(bp.P), init, device)
        batches = coupled_batches(dataset, B, coupling, data_seed, derive_seed(seed, dataset, method, "pairs"), device)
        hist = train(model, lambda m, b: cfm_loss(m, path, *b), batches, train_config(bp, f"{dataset} {method}"))
        run.add_training(dataset, method, hist)
        run.sample_flow(dataset, method, hist.ema_model, x_0)
        half = hist.losses[len(hist.losses) // 2:]
        records[method] = {"straightness": _paths_straightness(hist.ema_model, x_0),
                           "loss_mean": statistics.mean(half), "loss_std": statistics.stdev(half) if len(half) > 1 else 0.0}
    g, g_pair = generator(seed, dataset, "gap"), generator(seed, dataset, "gap", "pairs")
    draw = toy_sampler(dataset)
    gaps: dict[str, list[float]] = {m: [] for m in COUPLINGS}
    for _ in range(GAP_BATCHES):
        x_1, x0 = draw(B, generator=g), gaussian(B, generator=g)
        best = float((x0 - minibatch_ot(x0, x_1).x_1).square().sum())
        for method, coupling in COUPLINGS.items():
            gaps[method].append(float((x0 - coupling(x0, x_1, g_pair).x_1).square().sum()) / best)
    timing = _step_times(run, dataset, init, derive_seed(seed, dataset, "timing"))
    for method in COUPLINGS:
        records[method].update(transport_x_exact=statistics.mean(gaps[method]), **timing[method])
    run.datasets[dataset].extra["couplings"] = records
    log(f"[couplings2d] {dataset}: " + "; ".join(
        f"{m} straightness {r['straightness']:.4f}, transport x{r['transport_x_exact']:.3f}, step x{r['step_x_independent']:.2f}"
        for m, r in records.items()))


def _conditional(run: Run, dataset: str) -> None:
    bp, seed, device = run.bp, run.seed, run.device
    B, n, path = bp.P.batch_2d, bp.P.n_eval_2d, CondOTPath()
    K = TOY_DATASETS[dataset].num_classes
    gmm = LabelledGMM.ring()  # eight_gaussians with class k = component k: the exact Bayes classifier
    run.set_reference(dataset)
    # the held-out labels: the same draw as the reference (set_reference keeps only the points)
    _, y_ref = sample_labelled(dataset, n, generator=generator(seed, dataset, "heldout"), device=device)
    x_0 = gaussian(n, generator=generator(seed, dataset, "x0_eval")).to(device)  # (n, 2)
    init, data_seed = derive_seed(seed, dataset, "init"), derive_seed(seed, dataset, "batches")
    extra: dict[str, Any] = {"conditional": {}, "straightness": {}, "noise_skew": {}, "num_classes": K,
                             "bayes_accuracy_data": float((gmm.classify(run.datasets[dataset].data) == y_ref).float().mean())}
    for method, assign in LABELLED.items():
        model = build(lambda: TimeMLP.from_profile(bp.P, num_classes=K), init, device)
        hist = train(model, lambda m, b: cfm_loss(m, path, b[0], b[1], b[2], y=b[3]),
                     labelled_coupled_batches(dataset, B, assign, data_seed, device), train_config(bp, f"{dataset} {method}"))
        run.add_training(dataset, method, hist)
        v = hist.ema_model

        def field(x, t, v=v):
            return v(x, t, y_ref)

        for nfe in bp.nfes:
            sol, s = timed(lambda: ode_solve(field, x_0, method="euler", steps=nfe), device)
            rec = run.add_samples(dataset, method, "euler", sol.nfe, sol.x, s, labels=y_ref)
            entry = rec["array"].split("/")[-1]
            extra["conditional"][entry] = {"method": method, "nfe": sol.nfe,
                                           "accuracy": float((gmm.classify(sol.x) == y_ref).float().mean())}
        extra["straightness"][method] = _paths_straightness(field, x_0)
        skew_draw = labelled_coupled_batches(dataset, B, assign, derive_seed(seed, dataset, "skew"), torch.device("cpu"))
        batches = [skew_draw(step) for step in range(GAP_BATCHES)]
        x0_all, y_all = torch.cat([b[0] for b in batches]), torch.cat([b[3] for b in batches])
        extra["noise_skew"][method] = statistics.mean(float(x0_all[y_all == k].mean(0).norm())
                                                      for k in range(K) if bool((y_all == k).any()))
    run.datasets[dataset].extra.update(extra)
    last = max(bp.nfes)
    log(f"[couplings2d] {dataset}: accuracy at {last} NFE " + ", ".join(
        f"{m} {extra['conditional'][f'{m}@{last}']['accuracy']:.3f}" for m in LABELLED))


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Train and score the four couplings on the checkerboard and the three labelled couplings on eight_gaussians."""
    run = Run("couplings2d", bp, seed, device, DATASETS)
    _unconditional(run, "checkerboard")
    _conditional(run, "eight_gaussians")
    run.config = {"datasets": list(DATASETS), "epsilon": EPS, "gap_batches": GAP_BATCHES,
                  "methods": {"fm-ind": "independent coupling", "fm-ot": "exact minibatch OT",
                              "fm-sinkhorn": f"entropic OT (Sinkhorn, epsilon {EPS}), a partner drawn per row",
                              "fm-block": "block OT (Hilbert sort, exact blocks of 16)",
                              "cond-ind": "class-conditional, pairs as drawn",
                              "cond-ot": "class-conditional, OT over the batch (labels ignored)",
                              "cond-classot": "class-conditional, OT within each class"},
                  "path": "CondOTPath", "model": "TimeMLP.from_profile(P)",
                  "sampling": "EMA weights; Euler at nfes (and dopri5 for the checkerboard, atol = rtol = 1e-5)",
                  "train": dataclasses.asdict(train_config(bp, "couplings"))}
    return run
