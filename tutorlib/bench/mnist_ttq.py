"""Case ``mnist_ttq``: the MNIST recipe against a baseline U-Net on equal wall-clock budgets (see :mod:`tutorlib.bench.mnist`)."""

from tutorlib.bench.mnist import run_ttq_case as run_case

__all__ = ["run_case"]
