"""Case ``mnist_ttq``: the MNIST recipe against a baseline U-Net on equal wall-clock budgets (see :mod:`bench.mnist`)."""

from bench.mnist import run_ttq_case as run_case

__all__ = ["run_case"]
