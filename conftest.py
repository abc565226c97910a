"""Repository-wide pytest set-up: tests and the lesson notebooks (nbmake) run in the smoke profile.

nbmake starts each notebook's kernel as a child process, which inherits these variables.
"""

import os

os.environ.setdefault("TUTORLIB_PROFILE", "smoke")
os.environ.setdefault("TUTORLIB_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", os.environ["TUTORLIB_THREADS"])
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("TUTORLIB_STRICT_CHECKS", "1")
