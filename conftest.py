"""Repository-wide pytest set-up: tests, the smoke book and the lesson notebooks run in the smoke profile.

nbmake starts each notebook's kernel as a child process, which inherits these variables.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("TUTORLIB_PROFILE", "smoke")
_threads = os.environ.setdefault("TUTORLIB_THREADS", "1").strip()
if not _threads.isdigit() or not 1 <= int(_threads) <= 4 * (os.cpu_count() or 1):
    raise pytest.UsageError(f"TUTORLIB_THREADS={_threads!r}: set it to a whole number of CPU threads from 1 to "
                            f"{4 * (os.cpu_count() or 1)} (the tests default to 1)")
os.environ.setdefault("OMP_NUM_THREADS", _threads)
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("TUTORLIB_STRICT_CHECKS", "1")

# Tests and the smoke lessons they run write checkpoints and caches into a temporary folder, never into
# the checkout's data/ (the MNIST files already there serve as a local mirror, so nothing is downloaded).
if not os.environ.get("TUTORLIB_DATA_DIR", "").strip():
    _repo_mnist = Path(__file__).resolve().parent / "data" / "mnist"
    if not os.environ.get("TUTORLIB_MNIST_MIRROR", "").strip() and (_repo_mnist / "train-labels-idx1-ubyte.gz").is_file():
        os.environ["TUTORLIB_MNIST_MIRROR"] = str(_repo_mnist)
    os.environ["TUTORLIB_DATA_DIR"] = tempfile.mkdtemp(prefix="tutorlib-tests-")

