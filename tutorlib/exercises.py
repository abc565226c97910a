"""Self-checks for the lessons' exercises: run a learner's function against the reference.

Every check draws float64 inputs from a seeded ``torch.Generator``, calls the learner's
function and the reference on copies of them, and returns a :class:`CheckResult` saying what
went wrong, for which trial and which inputs: an exception, ``None`` (a missing ``return``), a
list or tuple where a tensor was expected, a wrong shape, dtype or device, NaN or inf, or a
wrong value (the largest error, its index, the value got and the value expected). A check
never raises because of the learner's code; ``strict=True`` (or ``.raise_if_failed()``) turns a
failure into an ``AssertionError``. Lessons just call the check::

    check_euler_step(euler_step)

and the test suite sets ``TUTORLIB_STRICT_CHECKS=1`` (``strict=None`` reads it), so the
solutions that CI runs must pass their own checks.

The generic :func:`check` underlies the specific ones:

==============================  ================================================  ======
check                           the learner writes                                lesson
==============================  ================================================  ======
:func:`check_energy_distance`   ``fn(x, y) -> D^2`` (V-statistic), a scalar       00
:func:`check_mmd`               ``fn(x, y, h) -> MMD^2``, one RBF bandwidth        00
:func:`check_forward_noising`   ``fn(x_data, noise, alpha_bar) -> x_noisy``       01
:func:`check_ddim_step`         ``fn(x_noisy, eps, alpha_bar, alpha_bar_prev)``   01
:func:`check_divergence_exact`  ``fn(f, x, t) -> div`` ``(B,)``                   02
:func:`check_hutchinson`        ``fn(f, x, t, eps) -> div estimate`` ``(B,)``     02
:func:`check_euler_step`        ``fn(velocity, x, t, dt) -> x_next``              03
:func:`check_cfm_target`        ``fn(x_0, x_1, t) -> (x_t, dx_t)``                03
:func:`check_minibatch_ot`      ``fn(x_0, x_1) -> (x_0, x_1)`` re-paired          05
:func:`check_guided_velocity`   ``fn(v_cond, v_uncond, w) -> v``                  08
:func:`check_label_dropout`     ``fn(y, p, null_class, generator) -> y_dropped``  09
:func:`check_cfg_velocity`      ``fn(model, x, t, y, w) -> v`` in one pass        09
==============================  ================================================  ======

Per-sample scalars (``t``, ``alpha_bar``) have shape ``(B,)`` throughout, as in the library:
the learner broadcasts them (``t[:, None]``).
"""

from __future__ import annotations

import html
import math
import os
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from tutorlib.couplings import minibatch_ot
from tutorlib.ddpm import DDPMSchedule, linear_betas
from tutorlib.guidance import cfg_velocity
from tutorlib.likelihood import divergence_exact, divergence_hutchinson
from tutorlib.metrics import energy_distance, mmd_rbf
from tutorlib.models import PatchUNet
from tutorlib.paths import CondOTPath

__all__ = [
    "check_energy_distance",
    "check_mmd",
    "CheckResult",
    "check",
    "check_cfg_velocity",
    "check_cfm_target",
    "check_ddim_step",
    "check_divergence_exact",
    "check_euler_step",
    "check_forward_noising",
    "check_guided_velocity",
    "check_hutchinson",
    "check_label_dropout",
    "check_minibatch_ot",
]


@dataclass
class CheckResult:
    """The outcome of a check; prints as one line (green or red in a notebook)."""

    name: str  # what was checked, e.g. "euler_step"
    passed: bool  # True if every trial matched the reference
    message: str  # what went wrong (trial, inputs, expected), or the pass summary

    def __str__(self) -> str:
        return f"{'PASSED' if self.passed else 'FAILED'} {self.name}: {self.message}"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.passed

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "&#10004;") if self.passed else ("#cf222e", "&#10008;")
        return (f'<div style="color:{colour}; white-space:pre-wrap; font-family:monospace">'
                f"{mark} <b>{html.escape(self.name)}</b>: {html.escape(self.message)}</div>")

    def raise_if_failed(self) -> "CheckResult":
        """Raise ``AssertionError`` with the message if the check failed; else return ``self``."""
        if not self.passed:
            raise AssertionError(str(self))
        return self


# --- describing things ------------------------------------------------------------------


def _shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{_shape(value)} {str(value.dtype).replace('torch.', '')}"
    if callable(value):
        return "a function"
    return repr(value)


def _inputs_text(inputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {_describe(v)}" for k, v in inputs.items())


def _index(flat: int, shape: torch.Size) -> tuple[int, ...]:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return tuple(reversed(idx))


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _exception_text(err: BaseException) -> str:
    """``Type: message`` plus where in the learner's code it was raised, if that can be told."""
    if isinstance(err, NotImplementedError):
        return "raised NotImplementedError: the exercise is not filled in yet"
    text = f"raised {type(err).__name__}: {err}".strip()
    frames = traceback.extract_tb(err.__traceback__)
    own = [f for f in frames if os.sep + "torch" + os.sep not in f.filename
           and not f.filename.endswith(os.path.join("tutorlib", "exercises.py"))]
    if own:
        f = own[-1]
        text += f" (in {f.name}, line {f.lineno}" + (f": `{f.line.strip()}`)" if f.line else ")")
    return text


# --- comparing an output with the reference ---------------------------------------------


def _compare_tensor(got: Any, expected: torch.Tensor, atol: float, rtol: float) -> tuple[str | None, float]:
    """(problem or None, largest absolute error) for one output expected to be a tensor."""
    want = f"a tensor of shape {_shape(expected)}"
    if got is None:
        return "returned None — did you forget `return`?", math.nan
    if isinstance(got, list):
        return f"returned a list; expected {want} (build it with torch.stack or torch operations)", math.nan
    if isinstance(got, tuple):
        return f"returned a tuple of {len(got)} items; expected a single tensor of shape {_shape(expected)}", math.nan
    if not isinstance(got, torch.Tensor):
        if isinstance(got, np.ndarray):
            kind = "a numpy array"
        elif isinstance(got, np.generic):
            kind = f"a numpy scalar ({got!r})"
        else:
            kind = f"an object of type {type(got).__name__}"
        return f"returned {kind}; expected {want} (stay in torch)", math.nan
    if got.shape != expected.shape:
        msg = f"wrong shape: got {_shape(got)}, expected {_shape(expected)}"
        if got.ndim > expected.ndim or got.numel() > expected.numel():
            msg += (" (an unintended broadcast? a per-sample value of shape (B,) must be reshaped, "
                    "e.g. t[:, None], before it meets a (B, D) tensor)")
        return msg, math.nan
    if got.dtype != expected.dtype:
        return (f"wrong dtype: got {got.dtype}, expected {expected.dtype} (the inputs are {expected.dtype}; "
                "make new tensors with the inputs' dtype, e.g. torch.zeros_like(x) or dtype=x.dtype)"), math.nan
    if got.device != expected.device:
        return (f"wrong device: got {got.device}, expected {expected.device} "
                "(make new tensors on the inputs' device, device=x.device)"), math.nan
    got, expected = got.detach(), expected.detach()
    bad = ~torch.isfinite(got) & torch.isfinite(expected)
    if bool(bad.any()):
        first = _index(int(bad.reshape(-1).nonzero()[0]), got.shape)
        kind = "NaN" if bool(torch.isnan(got[first])) else "inf"
        return (f"contains {kind} at index {first} ({int(bad.sum())} non-finite value(s) in all; "
                f"expected {_fmt(float(expected[first]))}): a division by zero, or sqrt/log of a negative?"), math.nan
    if got.numel() == 0:
        return None, 0.0
    err = (got - expected).abs()
    err = torch.where(torch.isfinite(expected), err, torch.zeros_like(err))
    tol = atol + rtol * expected.abs()
    flat = int(err.reshape(-1).argmax())
    where = _index(flat, got.shape)
    largest = float(err.reshape(-1)[flat])
    n_bad = int((err > tol).sum())
    if n_bad:
        return (f"wrong value: largest error {_fmt(largest)} at index {where} "
                f"(got {_fmt(float(got[where]))}, expected {_fmt(float(expected[where]))}); "
                f"{n_bad} of {got.numel()} entries are off"), largest
    return None, largest


def _compare(got: Any, expected: Any, names: Sequence[str] | None, atol: float,
             rtol: float) -> tuple[str | None, float]:
    """Compare an output with the reference's: a tensor, or a tuple of tensors (named by ``names``)."""
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(got, expected, atol, rtol)
    expected = tuple(expected)
    names = list(names) if names is not None else [f"output {i}" for i in range(len(expected))]
    want = f"a tuple of {len(expected)} tensors ({', '.join(names)})"
    if got is None:
        return f"returned None — did you forget `return`? expected {want}", math.nan
    if isinstance(got, torch.Tensor):
        return f"returned a single tensor of shape {_shape(got)}; expected {want}", math.nan
    if not isinstance(got, (tuple, list)):
        return f"returned an object of type {type(got).__name__}; expected {want}", math.nan
    if len(got) != len(expected):
        return f"returned {len(got)} item(s); expected {want}", math.nan
    largest = 0.0
    for name, g, e in zip(names, got, expected):
        problem, err = _compare_tensor(g, e, atol, rtol)
        if problem is not None:
            return f"{name}: {problem}", math.nan
        largest = max(largest, err)
    return None, largest


def _clone(inputs: Mapping[str, Any]) -> list[Any]:
    return [v.detach().clone() if isinstance(v, torch.Tensor) else v for v in inputs.values()]


def _as_named(inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    return {f"argument {i + 1}": v for i, v in enumerate(inputs)}


def _hinted(message: str, hints: Mapping[str, str] | None) -> str:
    for needle, hint in (hints or {}).items():
        if needle.lower() in message.lower():
            return f"{message}\n  hint: {hint}"
    return message


def _finish(result: CheckResult, strict: bool | None) -> CheckResult:
    """Return the result; raise on failure when ``strict`` (None: ``TUTORLIB_STRICT_CHECKS=1``).

    The test suite sets ``TUTORLIB_STRICT_CHECKS=1``, so a lesson whose solution fails its own
    check fails CI, while a learner running the student copy just sees the message.
    """
    if strict is None:
        strict = os.environ.get("TUTORLIB_STRICT_CHECKS", "").strip() == "1"
    return result.raise_if_failed() if strict else result


# --- the generic check ------------------------------------------------------------------


def check(
    learner_fn: Callable[..., Any],
    reference_fn: Callable[..., Any],
    make_inputs: Callable[[torch.Generator], Mapping[str, Any] | Sequence[Any]],
    *,
    name: str,
    atol: float = 1e-6,
    rtol: float = 1e-5,
    trials: int = 3,
    seed: int = 0,
    output_names: Sequence[str] | None = None,
    hints: Mapping[str, str] | None = None,
    strict: bool | None = None,
) -> CheckResult:
    """Run ``learner_fn`` against ``reference_fn`` on ``trials`` random inputs.

    Args:
        learner_fn: the learner's function.
        reference_fn: the correct function, same signature; it must not raise.
        make_inputs: ``make_inputs(generator)`` -> ``{name: value}`` (or a tuple), passed to both
            functions positionally, in order; names appear in the messages. Tensors are copied
            for each call, so in-place changes by the learner do not reach the reference.
        name: what is checked, for the messages.
        atol, rtol: a value passes where ``|got - expected| <= atol + rtol * |expected|``.
        trials: independent draws of the inputs.
        seed: seeds the ``torch.Generator`` handed to ``make_inputs``.
        output_names: names of the outputs when the reference returns a tuple of tensors.
        hints: ``{text: hint}``: a failure message containing ``text`` gets ``hint`` appended.
        strict: raise ``AssertionError`` on failure instead of returning.

    Returns:
        A :class:`CheckResult`.
    """
    g = torch.Generator().manual_seed(seed)
    largest = 0.0
    for trial in range(1, trials + 1):
        inputs = _as_named(make_inputs(g))
        expected = reference_fn(*_clone(inputs))
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        try:
            got = learner_fn(*_clone(inputs))
        except Exception as err:  # the learner's code may raise anything
            return _finish(CheckResult(name, False, _hinted(f"{_exception_text(err)} ({where})", hints)), strict)
        try:
            problem, err = _compare(got, expected, output_names, atol, rtol)
        except Exception as exc:  # an output too odd to compare
            problem, err = f"returned something that cannot be compared ({type(exc).__name__}: {exc})", math.nan
        if problem is not None:
            return _finish(CheckResult(name, False, _hinted(f"{problem} ({where})", hints)), strict)
        largest = max(largest, err)
    return _finish(CheckResult(name, True, f"matches the reference on {trials} random trials "
                                           f"(largest error {largest:.2g})"), strict)


# --- inputs -----------------------------------------------------------------------------


def _batch(g: torch.Generator, low: int = 5, high: int = 12) -> int:
    """A random batch size (never 1 or 2, so that a missing reshape cannot broadcast by luck)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _test_field(g: torch.Generator, dim: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A smooth nonlinear field f(x, t), x (B, dim), t (B,) -> (B, dim), each row on its own."""
    W = _randn(g, dim, dim) / math.sqrt(dim)  # (D, D)
    A = _randn(g, dim, dim) / math.sqrt(dim)  # (D, D)
    b = _randn(g, dim)  # (D,)

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)  # (B, 1) or (1, 1)
        return torch.tanh(x @ W.to(x) + b.to(x) * t) * (1 + t) + 0.5 * torch.sin(x @ A.to(x)) * x  # (B, D)

    return f


_BROADCAST_HINT = {"must match the size": "per-sample values have shape (B,): reshape them, e.g. t[:, None], "
                                          "to broadcast against a (B, D) tensor"}
_GRAD_HINT = {"does not require grad": "make x a leaf that tracks gradients first: "
                                      "x = x.detach().requires_grad_(True), then evaluate f(x, t)"}


# --- lesson 01: DDPM ----------------------------------------------------------------------


def _two_samples(g: torch.Generator) -> dict[str, Any]:
    n, m, d = _batch(g, 20, 40), _batch(g, 20, 40), int(torch.randint(1, 4, (1,), generator=g))
    return {"x": _randn(g, n, d), "y": _randn(g, m, d) * 1.3 + 0.4}


def check_energy_distance(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Lesson 00: ``fn(x, y)`` returns the squared energy distance, V-statistic (a 0-d tensor).

    ``x`` is ``(N, D)`` and ``y`` is ``(M, D)`` with ``N != M``; the reference is
    :func:`tutorlib.metrics.energy_distance`.
    """
    hints = {"wrong shape": "return a scalar: the mean over all pairs, e.g. torch.cdist(x, y).mean()"}
    return check(fn, lambda x, y: energy_distance(x, y), _two_samples, name="energy_distance",
                 atol=1e-8, rtol=1e-6, hints=hints, strict=strict)


def check_mmd(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Lesson 00: ``fn(x, y, h)`` returns the squared MMD (V-statistic) with one RBF kernel.

    ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``; the reference is
    :func:`tutorlib.metrics.mmd_rbf` with ``bandwidths=(h,)``.
    """
    def make_inputs(g: torch.Generator) -> dict[str, Any]:
        return {**_two_samples(g), "h": float(0.3 + 2 * torch.rand((), generator=g, dtype=torch.float64))}

    return check(fn, lambda x, y, h: mmd_rbf(x, y, bandwidths=(h,)), make_inputs, name="mmd",
                 atol=1e-8, rtol=1e-6, strict=strict)


def check_forward_noising(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check DDPM's forward noising q(x_noisy | x_data) (lesson 01).

    The learner writes ``fn(x_data, noise, alpha_bar) -> x_noisy`` with
    ``x_noisy = sqrt(alpha_bar) x_data + sqrt(1 - alpha_bar) noise``; ``x_data`` and ``noise``
    have shape ``(B, 2)`` and ``alpha_bar`` shape ``(B,)`` (one alpha_bar_k per sample, drawn at
    random indices k of a 1000-step linear schedule, so some are almost 1 and some almost 0).
    """
    schedule = DDPMSchedule(linear_betas(1000))

    def make_inputs(g):
        B = _batch(g)
        k = torch.randint(0, schedule.T + 1, (B,), generator=g)  # (B,) DDPM indices
        return {"x_data": _randn(g, B, 2), "noise": _randn(g, B, 2), "alpha_bar": schedule.alpha_bar(k)}

    def reference(x_data, noise, alpha_bar):
        ab = alpha_bar[:, None]  # (B, 1)
        return ab.sqrt() * x_data + (1 - ab).sqrt() * noise  # (B, 2)

    return check(fn, reference, make_inputs, name="forward_noising", hints=_BROADCAST_HINT, strict=strict)


def check_ddim_step(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check one deterministic DDIM step (eta = 0) from index k to an earlier index k' (lesson 01).

    The learner writes ``fn(x_noisy, eps, alpha_bar, alpha_bar_prev) -> x_prev`` with
    ``x_data_hat = (x_noisy - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` and
    ``x_prev = sqrt(alpha_bar_prev) x_data_hat + sqrt(1 - alpha_bar_prev) eps``; ``x_noisy`` and
    ``eps`` have shape ``(B, 2)``, ``alpha_bar`` (at k) and ``alpha_bar_prev`` (at k' < k) shape ``(B,)``.
    """
    schedule = DDPMSchedule(linear_betas(1000))

    def make_inputs(g):
        B = _batch(g)
        k = torch.randint(1, schedule.T + 1, (B,), generator=g)  # (B,) in 1..T
        k_prev = (k - torch.randint(1, 50, (B,), generator=g)).clamp(min=0)  # (B,) earlier indices
        return {"x_noisy": _randn(g, B, 2), "eps": _randn(g, B, 2),
                "alpha_bar": schedule.alpha_bar(k), "alpha_bar_prev": schedule.alpha_bar(k_prev)}

    def reference(x_noisy, eps, alpha_bar, alpha_bar_prev):
        ab, ab_prev = alpha_bar[:, None], alpha_bar_prev[:, None]  # (B, 1)
        x_data_hat = (x_noisy - (1 - ab).sqrt() * eps) / ab.sqrt()  # (B, 2)
        return ab_prev.sqrt() * x_data_hat + (1 - ab_prev).sqrt() * eps

    return check(fn, reference, make_inputs, name="ddim_step", hints=_BROADCAST_HINT, strict=strict)


# --- lesson 02: divergences ----------------------------------------------------------------


def _divergence_of(fn: Callable) -> Callable:
    """Accept a plain (B,) tensor or, like the library, an object with a ``.divergence`` field."""

    def wrapped(*args):
        out = fn(*args)
        div = getattr(out, "divergence", None)
        return div if isinstance(div, torch.Tensor) else out

    return wrapped


def _field_inputs(g: torch.Generator) -> dict[str, Any]:
    D = int(torch.randint(2, 4, (1,), generator=g))  # 2D or 3D
    B = _batch(g)
    return {"f": _test_field(g, D), "x": _randn(g, B, D), "t": _rand(g, B)}


def check_divergence_exact(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check the exact divergence of a field by autograd (lesson 02).

    The learner writes ``fn(f, x, t) -> div`` of shape ``(B,)``: ``div[b] = sum_i d f_i / d x_i``
    at ``(x[b], t[b])``, for a field ``f(x, t)`` with ``x`` ``(B, D)`` and ``t`` ``(B,)``
    (returning the library's ``DivergenceOutput`` works too). The reference is
    :func:`tutorlib.likelihood.divergence_exact`.
    """
    return check(_divergence_of(fn), lambda f, x, t: divergence_exact(f, x, t).divergence, _field_inputs,
                 name="divergence_exact", hints=_GRAD_HINT, strict=strict)


def check_hutchinson(fn: Callable, *, probes: int = 2000, strict: bool | None = None) -> CheckResult:
    """Check Hutchinson's divergence estimate ``eps^T (df/dx) eps`` (lesson 02).

    The learner writes ``fn(f, x, t, eps) -> estimate`` of shape ``(B,)`` for one probe ``eps``
    of shape ``(B, D)``. Two parts: per probe, the value must match
    :func:`tutorlib.likelihood.divergence_hutchinson`; then, statistically, the mean of the
    learner's estimates over ``probes`` Gaussian probes must lie within 5 standard errors of
    the exact divergence (an unbiased estimator).
    """
    fn = _divergence_of(fn)

    def make_inputs(g):
        inputs = _field_inputs(g)
        inputs["eps"] = _randn(g, *inputs["x"].shape)
        return inputs

    result = check(fn, lambda f, x, t, eps: divergence_hutchinson(f, x, t, eps).divergence, make_inputs,
                   name="hutchinson", hints=_GRAD_HINT)
    if not result.passed:
        return _finish(result, strict)
    g = torch.Generator().manual_seed(1)
    inputs = _field_inputs(g)
    f, x, t = inputs["f"], inputs["x"], inputs["t"]
    B, D = x.shape
    x_rep, t_rep = x.repeat(probes, 1), t.repeat(probes)  # (P*B, D), (P*B,)
    eps = _randn(g, probes * B, D)  # (P*B, D)
    try:
        est = fn(f, x_rep.clone(), t_rep.clone(), eps.clone())
        est = est.detach().reshape(probes, B)  # (P, B)
    except Exception as err:
        message = f"on {probes} probes per point: {_exception_text(err)}"
        return _finish(CheckResult("hutchinson", False, message), strict)
    exact = divergence_exact(f, x, t).divergence  # (B,)
    mean, se = est.mean(0), est.std(0) / math.sqrt(probes)  # (B,)
    gap = (mean - exact).abs()
    worst = int((gap / (5 * se + 1e-9)).argmax())
    if not bool((gap <= 5 * se + 1e-9).all()):
        return _finish(CheckResult("hutchinson", False, (
            f"biased: at point {worst} the mean over {probes} probes is {_fmt(float(mean[worst]))} but the exact "
            f"divergence is {_fmt(float(exact[worst]))} (standard error {_fmt(float(se[worst]))})")), strict)
    return _finish(CheckResult("hutchinson", True, (
        f"{result.message}; the mean over {probes} probes is within {float((gap / se).max()):.1f} standard "
        f"errors of the exact divergence")), strict)


# --- lesson 03: flow matching ---------------------------------------------------------------


def check_euler_step(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check one explicit Euler step ``x + dt * velocity(x, t)`` (lesson 03).

    The learner writes ``fn(velocity, x, t, dt) -> x_next`` with ``x`` ``(B, 2)``, ``t`` ``(B,)``
    (the current time of each sample), a float ``dt``, and ``velocity(x, t) -> (B, 2)``.
    """

    def make_inputs(g):
        B = _batch(g)
        return {"velocity": _test_field(g, 2), "x": _randn(g, B, 2), "t": _rand(g, B).mul(0.9),
                "dt": round(float(_rand(g, 1)) * 0.1 + 0.01, 4)}

    def reference(velocity, x, t, dt):
        return x + dt * velocity(x, t)

    return check(fn, reference, make_inputs, name="euler_step",
                 hints={"takes": "the velocity is called as velocity(x, t)"}, strict=strict)


def check_cfm_target(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check the linear (conditional OT) path and its velocity, the CFM target (lesson 03).

    The learner writes ``fn(x_0, x_1, t) -> (x_t, dx_t)`` with ``x_t = (1 - t) x_0 + t x_1`` and
    ``dx_t = x_1 - x_0``; ``x_0`` (noise) and ``x_1`` (data) have shape ``(B, 2)``, ``t`` shape
    ``(B,)``. The reference is ``CondOTPath().sample(x_0, x_1, t)``.
    """
    path = CondOTPath()

    def make_inputs(g):
        B = _batch(g)
        return {"x_0": _randn(g, B, 2), "x_1": _randn(g, B, 2) * 2, "t": _rand(g, B)}

    def reference(x_0, x_1, t):
        s = path.sample(x_0, x_1, t)
        return s.x_t, s.dx_t

    return check(fn, reference, make_inputs, name="cfm_target", output_names=("x_t", "dx_t"),
                 hints=_BROADCAST_HINT, strict=strict)


# --- lesson 05: couplings -------------------------------------------------------------------


def _row_permutation(out: torch.Tensor, ref: torch.Tensor) -> torch.Tensor | None:
    """Indices p with out[i] == ref[p[i]] (a permutation), or None if out's rows are not ref's rows."""
    dist = torch.cdist(out.reshape(len(out), -1), ref.reshape(len(ref), -1))  # (B, B)
    best = dist.argmin(1)
    if bool((dist.min(1).values > 1e-9).any()) or len(set(best.tolist())) != len(best):
        return None
    return best


def check_minibatch_ot(fn: Callable, *, trials: int = 3, seed: int = 0, strict: bool | None = None) -> CheckResult:
    """Check a minibatch optimal-transport coupling (lesson 05).

    The learner writes ``fn(x_0, x_1) -> (x_0, x_1)``: the same points, re-paired so that the
    total squared distance ``sum_i ||x_0[i] - x_1[i]||^2`` is minimal over all pairings (either
    side may be reordered). Checked: the types and shapes, that each output is a reordering of
    the corresponding input, and that the total cost equals that of
    :func:`tutorlib.couplings.minibatch_ot` (exact assignment, so ties aside the optimum).
    """
    g = torch.Generator().manual_seed(seed)
    for trial in range(1, trials + 1):
        B = int(torch.randint(5, 8, (1,), generator=g))
        inputs = {"x_0": _randn(g, B, 2), "x_1": _randn(g, B, 2) * 2 + 1}
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        expected = tuple(minibatch_ot(*_clone(inputs)))
        try:
            got = fn(*_clone(inputs))
        except Exception as err:
            return _finish(CheckResult("minibatch_ot", False, f"{_exception_text(err)} ({where})"), strict)
        problem, _ = _compare(got, expected, ("x_0", "x_1"), math.inf, 0.0)  # types, shapes, dtypes only
        if problem is None:
            for name, out, inp in zip(("x_0", "x_1"), got, inputs.values()):
                if _row_permutation(out.detach(), inp) is None:
                    problem = f"the returned {name} is not a reordering of the input {name}'s rows"
                    break
        if problem is None:
            cost = float((got[0] - got[1]).square().sum())
            optimum = float((expected[0] - expected[1]).square().sum())
            if cost > optimum * (1 + 1e-9) + 1e-9:
                problem = (f"not optimal: total squared distance {_fmt(cost)}, but the best pairing has "
                           f"{_fmt(optimum)} (use the squared Euclidean cost, and reorder x_1 by the assignment)")
        if problem is not None:
            return _finish(CheckResult("minibatch_ot", False, f"{problem} ({where})"), strict)
    return _finish(CheckResult("minibatch_ot", True, f"optimal pairings on {trials} random batches"), strict)


# --- lesson 08: guidance ------------------------------------------------------------------------


def check_guided_velocity(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check the classifier-free guidance combination (lesson 08).

    The learner writes ``fn(v_cond, v_uncond, w) -> v_uncond + w (v_cond - v_uncond)``, with
    velocities of shape ``(B, 2)`` and a float guidance scale ``w`` (w = 1: the conditional field).
    """

    def make_inputs(g):
        B = _batch(g)
        return {"v_cond": _randn(g, B, 2), "v_uncond": _randn(g, B, 2), "w": round(float(_rand(g, 1)) * 6, 3)}

    def reference(v_cond, v_uncond, w):
        return v_uncond + w * (v_cond - v_uncond)

    return check(fn, reference, make_inputs, name="guided_velocity", strict=strict)


# --- lesson 09: flow matching on MNIST -------------------------------------------------------------


def check_label_dropout(fn: Callable, *, seed: int = 0, strict: bool | None = None) -> CheckResult:
    """Check label dropout for classifier-free guidance training (lesson 09).

    The learner writes ``fn(y, p, null_class, generator) -> y_dropped``: a new int64 ``(B,)`` tensor in
    which each label of ``y`` is replaced by ``null_class`` independently with probability ``p``, the
    coin flips drawn from ``generator`` (a CPU ``torch.Generator``). Checked, in this order: the type,
    shape and dtype; that ``y`` is left unchanged; that every output is the input label or the null
    class, and a label that already is the null class stays so; ``p = 0`` keeps every label and
    ``p = 1`` drops every one; the same generator state gives the same output (the draws come from
    ``generator``, not the global seed); and, on 20,000 labels, that the fraction dropped is within
    five standard errors of ``p`` (rows are dropped one by one, not all or none).
    """
    name = "label_dropout"
    g = torch.Generator().manual_seed(seed)
    null = 10

    def labels(B: int) -> torch.Tensor:
        return torch.randint(0, null, (B,), generator=g)  # (B,)

    def call(y: torch.Tensor, p: float, gen_seed: int) -> tuple[Any, str | None]:
        inputs = {"y": y, "p": p, "null_class": null, "generator": "a torch.Generator"}
        where = f"p = {p}, inputs: {_inputs_text(inputs)}"
        y_in = y.clone()
        try:
            out = fn(y_in, p, null, torch.Generator().manual_seed(gen_seed))
        except Exception as err:
            return None, f"{_exception_text(err)} ({where})"
        if not torch.equal(y_in, y):
            return None, f"changed its input y in place; return a new tensor, e.g. with torch.where ({where})"
        expected = torch.empty_like(y)
        problem, _ = _compare_tensor(out, expected, math.inf, 0.0)  # type, shape, dtype and device only
        if problem is not None:
            hint = " (labels are int64: torch.full_like(y, null_class) keeps the dtype)" if "dtype" in problem else ""
            return None, f"{problem}{hint} ({where})"
        ok = (out == y) | (out == null)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            return None, (f"output {i} is {int(out[i])} for the label {int(y[i])}: every output must be the "
                          f"input label or the null class {null} ({where})")
        if bool((out[y == null] != null).any()):
            return None, f"a label that already was the null class {null} must stay so ({where})"
        return out, None

    B = _batch(g, 20, 40)
    y = labels(B)
    y[0] = null  # an already-dropped label
    for p, expect in ((0.0, "keep every label"), (1.0, "drop every label")):
        out, problem = call(y, p, 1)
        if problem is not None:
            return _finish(CheckResult(name, False, problem), strict)
        want = y if p == 0.0 else torch.full_like(y, null)
        if not torch.equal(out, want):
            n_wrong = int((out != want).sum())
            return _finish(CheckResult(name, False, f"with p = {p} it must {expect}, but {n_wrong} of {B} outputs "
                                                    f"differ (drop where a uniform draw is below p: "
                                                    f"torch.rand(B, generator=generator) < p)"), strict)
    first, problem = call(y, 0.5, 2)
    if problem is not None:
        return _finish(CheckResult(name, False, problem), strict)
    again, _ = call(y, 0.5, 2)
    if again is None or not torch.equal(first, again):
        return _finish(CheckResult(name, False, "two calls with generators in the same state gave different "
                                                "outputs: draw the coin flips from the generator, "
                                                "torch.rand(B, generator=generator)"), strict)
    n, p = 20_000, 0.2
    y_big = labels(n)
    out, problem = call(y_big, p, 3)
    if problem is not None:
        return _finish(CheckResult(name, False, problem), strict)
    frac = float((out == null).double().mean())
    se = math.sqrt(p * (1 - p) / n)
    if abs(frac - p) > 5 * se:
        return _finish(CheckResult(name, False, (
            f"on {n} labels with p = {p} it dropped a fraction {frac:.4f}, more than 5 standard errors "
            f"({5 * se:.4f}) from p: drop each label on its own coin flip, one uniform draw per label")), strict)
    return _finish(CheckResult(name, True, (
        f"keeps or drops single labels, p = 0 and p = 1 exact, reproducible under a generator, and dropped "
        f"{frac:.4f} of {n} labels at p = {p} (within {abs(frac - p) / se:.1f} standard errors)")), strict)


class _CountingModel(torch.nn.Module):
    """Wraps a class-conditional model and records the batch size of every call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[int] = []

    @property
    def null_class(self) -> int:
        return self.model.null_class

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        return self.model(x, t, y)


def _small_image_model(g: torch.Generator, num_classes: int) -> torch.nn.Module:
    """A small class-conditional PatchUNet in float64 with weights drawn from ``g`` (global RNG untouched).

    Every weight is drawn at scale 0.3, so the output depends clearly on the label and a wrong
    combination of the conditional and unconditional halves cannot pass.
    """
    with torch.random.fork_rng(devices=[]):
        model = PatchUNet(1, None, base_channels=8, num_classes=num_classes).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * _randn(g, *param.shape))
    return model


def check_cfg_velocity(fn: Callable, *, strict: bool | None = None) -> CheckResult:
    """Check classifier-free guidance in one batched forward pass (lesson 09).

    The learner writes ``fn(model, x, t, y, w) -> v``: the guided velocity
    ``v_uncond + w (v_cond - v_uncond)`` of a class-conditional ``model(x, t, y)`` (with a
    ``model.null_class`` attribute) at images ``x`` ``(B, 1, 28, 28)``, times ``t`` ``(B,)`` and labels
    ``y`` int64 ``(B,)``, computed with **one** call of ``model`` on the doubled batch (``[x, x]`` with
    labels ``[y, null_class]``). The reference is :func:`tutorlib.guidance.cfg_velocity`; the check
    also counts the calls and their batch size.
    """
    name = "cfg_velocity"
    g = torch.Generator().manual_seed(0)
    num_classes = 3
    model = _small_image_model(g, num_classes)
    hints = {"wrong value": "the first B rows of the doubled output are conditional (labels y), the last B "
                            "unconditional (the null class): out[:B], out[B:]"}
    largest = 0.0
    trials = 3
    for trial in range(1, trials + 1):
        B = _batch(g, 3, 6)
        x = _randn(g, B, 1, 28, 28)  # (B, 1, 28, 28)
        t = _rand(g, B)  # (B,)
        y = torch.randint(0, num_classes, (B,), generator=g)  # (B,)
        w = round(0.5 + 4 * float(_rand(g, 1)), 3)
        inputs = {"x": x, "t": t, "y": y, "w": w}
        where = f"trial {trial} of {trials}, inputs: model a small PatchUNet, {_inputs_text(inputs)}"
        with torch.no_grad():
            expected = cfg_velocity(model, y, w)(x, t)  # (B, 1, 28, 28)
        counting = _CountingModel(model)
        try:
            with torch.no_grad():
                got = fn(counting, x.clone(), t.clone(), y.clone(), w)
        except Exception as err:
            return _finish(CheckResult(name, False, f"{_exception_text(err)} ({where})"), strict)
        problem, err = _compare_tensor(got, expected, 1e-9, 1e-7)
        if problem is not None:
            return _finish(CheckResult(name, False, _hinted(f"{problem} ({where})", hints)), strict)
        if counting.calls != [2 * B]:
            sizes = ", ".join(str(c) for c in counting.calls) or "none"
            return _finish(CheckResult(name, False, (
                f"the value is right, but the model was called {len(counting.calls)} time(s) with batch sizes "
                f"{sizes}; evaluate both halves in one call on the doubled batch of {2 * B}: "
                f"model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null])) ({where})")), strict)
        largest = max(largest, err)
    return _finish(CheckResult(name, True, f"matches tutorlib.guidance.cfg_velocity on {trials} random trials "
                                           f"(largest error {largest:.2g}), one model call per evaluation"),
                   strict)
