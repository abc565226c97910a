"""Shared test set-up: deterministic threads, and paths to the shared MNIST copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# Two busy threads on a two-core machine collapse when anything else runs; be deliberate.
torch.set_num_threads(int(os.environ.get("TUTORLIB_THREADS", "1")))


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
