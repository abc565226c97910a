"""Exercise checks of lesson 00 (setup, toy data, metrics): two-sample distances."""

from __future__ import annotations

from typing import Any, Callable

import torch

from tutorlib.exercises.core import DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size, check, randn
from tutorlib.metrics import energy_distance, mmd_rbf

__all__ = ["check_energy_distance", "check_mmd"]


def _two_samples(g: torch.Generator) -> dict[str, Any]:
    n, m = batch_size(g, 20, 40), batch_size(g, 20, 40)
    while m == n:
        m = batch_size(g, 20, 40)
    d = int(torch.randint(1, 4, (1,), generator=g))
    return {"x": randn(g, n, d), "y": randn(g, m, d) * 1.3 + 0.4}


def _mean_dist(a: torch.Tensor, b: torch.Tensor, same: bool = False, square: bool = False) -> torch.Tensor:
    d = torch.cdist(a, b)
    d = d.square() if square else d
    if same:  # U-statistic: leave the zero diagonal out
        n = a.shape[0]
        return d.sum() / (n * (n - 1))
    return d.mean()


def check_energy_distance(fn: Callable, *, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Lesson 00: ``fn(x, y)`` returns the squared energy distance, V-statistic (a 0-d tensor).

    ``x`` is ``(N, D)`` and ``y`` is ``(M, D)`` with ``N != M`` and ``D`` from 1 to 3; the reference
    is :func:`tutorlib.metrics.energy_distance`.
    """
    mistakes = [
        Mistake("the U-statistic (the i = j pairs left out)",
                lambda x, y: 2 * _mean_dist(x, y) - _mean_dist(x, x, True) - _mean_dist(y, y, True),
                "the course uses the V-statistic: average over all pairs, diagonal included (.mean() of cdist)"),
        Mistake("E|X - Y| - E|X - X'| - E|Y - Y'| (the cross term counted once)",
                lambda x, y: _mean_dist(x, y) - _mean_dist(x, x) - _mean_dist(y, y),
                "the cross term appears twice: 2 E|X - Y| - E|X - X'| - E|Y - Y'|"),
        Mistake("an energy distance of squared distances",
                lambda x, y: 2 * _mean_dist(x, y, square=True) - _mean_dist(x, x, square=True)
                - _mean_dist(y, y, square=True),
                "use the distances |a - b| themselves (torch.cdist), not their squares"),
        Mistake("the square root of the answer", lambda x, y: energy_distance(x, y).clamp_min(0).sqrt(),
                "return D^2 itself, the combination of mean distances, without a square root"),
    ]
    hints = [Hint("shape", "return a scalar: the mean over all pairs, e.g. torch.cdist(x, y).mean()")]
    return check(fn, lambda x, y: energy_distance(x, y), _two_samples, name="energy_distance",
                 atol=1e-8, rtol=1e-6, mistakes=mistakes, hints=hints, strict=strict, time_limit_s=time_limit_s)


def check_mmd(fn: Callable, *, strict: bool | None = None,
              time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Lesson 00: ``fn(x, y, h)`` returns the squared MMD (V-statistic) with one RBF kernel.

    ``k(a, b) = exp(-||a - b||^2 / (2 h^2))``; the reference is :func:`tutorlib.metrics.mmd_rbf`
    with ``bandwidths=(h,)``.
    """
    def make_inputs(g: torch.Generator) -> dict[str, Any]:
        return {**_two_samples(g), "h": float(0.3 + 2 * torch.rand((), generator=g, dtype=torch.float64))}

    def kernel_mmd(x, y, k):
        return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()

    mistakes = [
        Mistake("a kernel exp(-|a - b|^2 / h^2) (the 2 missing)",
                lambda x, y, h: kernel_mmd(x, y, lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (h * h))),
                "the Gaussian kernel divides by 2 h^2"),
        Mistake("a kernel of |a - b| instead of |a - b|^2",
                lambda x, y, h: kernel_mmd(x, y, lambda a, b: torch.exp(-torch.cdist(a, b) / (2 * h * h))),
                "square the distances inside the exponential"),
        Mistake("the cross term with the wrong sign",
                lambda x, y, h: -mmd_rbf(x, y, bandwidths=(h,)),
                "MMD^2 = E k(X, X') + E k(Y, Y') - 2 E k(X, Y)"),
    ]
    return check(fn, lambda x, y, h: mmd_rbf(x, y, bandwidths=(h,)), make_inputs, name="mmd",
                 atol=1e-8, rtol=1e-6, mistakes=mistakes, strict=strict, time_limit_s=time_limit_s)
