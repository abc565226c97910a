"""Data for the course: 2D toy distributions and MNIST (lesson 00).

Toy samplers all share one signature, ``sampler(n, generator=None, device=None) -> (n, 2)``
float32, and are deterministic under a ``torch.Generator``. Each has a labelled variant through
:func:`sample_labelled` (samples plus class ids, for the guidance lesson). Data is scaled to
lie roughly in ``[-4, 4]^2`` with a per-coordinate standard deviation between 1 and 2, so the
same source ``N(0, I)`` and the same models suit every dataset.

MNIST is read from the standard IDX ``.gz`` files by :func:`load_mnist`; the download, cache and
checksum logic lives in :mod:`tutorlib.mnist`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor




def __getattr__(name: str):
    """``data.load_mnist`` and ``data.mnist_dir`` come from :mod:`tutorlib.mnist`, imported on first use
    (the toy samplers need nothing of the downloader)."""
    if name in ("load_mnist", "mnist_dir"):
        from tutorlib import mnist

        return getattr(mnist, name)
    raise AttributeError(f"module 'tutorlib.data' has no attribute {name!r}")


__all__ = [
    "TOY_DATASETS",
    "ToyDataset",
    "checkerboard",
    "circles",
    "eight_gaussians",
    "LabelledBatch",
    "gaussian",
    "gmm_component_log_probs",
    "gmm_log_prob",
    "in_checkerboard",
    "labelled_batches",
    "moons",
    "pinwheel",
    "rings",
    "sample_labelled",
    "swiss_roll",
    "toy_sampler",
    "twenty_five_gaussians",
    "two_spirals",
]


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (the number of samples), got {n!r}")
    return n


def _rand(n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(*shape: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _randint(high: int, n: int, g: torch.Generator | None) -> torch.Tensor:
    return torch.randint(high, (n,), generator=g)


# Each raw sampler draws on the CPU in float64 and returns (points (n, 2), labels (n,)).
def _moons(n, g):
    y = _randint(2, n, g)  # (n,)
    theta = math.pi * _rand(n, g)
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], 1)  # (n, 2)
    lower = torch.stack([1.0 - torch.cos(theta), 0.5 - torch.sin(theta)], 1)
    x = torch.where((y == 0)[:, None], upper, lower)
    x = x + 0.05 * _randn(n, 2, g=g)
    return 2.0 * (x - torch.tensor([0.5, 0.25], dtype=x.dtype)), y


def _circles(n, g):
    y = _randint(2, n, g)
    radius = torch.where(y == 0, 3.0, 1.5).to(torch.float64)
    theta = 2 * math.pi * _rand(n, g)
    x = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    return x + 0.08 * _randn(n, 2, g=g), y


def _ring_of_gaussians(n, g, k, radius, std):
    y = _randint(k, n, g)
    angle = 2 * math.pi * y.to(torch.float64) / k
    centres = radius * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    return centres + std * _randn(n, 2, g=g), y


def _eight_gaussians(n, g):
    return _ring_of_gaussians(n, g, 8, 2.5, 0.2)


def _twenty_five_gaussians(n, g):
    y = _randint(25, n, g)
    centres = torch.stack([(y // 5).to(torch.float64) - 2.0, (y % 5).to(torch.float64) - 2.0], 1) * 1.5
    return centres + 0.1 * _randn(n, 2, g=g), y


def _checkerboard(n, g):
    # A 4 x 4 board on [-4, 4]^2 with 8 filled squares of side 2; label = filled-square index.
    y = _randint(8, n, g)
    col = y % 4  # 0..3
    row = 2 * (y // 4) + (col % 2)  # rows alternate so filled squares never touch at an edge
    row = row % 4
    corner = torch.stack([col, row], 1).to(torch.float64) * 2.0 - 4.0  # (n, 2)
    u = torch.stack([_rand(n, g), _rand(n, g)], 1)
    return corner + 2.0 * u, y


def in_checkerboard(x: torch.Tensor) -> torch.Tensor:
    """Whether each point of ``x`` ``(N, 2)`` lies in a filled square of :func:`checkerboard`: ``(N,)`` bool.

    The board is 4 x 4 on ``[-4, 4]^2``; a square (column ``c``, row ``r``, counted from the lower left)
    is filled when ``c + r`` is even. The data itself scores 1 (lessons 01 and 03 use it to read samples).
    """
    cell = torch.floor((x + 4) / 2)  # (N, 2) column and row of each point's square
    return (x.abs() < 4).all(1) & (cell.sum(1) % 2 == 0)


def _two_spirals(n, g):
    y = _randint(2, n, g)
    s = torch.sqrt(_rand(n, g)) * 3 * math.pi  # arc parameter, denser near the centre corrected by sqrt
    sign = torch.where(y == 0, 1.0, -1.0).to(torch.float64)
    x = sign[:, None] * torch.stack([-s * torch.cos(s), s * torch.sin(s)], 1) / 2.5
    return x + 0.1 * _randn(n, 2, g=g), y


def _swiss_roll(n, g):
    s = 1.5 * math.pi * (1 + 2 * _rand(n, g))  # in [1.5 pi, 4.5 pi]
    x = torch.stack([s * torch.cos(s), s * torch.sin(s)], 1) / 3.5
    y = torch.clamp(((s / math.pi - 1.5) / 3 * 4).long(), 0, 3)  # four bands along the roll
    return x + 0.1 * _randn(n, 2, g=g), y


def _pinwheel(n, g, arms=5):
    y = _randint(arms, n, g)
    r = 0.3 * _randn(n, g=g) + 1.0
    tangential = 0.05 * _randn(n, g=g)
    base = 2 * math.pi * y.to(torch.float64) / arms
    angle = base + 0.25 * torch.exp(r)  # the arm bends more the further out it goes
    pts = torch.stack([r, tangential], 1)
    c, s = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([c, -s], 1), torch.stack([s, c], 1)], 1)  # (n, 2, 2)
    x = torch.einsum("nij,nj->ni", rot, pts)
    return 2.0 * x, y


def _rings(n, g):
    y = _randint(4, n, g)
    radius = 0.9 * (y.to(torch.float64) + 1.0)
    theta = 2 * math.pi * _rand(n, g)
    x = radius[:, None] * torch.stack([torch.cos(theta), torch.sin(theta)], 1)
    return x + 0.08 * _randn(n, 2, g=g), y


@dataclass(frozen=True)
class ToyDataset:
    """A 2D toy distribution: its name, class count and raw sampler."""

    name: str  # the name lessons and the bench use, e.g. "checkerboard"
    num_classes: int  # number of class ids returned by sample_labelled
    draw: Callable  # (n, generator) -> (points (n, 2) float64, labels (n,) int64), on the CPU


TOY_DATASETS: dict[str, ToyDataset] = {
    d.name: d
    for d in [
        ToyDataset("moons", 2, _moons),
        ToyDataset("circles", 2, _circles),
        ToyDataset("eight_gaussians", 8, _eight_gaussians),
        ToyDataset("twenty_five_gaussians", 25, _twenty_five_gaussians),
        ToyDataset("checkerboard", 8, _checkerboard),
        ToyDataset("two_spirals", 2, _two_spirals),
        ToyDataset("swiss_roll", 4, _swiss_roll),
        ToyDataset("pinwheel", 5, _pinwheel),
        ToyDataset("rings", 4, _rings),
    ]
}


def _lookup(name: str) -> ToyDataset:
    if name not in TOY_DATASETS:
        raise ValueError(f"unknown toy dataset {name!r}; choose one of: {', '.join(TOY_DATASETS)}")
    return TOY_DATASETS[name]


def sample_labelled(
    name: str, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples of a toy dataset with their class ids (lesson 08, guidance).

    Args:
        name: a key of :data:`TOY_DATASETS`.
        n: number of samples.
        generator: a CPU ``torch.Generator`` for reproducible draws.
        device: where to put the result.

    Returns:
        ``(x, y)``: points ``(n, 2)`` float32 and labels ``(n,)`` int64 in
        ``[0, num_classes)``.
    """
    ds = _lookup(name)
    x, y = ds.draw(_check_n(n), generator)
    return x.to(device=device, dtype=torch.float32), y.to(device=device, dtype=torch.int64)


def toy_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The unlabelled sampler ``(n, *, generator=None, device=None) -> (n, 2)`` for ``name``."""
    ds = _lookup(name)

    def sampler(n: int, *, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return sample_labelled(ds.name, n, generator=generator, device=device)[0]

    sampler.__name__ = ds.name
    sampler.__doc__ = f"Draw ``n`` points ``(n, 2)`` float32 from the {ds.name} toy distribution."
    return sampler


moons = toy_sampler("moons")
circles = toy_sampler("circles")
eight_gaussians = toy_sampler("eight_gaussians")
twenty_five_gaussians = toy_sampler("twenty_five_gaussians")
checkerboard = toy_sampler("checkerboard")
two_spirals = toy_sampler("two_spirals")
swiss_roll = toy_sampler("swiss_roll")
pinwheel = toy_sampler("pinwheel")
rings = toy_sampler("rings")


def gaussian(
    n: int, dim: int = 2, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The standard Gaussian source ``x_0 ~ N(0, I)``: ``(n, dim)`` float32."""
    return torch.randn(_check_n(n), dim, generator=generator).to(device)


# --------------------------------------------------------------------------------------
# Labelled batches (lesson 08): data, noise, times and class ids in one draw
# --------------------------------------------------------------------------------------


@dataclass
class LabelledBatch:
    """One training batch of labelled data with its noise and times (:func:`labelled_batches`)."""

    x_0: Tensor  # (B, 2) source noise N(0, I)
    x_1: Tensor  # (B, 2) data
    t: Tensor  # (B,) times, uniform on [0, 1]
    y: Tensor  # (B,) int64 class ids of x_1


def labelled_batches(name: str, batch_size: int, *, generator: torch.Generator | None = None,
                     device: torch.device | str | None = None) -> Callable[[int], LabelledBatch]:
    """A sampler ``step -> LabelledBatch`` of a labelled toy dataset, for :func:`tutorlib.train.train`.

    Fresh data (:func:`sample_labelled`), noise and times every step, all drawn
    from ``generator`` on the CPU and moved to ``device``. Use it for the class-conditional
    model (``cfm_loss(m, path, b.x_0, b.x_1, b.t, y=drop_labels(b.y, p, m.null_class))``) and the
    noisy classifier (``classifier_loss(c, path, b.x_1, b.y, b.t, b.x_0)``).

    Args:
        name: a key of :data:`TOY_DATASETS`.
        batch_size: rows per batch.
        generator: CPU generator of every draw.
        device: where the batch goes.

    Returns:
        ``sampler(step) -> LabelledBatch``.
    """
    _lookup(name)  # an unknown name fails here, with the valid ones

    def sampler(step: int) -> LabelledBatch:
        x_1, y = sample_labelled(name, batch_size, generator=generator)  # (B, 2), (B,)
        x_0 = torch.randn(x_1.shape, generator=generator)  # (B, 2)
        t = torch.rand(batch_size, generator=generator)  # (B,)
        return LabelledBatch(x_0=x_0.to(device), x_1=x_1.to(device), t=t.to(device), y=y.to(device))

    return sampler


# --------------------------------------------------------------------------------------
# Exact log-density of Gaussian mixtures (the one implementation; paths and lessons use it)
# --------------------------------------------------------------------------------------


def gmm_component_log_probs(
    x: torch.Tensor, means: torch.Tensor, stds: torch.Tensor | float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """``log w_k + log N(x; mu_k, diag(s_k^2))`` for every point and component: ``(B, K)``.

    The components may be shared by the batch (``means (K, D)``; ``stds`` a float, ``(K,)`` isotropic or
    ``(K, D)`` diagonal) or differ per point (``means (B, K, D)``; ``stds`` a float, ``(B, K)`` or
    ``(B, K, D)``), as the marginal ``p_t`` of a mixture does when every point has its own time
    (:func:`tutorlib.paths.gmm_marginal_log_prob`).

    Args:
        x: points ``(B, D)``.
        means: component means ``(K, D)`` or ``(B, K, D)``.
        stds: standard deviations, shapes as above.
        weights: mixture weights ``(K,)``, positive (normalised here); ``None`` means uniform.

    Returns:
        ``(B, K)`` joint log-densities in ``x``'s dtype; their ``logsumexp`` over ``K`` is ``log p(x)``.
    """
    means = torch.as_tensor(means, dtype=x.dtype, device=x.device)
    per_point = means.dim() == 3
    if means.dim() not in (2, 3) or means.shape[-1] != x.shape[-1]:
        raise ValueError(f"means must be (K, D) or (B, K, D) with D = {x.shape[-1]}, got {tuple(means.shape)}")
    K, D = means.shape[-2], means.shape[-1]
    stds = torch.as_tensor(stds, dtype=x.dtype, device=x.device)
    if stds.dim() == 0 or stds.dim() == means.dim() - 1:  # a float, (K,) or (B, K): isotropic
        stds = stds[..., None]
    stds = stds if per_point else stds[None]  # (1 or B, K, 1 or D)
    mu = means if per_point else means[None]  # (1 or B, K, D)
    if weights is None:
        log_w = torch.full((K,), -math.log(K), dtype=x.dtype, device=x.device)
    else:
        log_w = torch.log(torch.as_tensor(weights, dtype=x.dtype, device=x.device).reshape(K))
        log_w = log_w - torch.logsumexp(log_w, 0)  # (K,) normalised
    z = (x[:, None, :] - mu) / stds  # (B, K, D)
    log_det = torch.log(stds).expand(*stds.shape[:-1], D).sum(-1)  # (1 or B, K)
    return log_w - 0.5 * z.square().sum(-1) - log_det - 0.5 * D * math.log(2 * math.pi)  # (B, K)


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
        means: component means ``(K, D)`` (or per point, see :func:`gmm_component_log_probs`).
        stds: a float, ``(K,)`` (isotropic) or ``(K, D)`` (diagonal) standard deviations.
        weights: mixture weights ``(K,)`` (normalised here); ``None`` means uniform.

    Returns:
        ``(B,)`` log-densities, in x's dtype.
    """
    return torch.logsumexp(gmm_component_log_probs(x, means, stds, weights), dim=1)  # (B,)
