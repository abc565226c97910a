"""Repository-wide pytest set-up: tests and the lesson notebooks (nbmake) run in the smoke profile.

nbmake starts each notebook's kernel as a child process, which inherits these variables.
"""

import os

import pytest

os.environ.setdefault("TUTORLIB_PROFILE", "smoke")
_threads = os.environ.setdefault("TUTORLIB_THREADS", "1").strip()
if not _threads.isdigit() or not 1 <= int(_threads) <= 4 * (os.cpu_count() or 1):
    raise pytest.UsageError(f"TUTORLIB_THREADS={_threads!r}: set it to a whole number of CPU threads from 1 to "
                            f"{4 * (os.cpu_count() or 1)} (the tests default to 1)")
os.environ.setdefault("OMP_NUM_THREADS", _threads)
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("TUTORLIB_STRICT_CHECKS", "1")
