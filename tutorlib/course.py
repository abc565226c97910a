"""The course's main job: execute every lesson and build the book (``make course``).

    python -m tutorlib.course build-book    # copy lessons into book/, execute (cached), build HTML
    python -m tutorlib.course all           # the same; the name ``make course`` uses

Execution uses the profile in ``TUTORLIB_PROFILE`` (default ``standard``). Jupyter Book's
execution cache means an unchanged lesson is not executed again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def sync_lessons() -> list[Path]:
    """Copy ``lessons/*.py`` into ``book/lessons/`` (only files that changed), drop stale ones."""
    src_dir, dst_dir = ROOT / "lessons", BOOK / "lessons"
    dst_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(src_dir.glob("[0-9]*.py"))
    wanted = {p.name for p in sources}
    for stale in dst_dir.glob("*.py"):
        if stale.name not in wanted:
            stale.unlink()
    for src in sources:
        dst = dst_dir / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)
    return sources


def output_dir(profile_name: str) -> Path:
    """Where the book of one profile is built: ``build/book-<profile>/_build/html``.

    Each profile has its own folder, and so its own execution cache: a smoke build never
    serves its outputs to a standard build.
    """
    return ROOT / "build" / f"book-{profile_name}"


def build_book(strict: bool = False) -> int:
    """Build the HTML book of the current profile; returns the exit code."""
    if not ROOT.joinpath("pyproject.toml").is_file():
        raise SystemExit("tutorlib.course works from a clone of the course repository (no pyproject.toml found)")
    sync_lessons()
    env = dict(os.environ)
    env.setdefault("TUTORLIB_PROFILE", "standard")
    env.setdefault("TUTORLIB_STATIC_WIDGETS", "1")
    out = output_dir(env["TUTORLIB_PROFILE"])
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(BOOK), "--path-output", str(out)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    start = time.perf_counter()
    print(f"building the book in profile {env['TUTORLIB_PROFILE']!r}: {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, env=env, cwd=ROOT)
    print(f"book build finished in {time.perf_counter() - start:.0f} s with exit code {code}; "
          f"open {out / '_build' / 'html' / 'index.html'}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tutorlib.course", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build-book", "all"])
    parser.add_argument("--strict", action="store_true", help="fail on warnings (-W -n --keep-going)")
    args = parser.parse_args(argv)
    return build_book(strict=args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
