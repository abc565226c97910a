"""Make the checkpoints the course ships (data/checkpoints/), exactly as the lessons would train them.

    python scripts/make_checkpoints.py fm_mnist ddpm_mnist          # the standard profile's, into data/checkpoints
    python scripts/make_checkpoints.py fm_mnist --profile smoke --out /tmp/ckpt

Each name is one ``load_or_train`` call of the library, the same one the lesson makes, so the file is
the lesson's own model: ``fm_mnist`` is lesson 09's class-conditional flow-matching PatchUNet
(:func:`tutorlib.recipes.load_or_train_mnist_fm`; lesson 08 loads it too), ``ddpm_mnist`` lesson 01's
label-conditional DDPM (:func:`tutorlib.recipes.load_or_train_mnist_ddpm`). A checkpoint that already
matches its configuration is loaded and left alone unless ``--retrain``. ``lesson10`` runs lesson 10 itself
(the claims command, in the profile, with an empty ``TUTORLIB_DATA_DIR``) and keeps the checkpoints its own
``load_or_train`` calls wrote: ``dfm_mnist_PROFILE`` (the binarised-MNIST posterior) and
``dfm_text_{mask,uniform,autoregressive}_PROFILE`` (the character models); ``lesson06`` and ``lesson07`` run
those lessons the same way and keep their 2D models (``l06_*_PROFILE``, ``l07_*_PROFILE``, made by each lesson's
``CheckpointChain``); ``appendixA`` runs appendix A the same way and keeps
``a_{reflow,distilled,shortcut,fm_small,otfm_small}_PROFILE``. Record the printed command, time and sha256 in
data/checkpoints/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    from tutorlib.checkpoints import shipped_checkpoint_dir
    from tutorlib.ddpm import DDPMSchedule, linear_betas
    from tutorlib.device import profile, set_threads
    from tutorlib.files import file_sha256
    from tutorlib.mnist import load_mnist
    from tutorlib.recipes import MNISTRecipe, load_or_train_mnist_ddpm, load_or_train_mnist_fm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="+", choices=["fm_mnist", "ddpm_mnist", "lesson06", "lesson07", "lesson10",
                                                    "appendixA"])
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--out", type=Path, default=None, help="folder to write to (default: data/checkpoints)")
    ap.add_argument("--retrain", action="store_true")
    args = ap.parse_args(argv)
    threads = set_threads()
    P = profile(args.profile)
    recipe = MNISTRecipe.from_profile(P)
    images, labels = load_mnist("train", limit=P.mnist_limit)
    out = args.out or shipped_checkpoint_dir()
    for name in args.names:
        start = time.perf_counter()
        if name in ("lesson06", "lesson07"):
            stem = {"lesson06": "06_rectified_flow", "lesson07": "07_solvers"}[name]
            _lesson_checkpoints(stem, f"l{name[-2:]}_", P.name, out, args.retrain, threads)
            continue
        if name == "lesson10":
            _lesson_checkpoints("10_discrete", "dfm_", P.name, out, args.retrain, threads)
            continue
        if name == "appendixA":
            _lesson_checkpoints("A_mnist_at_scale", "a_", P.name, out, args.retrain, threads)
            continue
        full = f"{name}_{P.name}"
        if args.retrain:
            for suffix in (".pt", ".sha256"):
                (out / f"{full}{suffix}").unlink(missing_ok=True)
        if name == "fm_mnist":
            run = load_or_train_mnist_fm(recipe, images, labels, name=full, seed=0, directory=out)
        else:
            run = load_or_train_mnist_ddpm(MNISTRecipe.large_batch(P), images, labels,
                                           DDPMSchedule(linear_betas(1000)), name=full, seed=0, directory=out)
        took = time.perf_counter() - start
        verb = "loaded" if run.loaded else "trained"
        print(f"{full}: {verb} in {took:.0f} s on {threads} thread(s); {run.path} sha256 {file_sha256(run.path)}")
        if not run.loaded:
            print(f"  {run.result.describe()}")
    return 0


def _lesson_checkpoints(stem: str, prefix: str, profile_name: str, out: Path, retrain: bool, threads: int) -> None:
    """Run one lesson (the claims command) with an empty data folder; copy the checkpoints it trained to ``out``."""
    from tutorlib.files import file_sha256

    pattern = f"{prefix}*_{profile_name}"
    if retrain:
        for old in out.glob(f"{pattern}.*"):
            old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TUTORLIB_DATA_DIR=tmp, TUTORLIB_THREADS=str(threads))
        start = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "scripts" / "verify_lessons.py"), "--profiles", profile_name,
                        "--lessons", stem, "--record", str(Path(tmp) / "record.json"), "--no-headers"],
                       env=env, check=True)
        took = time.perf_counter() - start
        made = sorted((Path(tmp) / "checkpoints").glob(f"{pattern}.pt"))
        if not made:
            print(f"{stem}: every {pattern} checkpoint was loaded from {out} (pass --retrain to train them again)")
        for pt in made:
            for f in (pt, pt.with_suffix(".sha256")):
                shutil.copy2(f, out / f.name)
            print(f"{pt.stem}: trained by lesson {stem} ({took:.0f} s for the whole lesson on {threads} thread(s)); "
                  f"sha256 {file_sha256(out / pt.name)}")


if __name__ == "__main__":
    sys.exit(main())
