"""Exercise checks of appendix C (flow matching on manifolds): the torus's geodesic path and the sphere's
exponential-map Euler step."""

from __future__ import annotations

import math
from typing import Callable

import torch

from tutorlib.exercises.core import DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size, check, rand, randn
from tutorlib.manifolds import Sphere, Torus, wrap

__all__ = ["check_sphere_exp_step", "check_torus_path"]


def _int(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


# --- the geodesic conditional path on the flat torus ----------------------------------------------------


def _angles(g: torch.Generator, B: int, d: int) -> torch.Tensor:
    return wrap(math.pi - 2 * math.pi * rand(g, B, d))  # (B, d) uniform on (-pi, pi]


def _torus_inputs(g: torch.Generator) -> dict:
    B, d = batch_size(g), _int(g, 1, 3)
    x_0, x_1 = _angles(g, B, d), _angles(g, B, d)
    t = 0.9 * rand(g, B)  # (B,) in [0, 0.9): a learner's log_{x_t}(x_1) / (1 - t) stays accurate
    t[0] = 0.0
    return {"x_0": x_0, "x_1": x_1, "t": t}


def _torus_reference(x_0, x_1, t):
    s = Torus(x_0.shape[1]).geodesic(x_0, x_1, t)
    return s.x_t, s.dx_t


def _torus_mistakes() -> list[Mistake]:
    def path(x_0, v, t, wrap_x=True):
        x_t = x_0 + t[:, None] * v
        return (wrap(x_t) if wrap_x else x_t), v

    to_2pi = lambda a: torch.remainder(a, 2 * math.pi)  # noqa: E731
    return [
        Mistake("x_1 - x_0, not wrapped (the long way round the circle)", lambda x0, x1, t: path(x0, x1 - x0, t),
                "the torus's log map is wrap(x_1 - x_0): the difference brought into (-pi, pi], the short way round"),
        Mistake("x_t not wrapped back into (-pi, pi]", lambda x0, x1, t: path(x0, wrap(x1 - x0), t, wrap_x=False),
                "the point x_0 + t v may leave (-pi, pi]: wrap it, as the torus's exp map does"),
        Mistake("angles brought into [0, 2 pi) instead of (-pi, pi]",
                lambda x0, x1, t: (to_2pi(x0 + t[:, None] * to_2pi(x1 - x0)), to_2pi(x1 - x0)),
                "torch.remainder(a, 2 pi) lies in [0, 2 pi): a difference of -0.1 becomes 2 pi - 0.1, the long way; "
                "use pi - remainder(pi - a, 2 pi), or atan2(sin a, cos a)"),
        Mistake("t and 1 - t swapped", lambda x0, x1, t: path(x0, wrap(x1 - x0), 1 - t),
                "x_t starts at x_0 at t = 0: x_t = wrap(x_0 + t v)"),
        Mistake("the velocity pointing from x_1 to x_0", lambda x0, x1, t: (path(x0, wrap(x1 - x0), t)[0], wrap(x0 - x1)),
                "the path runs from x_0 to x_1: v = log_{x_0}(x_1) = wrap(x_1 - x_0)"),
        Mistake("x_t and dx_t swapped", lambda x0, x1, t: tuple(reversed(path(x0, wrap(x1 - x0), t))),
                "return (x_t, dx_t) in that order"),
    ]


def check_torus_path(fn: Callable, *, trials: int = 6, seed: int = 0, strict: bool | None = None,
                     time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the geodesic conditional path on the flat torus (appendix C, exercise 1).

    The learner writes ``fn(x_0, x_1, t) -> (x_t, dx_t)`` for angles ``x_0, x_1`` float64 ``(B, d)`` in
    ``(-pi, pi]`` and times ``t`` ``(B,)``: ``x_t = exp_{x_0}(t log_{x_0}(x_1)) = wrap(x_0 + t wrap(x_1 - x_0))``
    in ``(-pi, pi]`` and its velocity ``dx_t = wrap(x_1 - x_0)``. The batch size, the number of angles
    (1 to 3) and the times vary; about a quarter of the coordinates are closer the other way round.
    """
    hints = [Hint("value", "on the torus geodesics are straight lines in the angles, taken the short way round "
                           "and wrapped: x_t = wrap(x_0 + t v), v = wrap(x_1 - x_0), dx_t = v"),
             Hint("structure", "return a tuple (x_t, dx_t)")]
    return check(fn, _torus_reference, _torus_inputs, name="torus_path", atol=1e-9, rtol=1e-9, trials=trials,
                 seed=seed, output_names=("x_t", "dx_t"), mistakes=_torus_mistakes(), hints=hints, strict=strict,
                 time_limit_s=time_limit_s)


# --- the exponential-map Euler step on the sphere ---------------------------------------------------------


def _sphere_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), (2, 3, 5)[_int(g, 0, 2)]
    x = randn(g, B, D)
    x = x / x.norm(dim=-1, keepdim=True)  # (B, D) on the sphere
    v = 1.5 * randn(g, B, D)  # (B, D) ambient vectors: a network's raw output, not tangent
    v[0] = 0.0  # a row that does not move
    v[1] = -2.0 * x[1]  # a row with no tangent part at all
    return {"x": x, "v": v, "dt": round(0.05 + 0.45 * float(rand(g, 1)), 4)}


def _sphere_reference(x, v, dt):
    S = Sphere(x.shape[1])
    return S.exp(x, dt * S.to_tangent(x, v))


def _exp_raw(x, u):
    """cos|u| x + sin|u| u / |u| for any u (no projection, no renormalisation)."""
    n = u.norm(dim=-1, keepdim=True)
    return torch.cos(n) * x + torch.sinc(n / math.pi) * u


def _sphere_mistakes() -> list[Mistake]:
    def tan(x, v):
        return v - (v * x).sum(-1, keepdim=True) * x

    def unit(y):
        return y / y.norm(dim=-1, keepdim=True)

    return [
        Mistake("the exp map of v itself, not of its tangent part", lambda x, v, dt: _exp_raw(x, dt * v),
                "project the velocity onto the tangent plane first: v - <v, x> x"),
        Mistake("the exp map of v itself, renormalised", lambda x, v, dt: unit(_exp_raw(x, dt * v)),
                "renormalising puts the point back on the sphere but the radial part of v still moved it: "
                "project v onto the tangent plane first, v - <v, x> x"),
        Mistake("the projected Euler step (x + dt v) / |x + dt v|", lambda x, v, dt: unit(x + dt * tan(x, v)),
                "that is the projection retraction, which turns by atan(dt |v|) instead of dt |v|: follow the great "
                "circle, cos(dt |v|) x + sin(dt |v|) v / |v|"),
        Mistake("an ordinary Euler step x + dt v (off the sphere)", lambda x, v, dt: x + dt * tan(x, v),
                "a step in R^D leaves the sphere: use the exponential map"),
        Mistake("a step backwards in time (x - dt v)", lambda x, v, dt: _exp_raw(x, -dt * tan(x, v)),
                "the sampler integrates from t = 0 to t = 1: exp_x(+dt v)"),
        Mistake("sin(|u|) u without dividing by |u|", lambda x, v, dt: torch.cos((dt * tan(x, v)).norm(dim=-1, keepdim=True)) * x
                + torch.sin((dt * tan(x, v)).norm(dim=-1, keepdim=True)) * dt * tan(x, v),
                "the direction of the great circle is the unit vector u / |u|: sin(|u|) u / |u|"),
        Mistake("the step dt left out (exp_x(v))", lambda x, v, dt: _exp_raw(x, tan(x, v)),
                "one Euler step moves by the tangent vector dt v"),
    ]


def check_sphere_exp_step(fn: Callable, *, trials: int = 6, seed: int = 0, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one exponential-map Euler step on the sphere (appendix C, exercise 2).

    The learner writes ``fn(x, v, dt) -> x_next``: points ``x`` float64 ``(B, D)`` with ``|x| = 1``,
    ambient velocities ``v`` ``(B, D)`` (a network's raw output, so not tangent), a float ``dt``;
    ``x_next = exp_x(dt u)`` with ``u = v - <v, x> x`` the tangent part of ``v``. The batch size, the
    dimension (``D`` = 2, 3 or 5) and ``dt`` vary; every trial has a row with ``v = 0`` and one with
    ``v`` parallel to ``x`` (no tangent part: the point must not move, and must not become NaN).
    """
    hints = [Hint("nonfinite", "a row whose tangent velocity is zero must return x unchanged: sin(|u|) / |u| is 0 / 0 "
                               "there; use torch.sinc(|u| / pi) (= sin|u| / |u|, and 1 at 0) or torch.where"),
             Hint("value", "exp_x(u) = cos(|u|) x + sin(|u|) u / |u| for a tangent vector u; here u = dt (v - <v, x> x)")]
    return check(fn, _sphere_reference, _sphere_inputs, name="sphere_exp_step", atol=1e-9, rtol=1e-9, trials=trials,
                 seed=seed, mistakes=_sphere_mistakes(), hints=hints, strict=strict, time_limit_s=time_limit_s)
