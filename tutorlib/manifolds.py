"""Flow matching on manifolds: the sphere and the flat torus (appendix C).

Riemannian flow matching (*Flow Matching on General Geometries*, Chen and Lipman) keeps every idea of
flow matching and replaces straight lines by **geodesics**. On a manifold with exponential map
``exp_x`` (walk from ``x`` along the geodesic with initial velocity ``v``, for unit time) and
logarithm ``log_x`` (the initial velocity that reaches ``y``), the conditional path from a source
point ``x_0`` to a data point ``x_1`` and its velocity are::

    x_t = exp_{x_0}(t log_{x_0}(x_1)),        u_t(x_t | x_0, x_1) = d/dt x_t = log_{x_t}(x_1) / (1 - t),

a constant-speed geodesic: ``|u_t| = d(x_0, x_1) = d(x_t, x_1) / (1 - t)`` for every ``t`` in [0, 1).
The network ``v_theta(x, t)`` outputs a tangent vector at ``x`` and is regressed on ``u_t`` in the
Riemannian norm (:func:`rfm_loss`); sampling integrates ``dx/dt = v_theta`` with steps that stay on
the manifold (:func:`manifold_euler`: ``x <- exp_x(h v)``, or the projected step ``x <- proj(x + h v)``).

Two manifolds (a :class:`Manifold` owns the path and the solver step; a subclass overrides only its
equations: ``exp``, ``log``, the speed of a geodesic, the projection):

* :class:`Sphere` ``S^{D-1} = {x in R^D : |x| = 1}``, points stored as unit vectors ``(B, D)``;
  tangent vectors at ``x`` are the ambient vectors with ``<v, x> = 0``. With ``theta = |v|``::

      exp_x(v) = cos(theta) x + sin(theta) v / theta,       log_x(y) = theta (y - <x, y> x) / |y - <x, y> x|,

  ``theta = d(x, y) = arccos <x, y>`` in the log (computed as ``atan2(|y - <x,y> x|, <x, y>)``, which
  keeps its precision near 0 and pi). ``log`` is undefined at the antipode ``y = -x`` (a set of
  measure zero).
* :class:`Torus` ``T^d = (R / 2 pi Z)^d``, the flat torus, points stored as angles ``(B, d)`` in
  ``(-pi, pi]`` (:func:`wrap`); tangent vectors are any ``(B, d)`` angular velocities::

      exp_x(v) = wrap(x + v),        log_x(y) = wrap(y - x),        d(x, y) = |wrap(y - x)|.

Densities with exact samplers and exact log-densities: :class:`VonMisesFisherMixture` on ``S^2``
(Wood's algorithm, which on ``S^2`` needs no rejection) and :class:`WrappedGaussianMixture` on
``T^d``. Sample quality: :func:`energy_distance` with the manifold's own distance
(:meth:`Manifold.pairwise_distance`: geodesic on the sphere, the sum of the circles' geodesic
distances on the torus; both are of negative type, so the energy distance is ``>= 0`` and vanishes
for equal laws); read it against a noise floor (:func:`tutorlib.metrics.noise_floor` with
``metric=functools.partial(energy_distance, manifold)``).

Shapes: points ``(B, D)`` (``D = manifold.dim``, the number of coordinates), times ``(B,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from tutorlib.models import TimeMLP
from tutorlib.paths import PathSample
from tutorlib.solvers import ODESolution
from tutorlib.utils import batch_times, expand_t

__all__ = [
    "Manifold",
    "ManifoldConfig",
    "Sphere",
    "TangentVelocity",
    "Torus",
    "VonMisesFisherMixture",
    "WrappedGaussianMixture",
    "energy_distance",
    "manifold_euler",
    "rfm_loss",
    "sample_vmf",
    "vmf_mean_resultant_length",
    "wrap",
]

TWO_PI = 2.0 * math.pi


def _check_n(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int (the number of samples), got {n!r}")
    return n


def _check_points(x: Tensor, dim: int, name: str, what: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] != dim:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (B, {dim}) tensor of {what}, got {shape}")


def wrap(angle: Tensor) -> Tensor:
    """Angles wrapped into ``(-pi, pi]``: ``pi - ((pi - a) mod 2 pi)``, elementwise.

    ``wrap(a) - a`` is a multiple of ``2 pi``; ``wrap(pi) = pi`` and ``wrap(-pi) = pi``.
    """
    return math.pi - torch.remainder(math.pi - angle, TWO_PI)


# --------------------------------------------------------------------------------------
# Manifolds
# --------------------------------------------------------------------------------------


class Manifold:
    """What Riemannian flow matching needs of a manifold; subclasses give the equations.

    A subclass defines ``dim`` (coordinates per point), ``feature_dim`` (inputs the network sees),
    ``volume``, and the methods marked "subclass" below. The geodesic path (:meth:`geodesic`), the
    projected step (:meth:`retract`) and the distances are built from them here.
    """

    dim: int  # coordinates per point (the ambient dimension of the sphere, the number of angles of the torus)
    feature_dim: int  # size of features(x), what a network reads
    volume: float  # total volume (area) of the manifold: the uniform density is 1 / volume

    # --- the equations (subclass) ---

    def proj(self, x: Tensor) -> Tensor:
        """The nearest point of the manifold to each row of ``x`` ``(B, D)`` (subclass)."""
        raise NotImplementedError

    def to_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        """The orthogonal projection of ``v`` ``(B, D)`` onto the tangent space at ``x`` (subclass)."""
        raise NotImplementedError

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """The exponential map ``exp_x(v)`` ``(B, D)`` of a tangent vector ``v`` at ``x`` (subclass)."""
        raise NotImplementedError

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        """The logarithm ``log_x(y)`` ``(B, D)``: the tangent vector at ``x`` with ``exp_x(log_x(y)) = y`` (subclass)."""
        raise NotImplementedError

    def exp_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        """``d/dt exp_x(t v)`` ``(B, D)``: the velocity of the geodesic at time ``t`` ``(B,)`` (subclass)."""
        raise NotImplementedError

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        """The geodesic distance ``d(x_i, y_i)`` ``(B,)`` of matching rows (subclass)."""
        raise NotImplementedError

    def pairwise_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """The distance behind :func:`energy_distance`, for every pair: ``(N, D), (M, D) -> (N, M)`` (subclass)."""
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """What a network reads of the points ``x`` ``(B, D)``: ``(B, feature_dim)`` (subclass)."""
        raise NotImplementedError

    def sample_uniform(self, n: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
        """``n`` points drawn from the uniform law (the volume measure), float32 ``(n, D)`` (subclass)."""
        raise NotImplementedError

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """How far each row of ``x`` ``(B, D)`` lies off the manifold ``(B,)`` (subclass)."""
        raise NotImplementedError

    # --- built from them ---

    def check_points(self, x: Tensor, name: str = "x") -> None:
        """Raise ``ValueError`` unless ``x`` is a ``(B, dim)`` tensor."""
        _check_points(x, self.dim, name, f"points of the {type(self).__name__.lower()}")

    def geodesic(self, x_0: Tensor, x_1: Tensor, t: Tensor) -> PathSample:
        """The geodesic conditional path and its velocity.

        ``x_t = exp_{x_0}(t log_{x_0}(x_1))`` and ``dx_t = d/dt x_t`` (equal to
        ``log_{x_t}(x_1) / (1 - t)``, computed in closed form so that it stays exact as ``t -> 1``).

        Args:
            x_0: source points ``(B, D)``.
            x_1: data points ``(B, D)``, paired with ``x_0``.
            t: times ``(B,)`` (or one float) in ``[0, 1]``.

        Returns:
            A :class:`tutorlib.paths.PathSample` (``x_0, x_1, x_t, t, dx_t``).
        """
        self.check_points(x_0, "x_0")
        self.check_points(x_1, "x_1")
        if x_0.shape != x_1.shape:
            raise ValueError(f"x_0 and x_1 must have the same shape, got {tuple(x_0.shape)} and {tuple(x_1.shape)}")
        t = batch_times(t, x_0)  # (B,)
        v = self.log(x_0, x_1)  # (B, D) tangent at x_0, |v| = d(x_0, x_1)
        x_t = self.exp(x_0, expand_t(t, v) * v)  # (B, D)
        return PathSample(x_0=x_0, x_1=x_1, x_t=x_t, t=t, dx_t=self.exp_velocity(x_0, v, t))

    def retract(self, x: Tensor, v: Tensor) -> Tensor:
        """The projection retraction ``proj(x + v)``: a step in the ambient space, put back on the manifold."""
        return self.proj(x + v)

    def inner(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor:
        """The Riemannian inner product ``<u, v>_x`` ``(B,)`` of tangent vectors (both manifolds here inherit
        the Euclidean one of their coordinates)."""
        return (u * v).sum(-1)


class Sphere(Manifold):
    """The unit sphere ``S^{D-1}`` in ``R^D`` (``D = 3``: the 2-sphere), points as unit vectors ``(B, D)``.

    Args:
        dim: the ambient dimension ``D >= 2`` (``D = 2`` is the circle).
    """

    def __init__(self, dim: int = 3):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"the sphere's ambient dimension must be an int >= 2 (3 for S^2), got {dim!r}")
        self.dim = dim
        self.feature_dim = dim
        self.volume = 2 * math.pi ** (dim / 2) / math.gamma(dim / 2)  # area of S^{D-1}: 4 pi for D = 3

    def __repr__(self) -> str:
        return f"Sphere(dim={self.dim})"

    def proj(self, x: Tensor) -> Tensor:
        return x / x.norm(dim=-1, keepdim=True)

    def to_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return v - (v * x).sum(-1, keepdim=True) * x  # (B, D): v minus its component along x

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        """``cos|v| x + sin|v| v / |v|`` (``sin|v| / |v|`` as ``sinc``: exact at ``v = 0``), renormalised
        so that rounding does not accumulate over many solver steps."""
        theta = v.norm(dim=-1, keepdim=True)  # (B, 1)
        y = torch.cos(theta) * x + torch.sinc(theta / math.pi) * v  # torch.sinc(z) = sin(pi z) / (pi z)
        return y / y.norm(dim=-1, keepdim=True)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        c = (x * y).sum(-1, keepdim=True)  # (B, 1) cos theta
        w = y - c * x  # (B, D) the part of y orthogonal to x, |w| = sin theta
        s = w.norm(dim=-1, keepdim=True)  # (B, 1)
        theta = torch.atan2(s, c)  # (B, 1) in [0, pi]
        return theta / s.clamp_min(torch.finfo(x.dtype).tiny) * w  # theta / sin(theta) -> 1 as y -> x (w = 0: 0)

    def exp_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        theta = v.norm(dim=-1, keepdim=True)  # (B, 1)
        tt = expand_t(batch_times(t, x), x)  # (B, 1)
        return -theta * torch.sin(tt * theta) * x + torch.cos(tt * theta) * v  # d/dt [cos(t th) x + sin(t th) v / th]

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        c = (x * y).sum(-1)  # (B,)
        s = (y - c[:, None] * x).norm(dim=-1)  # (B,)
        return torch.atan2(s, c)

    def pairwise_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """Geodesic distances ``arccos <x_i, y_j>`` ``(N, M)`` in float64."""
        c = (x.double() @ y.double().T).clamp(-1.0, 1.0)  # (N, M)
        return torch.atan2(torch.sqrt((1.0 - c * c).clamp_min(0.0)), c)

    def features(self, x: Tensor) -> Tensor:
        return x

    def sample_uniform(self, n: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
        z = torch.randn(_check_n(n), self.dim, generator=generator, dtype=torch.float64)  # isotropic
        return (z / z.norm(dim=-1, keepdim=True)).float().to(device)

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        return (x.norm(dim=-1) - 1.0).abs()  # (B,) | |x| - 1 |


class Torus(Manifold):
    """The flat torus ``T^d = (R / 2 pi Z)^d``, points as angles ``(B, d)`` in ``(-pi, pi]``.

    Its metric is that of the square ``[-pi, pi]^d`` with opposite sides glued: straight lines that
    leave through one side come back through the other. A network reads ``(cos, sin)`` of every angle
    (``feature_dim = 2 d``), so its output is periodic, and writes ``d`` angular velocities.

    Args:
        dim: the number of angles ``d >= 1``.
    """

    def __init__(self, dim: int = 2):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"the torus's dimension must be an int >= 1 (2 for T^2), got {dim!r}")
        self.dim = dim
        self.feature_dim = 2 * dim
        self.volume = TWO_PI ** dim

    def __repr__(self) -> str:
        return f"Torus(dim={self.dim})"

    def proj(self, x: Tensor) -> Tensor:
        return wrap(x)

    def to_tangent(self, x: Tensor, v: Tensor) -> Tensor:
        return v  # every vector of R^d is tangent

    def exp(self, x: Tensor, v: Tensor) -> Tensor:
        return wrap(x + v)

    def log(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap(y - x)  # the shorter way round each circle

    def exp_velocity(self, x: Tensor, v: Tensor, t: Tensor) -> Tensor:
        return v.clone()  # geodesics are straight lines in the angles: constant velocity

    def dist(self, x: Tensor, y: Tensor) -> Tensor:
        return wrap(y - x).norm(dim=-1)

    def pairwise_distance(self, x: Tensor, y: Tensor) -> Tensor:
        """``sum_k |wrap(x_ik - y_jk)|`` ``(N, M)`` in float64: the sum of the circles' geodesic distances
        (an L1 metric, of negative type; the flat torus's own geodesic distance is the L2 version)."""
        x, y = x.double(), y.double()
        out = torch.zeros(x.shape[0], y.shape[0], dtype=torch.float64, device=x.device)
        for k in range(self.dim):  # one coordinate at a time: (N, M) memory, not (N, M, d)
            out += wrap(x[:, k, None] - y[None, :, k]).abs()
        return out

    def features(self, x: Tensor) -> Tensor:
        return torch.cat([torch.cos(x), torch.sin(x)], dim=-1)  # (B, 2 d)

    def sample_uniform(self, n: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
        u = torch.rand(_check_n(n), self.dim, generator=generator, dtype=torch.float64)
        return wrap(math.pi - TWO_PI * u).float().to(device)  # (n, d): uniform on (-pi, pi]

    def distance_to_manifold(self, x: Tensor) -> Tensor:
        """How far the angles lie outside ``(-pi, pi]`` (0 for a wrapped point), the largest over the angles."""
        return (x.abs() - math.pi).clamp_min(0).amax(dim=-1)


# --------------------------------------------------------------------------------------
# Training and sampling
# --------------------------------------------------------------------------------------


class TangentVelocity(nn.Module):
    """A velocity field on a manifold: ``v(x, t) = to_tangent(x, net(features(x), t))``.

    On the sphere the network reads the unit vector and its output is projected onto the tangent
    plane (``<v, x> = 0`` up to rounding); on the torus it reads ``(cos, sin)`` of the angles.

    Args:
        manifold: a :class:`Manifold`.
        net: ``net(features (B, feature_dim), t (B,)) -> (B, dim)``, e.g. a :class:`tutorlib.models.TimeMLP`.
    """

    def __init__(self, manifold: Manifold, net: nn.Module):
        super().__init__()
        if not isinstance(manifold, Manifold):
            raise ValueError(f"manifold must be a tutorlib.manifolds.Manifold (Sphere(), Torus()), got {manifold!r}")
        self.manifold = manifold
        self.net = net

    @classmethod
    def from_profile(cls, P, manifold: Manifold) -> "TangentVelocity":
        """A :class:`tutorlib.models.TimeMLP` sized by the profile ``P``, reading ``manifold.features``."""
        return cls(manifold, TimeMLP.from_profile(P, dim=manifold.feature_dim, out_dim=manifold.dim))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``x`` ``(B, dim)`` on the manifold, ``t`` ``(B,)`` or a float -> tangent vectors ``(B, dim)``."""
        self.manifold.check_points(x)
        return self.manifold.to_tangent(x, self.net(self.manifold.features(x), t))


def rfm_loss(model: Callable[[Tensor, Tensor], Tensor], manifold: Manifold, x_0: Tensor, x_1: Tensor,
             t: Tensor) -> Tensor:
    """The Riemannian conditional flow matching loss on the geodesic path.

    ``L = mean_i |v_theta(x_t, t) - u_t(x_t | x_0, x_1)|_g^2 / D``, with ``x_t, u_t`` from
    :meth:`Manifold.geodesic`: the squared Riemannian norm, divided by the number of coordinates
    ``D`` so that it reads on the scale of :func:`tutorlib.losses.cfm_loss` (a mean over coordinates).

    Args:
        model: ``model(x_t, t)`` -> tangent vectors ``(B, D)`` (a :class:`TangentVelocity`).
        manifold: the manifold.
        x_0: source points ``(B, D)``; x_1: data points ``(B, D)``; t: times ``(B,)``.

    Returns:
        The scalar loss.
    """
    s = manifold.geodesic(x_0, x_1, t)
    diff = model(s.x_t, s.t) - s.dx_t  # (B, D) tangent at x_t
    return manifold.inner(s.x_t, diff, diff).mean() / manifold.dim


def manifold_euler(manifold: Manifold, velocity: Callable[[Tensor, Tensor], Tensor], x_0: Tensor, *,
                   steps: int = 100, step: Callable[[Tensor, Tensor], Tensor] | None = None,
                   return_trajectory: bool = False) -> ODESolution:
    """Euler's method on a manifold, from ``t = 0`` to ``t = 1`` in ``steps`` uniform steps.

    Each step ``x <- step(x, h v(x, t))`` with ``v`` first projected onto the tangent space at ``x``;
    ``step`` is ``manifold.exp`` (the geodesic Euler step, the default) or ``manifold.retract``
    (``proj(x + h v)``, the projected Euler step). Both stay on the manifold and agree to
    ``O(h^2 |v|^2)`` per step.

    Args:
        manifold: the manifold.
        velocity: ``velocity(x, t)`` with ``x`` ``(B, D)`` and ``t`` ``(B,)`` -> ``(B, D)``.
        x_0: starting points ``(B, D)`` on the manifold.
        steps: number of steps (= network evaluations).
        step: ``(x, tangent vector) -> point``; ``None`` means ``manifold.exp``.
        return_trajectory: also return the points at every step ``(steps + 1, B, D)``.

    Returns:
        A :class:`tutorlib.solvers.ODESolution` (``x``, ``nfe``, ``trajectory``, ``times``).
    """
    manifold.check_points(x_0, "x_0")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an int >= 1 (the number of Euler steps), got {steps!r}")
    move = manifold.exp if step is None else step
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    h = 1.0 / steps
    x = x_0
    states = [x] if return_trajectory else None
    with torch.no_grad():
        for k in range(steps):
            v = manifold.to_tangent(x, velocity(x, batch_times(float(times[k]), x)))  # (B, D)
            x = move(x, h * v)
            if states is not None:
                states.append(x)
    return ODESolution(x=x, nfe=steps, trajectory=torch.stack(states) if states is not None else None, times=times)


# --------------------------------------------------------------------------------------
# Sample quality
# --------------------------------------------------------------------------------------


def _mean_pairwise(manifold: Manifold, a: Tensor, b: Tensor) -> Tensor:
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    chunk = max(1, (1 << 22) // max(1, b.shape[0]))  # rows per block: ~32 MB of float64 distances
    for i in range(0, a.shape[0], chunk):
        total = total + manifold.pairwise_distance(a[i:i + chunk], b).sum()
    return total / (a.shape[0] * b.shape[0])


def energy_distance(manifold: Manifold, x: Tensor, y: Tensor) -> Tensor:
    """Squared energy distance with the manifold's distance: ``2 E d(X, Y) - E d(X, X') - E d(Y, Y')``.

    ``d`` is :meth:`Manifold.pairwise_distance` (geodesic on the sphere, the sum of circle distances
    on the torus), a metric of negative type: both embed isometrically into L1 (on the sphere,
    ``d(x, y) / pi`` is the chance that a uniformly random hemisphere holds exactly one of ``x``, ``y``),
    so the value is ``>= 0`` and zero for equal laws. V-statistic (the ``i = j`` pairs included),
    as :func:`tutorlib.metrics.energy_distance`: read it against a noise floor.

    Args:
        manifold: the manifold.
        x: samples ``(N, D)``; y: samples ``(M, D)``.

    Returns:
        A float64 scalar tensor, in units of the distance (radians).
    """
    manifold.check_points(x, "x")
    manifold.check_points(y, "y")
    y = y.to(x.device)
    return 2 * _mean_pairwise(manifold, x, y) - _mean_pairwise(manifold, x, x) - _mean_pairwise(manifold, y, y)


# --------------------------------------------------------------------------------------
# Densities
# --------------------------------------------------------------------------------------


def _mixture_weights(weights: Tensor | None, K: int) -> Tensor:
    if weights is None:
        return torch.full((K,), 1.0 / K, dtype=torch.float64)
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if w.shape != (K,) or bool((w < 0).any()) or not float(w.sum()) > 0:
        raise ValueError(f"weights must be {K} non-negative numbers, not all zero, one per component; got {weights!r}")
    return w / w.sum()


def vmf_mean_resultant_length(kappa: Tensor | float) -> Tensor:
    """``|E x| = coth(kappa) - 1/kappa`` for ``x ~ vMF(mu, kappa)`` on ``S^2`` (``E x = A(kappa) mu``)."""
    k = torch.as_tensor(kappa, dtype=torch.float64)
    return 1.0 / torch.tanh(k) - 1.0 / k


def sample_vmf(mu: Tensor, kappa: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
    """One draw of the von Mises-Fisher law ``vMF(mu_i, kappa_i)`` on ``S^2`` for each row (Wood's algorithm).

    The density is ``p(x) = kappa / (4 pi sinh kappa) exp(kappa <mu, x>)`` on the sphere. Wood (1994)
    draws ``w = <mu, x>`` from its marginal ``p(w) ∝ exp(kappa w)`` on ``[-1, 1]`` and the direction
    orthogonal to ``mu`` uniformly; on ``S^2`` the marginal's CDF inverts in closed form, so no
    rejection step is needed: ``w = 1 + log(u + (1 - u) exp(-2 kappa)) / kappa`` for ``u ~ U(0, 1)``.

    Args:
        mu: mean directions ``(n, 3)``, unit vectors.
        kappa: concentrations ``(n,)``, positive.
        generator: CPU generator of the draws.

    Returns:
        float64 ``(n, 3)`` unit vectors.
    """
    _check_points(mu, 3, "mu", "unit mean directions on S^2")
    mu = mu.to(torch.float64)
    n = mu.shape[0]
    kappa = torch.as_tensor(kappa, dtype=torch.float64).reshape(-1)
    if kappa.numel() == 1:
        kappa = kappa.expand(n)  # one concentration for every row
    if kappa.shape != (n,) or not bool((kappa > 0).all()):
        raise ValueError(f"kappa must be positive, one per row of mu ({n}) or a single number, got shape "
                         f"{tuple(kappa.shape)}")
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    w = 1.0 + torch.logaddexp(torch.log(u), torch.log1p(-u) - 2.0 * kappa) / kappa  # (n,) <mu, x>, in [-1, 1]
    w = w.clamp(-1.0, 1.0)
    z = torch.randn(n, 3, generator=generator, dtype=torch.float64)
    e = z - (z * mu).sum(-1, keepdim=True) * mu  # (n, 3): isotropic in the plane orthogonal to mu
    e = e / e.norm(dim=-1, keepdim=True)
    return w[:, None] * mu + torch.sqrt(1.0 - w * w)[:, None] * e


class VonMisesFisherMixture:
    """A mixture of von Mises-Fisher laws on ``S^2``: exact draws and exact log-density.

    ``p(x) = sum_k w_k C(kappa_k) exp(kappa_k <mu_k, x>)``, ``C(kappa) = kappa / (4 pi sinh kappa)``,
    a density with respect to the area of the sphere (it integrates to 1 over ``4 pi``).

    Args:
        means: mean directions ``(K, 3)`` (normalised here).
        kappas: concentrations ``(K,)``, positive (the larger, the tighter: the angular spread is
            about ``1 / sqrt(kappa)`` radians).
        weights: mixture weights ``(K,)`` (normalised here); ``None``: equal.
    """

    def __init__(self, means: Tensor, kappas: Tensor, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        _check_points(means, 3, "means", "mean directions on S^2")
        if not bool((means.norm(dim=-1) > 0).all()):
            raise ValueError("every mean direction must be a non-zero vector (it is normalised to length 1)")
        self.means = means / means.norm(dim=-1, keepdim=True)  # (K, 3)
        K = self.means.shape[0]
        self.kappas = torch.as_tensor(kappas, dtype=torch.float64).reshape(-1)  # (K,)
        if self.kappas.shape != (K,) or not bool((self.kappas > 0).all()):
            raise ValueError(f"kappas must be {K} positive concentrations, one per mean, got {kappas!r}")
        self.weights = _mixture_weights(weights, K)  # (K,)

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """``n`` exact draws, float32 ``(n, 3)`` unit vectors (drawn on the CPU, moved to ``device``)."""
        k = torch.multinomial(self.weights, _check_n(n), replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.int64)
        x = sample_vmf(self.means[k], self.kappas[k], generator=generator)  # (n, 3) float64
        return (x / x.norm(dim=-1, keepdim=True)).float().to(device)

    def component_log_probs(self, x: Tensor) -> Tensor:
        """``log w_k + log vMF(x_i; mu_k, kappa_k)`` ``(N, K)`` in float64."""
        x = x.to(torch.float64).cpu()
        _check_points(x, 3, "x", "points on S^2")
        k = self.kappas
        log_sinh = k + torch.log1p(-torch.exp(-2.0 * k)) - math.log(2.0)  # log sinh(kappa), stable for large kappa
        log_c = torch.log(k) - math.log(4 * math.pi) - log_sinh  # (K,)
        return torch.log(self.weights) + log_c + k * (x @ self.means.T)  # (N, K)

    def log_prob(self, x: Tensor) -> Tensor:
        """The log-density ``(N,)`` float64 (per unit area) at points ``x`` ``(N, 3)`` on the sphere."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)


class WrappedGaussianMixture:
    """A mixture of wrapped isotropic Gaussians on the flat torus ``T^d``: exact draws and log-density.

    A draw is ``wrap(mu_k + sigma_k z)``, ``z ~ N(0, I)``. The density (per unit volume of
    ``[-pi, pi)^d``) sums the Gaussian over every copy of the point::

        p(x) = sum_k w_k sum_{n in Z^d} N(x + 2 pi n; mu_k, sigma_k^2 I),

    truncated to ``|n_j| <= W`` with ``W`` chosen so that ``2 pi W >= 8 sigma_max``: the terms left
    out weigh less than ``exp(-32)`` relative to the nearest one.

    Args:
        means: centres ``(K, d)`` (angles; wrapped here).
        stds: standard deviations ``(K,)``, positive (radians).
        weights: mixture weights ``(K,)`` (normalised here); ``None``: equal.
    """

    def __init__(self, means: Tensor, stds: Tensor, weights: Tensor | None = None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() != 2:
            raise ValueError(f"means must be a (K, d) tensor of angles, got shape {tuple(means.shape)}")
        self.means = wrap(means)  # (K, d)
        K, self.dim = self.means.shape
        self.stds = torch.as_tensor(stds, dtype=torch.float64).reshape(-1)  # (K,)
        if self.stds.shape != (K,) or not bool((self.stds > 0).all()):
            raise ValueError(f"stds must be {K} positive standard deviations, one per mean, got {stds!r}")
        self.weights = _mixture_weights(weights, K)
        self.wraps = max(1, math.ceil(8.0 * float(self.stds.max()) / TWO_PI))  # W

    def sample(self, n: int, *, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> Tensor:
        """``n`` exact draws, float32 ``(n, d)`` angles in ``(-pi, pi]``."""
        k = torch.multinomial(self.weights, _check_n(n), replacement=True, generator=generator) if n else \
            torch.zeros(0, dtype=torch.int64)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return wrap(self.means[k] + self.stds[k, None] * z).float().to(device)

    def component_log_probs(self, x: Tensor) -> Tensor:
        """``log w_k + log p_k(x_i)`` ``(N, K)`` in float64 (each wrapped component's log-density)."""
        x = x.to(torch.float64).cpu()
        _check_points(x, self.dim, "x", "angles on the torus")
        r = torch.arange(-self.wraps, self.wraps + 1, dtype=torch.float64)
        shifts = TWO_PI * torch.cartesian_prod(*([r] * self.dim)).reshape(-1, self.dim)  # (S, d)
        diff = wrap(x[:, None, :] - self.means[None, :, :])  # (N, K, d)
        d2 = (diff[:, :, None, :] + shifts).square().sum(-1)  # (N, K, S)
        var = self.stds.square()[None, :, None]  # (1, K, 1)
        log_n = -0.5 * d2 / var - 0.5 * self.dim * torch.log(TWO_PI * var)  # (N, K, S)
        return torch.log(self.weights) + torch.logsumexp(log_n, dim=-1)  # (N, K)

    def log_prob(self, x: Tensor) -> Tensor:
        """The log-density ``(N,)`` float64 at angles ``x`` ``(N, d)``."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)


# --------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifoldConfig:
    """Sizes of appendix C's runs, derived from a :class:`tutorlib.device.Profile`."""

    steps: int  # optimiser steps of every model
    batch: int  # training batch size
    n_eval: int  # samples behind every energy distance
    repeats: int  # independent draws behind every energy distance (and its noise floor)
    sample_steps: int  # Euler steps of the accurate samples
    few_steps: int  # Euler steps of the few-step samples

    @classmethod
    def from_profile(cls, P) -> "ManifoldConfig":
        """From the profile's 2D sizes: ``max(60, P.steps_2d // 2)`` steps at batch ``P.batch_2d // 2``,
        ``P.n_eval_2d // 2`` samples per metric, drawn ``P.n_eval_2d // 250`` times (between 4 and 8).
        Standard: 1500 steps at batch 256, 1000 samples x 8 draws; smoke: 60 steps at batch 128, 250 x 4."""
        return cls(steps=max(60, P.steps_2d // 2), batch=P.batch_2d // 2, n_eval=P.n_eval_2d // 2,
                   repeats=min(8, max(4, P.n_eval_2d // 250)), sample_steps=100, few_steps=4)
