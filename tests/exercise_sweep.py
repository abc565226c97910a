"""The bad-submission sweep shared by every lesson's exercise tests.

``assert_no_bad_submission_passes(check, correct_solution)`` builds at least twenty kinds of wrong
submissions from the correct solution (wrong values, types, shapes, dtypes, devices, layouts,
mutated inputs, endless loops, sleeps...) and asserts that the check passes none of them and never
raises. Add the lesson's own known mistakes as extra kinds with ``extra=``.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from tutorlib.exercises import CheckResult

def _map_output(out, f):
    if isinstance(out, tuple):
        return tuple(f(o) for o in out)
    return f(out)


def _first_output(out, f):
    if isinstance(out, tuple):
        return (f(out[0]), *out[1:])
    return f(out)


def _nan_first(o):
    o = o.clone()
    o.reshape(-1)[0] = float("nan") if o.is_floating_point() else o.reshape(-1)[0]
    return o.double() * float("nan") if not o.is_floating_point() else o


def _mutating(ok):
    def fn(*args):
        fresh = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        for a in args:
            if isinstance(a, torch.Tensor) and a.is_floating_point():
                a.mul_(1.5)
                break
            if isinstance(a, torch.Tensor):
                a.add_(1)
                break
        return ok(*fresh)
    return fn


def _forever(*args):
    while True:
        pass


def _bad_submissions(ok):
    """``(kind, fn, time_limit_s)``: the same wrong ideas for every check, built from its correct solution."""
    def out(*a):
        return ok(*a)

    def raises(*a):
        raise ValueError("boom")

    def stub(*a):
        raise NotImplementedError

    def is_float(o):
        return isinstance(o, torch.Tensor) and o.is_floating_point()

    kinds = [
        ("none", lambda *a: None, None),
        ("raises", raises, None),
        ("stub", stub, None),
        ("list", lambda *a: _map_output(out(*a), lambda o: o.tolist()), None),
        ("numpy", lambda *a: _map_output(out(*a), lambda o: o.detach().numpy()), None),
        ("float32", lambda *a: _map_output(out(*a), lambda o: o.float() if o.dtype == torch.float64 else o.double()),
         None),
        ("plus a little", lambda *a: _first_output(out(*a), lambda o: o + 1e-3 if is_float(o) else o + 1), None),
        ("times 1.01", lambda *a: _first_output(out(*a), lambda o: o * 1.01 if is_float(o) else o * 2), None),
        ("negated", lambda *a: _first_output(out(*a), lambda o: -o - (0 if is_float(o) else 1)), None),
        ("zeros", lambda *a: _map_output(out(*a), torch.zeros_like), None),
        ("ones", lambda *a: _map_output(out(*a), torch.ones_like), None),
        ("broadcast", lambda *a: _first_output(out(*a), lambda o: o[None]), None),
        ("summed", lambda *a: _first_output(out(*a), lambda o: o.sum() if o.dim() else o.reshape(1)), None),
        ("nan", lambda *a: _first_output(out(*a), _nan_first), None),
        ("sparse", lambda *a: _map_output(out(*a), lambda o: o.to_sparse() if o.dim() else o.reshape(1).to_sparse()),
         None),
        ("meta device", lambda *a: _map_output(out(*a), lambda o: o.to("meta")), None),
        ("rows permuted", lambda *a: _first_output(out(*a), lambda o: o.roll(1, 0) + (0 if o.dim() else 1)), None),
        ("tuple of two", lambda *a: (out(*a), out(*a)), None),
        ("mutates an input", _mutating(ok), None),
        ("endless loop", _forever, 0.3),
        ("sleeps", lambda *a: time.sleep(5), 0.3),
        ("returns an input", lambda *a: next(v for v in a if isinstance(v, torch.Tensor)), None),
    ]
    return kinds


def assert_no_bad_submission_passes(checker: Callable, ok: Callable,
                                    extra: list[tuple[str, Callable, float | None]] = ()) -> None:
    """Run ``checker`` on every bad submission built from ``ok`` (plus ``extra``); none may pass or raise."""
    kinds = _bad_submissions(ok) + list(extra)
    assert len(kinds) >= 20
    passed = []
    for kind, fn, limit in kinds:
        kwargs = {"time_limit_s": limit} if limit is not None else {}
        result = checker(fn, **kwargs)  # must not raise whatever fn does
        assert isinstance(result, CheckResult) and result.message, kind
        if result.passed:
            passed.append(kind)
    assert not passed, f"{checker.__name__} passed bad submissions: {passed}"
