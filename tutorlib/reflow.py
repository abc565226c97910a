"""Rectified flow beyond the coupling: training on fixed pairs, time distributions, distillation (lesson 06).

A rectified flow is flow matching on the linear path. *Reflow* (Liu, Gong and Liu, *Flow Straight
and Fast*) retrains it on the deterministic coupling that the previous flow generates,
``(x_0, Z_1(x_0))`` from :func:`tutorlib.solvers.reflow_coupling`; *distillation* turns the last flow
into a one-step generator ``x_1 = x_0 + v(x_0, 0)`` by regressing its map. This module holds what
those steps need beyond the coupling itself::

    pairs = reflow_coupling(flow, noise, steps=100)                        # Coupling(x_0, x_1)
    batches = pair_batches(pairs, 512, generator=g, times=UShapedTime())   # step -> (x_0, x_1, t)
    loss = reflow_loss(model, CondOTPath(), *batches(step), huber=0.02)    # reflow (a CFM loss)
    loss = distill_loss(student, *pairs)                                    # one-step distillation

* time distributions for the training times ``t``: :class:`UniformTime` (Liu et al.) and the
  U-shaped :class:`UShapedTime` of *Improving the Training of Rectified Flows* (Lee, Lin and Fanti),
  which puts more weight near both ends of the path; each samples by its inverse CDF from one
  uniform draw per time, and gives its density;
* :func:`pair_batches`: random rows of a fixed coupling with fresh times (a reflow round trains on
  a fixed set of generated pairs, not on fresh data);
* :func:`reflow_loss`: the flow-matching loss on pairs, with the squared error or the pseudo-Huber
  premetric ``sqrt(||d||^2 + c^2) - c`` (Lee et al. use a perceptual version of it for images);
* :func:`one_step` and :func:`distill_loss`: the one-step generator and its regression loss;
* :func:`backward_coupling`: the opposite way of making pairs, real data ``x_1`` with the noise the
  flow assigns to it (integrating from t = 1 back to 0), so that the data side of the coupling is
  exact (the "projected" or real-data pairs of *Simple ReFlow* and Lee et al.);
* :func:`transport_cost`: ``E ||x_1 - x_0||^2`` of a coupling, which rectification does not increase.

Shapes: ``x_0`` and ``x_1`` are ``(B, ...)``, times ``(B,)``; the device comes from the tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from tutorlib.couplings import Coupling
from tutorlib.losses import Model
from tutorlib.paths import AffinePath
from tutorlib.solvers import VelocityField, ode_solve

__all__ = [
    "TimeDistribution",
    "UShapedTime",
    "UniformTime",
    "backward_coupling",
    "distill_loss",
    "one_step",
    "pair_batches",
    "reflow_loss",
    "transport_cost",
]


def _check_pairs(x_0: Tensor, x_1: Tensor) -> None:
    if not isinstance(x_0, Tensor) or not isinstance(x_1, Tensor):
        raise TypeError(f"x_0 and x_1 must be tensors, got {type(x_0).__name__} and {type(x_1).__name__}")
    if x_0.shape != x_1.shape or x_0.dim() < 2:
        raise ValueError(f"x_0 and x_1 must be paired batches of the same shape (B, ...), got {tuple(x_0.shape)} "
                         f"and {tuple(x_1.shape)}: row i of x_0 is paired with row i of x_1")


# --- time distributions -----------------------------------------------------------------------------


class TimeDistribution:
    """A distribution of the training times ``t`` on ``[0, 1]``: subclasses give the inverse CDF and the density.

    ``sample`` draws ``u ~ U[0, 1)`` from the generator and returns ``icdf(u)``, so every distribution
    costs one uniform draw per time and the same generator state gives the same times. The generator
    is a CPU one (the times are drawn on the CPU and moved).
    """

    def icdf(self, u: Tensor) -> Tensor:
        """The inverse CDF: times ``(n,)`` for uniform ``u`` ``(n,)`` in ``[0, 1]``."""
        raise NotImplementedError

    def density(self, t: Tensor) -> Tensor:
        """The probability density at ``t`` ``(n,)`` in ``[0, 1]``."""
        raise NotImplementedError

    def sample(self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Tensor:
        """``n`` times ``(n,)`` in ``dtype``: ``u = torch.rand(n, generator=generator, dtype=dtype)`` on the CPU,
        then ``icdf(u)``, moved to ``device`` (so :class:`UniformTime` draws exactly what ``torch.rand`` does)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative whole number of times, got {n!r}")
        u = torch.rand(n, generator=generator, dtype=dtype)  # (n,) on the CPU
        return self.icdf(u).clamp(0.0, 1.0).to(device)


@dataclass(frozen=True)
class UniformTime(TimeDistribution):
    """``t ~ U[0, 1]``: the time distribution of flow matching and of Liu et al.'s reflow."""

    def icdf(self, u: Tensor) -> Tensor:
        return u

    def density(self, t: Tensor) -> Tensor:
        return torch.ones_like(t)


@dataclass(frozen=True)
class UShapedTime(TimeDistribution):
    """The U-shaped time distribution of *Improving the Training of Rectified Flows* (Lee, Lin, Fanti, 2024).

    ``p(t) = a cosh(a (t - 1/2)) / (2 sinh(a / 2))`` on ``[0, 1]``: symmetric, lowest at ``t = 1/2`` and
    ``a / (2 tanh(a / 2))`` times the uniform density at both ends (about 2 for ``a = 4``, the paper's
    value). It is the even mixture of the density ``a e^{a t} / (e^a - 1)`` and its mirror image.
    Lee et al. argue that after one reflow round the training loss is largest near the two ends, so
    they train more there. Its CDF ``F(t) = 1/2 + sinh(a (t - 1/2)) / (2 sinh(a / 2))`` inverts in
    closed form: ``t = 1/2 + asinh((2u - 1) sinh(a / 2)) / a``.
    """

    a: float = 4.0  # the concentration: 0 is uniform, larger puts more mass at both ends

    def __post_init__(self):
        if isinstance(self.a, bool) or not isinstance(self.a, (int, float)) or not math.isfinite(self.a) or self.a < 0:
            raise ValueError(f"UShapedTime(a) needs a finite a >= 0 (0 is uniform; Lee et al. use 4), got {self.a!r}")

    def icdf(self, u: Tensor) -> Tensor:
        if self.a < 1e-6:
            return u
        return 0.5 + torch.asinh((2.0 * u - 1.0) * math.sinh(self.a / 2)) / self.a

    def density(self, t: Tensor) -> Tensor:
        if self.a < 1e-6:
            return torch.ones_like(t)
        return self.a * torch.cosh(self.a * (t - 0.5)) / (2.0 * math.sinh(self.a / 2))


# --- training on a fixed coupling -----------------------------------------------------------------


def pair_batches(pairs: Coupling, batch_size: int, *, generator: torch.Generator | None = None,
                 times: TimeDistribution = UniformTime()):
    """A sampler ``step -> (x_0, x_1, t)`` over a fixed coupling: random rows (with replacement) and fresh times.

    A reflow round trains on the ``N`` pairs it generated once (``reflow_coupling``), not on fresh
    data; each step draws ``batch_size`` row indices and then ``batch_size`` times from ``times``,
    both from ``generator`` (CPU), so one generator state gives one sequence of batches.

    Args:
        pairs: a :class:`tutorlib.couplings.Coupling` ``(x_0, x_1)``, each ``(N, ...)``.
        batch_size: rows per batch.
        generator: CPU generator for the rows and the times.
        times: the distribution of the training times (default uniform).

    Returns:
        ``sampler(step)`` returning ``(x_0, x_1, t)`` of shapes ``(batch_size, ...)`` twice and
        ``(batch_size,)``, on the pairs' device; ``t`` has the pairs' dtype.

    Raises:
        ValueError: the pairs are not paired batches of one shape, or ``batch_size`` is not positive.
    """
    x_0, x_1 = pairs
    _check_pairs(x_0, x_1)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    if not isinstance(times, TimeDistribution):
        raise TypeError(f"times must be a TimeDistribution such as UniformTime() or UShapedTime(), got {times!r}")
    n = x_0.shape[0]

    def sampler(step: int) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.randint(n, (batch_size,), generator=generator).to(x_0.device)  # (batch_size,)
        t = times.sample(batch_size, generator=generator, device=x_0.device, dtype=x_0.dtype)  # (batch_size,)
        return x_0[idx], x_1[idx], t

    return sampler


def reflow_loss(model: Model, path: AffinePath, x_0: Tensor, x_1: Tensor, t: Tensor, *,
                huber: float | None = None) -> Tensor:
    """The flow-matching loss on coupled pairs, with the squared error or the pseudo-Huber premetric.

    With ``d = model(x_t, t) - dx_t`` and ``x_t`` on ``path``:

    * ``huber=None``: ``mean over batch and coordinates of d^2``, exactly
      :func:`tutorlib.losses.cfm_loss` with the velocity target;
    * ``huber=c > 0``: ``mean over the batch of sqrt(||d||^2 + c^2) - c`` (``||d||`` over all
      coordinates of a sample): about ``||d||^2 / (2c)`` for errors much smaller than ``c`` and
      ``||d||`` for larger ones, so a few badly fitted pairs pull less on the gradient
      (*Improving the Training of Rectified Flows* uses a perceptual version on images).

    Args:
        model: ``model(x_t, t)`` -> velocity, shapes ``(B, ...)`` and ``(B,)``.
        path: the conditional path, e.g. ``CondOTPath()`` (rectified flow's).
        x_0, x_1: coupled pairs ``(B, ...)`` (e.g. from :func:`pair_batches`).
        t: times ``(B,)``.
        huber: the pseudo-Huber constant ``c`` in data units, or ``None`` for the squared error.

    Returns:
        The scalar loss.

    Raises:
        ValueError: ``huber`` is not positive, or the pairs do not match.
    """
    _check_pairs(x_0, x_1)
    if huber is not None and (isinstance(huber, bool) or not isinstance(huber, (int, float)) or not huber > 0):
        raise ValueError(f"huber must be a positive constant c (in data units) or None for the squared error, "
                         f"got {huber!r}")
    s = path.sample(x_0, x_1, t)
    d = model(s.x_t, t) - s.dx_t  # (B, ...)
    if huber is None:
        return d.square().mean()
    sq = d.reshape(d.shape[0], -1).square().sum(1)  # (B,)
    return (torch.sqrt(sq + huber * huber) - huber).mean()


def one_step(model: Model, x_0: Tensor) -> Tensor:
    """The one-step generator of a velocity model: ``x_1 = x_0 + model(x_0, 0)`` (one Euler step), ``(B, ...)``."""
    t0 = torch.zeros(x_0.shape[0], dtype=x_0.dtype, device=x_0.device)  # (B,)
    return x_0 + model(x_0, t0)


def distill_loss(model: Model, x_0: Tensor, x_1: Tensor) -> Tensor:
    """One-step distillation (Liu et al.; InstaFlow): ``mean ||x_0 + model(x_0, 0) - x_1||^2``.

    The student is trained on a teacher's deterministic coupling ``(x_0, x_1 = Z_1(x_0))`` to jump
    there in one Euler step; its parametrisation is a velocity at ``t = 0``, so it can start from the
    teacher's weights. Mean over the batch and all coordinates.

    Args:
        model: ``model(x, t)`` -> velocity, called with ``t = 0``.
        x_0: noise ``(B, ...)``.
        x_1: the teacher's samples from it ``(B, ...)``.

    Returns:
        The scalar loss.
    """
    _check_pairs(x_0, x_1)
    return (one_step(model, x_0) - x_1).square().mean()


# --- couplings and their cost --------------------------------------------------------------------


def backward_coupling(velocity: VelocityField, x_1: Tensor, *, steps: int = 100, method: str = "euler") -> Coupling:
    """Pair real data ``x_1`` with the noise the flow maps to it: integrate from t = 1 back to t = 0.

    :func:`tutorlib.solvers.reflow_coupling` runs forwards, so its ``x_0`` is exact noise and its
    ``x_1`` carries the flow's errors; this runs backwards, so its ``x_1`` is exact data and its
    ``x_0`` carries them (how far from ``N(0, I)`` it lands measures the flow's error).

    Args:
        velocity: the trained field ``velocity(x, t)``.
        x_1: data ``(B, ...)``.
        steps: solver steps (ignored by dopri5).
        method: a solver of :data:`tutorlib.solvers.METHODS`.

    Returns:
        ``Coupling(x_0_encoded, x_1)``.
    """
    if not isinstance(x_1, Tensor) or x_1.dim() < 2:
        raise ValueError(f"x_1 must be a batch of data (B, ...), got {getattr(x_1, 'shape', type(x_1).__name__)}")
    return Coupling(ode_solve(velocity, x_1, method=method, steps=steps, t0=1.0, t1=0.0).x, x_1)


def transport_cost(x_0: Tensor, x_1: Tensor) -> Tensor:
    """The quadratic transport cost of a coupling, ``E ||x_1 - x_0||^2`` (a scalar, mean over pairs).

    Liu et al. prove that rectification never increases ``E c(x_1 - x_0)`` for any convex cost ``c``:
    the coupling of k-RF costs at most that of (k-1)-RF (exactly so for the exact flows).
    """
    _check_pairs(x_0, x_1)
    return (x_1 - x_0).reshape(x_0.shape[0], -1).square().sum(1).mean()
