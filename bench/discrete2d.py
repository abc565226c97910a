"""Case ``discrete2d``: discrete flow matching on tokenised 2D data (lesson 10).

Each point of :data:`DATASETS` becomes two tokens (one per coordinate) on a grid of ``K`` cells
over ``[-4, 4]`` (:func:`tutorlib.discrete.quantise`; ``K`` from :data:`BINS` by profile). A
:class:`~tutorlib.discrete.PosteriorMLP` (a TimeMLP over one-hot tokens with a ``(2, K)``
categorical head) learns the posterior ``p_{1|t}(x_1 | x_t)`` by cross-entropy
(:func:`tutorlib.discrete.discrete_loss`) on the mixture path with ``kappa_t = t``, from a
masked source (``dfm-mask``) and from a uniform source (``dfm-unif``), and with the cosine schedule
``kappa_t = sin(pi t / 2)`` from a uniform source (``dfm-unif-cos``: lesson 10 finds it loses several times
fewer samples to the sampler at 16 steps). Its EMA weights are sampled
with :func:`tutorlib.discrete.discrete_euler` at every NFE of the profile (there is no adaptive
solver); the tokens are dequantised with uniform jitter inside their cells and scored against
continuous held-out data like every other case.

Two references put the numbers in context:

* ``oracle-mask@NFE`` / ``oracle-unif@NFE`` (and ``oracle-mask-cos`` / ``oracle-unif-cos`` with the
  cosine schedule): the same sampler driven by the *exact* posterior of a histogram of the quantised
  data (:func:`tutorlib.discrete.tabular_posterior`, 2^18 points), so what is left is the sampler's
  error alone: with few steps, tokens that jump in the same step are drawn independently (one step
  gives the product of the two coordinate marginals);
* ``metrics[DATASET]["quantisation_floor"]``: energy distance and MMD of dequantised quantised data
  against data (independent draws of ``n``, repeated like the noise floor), and their ratio to the
  noise floor: what a perfect token model would score, i.e. what the grid alone costs.

On the checkerboard every entry also records ``on_board``: the share of its samples on the filled
squares (the grid's cells never straddle a square's edge, so this is the share of token pairs on the
board's cells, the measure of lesson 10).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from bench.common import METRICS, BenchProfile, Run, build, derive_seed, generator, log, timed, train_config
from tutorlib.data import in_checkerboard, toy_sampler
from tutorlib.discrete import (
    MixturePath,
    PosteriorMLP,
    dequantise,
    discrete_euler,
    discrete_loss,
    quantise,
    tabular_posterior,
)
from tutorlib.metrics import model_score
from tutorlib.schedulers import CondOTScheduler, CosineScheduler, Scheduler
from tutorlib.train import train

DATASETS = ("checkerboard", "moons")
LOW, HIGH = -4.0, 4.0  # the grid covers [-4, 4] per coordinate (points outside are clipped into the edge cells)
BINS = {"smoke": 16, "standard": 64, "full": 128}  # tokens per coordinate, K
LINEAR, COSINE = CondOTScheduler(), CosineScheduler()  # kappa_t = t, kappa_t = sin(pi t / 2)
SOURCES = {"dfm-mask": ("mask", LINEAR), "dfm-unif": ("uniform", LINEAR),
           "dfm-unif-cos": ("uniform", COSINE)}  # trained method -> (source, schedule) of the mixture path
ORACLES = {"oracle-mask": ("mask", LINEAR), "oracle-unif": ("uniform", LINEAR),
           "oracle-mask-cos": ("mask", COSINE), "oracle-unif-cos": ("uniform", COSINE)}  # exact-posterior method
TABLE_POINTS = 1 << 18  # points in the histogram behind the exact posterior


def bins_for(bp: BenchProfile) -> int:
    """``K`` for a bench profile."""
    return BINS[bp.name]


def make_path(source: str, bins: int, schedule: Scheduler = LINEAR) -> MixturePath:
    """The mixture path of a method: ``kappa_t`` is the schedule's ``alpha_t`` (default ``t``)."""
    return MixturePath(schedule, source, bins)


def token_batches(dataset: str, path: MixturePath, batch: int, gen: torch.Generator, device: torch.device):
    """``step -> (x_0, x_1, t)``: fresh source tokens, quantised data and times each step."""
    draw = toy_sampler(dataset)

    def sampler(step: int):
        x_1 = quantise(draw(batch, generator=gen), path.vocab_size, LOW, HIGH, clip=True)  # (B, 2)
        x_0 = path.sample_source((batch, 2), generator=gen)  # (B, 2)
        t = torch.rand(batch, generator=gen)  # (B,)
        return x_0.to(device), x_1.to(device), t.to(device)

    return sampler


def train_posterior(run: Run, dataset: str, method: str, path: MixturePath):
    """Train one PosteriorMLP by the cross-entropy loss; record it; return the history."""
    bp, seed, device = run.bp, run.seed, run.device
    model = build(lambda: PosteriorMLP.for_path(path, 2, hidden=bp.P.hidden_2d, depth=bp.P.depth_2d),
                  derive_seed(seed, dataset, method, "init"), device)
    batches = token_batches(dataset, path, bp.P.batch_2d, generator(seed, dataset, method, "batches"), device)
    flips = generator(seed, dataset, method, "path")
    hist = train(model, lambda m, b: discrete_loss(m, path, *b, generator=flips),
                 batches, train_config(bp, f"{dataset} {method}"))
    run.add_training(dataset, method, hist)
    return hist


def histogram_table(dataset: str, bins: int, seed: int, device: torch.device) -> torch.Tensor:
    """The law ``(K, K)`` of the quantised data, estimated from :data:`TABLE_POINTS` points."""
    x = toy_sampler(dataset)(TABLE_POINTS, generator=generator(seed, dataset, "table"))
    tok = quantise(x, bins, LOW, HIGH, clip=True)  # (N, 2)
    counts = torch.bincount(tok[:, 0] * bins + tok[:, 1], minlength=bins * bins).to(torch.float64)
    return (counts / counts.sum()).view(bins, bins).to(device)


def sample_tokens(run: Run, dataset: str, method: str, path: MixturePath, posterior, x_0: torch.Tensor) -> None:
    """Discrete Euler at every NFE of the profile from ``x_0``; dequantise and score each set."""
    bins, seed = path.vocab_size, run.seed
    for nfe in run.bp.nfes:
        g = generator(seed, dataset, method, nfe, "euler")
        sol, s = timed(lambda: discrete_euler(posterior, path, x_0, steps=nfe, generator=g), run.device)
        x = dequantise(sol.x, bins, LOW, HIGH, generator=generator(seed, dataset, method, nfe, "jitter"))
        record = run.add_samples(dataset, method, "discrete-euler", sol.nfe, x, s)
        if dataset == "checkerboard":
            record["on_board"] = float(in_checkerboard(x).double().mean())
    entries = run.datasets[dataset].entries
    best = min(e["energy_x_floor"] for k, e in entries.items() if k.startswith(method + "@"))
    log(f"[{run.case}] {dataset} {method}: sampled; best energy distance {best:.2f} x floor")


def quantisation_floor(run: Run, dataset: str, bins: int) -> dict[str, Any]:
    """Metrics of dequantised quantised data against data (independent draws), like the noise floor."""
    ds, device = run.datasets[dataset], run.device
    base = toy_sampler(dataset)

    def tokenised(k: int, generator: torch.Generator | None = None) -> torch.Tensor:
        x = base(k, generator=generator, device=device)  # (k, 2)
        return dequantise(quantise(x, bins, LOW, HIGH, clip=True), bins, LOW, HIGH, generator=generator)

    n = int(ds.data.shape[0])
    out: dict[str, Any] = {"bins": bins, "low": LOW, "high": HIGH, "cell_width": (HIGH - LOW) / bins}
    for metric_name, metric in METRICS.items():
        r = model_score(tokenised, ds.sampler, n, metric, generator=generator(run.seed, dataset, "qfloor", metric_name),
                        repeats=run.bp.floor_repeats)
        out[metric_name] = {"mean": r.mean, "std": r.std, "n": n, "repeats": len(r.values),
                            "x_floor": r.mean / ds.floors[metric_name]["mean"]}
    log(f"[{run.case}] {dataset}: quantisation floor (K = {bins}) energy {out['energy']['x_floor']:.2f} x noise floor")
    return out


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """Quantisation floor, oracle samplers and both trained sources on every dataset."""
    bins = bins_for(bp)
    run = Run("discrete2d", bp, seed, device, DATASETS)
    for dataset in DATASETS:
        run.set_reference(dataset)
        run.datasets[dataset].extra["quantisation_floor"] = quantisation_floor(run, dataset, bins)
        table = histogram_table(dataset, bins, seed, device)
        for method, (source, schedule) in ORACLES.items():
            path = make_path(source, bins, schedule)
            x_0 = path.sample_source((bp.P.n_eval_2d, 2), generator=generator(seed, dataset, method, "x0"), device=device)
            sample_tokens(run, dataset, method, path, lambda x, t: tabular_posterior(table, path, x, t).log(), x_0)
        for method, (source, schedule) in SOURCES.items():
            path = make_path(source, bins, schedule)
            hist = train_posterior(run, dataset, method, path)
            x_0 = path.sample_source((bp.P.n_eval_2d, 2), generator=generator(seed, dataset, method, "x0"), device=device)
            sample_tokens(run, dataset, method, path, hist.ema_model, x_0)
    run.config = {
        "datasets": list(DATASETS), "bins": bins, "grid": [LOW, HIGH],
        "methods": {"dfm-mask": "PosteriorMLP trained on the masked-source mixture path",
                    "dfm-unif": "PosteriorMLP trained on the uniform-source mixture path",
                    "dfm-unif-cos": "PosteriorMLP trained on the uniform-source path, cosine schedule",
                    "oracle-mask": f"exact posterior of a {TABLE_POINTS}-point histogram, masked source",
                    "oracle-unif": f"exact posterior of a {TABLE_POINTS}-point histogram, uniform source",
                    "oracle-mask-cos": "the same, masked source, cosine schedule",
                    "oracle-unif-cos": "the same, uniform source, cosine schedule"},
        "path": "MixturePath(CondOTScheduler()): kappa_t = t; '-cos' methods MixturePath(CosineScheduler()): "
                "kappa_t = sin(pi t / 2)",
        "model": "PosteriorMLP.for_path(path, 2, hidden=P.hidden_2d, depth=P.depth_2d)",
        "loss": "discrete_loss: cross-entropy of the posterior at x_1, mean over all tokens",
        "sampling": "EMA weights; discrete_euler at nfes; tokens dequantised with uniform jitter in each cell",
        "train": dataclasses.asdict(train_config(bp, "dfm")),
    }
    return run
