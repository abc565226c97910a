"""Threads under contention: training speed with and without a competing busy process.

A learner's laptop always has something else running (a browser, an indexer). On a machine with
few cores, torch's OpenMP threads then fight that process for cores: a thread that waits for a
descheduled sibling at every parallel region spins or sleeps, and the step time collapses. This
script measures, for the two models the lessons train (the 2D ``TimeMLP`` at batch 512 and the
MNIST ``PatchUNet`` at batch 128, one :func:`tutorlib.train.train` step each), the steps per second
for every combination of

* torch threads: 1, or all cores;
* ``OMP_WAIT_POLICY``: unset (libgomp's default: spin a while, then sleep) or ``PASSIVE`` (sleep at once);
* load: idle, or one competing busy process (a pure-Python loop: one core's worth of other work).

Each combination runs in a fresh subprocess (OpenMP reads its environment when torch loads) and
reports the median of ``--repeats`` timed blocks after a warm-up. Run::

    python bench/bench_threads.py [--repeats 5] [--out bench/micro/threads.json]

:func:`tutorlib.device.set_threads` picks its default from these measurements (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import torch
threads, model_name, repeats = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
torch.set_num_threads(threads)
from tutorlib.models import PatchUNet, TimeMLP
from tutorlib.train import TrainConfig, train
g = torch.Generator().manual_seed(0)
if model_name == "TimeMLP":
    model, shape, block = TimeMLP(hidden=128, depth=3), (512, 2), 100
else:
    model, shape, block = PatchUNet(1, None, base_channels=32, num_classes=10), (128, 1, 28, 28), 8
batches = [(torch.randn(shape, generator=g), torch.randn(shape, generator=g), torch.rand(shape[0], generator=g))
           for _ in range(4)]
def loss(m, b):
    x0, x1, t = b
    tt = t.view(-1, *([1] * (x1.dim() - 1)))
    kw = {"y": torch.zeros(x1.shape[0], dtype=torch.long)} if model_name != "TimeMLP" else {}
    return (m((1 - tt) * x0 + tt * x1, t, **kw) - (x1 - x0)).square().mean()
cfg = TrainConfig(steps=block // 2, lr=1e-4, progress=False, check_every=block)
train(model, loss, lambda s: batches[s % 4], cfg)  # warm-up
rates = []
for _ in range(repeats):
    t0 = time.perf_counter()
    train(model, loss, lambda s: batches[s % 4], cfg.replace(steps=block))
    rates.append(block / (time.perf_counter() - t0))
print(json.dumps({"median": statistics.median(rates), "min": min(rates), "max": max(rates)}))
"""

BUSY = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def measure(threads: int, model: str, passive: bool, repeats: int) -> dict:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    env.pop("OMP_NUM_THREADS", None)
    if passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    out = subprocess.run([sys.executable, "-c", CHILD, str(threads), model, str(repeats)], cwd=ROOT, env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    for load in ("idle", "busy"):
        competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if load == "busy" else None
        try:
            time.sleep(0.5)
            for model in ("TimeMLP", "PatchUNet"):
                for threads in sorted({1, cores}):
                    for passive in (False, True):
                        r = measure(threads, model, passive, args.repeats)
                        row = {"load": load, "model": model, "threads": threads,
                               "omp_wait_policy": "PASSIVE" if passive else "default", **r}
                        rows.append(row)
                        print(f"{load:5s} {model:9s} threads={threads} OMP_WAIT_POLICY={row['omp_wait_policy']:8s} "
                              f"{r['median']:8.2f} steps/s [{r['min']:.2f}-{r['max']:.2f}]", flush=True)
        finally:
            if competitor is not None:
                competitor.kill()
                competitor.wait()
    if args.out:
        import torch

        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "date": time.strftime("%Y-%m-%d", time.gmtime()), "cpu_count": cores, "platform": platform.platform(),
            "processor": platform.processor(), "torch": torch.__version__, "repeats": args.repeats, "rows": rows,
        }, indent=1) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
