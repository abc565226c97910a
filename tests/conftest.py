"""Shared test set-up: deterministic threads, paths to the shared MNIST copy, the smoke book build."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Two busy threads on a two-core machine collapse when anything else runs; be deliberate
# (the root conftest.py sets TUTORLIB_THREADS=1 unless it is given; set_threads validates it).
from tutorlib.device import set_threads  # noqa: E402

set_threads()


def _mnist_source() -> Path | None:
    """The folder with the four MNIST .gz files that tests serve (never downloaded in tests)."""
    candidates = [os.environ.get("TUTORLIB_TEST_MNIST_DIR", ""), os.environ.get("TUTORLIB_MNIST_MIRROR", "")]
    candidates.append(str(ROOT.parent / "shared" / "data" / "mnist"))
    for c in candidates:
        if c and Path(c).is_dir() and (Path(c) / "train-labels-idx1-ubyte.gz").is_file():
            return Path(c)
    return None


@pytest.fixture(scope="session")
def mnist_source() -> Path:
    src = _mnist_source()
    if src is None:
        msg = ("no local MNIST copy: set TUTORLIB_TEST_MNIST_DIR to a folder holding the four "
               "standard .gz files")
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)
    return src


@dataclass
class BookBuild:
    """The smoke-profile book, built once per test run (tests/test_book.py, tests/test_browser.py)."""

    returncode: int
    log: str  # the build's stdout and stderr, last part
    html: Path  # build/book-smoke/_build/html
    seconds: float

    def require_ok(self) -> Path:
        """The HTML folder; fails the calling test if the build did not succeed."""
        if self.returncode != 0:
            pytest.fail(f"the book build failed (exit {self.returncode}); see test_book:\n{self.log[-3000:]}")
        return self.html


@pytest.fixture(scope="session")
def smoke_book() -> BookBuild:
    """Build the book strictly (warnings are errors) in the smoke profile, once per session.

    The build executes every lesson (cached per profile: an unchanged lesson is not re-run).
    """
    env = dict(os.environ, TUTORLIB_PROFILE="smoke")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "book" / "course.py"), "build-book", "--strict"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False,
    )
    return BookBuild(returncode=proc.returncode, log=proc.stdout[-6000:] + proc.stderr[-6000:],
                     html=ROOT / "build" / "book-smoke" / "_build" / "html",
                     seconds=time.perf_counter() - start)
