"""What every bench case shares: sizes per profile, seeding, timing, and the :class:`Run` recorder.

A case builds one :class:`Run`, registers each dataset's held-out reference with
:meth:`Run.set_reference` (which also measures the noise floors), records each training with
:meth:`Run.add_training` and each sample set with :meth:`Run.add_samples` (which computes the
metrics), then :meth:`Run.write` produces ``results.json`` and ``samples.npz``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

import tutorlib
from tutorlib.data import TOY_DATASETS, toy_sampler
from tutorlib.device import PROFILES, Profile
from tutorlib.metrics import energy_distance, mmd_rbf, noise_floor
from tutorlib.solvers import ode_solve
from tutorlib.train import TrainConfig, TrainHistory

SCHEMA = "tutorlib.bench/1"
FM_DATASETS = ("checkerboard", "eight_gaussians", "moons", "two_spirals")
METRICS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"energy": energy_distance, "mmd": mmd_rbf}


@dataclass(frozen=True)
class BenchProfile:
    """Sizes of one bench profile. ``P`` sizes the models and training like a lesson's profile."""

    name: str  # "smoke", "standard" or "full"
    P: Profile  # tutorlib profile, adjusted for the bench (steps_2d, batch_2d, hidden_2d, depth_2d, n_eval_2d)
    nfes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 100)  # Euler step counts evaluated for flow models
    floor_repeats: int = 5  # independent data pairs behind each noise floor
    ddpm_T: int = 1000  # DDPM chain length (linear betas)
    ancestral_steps: tuple[int, ...] = (10, 20, 50, 100, 1000)  # respaced ancestral sampler step counts
    reflow_pairs: int = 16384  # (x_0, x_1) pairs generated per reflow round (100 Euler steps each)
    cnf_hidden: int = 64  # width of the maximum-likelihood CNF's TimeMLP
    cnf_depth: int = 2  # residual blocks of the CNF's TimeMLP
    cnf_batch: int = 256  # CNF training batch
    cnf_train_steps: int = 300  # CNF optimiser steps
    cnf_solver_steps: int = 8  # RK4 steps of the likelihood solve during CNF training
    n_nll: int = 500  # held-out points scored by the CNF's exact log-likelihood (dopri5)
    timing_repeats: int = 7  # interleaved timed blocks per implementation (peers2d)
    peer_sample_n: int = 2000  # points per timed 100-step Euler sample (peers2d)

    def config(self) -> dict[str, Any]:
        """JSON-friendly sizes (the profile flattened in)."""
        d = dataclasses.asdict(self)
        d["P"] = dataclasses.asdict(self.P)
        return d


BENCH_PROFILES: dict[str, BenchProfile] = {
    "smoke": BenchProfile(
        name="smoke",
        P=PROFILES["smoke"].replace(steps_2d=30, batch_2d=64, hidden_2d=32, depth_2d=2, n_eval_2d=200),
        floor_repeats=2, ancestral_steps=(10, 100), reflow_pairs=512, cnf_hidden=16, cnf_depth=1,
        cnf_batch=32, cnf_train_steps=4, cnf_solver_steps=2, n_nll=32, timing_repeats=5, peer_sample_n=200,
    ),
    "standard": BenchProfile(
        name="standard",
        P=PROFILES["standard"].replace(batch_2d=256, n_eval_2d=1000),
    ),
    "full": BenchProfile(
        name="full",
        P=PROFILES["full"].replace(batch_2d=512),
        reflow_pairs=65536, cnf_hidden=128, cnf_depth=3, cnf_batch=512, cnf_train_steps=3000,
        cnf_solver_steps=16, n_nll=2000, timing_repeats=9,
    ),
}


def bench_profile(name: str) -> BenchProfile:
    """The :class:`BenchProfile` called ``name``."""
    if name not in BENCH_PROFILES:
        raise ValueError(f"unknown bench profile {name!r}; valid: {', '.join(BENCH_PROFILES)}")
    return BENCH_PROFILES[name]


def train_config(bp: BenchProfile, desc: str) -> TrainConfig:
    """``TrainConfig.from_profile(P)`` without the progress bar (what every 2D case trains with)."""
    return TrainConfig.from_profile(bp.P).replace(progress=False, desc=desc)


# --- seeding and timing ---


def derive_seed(seed: int, *tags: Any) -> int:
    """A reproducible 31-bit seed for one purpose: crc32 of ``seed`` and the tags."""
    return zlib.crc32("/".join(map(str, (seed, *tags))).encode()) & 0x7FFFFFFF


def generator(seed: int, *tags: Any) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed`."""
    return torch.Generator().manual_seed(derive_seed(seed, *tags))


def build(make: Callable[[], torch.nn.Module], seed: int, device: torch.device) -> torch.nn.Module:
    """``make()`` with its weights initialised from ``seed``, leaving the global RNG as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make().to(device)


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall times are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    """``(fn(), seconds)`` with the device synchronised on both ends."""
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - start


def log(msg: str) -> None:
    """Progress to stderr (results go to files)."""
    print(msg, file=sys.stderr, flush=True)


# --- environment description ---


def dist_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, or ``None``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Versions of the libraries a case ran with (``None`` when not installed)."""
    out = {"python": platform.python_version(), "tutorlib": tutorlib.__version__, "torch": torch.__version__,
           "numpy": np.__version__}
    for dist in ("scipy", *extra):
        out[dist] = dist_version(dist)
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Platform, CPU model, core count and torch threads of this run."""
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu": _cpu_model(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}


def describe_device(device: torch.device) -> str:
    """``"cpu"`` or e.g. ``"cuda:0 (NVIDIA H100)"``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


# --- the recorder ---


@dataclass
class _Dataset:
    sampler: Callable[..., Tensor]  # toy sampler (n, generator=, device=) -> (n, 2)
    data: Tensor  # (n, 2) held-out reference, on the run's device
    floors: dict[str, dict[str, Any]]  # metric -> noise floor summary
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)  # entry name -> metrics
    training: dict[str, dict[str, Any]] = field(default_factory=dict)  # method -> training summary
    sample_s: dict[str, float] = field(default_factory=dict)  # entry name -> sampling seconds
    extra: dict[str, Any] = field(default_factory=dict)  # case-specific metrics (e.g. CNF NLL)


class Run:
    """Collects one case run: held-out data, sample arrays, metrics and timings.

    Args:
        case: the case name (``fm2d``, ...).
        bp: the bench profile.
        seed: the run's seed.
        device: where models run (metrics run there too).
        datasets: the datasets the case uses; with more than one, array names get a
            ``DATASET/`` prefix.
    """

    def __init__(self, case: str, bp: BenchProfile, seed: int, device: torch.device, datasets: tuple[str, ...]):
        self.case, self.bp, self.seed, self.device = case, bp, seed, device
        self.dataset_names = tuple(datasets)
        self.datasets: dict[str, _Dataset] = {}
        self.arrays: dict[str, np.ndarray] = {}
        self.start = time.perf_counter()
        self.started = _dt.datetime.now(_dt.timezone.utc)
        self.config: dict[str, Any] = {}  # case settings for results.json (set by the case)
        self.extra_versions: tuple[str, ...] = ()  # further distributions whose versions to record
        self.extra: dict[str, Any] = {}  # further top-level results.json records (e.g. "peers")

    def name(self, dataset: str, entry: str) -> str:
        """The array name of ``entry`` (``METHOD@NFE``, ``data``): prefixed when several datasets."""
        return f"{dataset}/{entry}" if len(self.dataset_names) > 1 else entry

    def set_reference(self, dataset: str) -> Tensor:
        """Draw ``n_eval_2d`` held-out points of ``dataset`` (the metrics' reference) and its noise floors.

        Returns:
            The reference ``(n, 2)`` on the run's device.
        """
        if dataset not in self.dataset_names:
            raise ValueError(f"dataset {dataset!r} was not declared for this run: {self.dataset_names}")
        n, device = self.bp.P.n_eval_2d, self.device
        base = toy_sampler(dataset)

        def sampler(k: int, generator: torch.Generator | None = None) -> Tensor:
            return base(k, generator=generator, device=device)

        data = sampler(n, generator=generator(self.seed, dataset, "heldout"))  # (n, 2)
        floors = {}
        for metric_name, metric in METRICS.items():
            nf = noise_floor(sampler, n, metric, generator=generator(self.seed, dataset, "floor", metric_name),
                             repeats=self.bp.floor_repeats)
            floors[metric_name] = {"mean": nf.mean, "std": nf.std, "n": nf.n, "repeats": len(nf.values)}
        self.datasets[dataset] = _Dataset(sampler=sampler, data=data, floors=floors)
        self.arrays[self.name(dataset, "data")] = data.detach().cpu().numpy()
        return data

    def add_training(self, dataset: str, method: str, hist: TrainHistory, **extra: Any) -> None:
        """Record a :func:`tutorlib.train.train` run: steps, steps/s, wall time, final loss (and ``extra``)."""
        self.add_training_record(dataset, method, steps=len(hist.losses), wall_s=hist.total_time_s,
                                 final_loss=hist.final_loss, stop_reason=hist.stop_reason, **extra)

    def add_training_record(self, dataset: str, method: str, *, steps: int, wall_s: float, final_loss: float,
                            stop_reason: str = "steps", **extra: Any) -> None:
        """Record a training run given its numbers (for loops other than :func:`tutorlib.train.train`)."""
        rate = steps / wall_s if wall_s > 0 else float("nan")
        self.datasets[dataset].training[method] = {"steps": steps, "steps_per_s": rate, "wall_s": wall_s,
                                                   "final_loss": final_loss, "stop_reason": stop_reason, **extra}
        log(f"[{self.case}] {dataset} {method}: {steps} steps in {wall_s:.1f} s ({rate:.1f}/s), "
            f"final loss {final_loss:.4g}")

    def add_samples(self, dataset: str, method: str, solver: str, nfe: int, x: Tensor, seconds: float,
                    *, label: str | int | None = None, labels: Tensor | None = None) -> dict[str, Any]:
        """Store a sample set as ``METHOD@LABEL`` (label: the NFE, or e.g. ``dopri5``) and score it.

        Args:
            dataset: which dataset's reference to compare with.
            method: the method name, e.g. ``fm-ot``.
            solver: how it was sampled (``euler``, ``dopri5``, ``ddim``, ...).
            nfe: network evaluations used.
            x: samples ``(n, 2)``.
            seconds: the sampling wall time.
            label: the part after ``@``; ``None`` means ``nfe``.
            labels: the class of each sample of a class-conditional sampler, int64 ``(n,)`` in
                ``[0, num_classes)`` of the toy dataset; stored as the array ``ENTRY:labels`` and
                named in the record's ``labels`` field.

        Returns:
            The entry's metrics record.
        """
        ds = self.datasets[dataset]
        entry = f"{method}@{nfe if label is None else label}"
        x = x.detach().to(ds.data.device)
        record: dict[str, Any] = {"array": self.name(dataset, entry), "method": method, "solver": solver,
                                  "nfe": int(nfe)}
        if labels is not None:
            labels = labels.detach().cpu()
            k = TOY_DATASETS[dataset].num_classes
            if labels.dtype != torch.int64 or labels.shape != (x.shape[0],):
                raise ValueError(f"labels must be int64 of shape ({x.shape[0]},), got {tuple(labels.shape)} "
                                 f"{labels.dtype}")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
                raise ValueError(f"labels must lie in [0, {k}) for {dataset}")
            record["labels"] = record["array"] + ":labels"
            self.arrays[record["labels"]] = labels.numpy()
        for metric_name, metric in METRICS.items():
            value = float(metric(x, ds.data)) if bool(torch.isfinite(x).all()) else float("nan")
            record[metric_name] = value
            record[f"{metric_name}_x_floor"] = value / ds.floors[metric_name]["mean"]
        ds.entries[entry] = record
        ds.sample_s[entry] = seconds
        self.arrays[record["array"]] = x.cpu().numpy()
        return record

    def sample_flow(self, dataset: str, method: str, velocity: Callable[[Tensor, Tensor], Tensor], x_0: Tensor,
                    *, nfes: tuple[int, ...] | None = None, dopri5: bool = True) -> None:
        """Sample a velocity field with Euler at each NFE (and dopri5) from ``x_0`` and score each set."""
        for nfe in (self.bp.nfes if nfes is None else nfes):
            sol, s = timed(lambda: ode_solve(velocity, x_0, method="euler", steps=nfe), self.device)
            self.add_samples(dataset, method, "euler", sol.nfe, sol.x, s)
        if dopri5:
            sol, s = timed(lambda: ode_solve(velocity, x_0, method="dopri5"), self.device)
            self.add_samples(dataset, method, "dopri5", sol.nfe, sol.x, s, label="dopri5")
        best = min(e["energy_x_floor"] for k, e in self.datasets[dataset].entries.items() if k.startswith(method + "@"))
        log(f"[{self.case}] {dataset} {method}: sampled; best energy distance {best:.2f} x floor")

    def result(self) -> dict[str, Any]:
        """The ``results.json`` document."""
        metrics, train, sample = {}, {}, {}
        for name, ds in self.datasets.items():
            metrics[name] = {"n": int(ds.data.shape[0]), "noise_floor": ds.floors, "entries": ds.entries, **ds.extra}
            train[name] = ds.training
            sample[name] = ds.sample_s
        doc = {
            "schema": SCHEMA, "case": self.case, "profile": self.bp.name, "seed": self.seed,
            "date": self.started.isoformat(timespec="seconds"), "device": describe_device(self.device),
            "machine": machine(), "versions": versions(self.extra_versions),
            "config": {"bench_profile": self.bp.config(), **self.config},
            "timings": {"total_s": time.perf_counter() - self.start, "train": train, "sample_s": sample},
            "metrics": metrics,
        }
        doc.update(self.extra)
        return doc

    def write(self, out: str | os.PathLike, doc: dict[str, Any]) -> Path:
        """Write ``results.json`` and ``samples.npz`` into ``out`` (created); returns the JSON path."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "samples.npz", **self.arrays)
        path = out / "results.json"
        path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        log(f"[{self.case}] wrote {path} and {out / 'samples.npz'} ({len(self.arrays)} arrays) "
            f"after {doc['timings']['total_s']:.1f} s")
        return path
