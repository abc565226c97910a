"""Case ``mnist_5min``: MNIST in five minutes, the recipe against the previous recipe and the baseline (see :mod:`bench.mnist`)."""

from bench.mnist import run_5min_case as run_case

__all__ = ["run_case"]
