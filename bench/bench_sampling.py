"""Sampling speed targets (issues 8 and 17): 2000 2D points x 100 Euler steps, 64 MNIST digits x 20 guided steps.

* 2D: the course's ``TimeMLP`` at the standard profile (128 x 3), :func:`tutorlib.solvers.ode_solve`
  (``euler``, 100 steps). ``shared t`` is what the solver does (one time expanded over the batch, so
  the model embeds it once); ``per-row t`` forces a materialised ``(B,)`` time vector (the model then
  embeds every row: the cost before the shared-time path existed).
* MNIST: 64 digits (labels 0-9 cycling), 20 Euler steps of classifier-free guidance at ``w = 2`` (one
  forward pass of a doubled batch per step, :func:`tutorlib.guidance.cfg_velocity`), for lesson 09's
  :class:`~tutorlib.models.PatchUNet` (``C = 32``) and the 28 -> 14 -> 7 :class:`~tutorlib.models.UNet`
  (``C = 32``). Weights are random: speed does not depend on them.
* ``bfloat16``: the same runs with the network under ``torch.autocast(bfloat16)``
  (:func:`tutorlib.solvers.reduced_precision`; the solver's state stays float32). The cases are timed in
  turn, one run of each per round, so that a load change hits all of them alike.

Medians [min-max] of ``--repeats`` rounds after one warm-up, for each thread count in ``--threads``.

``--quality`` also measures what bfloat16 costs in quality, on trained models, the same noise in both
precisions: 2D, the course's recipe trained for the standard profile's steps on checkerboard and
eight_gaussians, energy distance / noise floor of 100-step Euler samples (n = 1500, 20 draws: the floor's
standard error under a fifth of its mean); MNIST, lesson 09's shipped ``fm_mnist_standard`` checkpoint, judge
accuracy and Fréchet distance of 1000 digits at 20 NFE, w = 2, for two noise seeds (needs MNIST).

    python bench/bench_sampling.py --threads 1 2 --quality [--out bench/micro/sampling.json]
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
from tutorlib.solvers import ode_solve, reduced_precision  # noqa: E402


def timed_in_turn(cases: dict, repeats: int) -> dict[str, dict]:
    """Each case once (warm-up), then ``repeats`` rounds of one timed run per case."""
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts), "repeats": repeats}
            for name, ts in times.items()}


def quality_2d(P) -> dict:
    from tutorlib import data
    from tutorlib.losses import cfm_loss
    from tutorlib.metrics import energy_distance, model_score, noise_floor
    from tutorlib.paths import CondOTPath
    from tutorlib.train import TrainConfig, train

    path, out = CondOTPath(), {}
    for name in ("checkerboard", "eight_gaussians"):
        draw = getattr(data, name)
        gen = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        model = TimeMLP.from_profile(P)

        def loss(m, x_1, gen=gen):
            return cfm_loss(m, path, data.gaussian(x_1.shape[0], generator=gen), x_1,
                            torch.rand(x_1.shape[0], generator=gen))

        hist = train(model, loss, lambda step, draw=draw, gen=gen: draw(P.batch_2d, generator=gen),
                     TrainConfig.from_profile(P).replace(progress=False))
        hist.ema.copy_to(model)
        model.eval()

        def sampler(k, generator=None, draw=draw):
            return draw(k, generator=generator)

        n, repeats = 1500, 20
        floor = noise_floor(sampler, n, energy_distance, generator=torch.Generator().manual_seed(5), repeats=repeats)
        row = {"floor": floor.mean, "floor_se": floor.std / repeats ** 0.5, "n": n, "repeats": repeats,
               "train_steps": P.steps_2d}
        for precision, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            velocity = reduced_precision(model, dtype)

            def samples(k, generator=None, velocity=velocity):
                with torch.no_grad():
                    return ode_solve(velocity, torch.randn(k, 2, generator=generator), method="euler", steps=100).x

            r = model_score(samples, sampler, n, metric=energy_distance, generator=torch.Generator().manual_seed(7),
                            repeats=repeats)
            row[precision] = {"energy": r.mean, "energy_se": r.std / repeats ** 0.5, "x_floor": r.mean / floor.mean}
        x_0 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            a = ode_solve(model, x_0, method="euler", steps=100).x
            b = ode_solve(reduced_precision(model, torch.bfloat16), x_0, method="euler", steps=100).x
        row["paired_shift_mean"] = (a - b).norm(dim=1).mean().item()
        out[name] = row
        print(f"2D {name}: energy x floor float32 {row['float32']['x_floor']:.3f}, bfloat16 "
              f"{row['bfloat16']['x_floor']:.3f} (floor {floor.mean:.5f} ± {row['floor_se']:.5f} s.e.); "
              f"mean shift of a sample {row['paired_shift_mean']:.4f}", flush=True)
    return out


def quality_mnist(P) -> dict:
    from tutorlib.data import load_mnist
    from tutorlib.judge import frechet_distance, judge_accuracy, load_judge
    from tutorlib.recipes import MNISTRecipe, mnist_fm_config
    from tutorlib.train import load_or_train

    recipe = MNISTRecipe.from_profile(P)
    train_x, _ = load_mnist("train")
    test_x, test_y = load_mnist("test")
    judge = load_judge()
    model = recipe.build_model(seed=0)
    run = load_or_train("fm_mnist_standard", lambda m: None, model=model,
                        config=mnist_fm_config(recipe, 0, train_x.shape[0]))
    if not run.loaded:
        raise SystemExit("the shipped fm_mnist_standard checkpoint did not load (its recipe changed?)")
    model.eval()
    g = torch.Generator().manual_seed(1)
    n = 1000
    idx = torch.randperm(test_x.shape[0], generator=g)[:n]
    held_x, held_y = test_x[idx], test_y[idx]
    out = {"floor": frechet_distance(train_x[torch.randperm(train_x.shape[0], generator=g)[:n]], held_x, judge),
           "n": n, "nfe": recipe.nfe, "w": recipe.guidance, "seeds": {}}
    for seed in (0, 1):
        x_0 = torch.randn((n, 1, 28, 28), generator=torch.Generator().manual_seed(100 + seed))
        row = {}
        for precision in ("float32", "bfloat16"):
            with torch.no_grad():
                images = sample_digits(model, held_y, w=recipe.guidance, nfe=recipe.nfe, x_0=x_0, precision=precision)
            row[precision] = {"accuracy": judge_accuracy(images, held_y, judge),
                              "frechet": frechet_distance(images, held_x, judge)}
        out["seeds"][str(seed)] = row
        print(f"MNIST noise seed {seed}: judge accuracy float32 {row['float32']['accuracy']:.3f}, bfloat16 "
              f"{row['bfloat16']['accuracy']:.3f}; Fréchet float32 {row['float32']['frechet']:.3f}, bfloat16 "
              f"{row['bfloat16']['frechet']:.3f} (floor {out['floor']:.3f})", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quality", action="store_true", help="also measure quality in both precisions (trained models)")
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
            "2D 2000 x 100 Euler, shared t, bfloat16": lambda: ode_solve(reduced_precision(mlp), x_0, method="euler",
                                                                         steps=100),
            "2D 2000 x 100 Euler, per-row t": lambda: ode_solve(per_row, x_0, method="euler", steps=100),
        }
        for name, net in nets.items():
            for precision in ("float32", "bfloat16"):
                cases[f"MNIST 64 x 20 CFG steps, {name}" + (", bfloat16" if precision == "bfloat16" else "")] = (
                    lambda net=net, precision=precision: sample_digits(
                        net, labels, w=2.0, nfe=20, generator=torch.Generator().manual_seed(0), precision=precision))
        with torch.no_grad():
            results = timed_in_turn(cases, args.repeats)
        for name, r in results.items():
            rows[f"{name} [{threads} thread(s)]"] = {**r, "threads": threads}
            print(f"{name:<52} {threads} thread(s): {r['median_s']:.3f} s [{r['min_s']:.3f}-{r['max_s']:.3f}]",
                  flush=True)
    record = {"torch": torch.__version__, "rows": rows}
    if args.quality:
        torch.set_num_threads(min(args.threads))
        record["quality"] = {"2d": quality_2d(P), "mnist": quality_mnist(P)}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
