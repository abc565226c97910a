"""Training losses: conditional flow matching (lessons 03-04) and DDPM's epsilon loss (lesson 01).

Every model in the course is called as ``model(x, t)`` with ``x`` of shape (B, ...) and ``t`` of
shape (B,), a float in [0, 1] (0 noise, 1 data). The conditional flow matching (CFM) loss
regresses the model on a target of the conditional path::

    x_t = alpha_t x_1 + sigma_t x_0
    L = mean || model(x_t, t) - target ||^2,   target = dx_t (velocity), x_1 or x_0 (epsilon).

Its gradient equals that of the (intractable) marginal flow-matching loss with target
E[target | x_t] (lesson 03); the parametrisation (lesson 04) only chooses which conditional
mean the model learns. Losses return the scalar mean over batch and all coordinates.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Callable

from torch import Tensor

from tutorlib.paths import AffinePath

if TYPE_CHECKING:  # only for annotations: losses needs no DDPM code at run time
    from tutorlib.ddpm import DDPMSchedule

__all__ = ["Parametrisation", "cfm_loss", "ddpm_loss"]

Model = Callable[[Tensor, Tensor], Tensor]


class Parametrisation(str, Enum):
    """What a network predicts on an affine path (lesson 04).

    A ``str`` enum, so ``Parametrisation("epsilon")`` and ``Parametrisation.EPSILON`` are the same.
    """

    VELOCITY = "velocity"  # dx_t = d_alpha_t x_1 + d_sigma_t x_0
    X1 = "x1"  # the data x_1 ("x-prediction")
    EPSILON = "epsilon"  # the source noise x_0

    def target(self, x_0: Tensor, x_1: Tensor, dx_t: Tensor) -> Tensor:
        """The regression target of this parametrisation, shape (B, ...)."""
        if self is Parametrisation.VELOCITY:
            return dx_t
        if self is Parametrisation.X1:
            return x_1
        return x_0


def cfm_loss(model: Model, path: AffinePath, x_0: Tensor, x_1: Tensor, t: Tensor, *,
             target: Parametrisation | str = Parametrisation.VELOCITY, y: Tensor | None = None) -> Tensor:
    """The conditional flow matching loss on an affine path (lessons 03 and 04).

    L = mean over batch and coordinates of (model(x_t, t) - target)^2, x_t = alpha_t x_1 + sigma_t x_0.

    Args:
        model: ``model(x_t, t)`` -> prediction, shapes (B, ...) and (B,).
        path: the conditional path, e.g. ``CondOTPath()`` or ``AffinePath(CosineScheduler())``.
        x_0: source samples (noise), shape (B, ...).
        x_1: data samples, shape (B, ...), paired with ``x_0`` by a coupling.
        t: times, shape (B,), usually uniform on [0, 1].
        target: what the model predicts (:class:`Parametrisation` or its string value).
        y: class labels ``(B,)`` for a class-conditional model (``model(x_t, t, y)``; lessons 08, 09),
            possibly containing the model's null class (label dropout); ``None``: ``model(x_t, t)``.

    Returns:
        The scalar loss.
    """
    if target is not Parametrisation.VELOCITY:  # the usual case skips the enum lookup
        target = Parametrisation(target)
    s = path.sample(x_0, x_1, t)
    pred = model(s.x_t, t) if y is None else model(s.x_t, t, y)  # (B, ...)
    return (pred - target.target(x_0, x_1, s.dx_t)).square().mean()


def ddpm_loss(eps_model: Model, schedule: "DDPMSchedule", x_data: Tensor, k: Tensor, noise: Tensor) -> Tensor:
    """DDPM's simplified epsilon loss (lesson 01): mean || eps_model(x_noisy, t_k) - noise ||^2.

    x_noisy = sqrt(alpha_bar_k) x_data + sqrt(1 - alpha_bar_k) noise, and the model is called with
    the course time t_k = 1 - k / T (see :mod:`tutorlib.ddpm` for the index conventions).

    Args:
        eps_model: ``eps_model(x_noisy, t)`` -> predicted noise.
        schedule: a :class:`tutorlib.ddpm.DDPMSchedule`.
        x_data: clean data, shape (B, ...) (DDPM's x_0).
        k: integer DDPM indices in 1..T, shape (B,).
        noise: standard normal noise, shape of ``x_data``.

    Returns:
        The scalar loss.
    """
    s = schedule.q_sample(x_data, k, noise)
    return (eps_model(s.x_noisy, s.t) - noise).square().mean()
