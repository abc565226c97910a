"""Couplings: how source and data samples are paired in a training batch (lesson 05).

Flow matching trains on pairs (x_0, x_1). The *independent* coupling pairs them at random;
the *minibatch OT* coupling (Multisample Flow Matching) re-pairs each batch by the exact
optimal assignment for the squared Euclidean cost, which straightens the learned paths and
lowers the variance of the training target::

    x_0, x_1 = minibatch_ot(x_0, x_1)      # row i of x_0 is now matched with row i of x_1

The *reflow* coupling of rectified flow (lesson 06) pairs noise with the model's own samples;
it integrates an ODE, so it lives one layer up, in :func:`tutorlib.solvers.reflow_coupling`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Coupling", "independent", "minibatch_ot", "ot_assignment"]


class Coupling(NamedTuple):
    """A paired batch; unpacks as ``x_0, x_1 = coupling``."""

    x_0: Tensor  # (B, ...) source samples
    x_1: Tensor  # (B, ...) data samples; row i is paired with row i of x_0


def independent(x_0: Tensor, x_1: Tensor) -> Coupling:
    """The independent coupling: the pairs as drawn (x_0 and x_1 are independent samples)."""
    if x_0.shape[0] != x_1.shape[0]:
        raise ValueError(f"x_0 and x_1 need the same batch size, got {x_0.shape[0]} and {x_1.shape[0]}")
    return Coupling(x_0, x_1)


def ot_assignment(x_0: Tensor, x_1: Tensor) -> Tensor:
    """The optimal assignment sigma minimising sum_i ||x_0[i] - x_1[sigma(i)]||^2.

    The cost matrix is computed with ``torch.cdist`` on flattened rows in float64 on the CPU,
    and solved exactly by SciPy's ``linear_sum_assignment`` (a Jonker-Volgenant solver).

    Args:
        x_0: shape (B, ...).
        x_1: shape (B, ...), the same trailing shape.

    Returns:
        Indices, shape (B,), int64 on the device of ``x_1``: ``x_1[sigma]`` is matched with ``x_0``.
    """
    if x_0.shape != x_1.shape:
        raise ValueError(f"x_0 and x_1 need the same shape, got {tuple(x_0.shape)} and {tuple(x_1.shape)}")
    a = x_0.detach().reshape(x_0.shape[0], -1).to("cpu", torch.float64)  # (B, D)
    b = x_1.detach().reshape(x_1.shape[0], -1).to("cpu", torch.float64)  # (B, D)
    cost = torch.cdist(a, b).square_()  # (B, B) squared Euclidean distances
    _, cols = linear_sum_assignment(cost.numpy())  # rows come back as 0..B-1
    return torch.from_numpy(cols.astype(np.int64)).to(x_1.device)


def minibatch_ot(x_0: Tensor, x_1: Tensor) -> Coupling:
    """The minibatch optimal-transport coupling (exact assignment per batch).

    Keeps ``x_0`` in order and reorders ``x_1`` so that row i of each is matched; the total
    squared distance sum_i ||x_0[i] - x_1[i]||^2 is then minimal over all permutations.
    Works for any shape (B, ...), images included (rows are flattened for the cost).

    Returns:
        A :class:`Coupling`: ``x_0, x_1 = minibatch_ot(x_0, x_1)``.
    """
    return Coupling(x_0, x_1[ot_assignment(x_0, x_1)])
