"""Price of a minibatch-OT coupling in a flow-matching training step, in line and prefetched (issue 8).

Times one training step of the project's 2D recipe (``TimeMLP`` 128 x 3, ``CondOTPath``,
``cfm_loss``, AdamW, clipping) whose batch (data draw, noise, times, coupling) is built

* ``independent``: in line, no coupling (the reference);
* ``exact``: in line, :func:`tutorlib.couplings.minibatch_ot` (SciPy's exact assignment);
* ``block``: in line, :func:`tutorlib.couplings.block_ot` (Hilbert sort + exact blocks);
* ``exact+prefetch`` / ``block+prefetch``: the same batches built ahead by
  :class:`tutorlib.train.Prefetcher` (a background thread: the assignment releases the GIL, so it
  runs on a second core while the model trains on the first, with one torch thread).

Each variant runs blocks of ``--steps`` consecutive steps (a fresh prefetcher per block, its start-up
included); blocks of the variants are interleaved and the median seconds per step is reported with the
ratio to ``independent``, and the CPU seconds per step of the whole process (both threads). It also
reports how far each coupling's transport cost is above the exact optimum on the same batches.

    python bench/bench_ot_step.py --batch 256 --repeats 7 [--out bench/results/ot-step-256.json]
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

from tutorlib.couplings import block_ot, independent, minibatch_ot  # noqa: E402
from tutorlib.data import gaussian, toy_sampler  # noqa: E402
from tutorlib.losses import cfm_loss  # noqa: E402
from tutorlib.models import TimeMLP  # noqa: E402
from tutorlib.paths import CondOTPath  # noqa: E402
from tutorlib.train import Prefetcher  # noqa: E402


def make_sampler(dataset: str, batch: int, coupling, seed: int):
    draw = toy_sampler(dataset)
    gen = torch.Generator().manual_seed(seed)

    def sampler(step: int):
        x_1 = draw(batch, generator=gen)  # (B, 2)
        x_0 = gaussian(batch, generator=gen)  # (B, 2)
        t = torch.rand(batch, generator=gen)  # (B,)
        x_0, x_1 = coupling(x_0, x_1)
        return x_0, x_1, t

    return sampler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200, help="steps per timed block")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved blocks per variant")
    ap.add_argument("--block", type=int, default=32, help="block size of block_ot")
    ap.add_argument("--dataset", default="checkerboard")
    ap.add_argument("--no-exact", action="store_true", help="skip the exact coupling (slow at large batches)")
    ap.add_argument("--gap-batches", type=int, default=20, help="fresh batches behind the transport-cost gap "
                    "(each needs one exact assignment: slow at 4096)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = CondOTPath()
    model = TimeMLP(2, 128, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    params = list(model.parameters())

    def blk(x_0, x_1):
        return block_ot(x_0, x_1, block=args.block)

    couplings = {"independent": independent, "block": blk}
    if not args.no_exact:
        couplings["exact"] = minibatch_ot
    variants = [(name, c, False) for name, c in couplings.items()]
    variants += [(f"{name}+prefetch", c, True) for name, c in couplings.items() if name != "independent"]

    def run_block(coupling, prefetch: bool, seed: int) -> tuple[float, float]:
        sampler = make_sampler(args.dataset, args.batch, coupling, seed)
        c0, w0 = time.process_time(), time.perf_counter()
        batches = Prefetcher(sampler, depth=16) if prefetch else sampler
        for step in range(args.steps):
            x_0, x_1, t = batches(step)
            loss = cfm_loss(model, path, x_0, x_1, t)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        if prefetch:
            batches.close()
        return (time.perf_counter() - w0) / args.steps, (time.process_time() - c0) / args.steps

    run_block(independent, False, 0)  # warm-up
    wall = {name: [] for name, _, _ in variants}
    cpu = {name: [] for name, _, _ in variants}
    for r in range(args.repeats):
        order = variants if r % 2 == 0 else variants[::-1]
        for name, coupling, prefetch in order:
            w, c = run_block(coupling, prefetch, 1000 + r)
            wall[name].append(w)
            cpu[name].append(c)

    # transport cost over the exact optimum, on 20 fresh batches
    gen = torch.Generator().manual_seed(7)
    draw = toy_sampler(args.dataset)
    gaps = {name: [] for name in couplings if name != "exact"}
    for _ in range(args.gap_batches):
        x_1, x_0 = draw(args.batch, generator=gen), gaussian(args.batch, generator=gen)
        best = (x_0 - minibatch_ot(x_0, x_1).x_1).square().sum().item()
        for name in gaps:
            got = (x_0 - couplings[name](x_0, x_1).x_1).square().sum().item()
            gaps[name].append(got / best - 1.0)

    ref = statistics.median(wall["independent"])
    rows = {}
    print(f"batch {args.batch}, {args.steps} steps per block, {args.repeats} interleaved blocks, 1 torch thread")
    print(f"{'variant':<18} {'ms/step':>8} {'x indep':>8} {'[min-max]':>15} {'cpu ms/step':>12}")
    for name in wall:
        med = statistics.median(wall[name])
        ratios = [w / i for w, i in zip(wall[name], wall["independent"])]
        rows[name] = {"wall_ms": med * 1e3, "ratio": med / ref, "ratio_min": min(ratios), "ratio_max": max(ratios),
                      "cpu_ms": statistics.median(cpu[name]) * 1e3, "wall_ms_all": [w * 1e3 for w in wall[name]]}
        print(f"{name:<18} {med * 1e3:8.3f} {med / ref:8.2f} {f'[{min(ratios):.2f}-{max(ratios):.2f}]':>15} "
              f"{rows[name]['cpu_ms']:12.3f}")
    for name, g in gaps.items():
        print(f"transport cost of {name} over the exact optimum: median {statistics.median(g) * 100:+.1f} % "
              f"[{min(g) * 100:+.1f} to {max(g) * 100:+.1f}]")
    if args.out:
        doc = {"batch": args.batch, "steps": args.steps, "repeats": args.repeats, "block": args.block,
               "dataset": args.dataset, "torch": torch.__version__, "variants": rows,
               "cost_gap": {k: statistics.median(v) for k, v in gaps.items()}}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
