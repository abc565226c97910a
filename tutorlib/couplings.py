"""Couplings: how source and data samples are paired in a training batch (lesson 05).

Flow matching trains on pairs (x_0, x_1). The *independent* coupling pairs them at random;
the *minibatch OT* coupling (Multisample Flow Matching) re-pairs each batch by the exact
optimal assignment for the squared Euclidean cost, which straightens the learned paths and
lowers the variance of the training target::

    x_0, x_1 = minibatch_ot(x_0, x_1)      # row i of x_0 is now matched with row i of x_1

The exact assignment costs O(B^3): at batch 256 it takes longer than a small model's training step.
:func:`block_ot` is a cheap approximation: sort both sets along a space-filling curve (2D) or their
principal direction, cut the sorted lists into blocks and solve each block exactly.

The *entropic* coupling (:func:`sinkhorn_plan`, :func:`sinkhorn_ot`) solves OT with an entropy
penalty by Sinkhorn's iterations (in the log domain) and samples a partner for each row from the
plan: ``epsilon -> 0`` approaches the exact assignment, ``epsilon -> inf`` the independent coupling.

With class labels, OT over the whole batch pairs noise with data of whichever class lies nearby, so
the noise each class sees during training is no longer ``N(0, I)`` (*The Curse of Conditions*);
:func:`class_ot_assignment` solves OT within each class instead (lesson 05). :func:`segment_crossings`
counts how many of a 2D coupling's straight conditional paths cross.

The *reflow* coupling of rectified flow (lesson 06) pairs noise with the model's own samples;
it integrates an ODE, so it lives one layer up, in :func:`tutorlib.solvers.reflow_coupling`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

__all__ = ["Coupling", "EntropicPlan", "block_ot", "block_ot_assignment", "class_ot_assignment", "hilbert_index",
           "independent", "minibatch_ot", "ot_assignment", "segment_crossings", "sinkhorn_ot", "sinkhorn_plan",
           "sort_key"]


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


def hilbert_index(x: Tensor, bits: int = 16) -> Tensor:
    """The position of 2D points along a Hilbert curve over their bounding box.

    Points are quantised to a ``2**bits`` x ``2**bits`` grid over the box of ``x``; nearby indices mean
    nearby points (the converse fails only across the curve's block boundaries).

    Args:
        x: shape (N, 2).
        bits: grid resolution per axis (at most 31).

    Returns:
        int64 indices in [0, 4**bits), shape (N,).
    """
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"hilbert_index needs points of shape (N, 2), got {tuple(x.shape)}")
    if not 1 <= bits <= 31:
        raise ValueError(f"bits must lie in [1, 31], got {bits}")
    return torch.from_numpy(_hilbert_np(x.detach().cpu().numpy().astype(np.float64), bits))


def _hilbert_np(x: np.ndarray, bits: int) -> np.ndarray:
    """:func:`hilbert_index` on a NumPy array ``(N, 2)``: NumPy's per-call cost is a fraction of
    torch's on a few hundred points, and this runs once per training batch in :func:`block_ot`."""
    lo, hi = x.min(0), x.max(0)  # (2,), (2,)
    n = 1 << bits
    q = np.rint((x - lo) / np.maximum(hi - lo, 1e-12) * (n - 1)).astype(np.int64)  # (N, 2) in [0, n)
    qx, qy = q[:, 0].copy(), q[:, 1].copy()
    d = np.zeros_like(qx)
    s = n >> 1
    while s > 0:
        rx = (qx & s) > 0
        ry = (qy & s) > 0
        d += s * s * ((3 * rx) ^ ry)
        flip = rx & ~ry  # rotate the quadrant: reflect, then swap x and y where ry == 0
        qx = np.where(flip, n - 1 - qx, qx)
        qy = np.where(flip, n - 1 - qy, qy)
        qx, qy = np.where(ry, qx, qy), np.where(ry, qy, qx)
        s >>= 1
    return d


_SORT_BITS = 12  # Hilbert grid of 4096 x 4096 cells for block_ot's sort: finer changes no order that matters


def sort_key(x_0: Tensor, x_1: Tensor) -> tuple[Tensor, Tensor]:
    """A 1D key per row of both sets for :func:`block_ot`: the Hilbert index over the joint box in 2D,
    else the projection on the principal direction of the pooled, flattened rows.

    Returns:
        Two key tensors of shape (B,) each, comparable across the sets.
    """
    a = x_0.detach().reshape(x_0.shape[0], -1).cpu().float()  # (B, D)
    b = x_1.detach().reshape(x_1.shape[0], -1).cpu().float()  # (B, D)
    both = torch.cat([a, b])  # (2B, D)
    if both.shape[1] == 2:
        key = torch.from_numpy(_hilbert_np(both.numpy().astype(np.float64), _SORT_BITS))
    elif both.shape[1] == 1:
        key = both[:, 0]
    else:
        centred = both - both.mean(0)
        _, _, vh = torch.linalg.svd(centred, full_matrices=False)  # vh: (min(2B, D), D)
        key = centred @ vh[0]  # (2B,) projection on the principal direction
    return key[: a.shape[0]], key[a.shape[0]:]


def block_ot_assignment(x_0: Tensor, x_1: Tensor, block: int = 16) -> Tensor:
    """An approximate OT assignment: exact within blocks of points that are close along a 1D key.

    Both sets are sorted by :func:`sort_key`; the i-th block of ``block`` consecutive rows of ``x_0``
    is matched exactly (SciPy's ``linear_sum_assignment``) with the i-th block of ``x_1``. Cost: a sort
    plus B / block assignments of size ``block``, so O(B block^2) instead of O(B^3).

    How far from optimal and how fast (measured 2026-11-26 with ``bench/bench_ot_step.py``: Gaussian noise ->
    checkerboard, one training step of the 128 x 3 ``TimeMLP``, 1 thread, medians of interleaved blocks;
    earlier runs on eight_gaussians, moons and two_spirals gave similar gaps):

    ========  ======  ==============================  ======================================
    batch     block   transport cost over the exact   training step / independent step
    ========  ======  ==============================  ======================================
    256       16      +30 % (independent: +220 %)      1.10-1.16 x (exact assignment: 3.4 x)
    256       32      +22 %                            1.21 x
    4096      16      +41 % (independent: +231 %)      1.12-1.14 x; 1.03 x prefetched (exact: ~70 x)
    4096      64      +38 %                            1.48 x
    ========  ======  ==============================  ======================================

    The 1D key is the weak part: the two sets' Hilbert orders only roughly align. In high dimension
    the gap grows further.

    Args:
        x_0: shape (B, ...).
        x_1: shape (B, ...), the same shape.
        block: rows per exactly solved block (``block >= B`` gives the exact assignment).

    Returns:
        A permutation, shape (B,), int64 on the device of ``x_1``: ``x_1[sigma]`` is matched with ``x_0``.
    """
    if x_0.shape != x_1.shape:
        raise ValueError(f"x_0 and x_1 need the same shape, got {tuple(x_0.shape)} and {tuple(x_1.shape)}")
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    B = x_0.shape[0]
    if block >= B:
        return ot_assignment(x_0, x_1)
    k0, k1 = sort_key(x_0, x_1)
    o0, o1 = np.argsort(k0.numpy(), kind="stable"), np.argsort(k1.numpy(), kind="stable")  # (B,), (B,)
    a = x_0.detach().reshape(B, -1).cpu().float().numpy()[o0]  # (B, D) sorted
    b = x_1.detach().reshape(B, -1).cpu().float().numpy()[o1]  # (B, D) sorted
    sigma = np.empty(B, dtype=np.int64)
    full = (B // block) * block
    spans = [(0, full, block)] if full else []
    if full < B:
        spans.append((full, B, B - full))
    for start, stop, size in spans:
        ab = a[start:stop].reshape(-1, size, a.shape[1])  # (nb, size, D)
        bb = b[start:stop].reshape(-1, size, b.shape[1])  # (nb, size, D)
        # squared distances of every pair within each block: (nb, size, size)
        cost = (ab * ab).sum(-1)[:, :, None] + (bb * bb).sum(-1)[:, None, :] - 2.0 * ab @ bb.transpose(0, 2, 1)
        for j in range(cost.shape[0]):
            _, cols = linear_sum_assignment(cost[j])
            lo = start + j * size
            sigma[o0[lo:lo + size]] = o1[lo + cols]
    return torch.from_numpy(sigma).to(x_1.device)


def block_ot(x_0: Tensor, x_1: Tensor, block: int = 16) -> Coupling:
    """The block-sorted approximate minibatch OT coupling (see :func:`block_ot_assignment`).

    Keeps ``x_0`` in order and reorders ``x_1``; a drop-in for :func:`minibatch_ot` that costs far less
    at large batches, at the price of a transport cost measurably above the exact optimum (about +30 % at
    batch 256 and +41 % at 4096 in 2D with the default ``block = 16``, for 1.1-1.16 x and 1.12-1.14 x the cost of an
    independent training step; see :func:`block_ot_assignment`), still far below the independent
    coupling's +220 %.

    Returns:
        A :class:`Coupling`: ``x_0, x_1 = block_ot(x_0, x_1)``.
    """
    return Coupling(x_0, x_1[block_ot_assignment(x_0, x_1, block)])


# --------------------------------------------------------------------------------------
# The entropic coupling: Sinkhorn's iterations in the log domain (lesson 05)
# --------------------------------------------------------------------------------------


class EntropicPlan(NamedTuple):
    """The entropic OT plan of two batches (:func:`sinkhorn_plan`)."""

    log_plan: Tensor  # (B, B) log pi_ij; every row and every column of pi sums to 1/B (up to marginal_error)
    iterations: int  # Sinkhorn iterations run (each updates both potentials once)
    marginal_error: float  # max_i |B sum_j pi_ij - 1| at the end; the columns are exact after the last update

    @property
    def plan(self) -> Tensor:
        """``pi = exp(log_plan)``, shape (B, B)."""
        return self.log_plan.exp()


def _check_pair(x_0: Tensor, x_1: Tensor) -> None:
    if not isinstance(x_0, Tensor) or not isinstance(x_1, Tensor):
        raise TypeError(f"x_0 and x_1 must be tensors, got {type(x_0).__name__} and {type(x_1).__name__}")
    if x_0.shape != x_1.shape or x_0.dim() < 1:
        raise ValueError(f"x_0 and x_1 need the same shape (B, ...), got {tuple(x_0.shape)} and {tuple(x_1.shape)}")
    if x_0.shape[0] < 1:
        raise ValueError("x_0 and x_1 are empty: a coupling needs at least one row")


def sinkhorn_plan(x_0: Tensor, x_1: Tensor, epsilon: float, *, max_iter: int = 2000,
                  tol: float = 1e-3) -> EntropicPlan:
    """The entropic optimal-transport plan between two equally weighted batches (Sinkhorn, log domain).

    Solves ``min_pi sum_ij pi_ij C_ij - epsilon H(pi)`` over the plans whose rows and columns each sum to
    ``1/B``, for the squared Euclidean cost ``C_ij = ||x_0[i] - x_1[j]||^2`` (rows flattened) and the
    entropy ``H(pi) = -sum_ij pi_ij (log pi_ij - 1)``. The solution has the form
    ``pi_ij = exp(u_i + v_j - C_ij / epsilon)``; Sinkhorn's iterations alternate

        u <- log(1/B) - logsumexp_j(v_j - C_ij / epsilon),    v <- log(1/B) - logsumexp_i(u_i - C_ij / epsilon),

    each of which makes one marginal exact. Working with the logs keeps small ``epsilon`` (large
    ``C / epsilon``) free of the underflow that the textbook ``K = exp(-C / epsilon)`` suffers. The
    iterations stop when the row sums are within ``tol`` (relative) of ``1/B``, or after ``max_iter``.
    ``epsilon -> 0`` approaches the exact assignment (:func:`ot_assignment`, as a permutation matrix over
    ``B``); ``epsilon -> inf`` the independent plan ``1/B^2``. The number of iterations grows roughly like
    ``max C / epsilon``.

    Args:
        x_0: shape (B, ...).
        x_1: shape (B, ...), the same shape. Both stay on their device (a GPU runs the iterations fast).
        epsilon: the entropic regularisation, > 0, in the units of the cost (squared distances).
        max_iter: most iterations.
        tol: the relative row-marginal error at which to stop.

    Returns:
        An :class:`EntropicPlan`: ``log_plan`` (B, B) in x_0's floating dtype (float32 at least), the
        iterations run and the final marginal error.
    """
    _check_pair(x_0, x_1)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ValueError(f"epsilon must be a positive finite number (in squared-distance units), got {epsilon!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    dtype = x_0.dtype if x_0.dtype in (torch.float32, torch.float64) else torch.float32
    B = x_0.shape[0]
    a = x_0.detach().reshape(B, -1).to(dtype)  # (B, D)
    b = x_1.detach().reshape(B, -1).to(device=a.device, dtype=dtype)  # (B, D)
    M = torch.cdist(a, b).square_().div_(-float(epsilon))  # (B, B) -C / epsilon
    log_w = -math.log(B)  # log of each uniform weight 1/B
    u = torch.zeros(B, dtype=dtype, device=a.device)  # (B,) row potentials (f / epsilon)
    v = torch.zeros(B, dtype=dtype, device=a.device)  # (B,) column potentials (g / epsilon)
    error, it = float("inf"), 0
    while it < max_iter:
        row = torch.logsumexp(M + v[None, :], dim=1)  # (B,) log sum_j exp(v_j + M_ij)
        if it > 0:  # the row sums of the current plan are exp(u + row): how far from 1/B?
            error = float((u + row - log_w).exp().sub_(1.0).abs_().max())
            if error <= tol:
                break
        u = log_w - row
        v = log_w - torch.logsumexp(M + u[:, None], dim=0)  # columns now sum to 1/B exactly
        it += 1
    if it == max_iter:
        row = torch.logsumexp(M + v[None, :], dim=1)
        error = float((u + row - log_w).exp().sub_(1.0).abs_().max())
    return EntropicPlan(u[:, None] + v[None, :] + M, it, error)


def sinkhorn_ot(x_0: Tensor, x_1: Tensor, epsilon: float, *, generator: torch.Generator | None = None,
                max_iter: int = 2000, tol: float = 1e-3) -> Coupling:
    """The entropic (Sinkhorn) coupling: each row of ``x_0`` gets a partner drawn from the entropic plan.

    For row i, a column j is drawn with probability ``B pi_ij`` (:func:`sinkhorn_plan`), so ``x_0`` keeps
    its rows and order (its marginal stays exactly the source) while a row of ``x_1`` may be drawn
    several times or not at all. Small ``epsilon`` behaves like :func:`minibatch_ot`, large ``epsilon``
    like :func:`independent`.

    Args:
        x_0: shape (B, ...).
        x_1: shape (B, ...), the same shape.
        epsilon: the entropic regularisation, > 0, in squared-distance units.
        generator: draws the partners (on the plan's device: a CPU generator for CPU tensors).
        max_iter, tol: passed to :func:`sinkhorn_plan`.

    Returns:
        A :class:`Coupling`: ``x_0, x_1 = sinkhorn_ot(x_0, x_1, 0.1, generator=g)``.
    """
    plan = sinkhorn_plan(x_0, x_1, epsilon, max_iter=max_iter, tol=tol).plan  # (B, B)
    cols = torch.multinomial(plan, 1, replacement=True, generator=generator).squeeze(1)  # (B,)
    return Coupling(x_0, x_1[cols.to(x_1.device)])


# --------------------------------------------------------------------------------------
# Couplings with class labels (lesson 05, The Curse of Conditions)
# --------------------------------------------------------------------------------------


def class_ot_assignment(x_0: Tensor, x_1: Tensor, y: Tensor) -> Tensor:
    """Minibatch OT that never pairs across classes: an exact assignment within each class.

    Row i of ``x_0`` takes the class ``y[i]`` of row i of the batch as drawn (``x_0`` is independent of
    ``(x_1, y)``, so the noise of each class is still a sample of the source); within each class k the
    noise rows ``{i : y_i = k}`` are matched exactly (:func:`ot_assignment`) with the data rows of that
    class. This is the discrete-condition case of C^2OT (*The Curse of Conditions*): OT over the whole
    batch would give class k the noise that happens to lie near class k's data, a skewed prior the
    model never meets at sampling time, when noise is drawn from the whole source.

    Args:
        x_0: shape (B, ...).
        x_1: shape (B, ...), the same shape.
        y: class ids of ``x_1``'s rows, int64 (B,).

    Returns:
        A permutation ``sigma`` (B,), int64 on ``x_1``'s device, with ``y[sigma] == y``: ``x_1[sigma]``
        is matched with ``x_0`` and keeps the labels ``y`` in their order.
    """
    _check_pair(x_0, x_1)
    if not isinstance(y, Tensor) or y.dtype != torch.int64 or y.shape != (x_0.shape[0],):
        got = f"{tuple(y.shape)} {y.dtype}" if isinstance(y, Tensor) else type(y).__name__
        raise ValueError(f"y must be an int64 tensor of shape ({x_0.shape[0]},) (one class id per row), got {got}")
    labels = y.detach().cpu()
    sigma = torch.arange(x_0.shape[0])
    for k in torch.unique(labels).tolist():
        idx = (labels == k).nonzero().squeeze(1)  # (n_k,) rows of class k
        if idx.numel() > 1:
            sigma[idx] = idx[ot_assignment(x_0[idx.to(x_0.device)], x_1[idx.to(x_1.device)]).cpu()]
    return sigma.to(x_1.device)


def segment_crossings(x_0: Tensor, x_1: Tensor) -> int:
    """How many pairs of a 2D coupling's straight paths ``x_0[i] -> x_1[i]`` cross each other.

    Two segments ``p + s r`` and ``q + u w`` (``s, u`` in [0, 1]) cross where
    ``s = (q - p) x w / (r x w)`` and ``u = (q - p) x r / (r x w)`` both lie strictly inside (0, 1),
    ``x`` being the 2D cross product; parallel segments count as not crossing. Under the independent
    coupling many pairs cross; under the exact OT coupling for the squared cost two paths can still cross
    in the plane, at different times, but never meet at the same time.

    Args:
        x_0: start points (B, 2).
        x_1: end points (B, 2).

    Returns:
        The number of crossing pairs ``i < j`` (an int between 0 and B (B - 1) / 2).
    """
    _check_pair(x_0, x_1)
    if x_0.dim() != 2 or x_0.shape[1] != 2:
        raise ValueError(f"segment_crossings needs 2D points of shape (B, 2), got {tuple(x_0.shape)}")
    p = x_0.detach().cpu().double()  # (B, 2)
    r = x_1.detach().cpu().double() - p  # (B, 2) directions
    qp = p[None, :, :] - p[:, None, :]  # (B, B, 2): q - p for segment i (rows) against j (columns)

    def cross(a: Tensor, b: Tensor) -> Tensor:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    denom = cross(r[:, None, :], r[None, :, :])  # (B, B) r_i x r_j
    ok = denom.abs() > 1e-12
    safe = torch.where(ok, denom, torch.ones_like(denom))
    s = cross(qp, r[None, :, :]) / safe  # (B, B) position along segment i
    u = cross(qp, r[:, None, :]) / safe  # (B, B) position along segment j
    hit = ok & (s > 0) & (s < 1) & (u > 0) & (u < 1)
    return int(torch.triu(hit, diagonal=1).sum())
