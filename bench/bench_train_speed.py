"""Training speed on this machine: steps/s of one optimiser step, eager vs torch.compile.

Measures the two models every lesson trains, at the standard profile's sizes:

* the 2D :class:`~tutorlib.models.TimeMLP` (hidden_2d x depth_2d, batch 512), flow-matching loss;
* the MNIST :class:`~tutorlib.models.UNet` (unet_channels, class-conditional, batch 128).

Each step is one :func:`tutorlib.train.train` step (AdamW, grad clipping, EMA), so the numbers are
what a lesson sees. The first steps (and compilation) are excluded; the table shows the median
over repeats of timed blocks. Run::

    python bench/bench_train_speed.py [--threads N] [--repeats 5] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tutorlib.device import profile, set_threads
from tutorlib.models import TimeMLP, UNet, count_parameters
from tutorlib.train import TrainConfig, train


def _fm_loss(model, batch):
    x1, x0, t, y = batch
    tt = t.view(-1, *([1] * (x1.dim() - 1)))
    xt = (1 - tt) * x0 + tt * x1  # linear path
    return (model(xt, t, y) - (x1 - x0)).pow(2).mean()


def _batch_fn(shape, num_classes, gen):
    def sampler(step):
        B = shape[0]
        return (torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), torch.rand(B, generator=gen),
                torch.randint(0, num_classes, (B,), generator=gen))
    return sampler


def measure(make_model, shape, num_classes, compile_: bool, warmup: int, block: int, repeats: int) -> dict:
    gen = torch.Generator().manual_seed(0)
    model = make_model()
    sampler = _batch_fn(shape, num_classes, gen)
    cfg = TrainConfig(steps=warmup, lr=1e-4, compile=compile_, progress=False, check_every=block)
    t0 = time.perf_counter()
    train(model, _fm_loss, sampler, cfg)  # warm-up, compilation included
    first = time.perf_counter() - t0
    rates = []
    for _ in range(repeats):
        hist = train(model, _fm_loss, sampler, cfg.replace(steps=block))
        rates.append(hist.steps_per_s)
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates), "warmup_s": first,
            "params": count_parameters(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default TUTORLIB_THREADS or all cores)")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks per setting")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = ap.parse_args()
    threads = set_threads(args.threads)
    P = profile("standard")
    cases = [
        ("TimeMLP 2D", lambda: TimeMLP.from_profile(P, num_classes=8), (512, 2), 8, 20, 50),
        ("UNet MNIST", lambda: UNet.from_profile(P, num_classes=10), (128, 1, 28, 28), 10, 3, 5),
    ]
    rows = []
    for name, make, shape, k, warm, block in cases:
        for comp in ([False] if args.no_compile else [False, True]):
            try:
                r = measure(make, shape, k, comp, warm, block, args.repeats)
            except Exception as err:  # torch.compile may be unavailable (no compiler)
                print(f"{name} compile={comp}: failed: {type(err).__name__}: {err}")
                continue
            rows.append((name, shape[0], comp, r))
            print(f"  done: {name} compile={comp}", flush=True)
    print(f"\ntorch {torch.__version__}, {threads} thread(s), profile 'standard', median of {args.repeats} blocks")
    head = ("model", "params", "batch", "compile", "steps/s", "min", "max", "warm-up s")
    print("{:<12} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>10}".format(*head))
    for name, B, comp, r in rows:
        print(f"{name:<12} {r['params']:>9,} {B:>6} {str(comp):>8} {r['median']:>9.2f} {r['min']:>8.2f} "
              f"{r['max']:>8.2f} {r['warmup_s']:>10.1f}")


if __name__ == "__main__":
    main()
