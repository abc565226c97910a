"""The machinery behind every exercise check: run a learner's function against the reference.

A check is a small test suite for one function (CONTRIBUTING.md, "Exercises"). :func:`check` draws
float64 inputs from a seeded ``torch.Generator`` for several trials, calls the learner's function
and the reference on copies of them, and returns a :class:`CheckResult` saying what went wrong,
for which trial and which inputs:

* an exception (with the learner's line), ``None`` (a missing ``return``), a list, tuple, NumPy
  array or sparse tensor where a dense tensor was expected, a wrong shape, dtype or device, NaN or
  inf, or a wrong value;
* an input changed in place (the reference never sees the change, so a mutating answer could
  otherwise pass);
* a function that runs longer than the check's time limit (a loop that never ends, a sleep): the
  check stops waiting and says so;
* for a wrong value, the **known mistake** it matches, if any (``mistakes=``: a flipped sign,
  ``t`` for ``1 - t``, a missing term...), named with its fix; otherwise the inputs at the failing
  index, so the learner can work the value out by hand.

Hints (``hints=``) are tied to the kind of failure that happened (``"shape"``, ``"value"``,
``"exception"``...), optionally to a pattern in its message, and never fire for another one.
A check never raises because of the learner's code; ``strict=True`` (or the environment variable
``TUTORLIB_STRICT_CHECKS=1``, which the test suite sets) turns a failure into an ``AssertionError``.
Every check shows its result where it runs: as a coloured line in a notebook, printed in a script.
"""

from __future__ import annotations

import html
import math
import os
import re
import signal
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "CheckResult",
    "Failure",
    "Hint",
    "Mistake",
    "TimeLimitExceeded",
    "check",
    "compare",
    "describe_row",
    "finish",
    "guarded_call",
    "learner_name",
    "strict_checks",
]

DEFAULT_TIME_LIMIT_S = 20.0  # per call of the learner's function


# --- results --------------------------------------------------------------------------------


@dataclass
class CheckResult:
    """The outcome of a check; prints as one line (green or red in a notebook).

    A check shows its result as soon as it finishes (:func:`finish`); a notebook that also shows
    the returned value (a bare ``check_...(fn)`` as a cell's last line) does not show it twice.
    """

    name: str  # what was checked, e.g. "euler_step" (the learner's function name)
    passed: bool  # True if every trial matched the reference
    message: str  # what went wrong (trial, inputs, expected, the likely mistake), or the pass summary
    kind: str = "pass"  # the kind of failure: "exception", "shape", "value", "mutation", "timeout", ...
    _shown: bool = field(default=False, repr=False, compare=False)

    def __str__(self) -> str:
        return f"{'PASSED' if self.passed else 'FAILED'} {self.name}: {self.message}"

    __repr__ = __str__

    def __bool__(self) -> bool:
        return self.passed

    def _repr_html_(self) -> str:
        colour, mark = ("#1a7f37", "&#10004;") if self.passed else ("#cf222e", "&#10008;")
        return (f'<div class="tutorlib-check" style="color:{colour}; white-space:pre-wrap; font-family:monospace">'
                f"{mark} <b>{html.escape(self.name)}</b>: {html.escape(self.message)}</div>")

    def _ipython_display_(self) -> None:
        if not self._shown:
            self.show()

    def show(self) -> "CheckResult":
        """Display the result: HTML in an IPython kernel, a printed line elsewhere."""
        self._shown = True
        shell = _ipython_kernel()
        if shell is not None:
            from IPython.display import HTML, display

            display(HTML(self._repr_html_()))
        else:
            print(str(self), flush=True)
        return self

    def raise_if_failed(self) -> "CheckResult":
        """Raise ``AssertionError`` with the message if the check failed; else return ``self``."""
        if not self.passed:
            raise AssertionError(str(self))
        return self


def _ipython_kernel():
    """The running IPython shell if it is a notebook kernel (not a terminal), else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or type(shell).__name__ == "TerminalInteractiveShell":
        return None
    return shell


def strict_checks() -> bool:
    """Whether failures raise: ``TUTORLIB_STRICT_CHECKS`` is ``1`` (CI runs the solutions strictly).

    Raises:
        ValueError: the variable is set to anything but ``0``, ``1`` or the empty string.
    """
    value = os.environ.get("TUTORLIB_STRICT_CHECKS", "").strip()
    if value not in ("", "0", "1"):
        raise ValueError(f"TUTORLIB_STRICT_CHECKS={value!r} is not understood: set it to 1 (a failed exercise "
                         "check raises) or 0 / unset (it reports and carries on)")
    return value == "1"


def finish(result: CheckResult, strict: bool | None = None, *, show: bool = True) -> CheckResult:
    """Show the result, then raise on failure when ``strict`` (None: :func:`strict_checks`)."""
    if show:
        result.show()
    if strict is None:
        strict = strict_checks()
    return result.raise_if_failed() if strict else result


# --- describing things ------------------------------------------------------------------------


def learner_name(fn: Any, default: str) -> str:
    """The name the learner gave their function (``default`` for a lambda or a callable object)."""
    name = getattr(fn, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else default


def _shape(x: torch.Tensor) -> str:
    return str(tuple(x.shape))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{_shape(value)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, torch.nn.Module):
        return f"a {type(value).__name__}"
    if isinstance(value, torch.Generator):
        return "a torch.Generator"
    if callable(value):
        return "a function"
    return repr(value)


def _inputs_text(inputs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {_describe(v)}" for k, v in inputs.items())


def _fmt(v: float) -> str:
    return f"{v:.6g}"


def _fmt_tensor(x: torch.Tensor) -> str:
    if x.numel() == 1:
        return _fmt(float(x))
    if x.numel() <= 6:
        return "[" + ", ".join(_fmt(float(v)) for v in x.reshape(-1)) + "]"
    return f"a {_shape(x)} tensor"


def describe_row(inputs: Mapping[str, Any], index: tuple[int, ...] | None) -> str:
    """The inputs of one sample (row ``index[0]``), for working a wrong value out by hand."""
    if not index:
        return ""
    row = index[0]
    batch = [v.shape[0] for v in inputs.values() if isinstance(v, torch.Tensor) and v.dim() >= 1]
    if not batch:
        return ""
    B = max(set(batch), key=batch.count)
    parts = []
    for k, v in inputs.items():
        if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == B and row < B:
            parts.append(f"{k}[{row}] = {_fmt_tensor(v[row])}")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            parts.append(f"{k} = {_fmt(float(v))}")
    return "; ".join(parts)


def _index(flat: int, shape: torch.Size) -> tuple[int, ...]:
    idx = []
    for size in reversed(shape):
        idx.append(flat % size)
        flat //= size
    return tuple(reversed(idx))


def _exception_text(err: BaseException) -> str:
    """``Type: message`` plus where in the learner's code it was raised, if that can be told."""
    if isinstance(err, NotImplementedError):
        return "raised NotImplementedError: the exercise is not filled in yet"
    text = f"raised {type(err).__name__}: {err}".strip()
    frames = traceback.extract_tb(err.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    own = [f for f in frames if os.sep + "torch" + os.sep not in f.filename
           and not os.path.abspath(f.filename).startswith(package)]
    if own:
        f = own[-1]
        text += f" (in {f.name}, line {f.lineno}" + (f": `{f.line.strip()}`)" if f.line else ")")
    return text


# --- failures, hints and known mistakes ---------------------------------------------------------


@dataclass
class Failure:
    """What went wrong in one comparison: a kind, a message, and for a wrong value where."""

    kind: str  # "none", "type", "shape", "dtype", "device", "layout", "nonfinite", "value", "exception",
    #            "mutation", "timeout", "structure"
    message: str
    index: tuple[int, ...] | None = None  # the worst entry of a wrong value
    output: str | None = None  # which output (for tuples), e.g. "dx_t"


@dataclass(frozen=True)
class Hint:
    """Advice shown only when a check fails in this way: ``kind`` (and ``match``, a regex on the message)."""

    kind: str
    text: str
    match: str | None = None

    def fires(self, failure: Failure) -> bool:
        return failure.kind == self.kind and (self.match is None or re.search(self.match, failure.message,
                                                                              re.IGNORECASE) is not None)


@dataclass(frozen=True)
class Mistake:
    """A known wrong answer: ``fn`` has the reference's signature and computes the mistake.

    When the learner's wrong output matches it, the message names ``what`` and ``fix``, e.g.
    ``Mistake("x - dt v", lambda v, x, t, dt: x - dt * v(x, t), "the course integrates forwards: x + dt v")``.
    """

    what: str
    fn: Callable[..., Any]
    fix: str


# --- running the learner's code: bounded in time, inputs protected --------------------------------


class TimeLimitExceeded(Exception):
    """The learner's function ran longer than the check's time limit."""


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise :class:`TimeLimitExceeded` in this (main) thread after ``seconds`` (POSIX)."""
    def on_alarm(signum, frame):
        raise TimeLimitExceeded(f"still running after {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def guarded_call(fn: Callable[..., Any], args: Sequence[Any], time_limit_s: float | None) -> tuple[Any, BaseException | None]:
    """``fn(*args)`` -> ``(value, None)``, or ``(None, exception)`` if it raised or ran out of time.

    In the main thread of a POSIX process (a notebook cell, a script) the call is interrupted by
    an alarm when the limit passes; elsewhere it runs in a helper thread that is abandoned (its
    result ignored) when the limit passes.
    """
    if time_limit_s is None or time_limit_s <= 0:
        try:
            return fn(*args), None
        except Exception as err:  # the learner's code may raise anything
            return None, err
    can_alarm = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if can_alarm:
        try:
            with _alarm(time_limit_s):
                return fn(*args), None
        except TimeLimitExceeded as err:
            return None, err
        except Exception as err:
            return None, err
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as err:  # handed back to the caller
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True, name="tutorlib-check")
    worker.start()
    worker.join(time_limit_s)
    if worker.is_alive():
        return None, TimeLimitExceeded(f"still running after {time_limit_s:g} s (left running in the background)")
    if "error" in box:
        return None, box["error"]
    return box.get("value"), None


def _clone(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    return value


def _changed_inputs(originals: Mapping[str, Any], given: Sequence[Any]) -> list[str]:
    """Names of tensor inputs whose values the learner's function changed in place."""
    changed = []
    for (name, orig), seen in zip(originals.items(), given):
        if isinstance(orig, torch.Tensor) and isinstance(seen, torch.Tensor):
            if seen.shape != orig.shape or not torch.equal(seen.detach(), orig):
                changed.append(name)
    return changed


# --- comparing an output with the reference ---------------------------------------------------


def _compare_tensor(got: Any, expected: torch.Tensor, atol: float, rtol: float) -> tuple[Failure | None, float]:
    """(failure or None, largest absolute error) for one output expected to be a dense tensor."""
    want = f"a tensor of shape {_shape(expected)}"
    if got is None:
        return Failure("none", "returned None: did you forget `return`?"), math.nan
    if isinstance(got, list):
        return Failure("type", f"returned a list; expected {want} (build it with torch.stack or torch "
                               "operations)"), math.nan
    if isinstance(got, tuple):
        return Failure("type", f"returned a tuple of {len(got)} items; expected a single tensor of shape "
                               f"{_shape(expected)}"), math.nan
    if not isinstance(got, torch.Tensor):
        if isinstance(got, np.ndarray):
            kind = "a numpy array"
        elif isinstance(got, np.generic):
            kind = f"a numpy scalar ({got!r})"
        else:
            kind = f"an object of type {type(got).__name__}"
        return Failure("type", f"returned {kind}; expected {want} (stay in torch)"), math.nan
    if got.layout != torch.strided:
        return Failure("layout", f"returned a {str(got.layout).replace('torch.', '')} tensor; expected an ordinary "
                                 f"(dense) tensor of shape {_shape(expected)} (call .to_dense())"), math.nan
    if got.shape != expected.shape:
        msg = f"wrong shape: got {_shape(got)}, expected {_shape(expected)}"
        if got.ndim > expected.ndim or got.numel() > expected.numel():
            msg += (" (an unintended broadcast? a per-sample value of shape (B,) must be reshaped, "
                    "e.g. t[:, None], before it meets a (B, D) tensor)")
        return Failure("shape", msg), math.nan
    if got.dtype != expected.dtype:
        return Failure("dtype", f"wrong dtype: got {got.dtype}, expected {expected.dtype} (the inputs are "
                                f"{expected.dtype}; make new tensors with the inputs' dtype, e.g. "
                                "torch.zeros_like(x) or dtype=x.dtype)"), math.nan
    if got.device != expected.device:
        return Failure("device", f"wrong device: got {got.device}, expected {expected.device} "
                                 "(make new tensors on the inputs' device, device=x.device)"), math.nan
    got, expected = got.detach(), expected.detach()
    if got.numel() == 0:
        return None, 0.0
    if got.is_floating_point() or expected.is_floating_point():
        bad = ~torch.isfinite(got) & torch.isfinite(expected)
        if bool(bad.any()):
            first = _index(int(bad.reshape(-1).nonzero()[0]), got.shape)
            kind = "NaN" if bool(torch.isnan(got[first])) else "inf"
            return Failure("nonfinite", f"contains {kind} at index {first} ({int(bad.sum())} non-finite value(s) in "
                                        f"all; expected {_fmt(float(expected[first]))}): a division by zero, or "
                                        "sqrt/log of a negative?", index=first), math.nan
    err = (got.double() - expected.double()).abs()
    err = torch.where(torch.isfinite(expected.double()), err, torch.zeros_like(err))
    tol = atol + rtol * expected.double().abs()
    flat = int(err.reshape(-1).argmax())
    where = _index(flat, got.shape)
    largest = float(err.reshape(-1)[flat])
    n_bad = int((err > tol).sum())
    if n_bad:
        return Failure("value", f"wrong value: largest error {_fmt(largest)} at index {where} "
                                f"(got {_fmt(float(got[where]))}, expected {_fmt(float(expected[where]))}); "
                                f"{n_bad} of {got.numel()} entries are off", index=where), largest
    return None, largest


def compare(got: Any, expected: Any, names: Sequence[str] | None = None, atol: float = 1e-6,
            rtol: float = 1e-5) -> tuple[Failure | None, float]:
    """Compare an output with the reference's: a tensor, or a tuple of tensors (named by ``names``).

    Never raises: an output too odd to compare is a failure of kind ``"type"``.
    """
    try:
        return _compare(got, expected, names, atol, rtol)
    except Exception as exc:  # e.g. a tensor subclass whose operations raise
        return Failure("type", f"returned something that cannot be compared ({type(exc).__name__}: {exc})"), math.nan


def _compare(got: Any, expected: Any, names: Sequence[str] | None, atol: float,
             rtol: float) -> tuple[Failure | None, float]:
    if isinstance(expected, torch.Tensor):
        return _compare_tensor(got, expected, atol, rtol)
    expected = tuple(expected)
    names = list(names) if names is not None else [f"output {i}" for i in range(len(expected))]
    want = f"a tuple of {len(expected)} tensors ({', '.join(names)})"
    if got is None:
        return Failure("none", f"returned None: did you forget `return`? expected {want}"), math.nan
    if isinstance(got, torch.Tensor):
        return Failure("structure", f"returned a single tensor of shape {_shape(got)}; expected {want}"), math.nan
    if not isinstance(got, (tuple, list)):
        return Failure("structure", f"returned an object of type {type(got).__name__}; expected {want}"), math.nan
    if len(got) != len(expected):
        return Failure("structure", f"returned {len(got)} item(s); expected {want}"), math.nan
    largest = 0.0
    for name, g, e in zip(names, got, expected):
        failure, err = _compare_tensor(g, e, atol, rtol)
        if failure is not None:
            failure.message = f"{name}: {failure.message}"
            failure.output = name
            return failure, math.nan
        largest = max(largest, err)
    return None, largest


def _matches(got: Any, expected: Any, atol: float, rtol: float) -> bool:
    failure, _ = compare(got, expected, None, atol, rtol)
    return failure is None


def _known_mistake(got: Any, mistakes: Sequence[Mistake], args: Sequence[Any], atol: float, rtol: float,
                   fn_name: str) -> str | None:
    """The message for the first known mistake whose output the learner's output matches."""
    for m in mistakes:
        try:
            wrong = m.fn(*[_clone(a) for a in args])
        except Exception:
            continue
        if _matches(got, wrong, atol, rtol):
            return f"{fn_name} looks like {m.what}: {m.fix}"
    return None


def _with_hints(failure: Failure, hints: Sequence[Hint]) -> str:
    extra = [h.text for h in hints if h.fires(failure)]
    return failure.message + "".join(f"\n  hint: {text}" for text in extra)


# --- the generic check -----------------------------------------------------------------------------


def _as_named(inputs: Any) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    return {f"argument {i + 1}": v for i, v in enumerate(inputs)}


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
    mistakes: Sequence[Mistake] = (),
    hints: Sequence[Hint] = (),
    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S,
    strict: bool | None = None,
    show: bool = True,
) -> CheckResult:
    """Run ``learner_fn`` against ``reference_fn`` on ``trials`` random inputs.

    Args:
        learner_fn: the learner's function.
        reference_fn: the correct function, same signature; it must not raise.
        make_inputs: ``make_inputs(generator)`` -> ``{name: value}`` (or a tuple), passed to both
            functions positionally, in order; names appear in the messages. Each function gets its
            own copies of the tensors, and the learner's copies are compared with the originals
            afterwards: an input changed in place fails the check.
        name: what is checked (used when the learner's function has no name of its own).
        atol, rtol: a value passes where ``|got - expected| <= atol + rtol * |expected|``.
        trials: independent draws of the inputs (vary what a hard-coded answer would fix: batch
            sizes, dimensions, scalars).
        seed: seeds the ``torch.Generator`` handed to ``make_inputs``.
        output_names: names of the outputs when the reference returns a tuple of tensors.
        mistakes: known wrong answers, tried in order when a value is wrong.
        hints: advice attached to failures of a given kind.
        time_limit_s: the longest one call of the learner's function may take (None: unbounded).
        strict: raise ``AssertionError`` on failure instead of returning.
        show: display the result (a check inside another check passes False).

    Returns:
        A :class:`CheckResult`.
    """
    fn_name = learner_name(learner_fn, name)
    g = torch.Generator().manual_seed(seed)
    largest = 0.0
    for trial in range(1, trials + 1):
        inputs = _as_named(make_inputs(g))
        args = [_clone(v) for v in inputs.values()]
        expected = reference_fn(*[_clone(v) for v in inputs.values()])
        where = f"trial {trial} of {trials}, inputs: {_inputs_text(inputs)}"
        start = time.perf_counter()
        got, err = guarded_call(learner_fn, args, time_limit_s)
        if isinstance(err, TimeLimitExceeded):
            failure = Failure("timeout", f"{fn_name} did not finish within the check's time limit of {time_limit_s:g} s "
                                         f"({err}): an endless loop, a sleep, or far too much work? ({where})")
            return finish(CheckResult(fn_name, False, _with_hints(failure, hints), failure.kind), strict, show=show)
        if err is not None:
            failure = Failure("exception", f"{_exception_text(err)} ({where})")
            return finish(CheckResult(fn_name, False, _with_hints(failure, hints), failure.kind), strict, show=show)
        changed = _changed_inputs(inputs, args)
        if changed:
            failure = Failure("mutation", f"{fn_name} changed its input {', '.join(changed)} in place; compute a new "
                                          "tensor instead (x + dt * v, not x += ... or x.add_(...)) ({where})")
            return finish(CheckResult(fn_name, False, _with_hints(failure, hints), failure.kind), strict, show=show)
        failure, err_value = compare(got, expected, output_names, atol, rtol)
        if failure is not None:
            message = failure.message
            if failure.kind == "value":
                known = _known_mistake(got, mistakes, list(inputs.values()), atol, rtol, fn_name)
                if known is not None:
                    message = f"{known} ({message})"
                else:
                    row = describe_row(inputs, failure.index)
                    message += f"; the inputs there: {row}" if row else ""
            failure.message = f"{message} ({where})"
            return finish(CheckResult(fn_name, False, _with_hints(failure, hints), failure.kind), strict, show=show)
        largest = max(largest, err_value)
        del start
    return finish(CheckResult(fn_name, True, f"matches the reference on {trials} random trials "
                                             f"(largest error {largest:.2g})"), strict, show=show)


# --- inputs -----------------------------------------------------------------------------------------


def batch_size(g: torch.Generator, low: int = 5, high: int = 12) -> int:
    """A random batch size (never 1 or 2, so that a missing reshape cannot broadcast by luck)."""
    return int(torch.randint(low, high + 1, (1,), generator=g))


def randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Standard normal float64 draws of ``shape`` from ``g``."""
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform float64 draws on [0, 1) of ``shape`` from ``g``."""
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def test_field(g: torch.Generator, dim: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A smooth nonlinear field f(x, t), x (B, dim), t (B,) -> (B, dim), each row on its own."""
    W = randn(g, dim, dim) / math.sqrt(dim)  # (D, D)
    A = randn(g, dim, dim) / math.sqrt(dim)  # (D, D)
    b = randn(g, dim)  # (D,)

    def f(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1, 1)  # (B, 1) or (1, 1)
        return torch.tanh(x @ W.to(x) + b.to(x) * t) * (1 + t) + 0.5 * torch.sin(x @ A.to(x)) * x  # (B, D)

    return f


test_field.__test__ = False  # not a pytest test


BROADCAST_HINT = Hint("exception", "per-sample values have shape (B,): reshape them, e.g. t[:, None], to broadcast "
                                   "against a (B, D) tensor", match="must match the size|size of tensor")
