"""Few-step generators: a network of two times that learns the *average* velocity (lesson 07).

A flow dx/dtau = v(x_tau, tau) moves a point from time ``s`` to time ``t`` (0 noise, 1 data) by the
integral of its velocity. Divided by the time span, that is the **average velocity**::

    u(x_s, s, t) = 1 / (t - s) * int_s^t v(x_tau, tau) dtau,     so that     x_t = x_s + (t - s) u(x_s, s, t)

holds *exactly*: one evaluation of ``u`` jumps from ``s`` to ``t`` however curved the path. At ``t = s``
the average is the instantaneous velocity, ``u(x, t, t) = v(x, t)``, the flow-matching field. A
network :class:`TwoTimeMLP` ``u_theta(x, s, t)`` learns ``u``; :func:`fewstep_sample` generates with
it in any number of jumps. Two training objectives impose what ``u`` must satisfy, and both reduce
to flow matching on the diagonal ``s = t``:

* :class:`MeanFlow` (*Mean Flows for One-step Generative Modeling*): differentiate
  ``(t - s) u(x_s, s, t) = int_s^t v dtau`` in ``s`` along the path, which gives the **MeanFlow
  identity** ``u = v + (t - s) d/ds u(x_s, s, t)`` with ``d/ds u = v . grad_x u + du/ds``: one
  Jacobian-vector product (``torch.func.jvp``) of the network in the direction ``(v, 1, 0)``.
* :class:`Shortcut` (*One Step Diffusion via Shortcut Models*): the average over a step of size
  ``2d`` is the mean of the averages over its two halves, ``u(x, s, s + 2d) = (u(x, s, s + d) +
  u(x', s + d, s + 2d)) / 2`` with ``x' = x + d u(x, s, s + d)``, so a big step learns from two
  small ones (self-consistency, on step sizes ``1, 1/2, ..., 1/M``).

Both objectives take the same inputs, ``loss(model, x_0, x_1, s, t)`` with ``0 <= s <= t <= 1``
drawn by their ``times(n, generator=...)``; rows with ``s = t`` are flow matching, the others teach
the jumps. Everything here works on batches ``(B, ...)``: vectors ``(B, D)`` for the 2D toys with
:class:`TwoTimeMLP`, images ``(B, 1, 28, 28)`` with :class:`TwoTimePatchUNet` (appendix A, where a
shortcut model is fine-tuned from a flow-matching U-Net). A class-conditional model takes the labels
as a fourth argument, ``u(x, s, t, y)``; :meth:`Shortcut.loss` passes them on with ``y=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tutorlib.models import PatchUNet, sinusoidal_embedding
from tutorlib.solvers import ODESolution
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "MeanFlow",
    "Shortcut",
    "TwoTimeMLP",
    "TwoTimePatchUNet",
    "average_velocity_jump",
    "fewstep_sample",
    "meanflow_target",
]

AverageVelocity = Callable[..., Tensor]  # u(x (B, ...), s (B,), t (B,)[, y (B,)]) -> (B, ...)


# --------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------


class _Block(nn.Module):
    """``h + W2 silu(W1 silu(h) + U c)``: a residual MLP block with additive conditioning."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc1, self.cond, self.fc2 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        return h + self.fc2(F.silu(self.fc1(F.silu(h)) + self.cond(c)))  # (B, H)


class TwoTimeMLP(nn.Module):
    """The average velocity ``u_theta(x, s, t)`` from time ``s`` to time ``t >= s`` (lesson 07).

    The residual MLP of :class:`tutorlib.models.TimeMLP`, conditioned on two times: the start ``s``
    and the gap ``t - s`` (as MeanFlow and shortcut models do: the gap, the step size, is what
    tells a jump from a velocity), each as sinusoidal features, through one MLP into the
    conditioning vector ``c``::

        c = MLP([sin/cos(scale s w_k), sin/cos(scale (t - s) w_k)]),  h <- h + W2 silu(W1 silu(h) + U c).

    At ``t = s`` the output is an instantaneous velocity; :meth:`velocity` is that field,
    ``v(x, t) = u(x, t, t)``, which any ODE solver of :mod:`tutorlib.solvers` integrates.

    Every operation has a forward-mode derivative, so ``torch.func.jvp`` differentiates the network
    in ``(x, s, t)`` (MeanFlow's identity needs it).

    Args:
        dim: size of ``x`` (2 for the toys).
        hidden: width of the hidden layers (``profile().hidden_2d``).
        depth: number of residual blocks (``profile().depth_2d``).
        freq_dim: sinusoidal features per time (even).
        time_scale: multiplies each time before the sinusoids; frequencies run from ``time_scale``
            down to ``time_scale / 10_000`` radians per unit time. The default 100 is ten times below
            ``TimeMLP``'s 1000: MeanFlow's target contains the network's derivative in ``s``, and every
            frequency ``w`` left in the output enters it multiplied by ``w`` (lesson 07 measures the
            ripples that fast time features leave in a trained field).
    """

    def __init__(self, dim: int = 2, hidden: int = 128, depth: int = 3, freq_dim: int = 64,
                 time_scale: float = 100.0):
        super().__init__()
        if freq_dim % 2:
            raise ValueError(f"freq_dim must be even, got {freq_dim}")
        self.dim, self.freq_dim, self.time_scale = dim, freq_dim, float(time_scale)
        self.embed = nn.Sequential(nn.Linear(2 * freq_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList(_Block(hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)

    @classmethod
    def from_profile(cls, P, *, dim: int = 2) -> "TwoTimeMLP":
        """A model sized by a :class:`tutorlib.device.Profile` (``hidden_2d``, ``depth_2d``)."""
        return cls(dim=dim, hidden=P.hidden_2d, depth=P.depth_2d)

    def forward(self, x: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
        """``x`` ``(B, dim)``, start times ``s`` and end times ``t`` (``(B,)`` or floats) -> ``(B, dim)``."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (B, {self.dim}), got {tuple(x.shape)}")
        s, t = batch_times(s, x), batch_times(t, x)  # (B,) each
        feats = torch.cat([sinusoidal_embedding(s, self.freq_dim, scale=self.time_scale),
                           sinusoidal_embedding(t - s, self.freq_dim, scale=self.time_scale)], 1)  # (B, 2F)
        c = self.embed(feats)  # (B, H)
        h = self.inp(x)  # (B, H)
        for block in self.blocks:
            h = block(h, c)
        return self.out(F.silu(h))  # (B, dim)

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """The instantaneous velocity ``u(x, t, t)``: a flow-matching field ``v(x, t)`` for ``ode_solve``."""
        return self(x, t, t)


class TwoTimePatchUNet(PatchUNet):
    """The average velocity ``u_theta(x, s, t, y)`` of 28x28 images: a :class:`~tutorlib.models.PatchUNet` with a second time.

    The conditioning vector of the U-Net's blocks becomes ``c = embed(s, y) + G(sin/cos(t - s))``: the
    start time ``s`` (and the label) enter exactly as the one time of a ``PatchUNet``, and the gap
    ``t - s`` through a new MLP ``G`` whose last layer starts at zero. So :meth:`from_flow` copies a
    trained flow-matching U-Net and starts as its velocity, ``u(x, s, t, y) = v(x, s, y)`` for every
    gap, and fine-tuning by :class:`Shortcut` only has to teach the jumps (appendix A).

    Args:
        in_channels, out_channels, base_channels, num_classes, mid_blocks: as :class:`~tutorlib.models.PatchUNet`.
        gap_freq_dim: sinusoidal features of the gap (even).
    """

    def __init__(self, in_channels: int = 1, out_channels: int | None = None, base_channels: int = 32,
                 num_classes: int | None = None, mid_blocks: int = 1, gap_freq_dim: int = 64):
        super().__init__(in_channels, out_channels, base_channels=base_channels, num_classes=num_classes,
                         mid_blocks=mid_blocks)
        if gap_freq_dim % 2:
            raise ValueError(f"gap_freq_dim must be even, got {gap_freq_dim}")
        cond = 4 * base_channels
        self.gap_freq_dim = gap_freq_dim
        self.gap_embed = nn.Sequential(nn.Linear(gap_freq_dim, cond), nn.SiLU(), nn.Linear(cond, cond))
        nn.init.zeros_(self.gap_embed[-1].weight)
        nn.init.zeros_(self.gap_embed[-1].bias)

    @classmethod
    def from_flow(cls, flow: PatchUNet) -> "TwoTimePatchUNet":
        """A two-time copy of a trained ``PatchUNet`` velocity model: same sizes, its weights, a zero gap MLP.

        The copy computes exactly the flow's velocity for every gap (``u(x, s, t, y) = v(x, s, y)``) until
        it is trained; the flow itself is left untouched.
        """
        if not isinstance(flow, PatchUNet) or isinstance(flow, TwoTimePatchUNet):
            raise TypeError(f"from_flow needs a trained tutorlib.models.PatchUNet, got {type(flow).__name__}")
        C = flow.stem.out_channels
        net = cls(flow.in_channels, flow.out_channels, base_channels=C, num_classes=flow.num_classes,
                  mid_blocks=len(flow.mid))
        missing, unexpected = net.load_state_dict(flow.state_dict(), strict=False)
        if unexpected or any(not k.startswith("gap_embed.") for k in missing):
            raise ValueError(f"the flow's weights do not fit: missing {missing}, unexpected {unexpected}")
        p = next(flow.parameters())
        return net.to(device=p.device, dtype=p.dtype)

    def forward(self, x: Tensor, s: Tensor | float, t: Tensor | float, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        """``x`` ``(B, C_in, 28, 28)``, start and end times ``(B,)`` or floats, labels ``(B,)`` or ``None``."""
        s, t = batch_times(s, x), batch_times(t, x)  # (B,) each
        c = self._conditioning(x, s, y) + self.gap_embed(sinusoidal_embedding(t - s, self.gap_freq_dim))  # (B, 4C)
        return self._body(x, c)

    def velocity(self, x: Tensor, t: Tensor | float, y: Tensor | None = None) -> Tensor:
        """The instantaneous velocity ``u(x, t, t, y)``: a flow-matching field for ``ode_solve``."""
        return self(x, t, t, y)


# --------------------------------------------------------------------------------------
# Sampling by jumps
# --------------------------------------------------------------------------------------


def average_velocity_jump(model: AverageVelocity, x: Tensor, s: Tensor | float, t: Tensor | float) -> Tensor:
    """One jump ``x + (t - s) u(x, s, t)`` from time ``s`` to time ``t`` (one network evaluation).

    Args:
        model: ``u(x, s, t)``, e.g. a :class:`TwoTimeMLP`.
        x: states at ``s``, shape ``(B, ...)``.
        s, t: start and end times, ``(B,)`` or floats.

    Returns:
        The states at ``t``, shape ``(B, ...)``.
    """
    s, t = batch_times(s, x), batch_times(t, x)
    return x + expand_t(t - s, x) * model(x, s, t)


def fewstep_sample(model: AverageVelocity, x_0: Tensor, *, steps: int = 1, time_grid: Tensor | None = None,
                   return_trajectory: bool = False) -> ODESolution:
    """Generate with an average-velocity model in ``steps`` jumps from noise ``x_0`` (t = 0) to t = 1.

    ``x_{k+1} = x_k + (t_{k+1} - t_k) u(x_k, t_k, t_{k+1})`` on the uniform grid ``t_k = k / steps``
    (or on ``time_grid``): with the exact average velocity every grid gives the same, exact, sample.

    Args:
        model: ``u(x, s, t)``.
        x_0: noise ``(B, ...)``.
        steps: number of jumps (= network evaluations) on a uniform grid.
        time_grid: increasing times from 0 to 1 (overrides ``steps``), shape ``(K + 1,)``.
        return_trajectory: also return the states at the grid times.

    Returns:
        An :class:`tutorlib.solvers.ODESolution` (``x``, ``nfe`` = number of jumps, ``trajectory``, ``times``).

    Raises:
        ValueError: ``steps < 1``, or a grid that is not increasing from 0 to 1.
    """
    if time_grid is None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (the number of jumps), got {steps!r}")
        grid = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    else:
        grid = torch.as_tensor(time_grid).detach().to("cpu", torch.float64).reshape(-1)
        if len(grid) < 2 or not bool((grid.diff() > 0).all()):
            raise ValueError(f"time_grid must increase strictly and have at least 2 times, got {grid.tolist()}")
        if abs(grid[0].item()) > 1e-12 or abs(grid[-1].item() - 1.0) > 1e-12:
            raise ValueError(f"time_grid must run from 0 to 1 (noise to data), got {grid[0].item()} to "
                             f"{grid[-1].item()}")
    times = grid.tolist()
    x = x_0
    states = [x] if return_trajectory else None
    with torch.no_grad():
        for s, t in zip(times[:-1], times[1:]):
            x = average_velocity_jump(model, x, s, t)  # (B, ...)
            if states is not None:
                states.append(x)
    return ODESolution(x=x, nfe=len(times) - 1, trajectory=torch.stack(states) if states is not None else None,
                       times=grid)


# --------------------------------------------------------------------------------------
# Training objectives
# --------------------------------------------------------------------------------------


def _check_pairs(x_0: Tensor, x_1: Tensor, s: Tensor, t: Tensor) -> None:
    if x_0.shape != x_1.shape or x_0.dim() < 2:
        raise ValueError(f"x_0 and x_1 must both be batches (B, ...) of one shape, got {tuple(x_0.shape)} and "
                         f"{tuple(x_1.shape)}")
    B = x_0.shape[0]
    if s.shape != (B,) or t.shape != (B,):
        raise ValueError(f"s and t must have shape ({B},), got {tuple(s.shape)} and {tuple(t.shape)}")
    if s.device.type == "cpu" and bool((t < s).any()):
        raise ValueError("every pair needs s <= t (start before end): draw them with the objective's times()")


def meanflow_target(model: AverageVelocity, x_s: Tensor, s: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The network's average velocity and MeanFlow's regression target at ``(x_s, s, t)``.

    The MeanFlow identity in the course's time (``s`` the start, nearer the noise; ``t >= s``)::

        u(x_s, s, t) = v(x_s, s) + (t - s) d/ds u(x_s, s, t),   d/ds u = v . grad_x u + du/ds,

    where ``d/ds u`` is the derivative along the path: one Jacobian-vector product of ``u`` with
    the tangent ``(dx/ds, ds/ds, dt/ds) = (v, 1, 0)``. In training ``v`` is the conditional
    velocity ``x_1 - x_0`` (as flow matching replaces the marginal field by it).

    Args:
        model: ``u(x, s, t)``.
        x_s: points at the start times, ``(B, D)``.
        s, t: ``(B,)`` start and end times.
        v: the velocity at ``(x_s, s)``, ``(B, D)``.

    Returns:
        ``(u, target)``: ``u = model(x_s, s, t)`` (differentiable in the model's weights) and the
        target ``v + (t - s) d/ds u``, detached (a stop-gradient, as in the paper).
    """
    u, du_ds = torch.func.jvp(model, (x_s, s, t), (v, torch.ones_like(s), torch.zeros_like(t)))
    return u, (v + expand_t(t - s, x_s) * du_ds).detach()


@dataclass(frozen=True)
class MeanFlow:
    """MeanFlow's objective for an average-velocity model (*Mean Flows for One-step Generative Modeling*).

    ``loss(model, x_0, x_1, s, t)`` puts ``x_s = (1 - s) x_0 + s x_1`` on the linear path and regresses
    ``u_theta(x_s, s, t)`` on the stop-gradient target of :func:`meanflow_target` with the conditional
    velocity ``v = x_1 - x_0``. Rows with ``s = t`` are exactly flow matching. Per sample the squared
    error ``e`` is weighted by ``1 / (e + eps)^p`` (the paper's adaptive weight, detached; ``p = 0``
    is the plain mean squared error). ``times(n, generator=...)`` draws the pairs: two times from a
    logit-normal law, sorted, and ``s = t`` for a share ``equal_fraction`` of the rows.
    """

    equal_fraction: float = 0.75  # share of rows with s = t (flow matching); the paper's best on ImageNet
    logit_mean: float = 0.4  # times are sigmoid(N(logit_mean, logit_std^2)): the paper's (-0.4, 1) in course time
    logit_std: float = 1.0  # spread of the logit-normal time law
    weight_power: float = 1.0  # p of the adaptive weight 1 / (e + eps)^p (0: plain squared error)
    weight_eps: float = 1e-3  # eps of the adaptive weight

    def __post_init__(self):
        if not 0.0 <= self.equal_fraction <= 1.0:
            raise ValueError(f"equal_fraction must lie in [0, 1], got {self.equal_fraction}")
        if self.logit_std <= 0 or self.weight_eps <= 0 or self.weight_power < 0:
            raise ValueError("logit_std and weight_eps must be positive and weight_power non-negative, got "
                             f"{self.logit_std}, {self.weight_eps}, {self.weight_power}")

    def times(self, n: int, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``(s, t)``, each ``(n,)``, with ``0 < s <= t < 1`` (draws from ``generator``, on the CPU)."""
        a = torch.sigmoid(self.logit_mean + self.logit_std * torch.randn(2, n, generator=generator))  # (2, n)
        s, t = a.min(0).values, a.max(0).values
        equal = torch.rand(n, generator=generator) < self.equal_fraction  # (n,)
        s = torch.where(equal, t, s)
        return s.to(device), t.to(device)

    def loss(self, model: AverageVelocity, x_0: Tensor, x_1: Tensor, s: Tensor, t: Tensor) -> Tensor:
        """The scalar MeanFlow loss for noise ``x_0``, data ``x_1`` ``(B, D)`` and times ``s <= t`` ``(B,)``."""
        _check_pairs(x_0, x_1, s, t)
        x_s = x_0 + expand_t(s, x_0) * (x_1 - x_0)  # (B, ...) on the linear path
        u, target = meanflow_target(model, x_s, s, t, x_1 - x_0)
        err = (u - target).square().reshape(u.shape[0], -1).sum(1)  # (B,)
        if self.weight_power == 0:
            return err.mean()
        return (err / (err.detach() + self.weight_eps) ** self.weight_power).mean()


@dataclass(frozen=True)
class Shortcut:
    """The shortcut models' objective (*One Step Diffusion via Shortcut Models*) for ``u(x, s, t)``.

    Step sizes are ``D = 1, 1/2, ..., 1/M`` with ``M = 2^levels``. ``times(n, generator=...)`` gives,
    for a share ``1 - bootstrap_fraction`` of the rows, ``s = t`` uniform (flow matching: target
    ``x_1 - x_0`` at ``x_s`` on the linear path), and for the others a step ``D`` drawn uniformly among
    the levels with ``s`` uniform on the multiples of ``D / 2`` that keep ``t = s + D <= 1``. For those
    rows the target is the average of two half steps ``d = D / 2`` taken by the model itself, without
    gradient::

        u_1 = u(x_s, s, s + d),  x' = x_s + d u_1,  u_2 = u(x', s + d, s + 2d),  target = (u_1 + u_2) / 2;

    at the smallest level (``D = 1/M``) the halves are instantaneous velocities ``u(., ., same time)``,
    which ends the recursion at flow matching. The loss is the mean squared error over all rows.
    """

    levels: int = 7  # M = 2^levels: the smallest step is 1/128, as in the paper
    bootstrap_fraction: float = 0.25  # share of rows that learn jumps by self-consistency (the paper's 1/4)

    def __post_init__(self):
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or not 1 <= self.levels <= 20:
            raise ValueError(f"levels must be an int from 1 to 20 (smallest step 2^-levels), got {self.levels!r}")
        if not 0.0 <= self.bootstrap_fraction <= 1.0:
            raise ValueError(f"bootstrap_fraction must lie in [0, 1], got {self.bootstrap_fraction}")

    @property
    def min_step(self) -> float:
        """The smallest step ``1 / M``."""
        return 2.0 ** -self.levels

    def times(self, n: int, *, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
        """``(s, t)``, each ``(n,)``: ``s = t`` (flow matching) or a step ``t - s = 2^-k`` on its grid."""
        t_fm = torch.rand(n, generator=generator)  # (n,)
        k = torch.randint(0, self.levels + 1, (n,), generator=generator)  # level: step D = 2^-k
        D = torch.pow(2.0, -k.double())  # (n,)
        halves = torch.pow(2.0, k.double() + 1)  # positions on the grid of D / 2 (s + D <= 1: 0 .. 2^(k+1) - 2)
        j = torch.floor(torch.rand(n, generator=generator, dtype=torch.float64) * (halves - 1))  # (n,)
        s_boot = j * D / 2
        boot = torch.rand(n, generator=generator) < self.bootstrap_fraction  # (n,)
        s = torch.where(boot, s_boot.float(), t_fm)
        t = torch.where(boot, (s_boot + D).float(), t_fm)
        return s.to(device), t.to(device)

    def loss(self, model: AverageVelocity, x_0: Tensor, x_1: Tensor, s: Tensor, t: Tensor,
             target_model: AverageVelocity | None = None, *, y: Tensor | None = None) -> Tensor:
        """The scalar shortcut loss; ``target_model`` (default: ``model``) makes the bootstrap targets.

        ``x_0``, ``x_1`` are ``(B, ...)``; with labels ``y`` ``(B,)`` the models are called as
        ``model(x, s, t, y)`` (a class-conditional :class:`TwoTimePatchUNet`; label dropout is the
        caller's), and each bootstrap row keeps its own label.
        """
        _check_pairs(x_0, x_1, s, t)
        if y is not None and (not isinstance(y, Tensor) or y.shape != (x_0.shape[0],)):
            raise ValueError(f"y must be a tensor of shape ({x_0.shape[0]},) (one label per row) or None, got "
                             f"{getattr(y, 'shape', type(y).__name__)}")
        cond = () if y is None else (y,)
        x_s = x_0 + expand_t(s, x_0) * (x_1 - x_0)  # (B, ...)
        target = x_1 - x_0  # (B, ...): flow matching where s = t
        boot = t > s  # (B,)
        if bool(boot.any()):
            net = model if target_model is None else target_model
            xb, sb, tb = x_s[boot], s[boot], t[boot]
            cb = tuple(c[boot] for c in cond)
            d = (tb - sb) / 2  # (b,) half steps
            smallest = (tb - sb) <= self.min_step * (1 + 1e-6)
            end = torch.where(smallest, sb, sb + d)  # the halves' own end times (instantaneous at the bottom)
            with torch.no_grad():
                u1 = net(xb, sb, end, *cb)
                x_mid = xb + expand_t(d, xb) * u1
                u2 = net(x_mid, sb + d, torch.where(smallest, sb + d, tb), *cb)
            target = target.clone()
            target[boot] = 0.5 * (u1 + u2)
        return (model(x_s, s, t, *cond) - target).square().mean()
