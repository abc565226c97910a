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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep ``xdist_group`` tests together under ``make test`` (``-n auto --dist loadgroup``) on pytest >= 9.2.

    pytest-xdist (3.8) groups a test by appending ``@GROUP`` to ``item._nodeid`` on the worker, which
    pytest 9.2 no longer reads (a node's id lives in ``item._id``): the book was then built by both workers
    at once, into one folder. This sets the id xdist meant; where xdist's own suffix took, it does nothing.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import coerce_node_id
    except ImportError:  # pytest < 9.2: xdist's suffix works
        return
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None and "@" not in item.nodeid.rsplit("]", 1)[-1]:
            group = mark.args[0] if mark.args else mark.kwargs.get("name", "default")
            item._id = coerce_node_id(f"{item.nodeid}@{group}")


_BENCH_RUNS: dict[str, tuple] = {}


@pytest.fixture(scope="session")
def bench_smoke(tmp_path_factory, request):
    """``bench_smoke(case) -> (doc, out)``: a bench case run once per test session (smoke profile, seed 0, CPU).

    ``doc`` is the returned ``results.json`` document, ``out`` the folder holding it and ``samples.npz``.
    tests/test_bench.py and the case's own tests/test_bench_CASE.py share the one run. The MNIST cases read
    the shared local MNIST copy into a temporary cache.
    """
    from bench import run

    def get(case: str):
        if case not in _BENCH_RUNS:
            out = tmp_path_factory.mktemp(case)
            with pytest.MonkeyPatch.context() as mp:
                if case in ("mnist", "mnist_ttq", "mnist_5min"):
                    mp.setenv("TUTORLIB_MNIST_MIRROR", str(request.getfixturevalue("mnist_source")))
                    mp.setenv("TUTORLIB_DATA_DIR", str(tmp_path_factory.mktemp("mnist-cache")))
                doc = run(case, "smoke", seed=0, out=out, device="cpu")
            _BENCH_RUNS[case] = (doc, out)
        return _BENCH_RUNS[case]

    return get


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
