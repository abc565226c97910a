"""A lesson's claims: the numbers its text relies on, asserted where they are computed and recorded.

Every statement a lesson makes about a result ("within twice the noise floor", "the midpoint method
beats Euler at 4 NFE") is backed by a :func:`claim` in the cell that computes it::

    claim("checkerboard, 100 Euler steps: energy distance / noise floor", ratio,
          at_most={"standard": 2.0, "smoke": 30.0})
    claim("midpoint beats Euler at 4 NFE", ed_mid < ed_euler)

A claim checks its value against the threshold of the current profile (``TUTORLIB_PROFILE``), prints
one line saying what was checked, and raises ``AssertionError`` when the value is on the wrong side.
Thresholds are a number (every profile) or a dict keyed by profile name; the ``full`` profile falls
back to ``standard``'s threshold; a profile that has none records the value without asserting it.
Smoke thresholds are looser, so that CI's smoke run still catches a broken lesson, not only a
crashing one (CONTRIBUTING.md, "Claims").

The claims command (``make verify``) runs every lesson with ``TUTORLIB_CLAIMS_FILE`` set: each claim
then appends one JSON line (name, value, thresholds, verdict) to that file, and the command gathers
them with the lesson's run time into ``lessons/claims.json``, from which the lesson headers' run
times and the book's run-time table are drawn.
"""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

from tutorlib.device import profile

__all__ = ["claim"]

Threshold = float | int | Mapping[str, float | int] | None


def _for_profile(threshold: Threshold, name: str) -> float | None:
    if threshold is None or isinstance(threshold, (int, float)):
        return None if threshold is None else float(threshold)
    if not isinstance(threshold, Mapping):
        raise TypeError(f"a threshold is a number or a dict {{profile: number}}, got {threshold!r}")
    unknown = set(threshold) - {"smoke", "standard", "full"}
    if unknown:
        raise ValueError(f"unknown profile(s) {sorted(unknown)} in a claim's threshold; use smoke, standard, full")
    if name in threshold:
        return float(threshold[name])
    if name == "full" and "standard" in threshold:
        return float(threshold["standard"])
    return None


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def claim(name: str, value: float | bool, *, at_most: Threshold = None, at_least: Threshold = None) -> None:
    """Assert and record one claim of a lesson.

    Args:
        name: what is claimed, as a reader would say it (it appears in the output and the record).
        value: the measured number, or a bool for a statement that must hold (``True``).
        at_most: the largest value allowed: a number, or ``{profile: number}``.
        at_least: the smallest value allowed: a number, or ``{profile: number}``.

    Returns:
        Nothing: the printed line holds the value. (Returning it made every notebook cell that ends in a
        claim show the bare number again as the cell's result.)

    Raises:
        AssertionError: the value breaks this profile's threshold (or a bool claim is False).
        ValueError: a number without a threshold, thresholds on a bool, or a non-finite value.
    """
    P = profile()
    record: dict = {"name": name, "profile": P.name}
    if isinstance(value, bool) or (hasattr(value, "dtype") and str(getattr(value, "dtype", "")) == "torch.bool"):
        if at_most is not None or at_least is not None:
            raise ValueError(f"claim {name!r}: a True/False claim takes no threshold")
        ok = bool(value)
        record.update(value=ok, kind="statement", passed=ok)
        line = f"claim {'holds' if ok else 'FAILS'}: {name}"
    else:
        if at_most is None and at_least is None:
            raise ValueError(f"claim {name!r}: give at_most= or at_least= (or pass a True/False statement)")
        value = float(value)
        hi, lo = _for_profile(at_most, P.name), _for_profile(at_least, P.name)
        bounds = [f"<= {_fmt(hi)}" for _ in [0] if hi is not None] + [f">= {_fmt(lo)}" for _ in [0] if lo is not None]
        if not math.isfinite(value):
            ok = False
        else:
            ok = (hi is None or value <= hi) and (lo is None or value >= lo)
        asserted = hi is not None or lo is not None
        record.update(value=value, kind="bound", at_most=hi, at_least=lo, asserted=asserted, passed=ok)
        if asserted:
            # short enough for the book's output box (about 85 characters) with a long name
            line = f"claim {'holds' if ok else 'FAILS'}: {name} = {_fmt(value)} ({' and '.join(bounds)}, {P.name})"
        else:
            line = f"claim recorded: {name} = {_fmt(value)} (no bound in {P.name})"
    path = os.environ.get("TUTORLIB_CLAIMS_FILE", "").strip()
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    print(line, flush=True)
    if not ok:
        raise AssertionError(line)
