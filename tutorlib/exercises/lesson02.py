"""Exercise checks of lesson 02 (neural ODEs and CNFs): the exact divergence and Hutchinson's estimator."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, _exception_text, _fmt,
                                     batch_size, check, finish, guarded_call, learner_name, rand, randn, test_field)
from tutorlib.likelihood import divergence_exact, divergence_hutchinson

__all__ = ["check_divergence_exact", "check_hutchinson"]

_GRAD_HINT = Hint("exception", "make x a leaf that tracks gradients first: x = x.detach().requires_grad_(True), "
                               "then evaluate f(x, t)", match="does not require grad|does not have a grad_fn")


def _divergence_of(fn: Callable) -> Callable:
    """Accept a plain (B,) tensor or, like the library, an object with a ``.divergence`` field."""

    def wrapped(*args):
        out = fn(*args)
        div = getattr(out, "divergence", None)
        return div if isinstance(div, torch.Tensor) else out

    wrapped.__name__ = learner_name(fn, "divergence")
    return wrapped


def _field_inputs(g: torch.Generator) -> dict[str, Any]:
    D = int(torch.randint(2, 4, (1,), generator=g))  # 2D or 3D
    B = batch_size(g)
    return {"f": test_field(g, D), "x": randn(g, B, D), "t": rand(g, B)}


def _jacobian_sum(f, x, t):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x, t).sum(), x)
    return g.sum(1)


def check_divergence_exact(fn: Callable, *, strict: bool | None = None,
                           time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the exact divergence of a field by autograd (lesson 02).

    The learner writes ``fn(f, x, t) -> div`` of shape ``(B,)``: ``div[b] = sum_i d f_i / d x_i``
    at ``(x[b], t[b])``, for a field ``f(x, t)`` with ``x`` ``(B, D)`` (D of 2 or 3) and ``t`` ``(B,)``
    (returning the library's ``DivergenceOutput`` works too). The reference is
    :func:`tutorlib.likelihood.divergence_exact`.
    """
    mistakes = [
        Mistake("the sum of the whole Jacobian (every d f_i / d x_j)", _jacobian_sum,
                "keep only the diagonal: for each i, the i-th entry of the gradient of f_i"),
        Mistake("the divergence with the wrong sign", lambda f, x, t: -divergence_exact(f, x, t).divergence,
                "the divergence is + sum_i d f_i / d x_i (the minus sign belongs to the log-density's ODE)"),
    ]
    return check(_divergence_of(fn), lambda f, x, t: divergence_exact(f, x, t).divergence, _field_inputs,
                 name="divergence_exact", mistakes=mistakes, hints=[_GRAD_HINT], strict=strict,
                 time_limit_s=time_limit_s)


def check_hutchinson(fn: Callable, *, probes: int = 2000, strict: bool | None = None,
                     time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check Hutchinson's divergence estimate ``eps^T (df/dx) eps`` (lesson 02).

    The learner writes ``fn(f, x, t, eps) -> estimate`` of shape ``(B,)`` for one probe ``eps``
    of shape ``(B, D)``. Two parts: per probe, the value must match
    :func:`tutorlib.likelihood.divergence_hutchinson`; then, statistically, the mean of the
    learner's estimates over ``probes`` Gaussian probes must lie within 5 standard errors of
    the exact divergence (an unbiased estimator).
    """
    wrapped = _divergence_of(fn)
    name = learner_name(fn, "hutchinson")

    def make_inputs(g):
        inputs = _field_inputs(g)
        inputs["eps"] = randn(g, *inputs["x"].shape)
        return inputs

    def vjp_only(f, x, t, eps):  # eps^T J summed, without the second eps
        x = x.detach().requires_grad_(True)
        (vjp,) = torch.autograd.grad(f(x, t), x, grad_outputs=eps)
        return vjp.sum(1)

    mistakes = [Mistake("the vector-Jacobian product summed without the second eps", vjp_only,
                        "the estimate is eps^T J eps: multiply the product eps^T J by eps, then sum per sample")]
    result = check(wrapped, lambda f, x, t, eps: divergence_hutchinson(f, x, t, eps).divergence, make_inputs,
                   name="hutchinson", mistakes=mistakes, hints=[_GRAD_HINT], time_limit_s=time_limit_s, show=False)
    if not result.passed:
        return finish(result, strict)
    g = torch.Generator().manual_seed(1)
    inputs = _field_inputs(g)
    f, x, t = inputs["f"], inputs["x"], inputs["t"]
    B, D = x.shape
    x_rep, t_rep = x.repeat(probes, 1), t.repeat(probes)  # (P*B, D), (P*B,)
    eps = randn(g, probes * B, D)  # (P*B, D)
    est, err = guarded_call(wrapped, [f, x_rep.clone(), t_rep.clone(), eps.clone()], time_limit_s)
    if err is not None:
        return finish(CheckResult(name, False, f"on {probes} probes per point: {_exception_text(err)}", "exception"),
                      strict)
    try:
        est = est.detach().reshape(probes, B)  # (P, B)
    except Exception as exc:
        return finish(CheckResult(name, False, f"on {probes} probes per point the output cannot be read as "
                                               f"{probes} x {B} estimates ({type(exc).__name__}: {exc})", "shape"), strict)
    exact = divergence_exact(f, x, t).divergence  # (B,)
    mean, se = est.mean(0), est.std(0) / math.sqrt(probes)  # (B,)
    gap = (mean - exact).abs()
    worst = int((gap / (5 * se + 1e-9)).argmax())
    if not bool((gap <= 5 * se + 1e-9).all()):
        return finish(CheckResult(name, False, (
            f"biased: at point {worst} the mean over {probes} probes is {_fmt(float(mean[worst]))} but the exact "
            f"divergence is {_fmt(float(exact[worst]))} (standard error {_fmt(float(se[worst]))})"), "value"), strict)
    return finish(CheckResult(name, True, (
        f"{result.message}; the mean over {probes} probes is within {float((gap / se).max()):.1f} standard "
        f"errors of the exact divergence")), strict)
