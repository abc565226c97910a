"""Sample-quality metrics: 2D two-sample distances, exact likelihoods, straightness; MNIST scores.

Lesson 00 introduces them and every later lesson reports them:

* 2D: :func:`energy_distance` and :func:`mmd_rbf` between generated and held-out samples, always
  next to their :func:`noise_floor` (the same metric between two independent data draws of the
  same size), so a result reads "within k times the floor" (exact likelihoods of the Gaussian-mixture
  toys: :func:`tutorlib.data.gmm_log_prob`).
* Trajectories (lessons 05-07): :func:`straightness` and :func:`curvature` of ODE paths
  (solvers report the NFE).
* Features: :func:`frechet_distance_features` (the formula behind FID) for any two feature sets; the
  MNIST scores in the shipped judge's feature space (judge accuracy, Frechet distance, label entropy,
  feature spread) live with the judge, in :mod:`tutorlib.judge`.

All functions read the device from their inputs and draw no random numbers unless given a
``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor


__all__ = [
    "NoiseFloor",
    "RepeatedMetric",
    "curvature",
    "energy_distance",
    "frechet_distance_features",
    "mmd_rbf",
    "model_score",
    "noise_floor",
    "straightness",
    "within_class_spread",
]


# --------------------------------------------------------------------------------------
# Two-sample distances (2D)
# --------------------------------------------------------------------------------------


def _pairwise_sum(a: torch.Tensor, b: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``sum_ij fn(||a_i - b_j||^2)`` in float64, computed in row chunks to bound memory."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    chunk = max(1, (1 << 23) // max(1, b.shape[0]))  # rows per block: ~64 MB of float64 distances
    for i in range(0, a.shape[0], chunk):
        # exact differences (no |a|^2 + |b|^2 - 2ab matmul trick), ~20x faster than broadcasting
        d2 = torch.cdist(a[i:i + chunk], b, compute_mode="donot_use_mm_for_euclid_dist").square()  # (chunk, M)
        total = total + fn(d2).sum()
    return total


def _as_2d(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"{name} must be (N, D) (or (N, ...), flattened), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).to(torch.float64)


def _mean_pairwise(a: torch.Tensor, b: torch.Tensor, fn, same: bool, unbiased: bool) -> torch.Tensor:
    n, m = a.shape[0], b.shape[0]
    s = _pairwise_sum(a, b, fn)
    if same and unbiased:
        diag = fn(torch.zeros((), dtype=torch.float64, device=a.device)) * n  # fn(0) on the diagonal
        return (s - diag) / (n * (n - 1))
    return s / (n * m)


def energy_distance(x: torch.Tensor, y: torch.Tensor, *, unbiased: bool = False) -> torch.Tensor:
    """Squared energy distance between two samples (Szekely & Rizzo's E-statistic).

    ``D^2(P, Q) = 2 E||X - Y|| - E||X - X'|| - E||Y - Y'||``, zero iff ``P = Q``.

    The default is the V-statistic: every mean includes the ``i = j`` pairs, so the value is
    ``>= 0`` and exactly ``0`` for identical sets, with a positive bias ``O(1/n)`` (what
    :func:`noise_floor` measures). ``unbiased=True`` excludes the diagonals (U-statistic):
    unbiased, but it can be negative for close distributions.

    Args:
        x: samples ``(N, D)`` (more dims are flattened).
        y: samples ``(M, D)``.
        unbiased: U-statistic instead of V-statistic.

    Returns:
        A float64 scalar tensor, in data units (a combination of mean distances).
    """
    a, b = _as_2d(x, "x"), _as_2d(y.to(x.device), "y")
    dist = lambda d2: d2.clamp_min(0).sqrt()
    xy = _mean_pairwise(a, b, dist, False, unbiased)
    xx = _mean_pairwise(a, a, dist, True, unbiased)
    yy = _mean_pairwise(b, b, dist, True, unbiased)
    return 2 * xy - xx - yy


def mmd_rbf(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0),
    *,
    unbiased: bool = False,
) -> torch.Tensor:
    """Squared maximum mean discrepancy with a sum of Gaussian kernels.

    ``MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)`` with
    ``k(a, b) = (1/L) sum_l exp(-||a - b||^2 / (2 h_l^2))`` over the ``L`` bandwidths ``h_l``
    (several scales so both fine detail and overall shape count; the defaults suit data with a
    standard deviation of order 1, like the course's toys). V-statistic by default (``>= 0``,
    ``0`` for identical sets); ``unbiased=True`` drops the diagonal terms.

    Args:
        x: samples ``(N, D)``.
        y: samples ``(M, D)``.
        bandwidths: kernel widths ``h_l`` in data units.
        unbiased: U-statistic instead of V-statistic.

    Returns:
        A float64 scalar tensor in ``[0, 2]`` (V-statistic).
    """
    if len(bandwidths) == 0 or min(bandwidths) <= 0:
        raise ValueError(f"bandwidths must be positive, got {bandwidths}")
    a, b = _as_2d(x, "x"), _as_2d(y.to(x.device), "y")
    inv = [1.0 / (2.0 * h * h) for h in bandwidths]
    kern = lambda d2: sum(torch.exp(-c * d2) for c in inv) / len(inv)
    return (_mean_pairwise(a, a, kern, True, unbiased) + _mean_pairwise(b, b, kern, True, unbiased)
            - 2 * _mean_pairwise(a, b, kern, False, unbiased))


@dataclass
class RepeatedMetric:
    """A metric measured on several independent draws: its mean, spread and values."""

    mean: float  # mean of the metric over the repeats
    std: float  # standard deviation over the repeats
    values: list[float]  # one value per repeat
    n: int  # sample size of each draw

    @classmethod
    def from_values(cls, values: list[float], n: int) -> "RepeatedMetric":
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
        return cls(mean=mean, std=std, values=list(values), n=n)

    def __format__(self, spec: str) -> str:
        spec = spec or ".5f"
        return f"{self.mean:{spec}} ± {self.std:{spec}}"


@dataclass
class NoiseFloor(RepeatedMetric):
    """A metric between two independent data draws: what a perfect model would score."""

    def ratio(self, value: "float | RepeatedMetric") -> float:
        """``value / mean``: "how many times the floor" a model's score is."""
        value = value.mean if isinstance(value, RepeatedMetric) else float(value)
        return value / self.mean if self.mean > 0 else float("inf")


def noise_floor(
    sampler: Callable[..., torch.Tensor],
    n: int,
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = energy_distance,
    *,
    generator: torch.Generator | None = None,
    repeats: int = 10,
) -> NoiseFloor:
    """The metric between two independent draws of ``n`` data points, repeated.

    A model's score against ``n`` held-out points cannot be expected to beat this: a perfect
    sampler scores about ``mean`` (V-statistics shrink like ``1/n``). Lessons report
    "energy distance = k x floor".

    Args:
        sampler: ``sampler(n, generator=generator) -> (n, D)``, e.g. :func:`tutorlib.data.moons`.
        n: size of each draw (use the size of the model's sample set).
        metric: ``(x, y) -> scalar``, e.g. :func:`energy_distance` or :func:`mmd_rbf`.
        generator: CPU generator for the draws.
        repeats: number of independent pairs.

    Returns:
        A :class:`NoiseFloor`.
    """
    r = model_score(sampler, sampler, n, metric=metric, generator=generator, repeats=repeats)  # data vs data
    return NoiseFloor(mean=r.mean, std=r.std, values=r.values, n=n)


def model_score(
    sample_fn: Callable[..., torch.Tensor],
    data_sampler: Callable[..., torch.Tensor],
    n: int,
    metric: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = energy_distance,
    *,
    generator: torch.Generator | None = None,
    repeats: int = 10,
) -> RepeatedMetric:
    """A model's metric against held-out data, over ``repeats`` fresh draws of both.

    One draw of a V-statistic at ``n`` points is about as noisy as the floor itself; compare
    a model with :func:`noise_floor` using the same ``n`` and ``repeats``.

    Args:
        sample_fn: ``sample_fn(n, generator=generator) -> (n, D)`` model samples (e.g. noise
            drawn with the generator, then an ODE solve).
        data_sampler: ``data_sampler(n, generator=generator) -> (n, D)`` held-out data.
        n: sample size of each draw.
        metric: ``(x, y) -> scalar``.
        generator: CPU generator for the draws.
        repeats: number of independent draws.

    Returns:
        A :class:`RepeatedMetric` (``floor.ratio(score)`` reads it against a floor).
    """
    values = []
    for _ in range(repeats):
        x = sample_fn(n, generator=generator)  # (n, D)
        y = data_sampler(n, generator=generator).to(x.device)  # (n, D)
        values.append(float(metric(x, y)))
    return RepeatedMetric.from_values(values, n)


# --------------------------------------------------------------------------------------
# Diversity of labelled samples (lesson 08)
# --------------------------------------------------------------------------------------


def within_class_spread(x: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Root-mean-square distance of each class's points to their class mean: a diversity measure.

    ``spread_k = sqrt(mean_{i: y_i = k} ||x_i - mean_k||^2)``. Strong guidance pulls samples
    towards each class's mode, so their spread relative to the data's falls below 1 (lesson 08's
    quality / diversity trade-off).

    Args:
        x: points ``(N, ...)``.
        y: their labels, int64 ``(N,)`` in ``[0, num_classes)``.
        num_classes: number of classes ``K``.

    Returns:
        ``(K,)`` spreads in ``x``'s dtype; NaN for a class with fewer than two points.
    """
    if y.dtype != torch.int64 or y.dim() != 1:
        raise ValueError(f"labels y must be an int64 tensor of shape (N,), got {tuple(y.shape)} {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"labels y must lie in [0, {num_classes}), got values in [{int(y.min())}, {int(y.max())}]")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]} labels")
    xf = x.reshape(x.shape[0], -1)  # (N, D)
    y = y.to(x.device)
    count = torch.bincount(y, minlength=num_classes).to(xf.dtype)  # (K,)
    sums = torch.zeros(num_classes, xf.shape[1], dtype=xf.dtype, device=x.device).index_add_(0, y, xf)  # (K, D)
    means = sums / count.clamp_min(1.0)[:, None]  # (K, D)
    sq = (xf - means[y]).square().sum(1)  # (N,)
    msq = torch.zeros(num_classes, dtype=xf.dtype, device=x.device).index_add_(0, y, sq) / count.clamp_min(1.0)
    return torch.where(count >= 2, msq.sqrt(), torch.full_like(msq, float("nan")))  # (K,)


# --------------------------------------------------------------------------------------
# Trajectories
# --------------------------------------------------------------------------------------


def _segments(trajectory: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    if trajectory.dim() < 3:
        raise ValueError(f"trajectory must be (S+1, B, ...), got shape {tuple(trajectory.shape)}")
    times = torch.as_tensor(times, dtype=trajectory.dtype, device=trajectory.device).reshape(-1)
    if times.shape[0] != trajectory.shape[0]:
        raise ValueError(f"times has {times.shape[0]} entries but the trajectory {trajectory.shape[0]} states")
    X = trajectory.reshape(trajectory.shape[0], trajectory.shape[1], -1)  # (S+1, B, D)
    dt = times[1:] - times[:-1]  # (S,)
    dx = X[1:] - X[:-1]  # (S, B, D)
    return X, dt, dx


def straightness(trajectory: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Liu et al.'s straightness of ODE paths (Flow Straight and Fast): 0 iff straight at constant speed.

    ``S = E_x0 int_0^1 ||(x_1 - x_0) - v_t||^2 dt``, computed from the stored states with the
    chord velocity of each step, ``v_k = (x_{k+1} - x_k) / (t_{k+1} - t_k)``:
    ``S ~ mean_b sum_k dt_k ||(x_S - x_0) - v_k||^2``. Here ``x_1 - x_0`` is the chord from the
    first to the last stored state (divided by the time span when it is not 1).

    Args:
        trajectory: states ``(S+1, B, ...)`` at ``times`` (what ``ode_solve(..., return_trajectory=True)`` returns).
        times: ``(S+1,)`` increasing times, normally from 0 to 1.

    Returns:
        A scalar tensor (mean over the batch), in squared data units.
    """
    X, dt, dx = _segments(trajectory, times)
    span = dt.sum()
    chord = (X[-1] - X[0]) / span  # (B, D): the average velocity
    v = dx / dt[:, None, None]  # (S, B, D)
    err = ((v - chord[None]) ** 2).sum(-1)  # (S, B)
    return ((dt[:, None] * err).sum(0)).mean() / span


def curvature(trajectory: torch.Tensor, times: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Excess path length: ``E[ L / ||x_1 - x_0|| ] - 1``, 0 iff every path is a straight segment.

    ``L = sum_k ||x_{k+1} - x_k||`` is the polygonal arc length of each stored path. Unlike
    :func:`straightness` it ignores speed changes along a straight line and is scale-free
    (0.1 = paths 10% longer than their chords).

    Args:
        trajectory: states ``(S+1, B, ...)``.
        times: unused (accepted for symmetry with :func:`straightness`).
        eps: guards paths whose ends coincide.

    Returns:
        A scalar tensor (mean over the batch).
    """
    X = trajectory.reshape(trajectory.shape[0], trajectory.shape[1], -1)  # (S+1, B, D)
    length = (X[1:] - X[:-1]).norm(dim=-1).sum(0)  # (B,)
    chord = (X[-1] - X[0]).norm(dim=-1)  # (B,)
    return (length / (chord + eps)).mean() - 1.0


# --------------------------------------------------------------------------------------
# Frechet distance between feature sets (the MNIST scores of tutorlib.judge use it)
# --------------------------------------------------------------------------------------


def frechet_distance_features(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of two feature sets (the formula behind FID).

    ``FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})``, computed in
    float64 with symmetric eigendecompositions (exact for PSD covariances). It is biased
    upwards for small samples: compare numbers only at equal sample sizes and against the
    real-data floor (train vs test images of the same size).

    Args:
        features_a: ``(N, F)``.
        features_b: ``(M, F)``.

    Returns:
        The distance as a float (``>= 0``).
    """
    a, b = features_a.double(), features_b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)  # (F,)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)  # (F, F)
    ev_a, U = torch.linalg.eigh(cov_a)
    sqrt_a = (U * ev_a.clamp_min(0).sqrt()) @ U.T  # (F, F)
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    fd = ((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt
    return max(0.0, float(fd))
