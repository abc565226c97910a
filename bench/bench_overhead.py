"""Overhead of tutorlib's abstractions against the same computation written in plain PyTorch.

On a 2D MLP (3 hidden layers of 128, SiLU, time concatenated to the input) it times:

* a flow-matching training step: ``CondOTPath`` + :func:`tutorlib.losses.cfm_loss` + backward + Adam,
  against the linear path and loss written inline;
* the same step with :func:`tutorlib.couplings.minibatch_ot` pairing against the independent step
  (the price of exact minibatch OT at this batch size);
* a 100-step Euler sample of 2000 points: :func:`tutorlib.solvers.ode_solve` against a plain loop.

Blocks of each variant are interleaved (order alternating) and the table shows the median time
per step or per sample over repeats, and the ratio tutorlib / plain (about 1.0 means no
overhead). Run::

    python bench/bench_overhead.py [--threads 1] [--repeats 15] [--device cpu] [--out overhead.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import time

import torch

from bench.peers2d import ConcatMLP  # the plain v(x, t) = MLP([x, t]) both variants share
from tutorlib.couplings import minibatch_ot
from tutorlib.losses import cfm_loss
from tutorlib.paths import CondOTPath
from tutorlib.solvers import ode_solve


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_block(fn, n: int, device: torch.device) -> float:
    """Seconds per call of ``fn`` over a block of ``n`` calls."""
    _sync(device)
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    _sync(device)
    return (time.perf_counter() - start) / n


def compare(variants: dict, n: int, repeats: int, warmup: int, device: torch.device) -> dict:
    """Interleave blocks of each variant (alternating order); median seconds per call of each."""
    for fn in variants.values():
        _time_block(fn, warmup, device)
    times = {name: [] for name in variants}
    names = list(variants)
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            times[name].append(_time_block(variants[name], n, device))
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--repeats", type=int, default=15, help="interleaved blocks per variant")
    ap.add_argument("--batch", type=int, default=256, help="training batch size")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)

    # Pre-drawn batches shared by both variants (data: a ring of 8 Gaussians).
    n_batches, B = 64, args.batch
    angles = torch.randint(0, 8, (n_batches, B), generator=gen) * (torch.pi / 4)
    ring = torch.stack([angles.cos(), angles.sin()], -1) * 2  # (n_batches, B, 2)
    x1s = (ring + 0.1 * torch.randn(n_batches, B, 2, generator=gen)).to(device)
    x0s = torch.randn(n_batches, B, 2, generator=gen).to(device)
    ts = torch.rand(n_batches, B, generator=gen).to(device)

    base = ConcatMLP().to(device)
    models = {k: copy.deepcopy(base) for k in ("tutorlib", "plain", "ot")}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    path = CondOTPath()

    def step_tutorlib(i: int) -> None:
        j = i % n_batches
        loss = cfm_loss(models["tutorlib"], path, x0s[j], x1s[j], ts[j])
        opts["tutorlib"].zero_grad(set_to_none=True)
        loss.backward()
        opts["tutorlib"].step()

    def step_plain(i: int) -> None:
        j = i % n_batches
        x0, x1, t = x0s[j], x1s[j], ts[j]
        tt = t[:, None]  # (B, 1)
        x_t = tt * x1 + (1 - tt) * x0  # (B, 2)
        loss = (models["plain"](x_t, t) - (x1 - x0)).square().mean()
        opts["plain"].zero_grad(set_to_none=True)
        loss.backward()
        opts["plain"].step()

    def step_ot(i: int) -> None:
        j = i % n_batches
        x0, x1 = minibatch_ot(x0s[j], x1s[j])
        loss = cfm_loss(models["ot"], path, x0, x1, ts[j])
        opts["ot"].zero_grad(set_to_none=True)
        loss.backward()
        opts["ot"].step()

    train = compare({"tutorlib": step_tutorlib, "plain": step_plain, "ot": step_ot}, n=50,
                    repeats=args.repeats, warmup=20, device=device)

    # Sampling: 100 Euler steps on 2000 points.
    model = models["tutorlib"].eval()
    x0_sample = torch.randn(2000, 2, generator=gen).to(device)
    steps = 100

    def sample_tutorlib(i: int) -> None:
        ode_solve(model, x0_sample, method="euler", steps=steps)

    def sample_plain(i: int) -> None:
        with torch.no_grad():
            x, dt, n = x0_sample, 1.0 / steps, x0_sample.shape[0]
            for k in range(steps):
                t = torch.full((n,), k * dt, device=device)  # (n,)
                x = x + dt * model(x, t)

    sample = compare({"tutorlib": sample_tutorlib, "plain": sample_plain}, n=3, repeats=args.repeats,
                     warmup=2, device=device)

    rows = [
        ("train step (CondOT + cfm_loss)", train["tutorlib"], train["plain"], "plain PyTorch"),
        ("train step with minibatch_ot", train["ot"], train["tutorlib"], "independent"),
        ("Euler sample, 100 steps x 2000", sample["tutorlib"], sample["plain"], "plain loop"),
    ]
    print(f"device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"batch {B}, {args.repeats} interleaved repeats (medians)")
    print(f"{'measurement':34s} {'tutorlib ms':>12s} {'baseline ms':>12s} {'ratio':>7s}  baseline")
    results = []
    for name, ours, ref, ref_name in rows:
        print(f"{name:34s} {1e3 * ours:12.3f} {1e3 * ref:12.3f} {ours / ref:7.3f}  {ref_name}")
        results.append({"name": name, "tutorlib_ms": 1e3 * ours, "baseline_ms": 1e3 * ref, "ratio": ours / ref,
                        "baseline": ref_name})
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
                       "machine": platform.machine(), "batch": B, "repeats": args.repeats, "results": results},
                      fh, indent=2)


if __name__ == "__main__":
    main()
