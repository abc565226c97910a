"""Cases ``mnist`` and ``mnist_ttq``: class-conditional flow matching on MNIST, judged by the course's classifier.

``mnist`` trains lesson 09's recipe (:class:`tutorlib.recipes.MNISTRecipe`: a
:class:`~tutorlib.models.PatchUNet`, linear path, label dropout, AdamW with warm-up and a cosine decay
that ends with the time budget, EMA) for the profile's wall-clock budget (600 s in ``standard``: the
"10 CPU minutes" of issue 8), scoring it at snapshot times on the way (training clock paused), then
sweeps the number of Euler steps at the recipe's guidance scale and the guidance scale at 20 steps,
for classifier-free guidance (``fm-cfgW``) and CFG-Zero* (``fm-cfgzeroW``). It also times the
"64 digits in 20 guided steps" sampler (``extra.sampling``).

``mnist_ttq`` is the time-to-quality comparison of issue 8: the same training loop and budget for the
project recipe and a *baseline*: :class:`~tutorlib.models.UNet` at ``C = 32`` (0.58 M parameters, levels
28 -> 14 -> 7, the "plain 0.5 M U-Net at batch 128" of the issue) with the course's earlier MNIST settings
(AdamW 2e-3, cosine to 5 %, EMA 0.999, uniform times, label dropout 0.1). Both are scored at the same
snapshot times; the final models are swept over the guidance scale at 20 steps.

Metrics (every image set is generated for the held-out labels: ``n / 10`` per digit): judge accuracy
(:func:`tutorlib.judge.judge_accuracy`: the generated digit is classified as its label), Frechet
distance in the judge's features against ``n`` held-out test images (floor: ``n`` training images
against the same), and the within-class feature spread (:func:`tutorlib.judge.feature_spread`,
diversity; real test digits give the reference). Entries are named ``METHOD@NFE`` with the scale
written without a dot (``fm-cfg1_5@20``); arrays hold images ``(n, 1, 28, 28)`` in ``[-1, 1]`` and
``ENTRY:labels``; ``data`` holds the held-out test images (``data:labels`` their digits).
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bench.common import BenchProfile, Run, derive_seed, log, sync
from bench.ttq import cosine_time_lr, train_timed
from tutorlib.data import load_mnist
from tutorlib.judge import feature_spread, frechet_distance, judge_accuracy, load_judge
from tutorlib.models import UNet, count_parameters
from tutorlib.recipes import MNISTRecipe, mnist_fm_batches, mnist_fm_loss, sample_digits
from tutorlib.train import EMA

DATASET = "mnist"


@dataclass(frozen=True)
class MNISTBenchConfig:
    """Sizes of the MNIST cases for one bench profile."""

    recipe: MNISTRecipe  # the project recipe
    budget_s: float  # wall-clock training budget of each model (time to quality: the bench's knob, not a lesson's)
    snapshots: tuple[float, ...]  # fractions of the budget at which the model is scored
    n: int  # generated images per scored set (and held-out reference size); a multiple of 10
    n_snapshot: int  # images per snapshot score
    nfes: tuple[int, ...]  # Euler steps swept at the recipe's guidance scale
    scales: tuple[float, ...]  # guidance scales swept at `nfe`
    zero_star_scales: tuple[float, ...]  # CFG-Zero* scales swept at `nfe`
    nfe: int = 20  # Euler steps of the guidance sweep and of the snapshots
    timing_images: int = 64  # the timed sampling run: images ...
    timing_nfe: int = 20  # ... and guided Euler steps
    timing_repeats: int = 5
    train_limit: int | None = None  # training images used (None: all 60,000)
    baseline_channels: int = 32  # mnist_ttq: the baseline UNet's C
    ttq_scales: tuple[float, ...] = (1.0, 2.0, 3.0)  # mnist_ttq: guidance scales of the final sweep


MNIST_CONFIGS: dict[str, MNISTBenchConfig] = {
    "smoke": MNISTBenchConfig(
        recipe=MNISTRecipe(base_channels=8, batch=16, steps=1000, warmup_steps=2), budget_s=1.0,
        snapshots=(0.5, 1.0), n=40, n_snapshot=20, nfes=(1, 4), scales=(0.0, 1.0, 3.0), zero_star_scales=(3.0,),
        nfe=4, timing_images=8, timing_nfe=4, timing_repeats=2, train_limit=500, baseline_channels=8,
        ttq_scales=(1.0, 3.0),
    ),
    "standard": MNISTBenchConfig(
        recipe=MNISTRecipe(), budget_s=600.0, snapshots=(0.25, 0.5, 0.75, 1.0), n=1000, n_snapshot=500,
        nfes=(1, 2, 4, 8, 20), scales=(0.0, 1.0, 1.5, 2.0, 3.0, 5.0), zero_star_scales=(2.0, 3.0, 5.0),
    ),
    "full": MNISTBenchConfig(
        recipe=MNISTRecipe(), budget_s=600.0, snapshots=(0.25, 0.5, 0.75, 1.0), n=10000, n_snapshot=1000,
        nfes=(1, 2, 4, 8, 20, 50, 100), scales=(0.0, 1.0, 1.5, 2.0, 3.0, 5.0), zero_star_scales=(2.0, 3.0, 5.0),
    ),
}


def scale_tag(w: float) -> str:
    """``2.0 -> "2"``, ``1.5 -> "1_5"``: a guidance scale as it appears in an entry name."""
    return f"{w:g}".replace("-", "m").replace(".", "_")


class MNISTRun(Run):
    """A :class:`~bench.common.Run` whose reference is held-out MNIST test images, scored by the judge."""

    def __init__(self, case: str, bp: BenchProfile, seed: int, device: torch.device, cfg: MNISTBenchConfig):
        super().__init__(case, bp, seed, device, (DATASET,))
        self.cfg = cfg
        self.judge = load_judge()
        self.judge.model.to(device)

    def set_mnist_reference(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` test images (``n / 10`` per digit), their floors, and load the training set."""
        from bench.common import _Dataset

        n = self.cfg.n
        test_x, test_y = load_mnist("test", progress=False)
        train_x, train_y = load_mnist("train", limit=self.cfg.train_limit, progress=False)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, DATASET, "heldout"))
        idx = torch.cat([torch.nonzero(test_y == d).flatten()[torch.randperm(int((test_y == d).sum()), generator=gen)]
                         [: n // 10] for d in range(10)])  # (n,) balanced
        data, labels = test_x[idx].to(self.device), test_y[idx].to(self.device)
        other = torch.randperm(train_x.shape[0], generator=gen)[:n]
        floors = {
            "frechet": {"mean": frechet_distance(train_x[other].to(self.device), data, self.judge), "n": n,
                        "what": "n training images against the n held-out test images"},
            "judge_accuracy": {"mean": judge_accuracy(data, labels, self.judge), "n": n,
                               "what": "the judge on the held-out test images"},
            "feature_spread": {"mean": feature_spread(data, labels, self.judge), "n": n,
                               "what": "within-class spread of the held-out test images"},
        }
        self.datasets[DATASET] = _Dataset(sampler=lambda *a, **k: None, data=data, floors=floors)
        self.arrays["data"] = data.cpu().numpy()
        self.arrays["data:labels"] = labels.cpu().numpy()
        self.labels = labels
        self.train_x, self.train_y = train_x, train_y
        return data, labels

    def score(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Judge accuracy, Frechet distance (and its ratio to the floor) and feature spread of a set."""
        ds = self.datasets[DATASET]
        fd = frechet_distance(images, ds.data, self.judge)
        return {"judge_accuracy": judge_accuracy(images, labels, self.judge), "frechet": fd,
                "frechet_x_floor": fd / ds.floors["frechet"]["mean"],
                "feature_spread": feature_spread(images, labels, self.judge)}

    def add_images(self, method: str, nfe: int, w: float, images: torch.Tensor, seconds: float,
                   *, zero_star: bool = False) -> dict[str, Any]:
        """Store a generated set as ``METHOD@NFE`` with its labels and score it."""
        ds = self.datasets[DATASET]
        entry = f"{method}@{nfe}"
        record = {"array": entry, "method": method, "solver": "euler", "nfe": int(nfe), "guidance": float(w),
                  "zero_star": zero_star, "labels": f"{entry}:labels", **self.score(images, self.labels)}
        ds.entries[entry] = record
        ds.sample_s[entry] = seconds
        self.arrays[entry] = images.detach().cpu().numpy().astype(np.float32)
        self.arrays[f"{entry}:labels"] = self.labels.cpu().numpy()
        log(f"[{self.case}] {entry}: judge {record['judge_accuracy'] * 100:.1f} %, Frechet {record['frechet']:.2f} "
            f"({record['frechet_x_floor']:.1f} x floor), {seconds:.1f} s")
        return record


def _noise(run: MNISTRun, n: int, tag: str) -> torch.Tensor:
    gen = torch.Generator().manual_seed(derive_seed(run.seed, DATASET, tag))
    return torch.randn((n, 1, 28, 28), generator=gen).to(run.device)


def _train_scored(run: MNISTRun, method: str, model: torch.nn.Module, recipe: MNISTRecipe) -> tuple[torch.nn.Module, list]:
    """Train ``model`` by ``recipe`` for its wall-clock budget, scoring the EMA weights at the snapshots.

    Every profile takes this path (smoke: a 1 s budget). The learning rate warms up over
    ``recipe.warmup_steps`` and then decays along a cosine that ends with the budget or with
    ``recipe.steps``, whichever comes first (:func:`bench.ttq.cosine_time_lr`): a time-to-quality
    schedule, which lessons never use (they train for steps)."""
    cfg, device = run.cfg, run.device
    model = model.to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(derive_seed(run.seed, DATASET, method, "batches"))
    batches = mnist_fm_batches(run.train_x, run.train_y, recipe, generator=gen, device=device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr)
    ema = EMA(model, recipe.ema_decay)
    snap_n = cfg.n_snapshot
    snap_labels = torch.arange(10, device=device).repeat_interleave(snap_n // 10)
    snap_noise = _noise(run, snap_n, "snapshot-noise")
    curve: list[dict[str, Any]] = []

    def shadow() -> torch.nn.Module:
        m = copy.deepcopy(model)
        ema.copy_to(m)
        return m.to(memory_format=torch.contiguous_format).eval()

    def evaluate(train_s: float, steps: int) -> None:
        images = sample_digits(shadow(), snap_labels, w=recipe.guidance, nfe=cfg.nfe, x_0=snap_noise)
        ds = run.datasets[DATASET]
        fd = frechet_distance(images, ds.data, run.judge)
        point = {"train_s": train_s, "steps": steps, "judge_accuracy": judge_accuracy(images, snap_labels, run.judge),
                 "frechet": fd, "n": snap_n, "w": recipe.guidance, "nfe": cfg.nfe}
        curve.append(point)
        log(f"[{run.case}] {method} after {train_s:.0f} s ({steps} steps): judge {point['judge_accuracy'] * 100:.1f} %, "
            f"Frechet {fd:.2f}")

    budget = cfg.budget_s
    snapshots = tuple(f * budget for f in cfg.snapshots)
    span = max(1, recipe.steps - recipe.warmup_steps)

    def lr_fn(step: int, frac: float) -> float:
        done = max(frac, (step - recipe.warmup_steps) / span)  # the decay ends with the budget or the steps
        return cosine_time_lr(step, done, recipe.lr, recipe.warmup_steps, recipe.min_lr_ratio)

    steps, loss = train_timed(model, mnist_fm_loss, batches, opt, budget, snapshots, evaluate, lr_fn=lr_fn,
                              grad_clip=recipe.grad_clip, ema=ema)
    wall = budget  # training time; the snapshot scoring is excluded
    run.add_training_record(DATASET, method, steps=steps, wall_s=wall, final_loss=float(loss),
                            stop_reason="time_budget",
                            parameters=count_parameters(model), recipe=dataclasses.asdict(recipe))
    return shadow(), curve


def _time_sampling(run: MNISTRun, model: torch.nn.Module, w: float) -> dict[str, Any]:
    """Median seconds to generate ``timing_images`` digits with ``timing_nfe`` guided Euler steps."""
    cfg = run.cfg
    labels = torch.arange(cfg.timing_images, device=run.device) % 10
    times = []
    for r in range(cfg.timing_repeats + 1):
        sync(run.device)
        start = time.perf_counter()
        sample_digits(model, labels, w=w, nfe=cfg.timing_nfe, generator=torch.Generator().manual_seed(r))
        sync(run.device)
        if r:  # the first run warms up
            times.append(time.perf_counter() - start)
    return {"images": cfg.timing_images, "nfe": cfg.timing_nfe, "w": w, "median_s": statistics.median(times),
            "min_s": min(times), "max_s": max(times), "repeats": len(times)}


def _sweep(run: MNISTRun, model: torch.nn.Module, prefix: str, recipe: MNISTRecipe, *, nfes: bool = True,
           zero_star: bool = True, scales: tuple[float, ...] | None = None) -> None:
    cfg = run.cfg
    x_0 = _noise(run, cfg.n, "eval-noise")

    def gen(w: float, nfe: int, zs: bool = False) -> tuple[torch.Tensor, float]:
        sync(run.device)
        start = time.perf_counter()
        images = sample_digits(model, run.labels, w=w, nfe=nfe, x_0=x_0, zero_star=zs)
        sync(run.device)
        return images, time.perf_counter() - start

    done = set()
    for w in (cfg.scales if scales is None else scales):
        images, s = gen(w, cfg.nfe)
        run.add_images(f"{prefix}-cfg{scale_tag(w)}", cfg.nfe, w, images, s)
        done.add((w, cfg.nfe))
    if nfes:
        for nfe in cfg.nfes:
            if (recipe.guidance, nfe) not in done:
                images, s = gen(recipe.guidance, nfe)
                run.add_images(f"{prefix}-cfg{scale_tag(recipe.guidance)}", nfe, recipe.guidance, images, s)
    if zero_star:
        for w in cfg.zero_star_scales:
            images, s = gen(w, cfg.nfe, True)
            run.add_images(f"{prefix}-cfgzero{scale_tag(w)}", cfg.nfe, w, images, s, zero_star=True)


def run_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """``mnist``: train the project recipe for its budget (scored on the way), then sweep NFE and guidance."""
    cfg = MNIST_CONFIGS[bp.name]
    run = MNISTRun("mnist", bp, seed, device, cfg)
    run.set_mnist_reference()
    torch.manual_seed(derive_seed(seed, DATASET, "fm", "init"))
    model, curve = _train_scored(run, "fm", cfg.recipe.build_model(), cfg.recipe)
    ds = run.datasets[DATASET]
    ds.extra["curve"] = {"fm": curve}
    ds.extra["sampling"] = _time_sampling(run, model, cfg.recipe.guidance)
    log(f"[mnist] {cfg.timing_images} digits x {cfg.timing_nfe} guided Euler steps: "
        f"{ds.extra['sampling']['median_s']:.2f} s (median)")
    _sweep(run, model, "fm", cfg.recipe)
    run.config = {"methods": {"fm-cfgW": "class-conditional FM, classifier-free guidance at scale W",
                              "fm-cfgzeroW": "the same model with CFG-Zero*'s optimised scale"},
                  "recipe": dataclasses.asdict(cfg.recipe), "model": "PatchUNet (tutorlib.recipes.MNISTRecipe)",
                  "bench": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "recipe"}}
    return run


def baseline_recipe(cfg: MNISTBenchConfig, recipe: MNISTRecipe | None = None) -> MNISTRecipe:
    """The baseline's settings: ``recipe`` (default the case's recipe) with the course's earlier UNet
    schedule (cosine to 5 %, NCHW)."""
    return (cfg.recipe if recipe is None else recipe).replace(min_lr_ratio=0.05, channels_last=False)


PREVIOUS_RECIPE = MNISTRecipe(batch=128, lr=2e-3, time_sampling="uniform", ema_decay=0.999, guidance=2.0, steps=3000)
"""Lesson 09's recipe before round two of time to quality (issue 17): the ``previous`` method of ``mnist_5min``."""

MNIST_5MIN_CONFIGS: dict[str, MNISTBenchConfig] = {
    "smoke": MNISTBenchConfig(
        recipe=MNISTRecipe(base_channels=8, batch=8, steps=10**6, warmup_steps=2),
        budget_s=1.0, snapshots=(0.5, 1.0), n=40, n_snapshot=20, nfes=(), scales=(), zero_star_scales=(), nfe=4,
        train_limit=500, baseline_channels=8, ttq_scales=(1.5, 2.0)),
    "standard": MNISTBenchConfig(
        recipe=MNISTRecipe(steps=10**6), budget_s=300.0, snapshots=(0.5, 1.0), n=1000, n_snapshot=500, nfes=(),
        scales=(), zero_star_scales=(), ttq_scales=(1.5, 1.75, 2.0)),
    "full": MNISTBenchConfig(
        recipe=MNISTRecipe(steps=10**6), budget_s=300.0, snapshots=(0.25, 0.5, 0.75, 1.0), n=10000,
        n_snapshot=1000, nfes=(), scales=(), zero_star_scales=(), ttq_scales=(1.5, 1.75, 2.0)),
}
"""Sizes of ``mnist_5min``. The recipes' ``steps`` are out of reach so that the decay ends with the budget."""

FIVE_MINUTE_TARGET = {"judge_accuracy": 0.99, "frechet_x_floor": 1.5, "nfe": 20, "budget_s": 300.0}
"""Issue 17's bar: judge accuracy and Frechet distance (x the train-vs-test floor at equal n) at the method's
own guidance scale and <= 20 NFE, after <= 300 s of training on one thread, median over seeds."""


def previous_recipe(cfg: MNISTBenchConfig, bp: BenchProfile) -> MNISTRecipe:
    """:data:`PREVIOUS_RECIPE` at the case's width, steps and warm-up (batch 16 in ``smoke``)."""
    previous = PREVIOUS_RECIPE.replace(base_channels=cfg.recipe.base_channels, steps=cfg.recipe.steps,
                                       warmup_steps=cfg.recipe.warmup_steps)
    return previous.replace(batch=16) if bp.name == "smoke" else previous


def run_5min_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """``mnist_5min``: lesson 09's recipe, the previous recipe and the baseline U-Net, each trained for the
    budget (300 s in ``standard``) from one seed; each final model scored at its own guidance scale and at
    ``ttq_scales`` (20 Euler steps). Run it once per seed (``--seed 0``, ``1``, ``2``); the report
    takes the median over the runs it is given (:func:`bench.report.five_minute_summary`)."""
    cfg = MNIST_5MIN_CONFIGS[bp.name]
    run = MNISTRun("mnist_5min", bp, seed, device, cfg)
    run.set_mnist_reference()
    previous = previous_recipe(cfg, bp)
    base = baseline_recipe(cfg, previous)  # the U-Net with the previous settings
    curves, own = {}, {}
    for method, recipe, make in (
        ("project", cfg.recipe, cfg.recipe.build_model),
        ("previous", previous, previous.build_model),
        ("baseline", base, lambda: UNet(1, None, base_channels=cfg.baseline_channels, num_classes=10)),
    ):
        torch.manual_seed(derive_seed(seed, DATASET, method, "init"))
        model, curves[method] = _train_scored(run, method, make(), recipe)
        scales = tuple(sorted({*cfg.ttq_scales, recipe.guidance}))
        _sweep(run, model, method, recipe, nfes=False, zero_star=False, scales=scales)
        own[method] = f"{method}-cfg{scale_tag(recipe.guidance)}@{cfg.nfe}"
    ds = run.datasets[DATASET]
    ds.extra["curve"] = curves
    ds.extra["own_scale"] = own
    ds.extra["target"] = dict(FIVE_MINUTE_TARGET, budget_s=cfg.budget_s)
    run.config = {"methods": {"project": "tutorlib.recipes.MNISTRecipe, lesson 09's recipe (PatchUNet)",
                              "previous": "the recipe before issue 17 (batch 128, AdamW 2e-3, uniform times, w = 2)",
                              "baseline": f"UNet(base_channels={cfg.baseline_channels}) with the previous settings, "
                                          "cosine to 5 %, NCHW"},
                  "recipe": dataclasses.asdict(cfg.recipe), "previous_recipe": dataclasses.asdict(previous),
                  "baseline_recipe": dataclasses.asdict(base),
                  "bench": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "recipe"}}
    return run


def run_ttq_case(bp: BenchProfile, seed: int, device: torch.device) -> Run:
    """``mnist_ttq``: the project recipe against the baseline U-Net on equal wall-clock budgets."""
    cfg = MNIST_CONFIGS[bp.name]
    run = MNISTRun("mnist_ttq", bp, seed, device, cfg)
    run.set_mnist_reference()
    curves = {}
    base = baseline_recipe(cfg, previous_recipe(cfg, bp))  # the U-Net keeps the earlier settings (batch 128)
    for method, recipe, make in (
        ("project", cfg.recipe, cfg.recipe.build_model),
        ("baseline", base, lambda: UNet(1, None, base_channels=cfg.baseline_channels, num_classes=10)),
    ):
        torch.manual_seed(derive_seed(seed, DATASET, method, "init"))
        model, curves[method] = _train_scored(run, method, make(), recipe)
        _sweep(run, model, method, recipe, nfes=False, zero_star=False, scales=cfg.ttq_scales)
    run.datasets[DATASET].extra["curve"] = curves
    run.config = {"methods": {"project": "tutorlib.recipes.MNISTRecipe (PatchUNet)",
                              "baseline": f"UNet(base_channels={cfg.baseline_channels}), cosine to 5 %, NCHW"},
                  "recipe": dataclasses.asdict(cfg.recipe), "baseline_recipe": dataclasses.asdict(base),
                  "bench": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "recipe"}}
    return run
