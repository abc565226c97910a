"""Sampling speed targets of issue 8: 2000 2D points x 100 Euler steps, 64 MNIST digits x 20 guided steps.

* 2D: the course's ``TimeMLP`` at the standard profile (128 x 3), :func:`tutorlib.solvers.ode_solve`
  (``euler``, 100 steps). ``shared t`` is what the solver does (one time expanded over the batch, so
  the model embeds it once); ``per-row t`` forces a materialised ``(B,)`` time vector (the model then
  embeds every row: the cost before the shared-time path existed).
* MNIST: 64 digits (labels 0-9 cycling), 20 Euler steps of classifier-free guidance at ``w = 2`` (one
  forward pass of a doubled batch per step, :func:`tutorlib.guidance.cfg_velocity`), for lesson 09's
  :class:`~tutorlib.models.PatchUNet` (``C = 32``) and the 28 -> 14 -> 7 :class:`~tutorlib.models.UNet`
  (``C = 32``). Weights are random: speed does not depend on them.

Medians [min-max] of ``--repeats`` timed runs after one warm-up, for each thread count in ``--threads``.

    python bench/bench_sampling.py --threads 1 2 [--out bench/results/sampling.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tutorlib.device import profile  # noqa: E402
from tutorlib.models import PatchUNet, TimeMLP, UNet  # noqa: E402
from tutorlib.recipes import sample_digits  # noqa: E402
from tutorlib.solvers import ode_solve  # noqa: E402


def timed(fn, repeats: int) -> dict:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - start)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    P = profile("standard")
    mlp = TimeMLP.from_profile(P).eval()
    x_0 = torch.randn(2000, 2)

    def per_row(x, t):
        return mlp(x, t.contiguous())

    nets = {"PatchUNet C=32": PatchUNet(1, None, 32, num_classes=10).eval(),
            "UNet C=32": UNet(1, None, 32, num_classes=10).eval()}
    labels = torch.arange(64) % 10
    rows = {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        cases = {
            "2D 2000 x 100 Euler, shared t": lambda: ode_solve(mlp, x_0, method="euler", steps=100),
            "2D 2000 x 100 Euler, per-row t": lambda: ode_solve(per_row, x_0, method="euler", steps=100),
        }
        for name, net in nets.items():
            cases[f"MNIST 64 x 20 CFG steps, {name}"] = (
                lambda net=net: sample_digits(net, labels, w=2.0, nfe=20, generator=torch.Generator().manual_seed(0)))
        for name, fn in cases.items():
            r = timed(fn, args.repeats)
            rows[f"{name} [{threads} thread(s)]"] = {**r, "threads": threads}
            print(f"{name:<44} {threads} thread(s): {r['median_s']:.3f} s [{r['min_s']:.3f}-{r['max_s']:.3f}]",
                  flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
