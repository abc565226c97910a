"""Sample-quality metrics: 2D two-sample distances, exact likelihoods, straightness; MNIST scores.

Lesson 00 introduces them and every later lesson reports them:

* 2D: :func:`energy_distance` and :func:`mmd_rbf` between generated and held-out samples, always
  next to their :func:`noise_floor` (the same metric between two independent data draws of the
  same size), so a result reads "within k times the floor"; :func:`gmm_log_prob` for exact
  likelihoods of Gaussian-mixture data.
* Trajectories (lessons 05-07): :func:`straightness` and :func:`curvature` of ODE paths
  (solvers report the NFE).
* MNIST (lessons 00, 09): :func:`judge_accuracy`, :func:`frechet_distance`, :func:`label_entropy`
  and :func:`feature_spread` in the feature space of the shipped judge classifier
  (:class:`tutorlib.judge.Judge`); :func:`frechet_distance_features` for any features.

All functions read the device from their inputs and draw no random numbers unless given a
``generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from tutorlib.judge import Judge, load_judge

__all__ = [
    "NoiseFloor",
    "RepeatedMetric",
    "curvature",
    "energy_distance",
    "feature_spread",
    "frechet_distance",
    "frechet_distance_features",
    "gmm_log_prob",
    "judge_accuracy",
    "label_entropy",
    "mmd_rbf",
    "model_score",
    "noise_floor",
    "straightness",
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
# Exact likelihood of Gaussian mixtures
# --------------------------------------------------------------------------------------


def gmm_log_prob(
    x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor | float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact log-density of a Gaussian mixture with isotropic or diagonal components.

    ``log p(x) = logsumexp_k [ log w_k + sum_d log N(x_d; mu_kd, s_kd^2) ]``.
    The course's mixtures (eight Gaussians, 25 Gaussians) have known ``means``, ``stds``,
    ``weights``; ``-gmm_log_prob(samples).mean()`` is the exact cross-entropy of model samples
    under the data density, and ``-gmm_log_prob(data).mean()`` its entropy (lessons 02, 03).

    Args:
        x: points ``(B, D)``.
        means: component means ``(K, D)``.
        stds: a float, ``(K,)`` (isotropic) or ``(K, D)`` (diagonal) standard deviations.
        weights: mixture weights ``(K,)`` (normalised here); ``None`` means uniform.

    Returns:
        ``(B,)`` log-densities, in x's dtype.
    """
    means = torch.as_tensor(means, dtype=x.dtype, device=x.device)  # (K, D)
    K, D = means.shape
    stds = torch.as_tensor(stds, dtype=x.dtype, device=x.device)
    stds = stds.expand(K) if stds.dim() == 0 else stds
    stds = stds[:, None].expand(K, D) if stds.dim() == 1 else stds  # (K, D)
    if weights is None:
        logw = torch.full((K,), -math.log(K), dtype=x.dtype, device=x.device)
    else:
        w = torch.as_tensor(weights, dtype=x.dtype, device=x.device)
        logw = torch.log(w / w.sum())  # (K,)
    z = (x[:, None, :] - means[None]) / stds[None]  # (B, K, D)
    log_n = -0.5 * (z ** 2).sum(-1) - torch.log(stds).sum(-1)[None] - 0.5 * D * math.log(2 * math.pi)  # (B, K)
    return torch.logsumexp(logw[None] + log_n, dim=1)  # (B,)


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
# MNIST, in the judge's feature space
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


def judge_accuracy(images: torch.Tensor, labels: torch.Tensor, judge: Judge | None = None) -> float:
    """Fraction of images that the judge classifies as their conditioning label.

    Args:
        images: generated images ``(N, 1, 28, 28)`` in ``[-1, 1]`` (clamped).
        labels: the labels they were generated for, ``(N,)`` int64.
        judge: a :class:`Judge` (default: the shipped one).

    Returns:
        Accuracy in ``[0, 1]`` (the judge scores over 99% on real test digits).
    """
    judge = judge or load_judge()
    pred = judge.predict(images)  # (N,)
    return float((pred == labels.to(pred.device)).float().mean())


def frechet_distance(images_a: torch.Tensor, images_b: torch.Tensor, judge: Judge | None = None) -> float:
    """Frechet distance between two image sets in the judge's 128-d features.

    Its floor is the distance between real train and test images of the same size.

    Args:
        images_a: ``(N, 1, 28, 28)`` in ``[-1, 1]``.
        images_b: ``(M, 1, 28, 28)`` in ``[-1, 1]``.
        judge: a :class:`Judge` (default: the shipped one).
    """
    judge = judge or load_judge()
    return frechet_distance_features(judge.features(images_a), judge.features(images_b))


def label_entropy(images: torch.Tensor, judge: Judge | None = None) -> float:
    """Entropy (nats) of the histogram of the judge's predicted labels: mode coverage.

    ``H = -sum_c p_c log p_c`` with ``p_c`` the fraction of images predicted as class ``c``:
    ``log 10 = 2.303`` when all digits are equally frequent, ``0`` when every sample is the same
    digit. For unconditional or guided samples (lesson 08's quality / diversity trade-off).
    """
    judge = judge or load_judge()
    pred = judge.predict(images)  # (N,)
    p = torch.bincount(pred, minlength=judge.num_classes).double() / pred.numel()  # (C,)
    p = p[p > 0]
    return float(-(p * p.log()).sum())


def feature_spread(images: torch.Tensor, labels: torch.Tensor | None = None, judge: Judge | None = None) -> float:
    """Within-class diversity: root mean per-feature variance in the judge's feature space.

    ``sqrt(mean_c tr(Cov(f | class c)) / F)``, averaged over the classes present (``labels``;
    ``None`` treats all images as one class). Compare with the same number on real images:
    a guided model that collapses to one prototype per class scores far below real data.

    Args:
        images: ``(N, 1, 28, 28)`` in ``[-1, 1]``.
        labels: ``(N,)`` conditioning labels, or ``None``.
        judge: a :class:`Judge` (default: the shipped one).
    """
    judge = judge or load_judge()
    f = judge.features(images).double()  # (N, F)
    labels = torch.zeros(f.shape[0], dtype=torch.long) if labels is None else labels.to(f.device)
    traces = []
    for c in labels.unique():
        fc = f[labels == c]
        if fc.shape[0] >= 2:
            traces.append(fc.var(0).mean())
    if not traces:
        raise ValueError("feature_spread needs at least two images of some class")
    return float(torch.stack(traces).mean().sqrt())
