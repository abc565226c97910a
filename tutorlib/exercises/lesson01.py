"""Exercise checks of lesson 01 (DDPM): forward noising and one DDIM step."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.ddpm import DDPMSchedule, linear_betas
from tutorlib.exercises.core import (BROADCAST_HINT, DEFAULT_TIME_LIMIT_S, CheckResult, Mistake, batch_size, check,
                                     randn)

__all__ = ["check_ddim_step", "check_forward_noising"]

_SCHEDULE = DDPMSchedule(linear_betas(1000))


def _dim(g: torch.Generator) -> int:
    return int(torch.randint(2, 4, (1,), generator=g))  # 2D or 3D points: no hard-coded 2


def check_forward_noising(fn: Callable, *, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check DDPM's forward noising q(x_noisy | x_data) (lesson 01).

    The learner writes ``fn(x_data, noise, alpha_bar) -> x_noisy`` with
    ``x_noisy = sqrt(alpha_bar) x_data + sqrt(1 - alpha_bar) noise``; ``x_data`` and ``noise``
    have shape ``(B, D)`` and ``alpha_bar`` shape ``(B,)`` (one alpha_bar_k per sample, drawn at
    random indices k of a 1000-step linear schedule, so some are almost 1 and some almost 0).
    """
    def make_inputs(g):
        B, D = batch_size(g), _dim(g)
        k = torch.randint(0, _SCHEDULE.T + 1, (B,), generator=g)  # (B,) DDPM indices
        return {"x_data": randn(g, B, D), "noise": randn(g, B, D), "alpha_bar": _SCHEDULE.alpha_bar(k)}

    def reference(x_data, noise, alpha_bar):
        ab = alpha_bar[:, None]  # (B, 1)
        return ab.sqrt() * x_data + (1 - ab).sqrt() * noise  # (B, D)

    mistakes = [
        Mistake("alpha_bar x_data + (1 - alpha_bar) noise (no square roots)",
                lambda x, n, ab: ab[:, None] * x + (1 - ab[:, None]) * n,
                "scale by the square roots: sqrt(alpha_bar) x_data + sqrt(1 - alpha_bar) noise (variances add up to 1)"),
        Mistake("the data and the noise swapped",
                lambda x, n, ab: ab[:, None].sqrt() * n + (1 - ab[:, None]).sqrt() * x,
                "alpha_bar is the share of the *data* that is kept: sqrt(alpha_bar) multiplies x_data"),
        Mistake("sqrt(alpha_bar) x_data + (1 - sqrt(alpha_bar)) noise",
                lambda x, n, ab: ab[:, None].sqrt() * x + (1 - ab[:, None].sqrt()) * n,
                "the noise scale is sqrt(1 - alpha_bar), so that the variance stays 1"),
    ]
    return check(fn, reference, make_inputs, name="forward_noising", mistakes=mistakes, hints=[BROADCAST_HINT],
                 strict=strict, time_limit_s=time_limit_s)


def check_ddim_step(fn: Callable, *, strict: bool | None = None,
                    time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check one deterministic DDIM step (eta = 0) from index k to an earlier index k' (lesson 01).

    The learner writes ``fn(x_noisy, eps, alpha_bar, alpha_bar_prev) -> x_prev`` with
    ``x_data_hat = (x_noisy - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)`` and
    ``x_prev = sqrt(alpha_bar_prev) x_data_hat + sqrt(1 - alpha_bar_prev) eps``; ``x_noisy`` and
    ``eps`` have shape ``(B, D)``, ``alpha_bar`` (at k) and ``alpha_bar_prev`` (at k' < k) shape ``(B,)``.
    """
    def make_inputs(g):
        B, D = batch_size(g), _dim(g)
        k = torch.randint(1, _SCHEDULE.T + 1, (B,), generator=g)  # (B,) in 1..T
        k_prev = (k - torch.randint(1, 50, (B,), generator=g)).clamp(min=0)  # (B,) earlier indices
        return {"x_noisy": randn(g, B, D), "eps": randn(g, B, D),
                "alpha_bar": _SCHEDULE.alpha_bar(k), "alpha_bar_prev": _SCHEDULE.alpha_bar(k_prev)}

    def data_hat(x, eps, ab):
        return (x - (1 - ab[:, None]).sqrt() * eps) / ab[:, None].sqrt()

    def reference(x_noisy, eps, alpha_bar, alpha_bar_prev):
        ab_prev = alpha_bar_prev[:, None]  # (B, 1)
        return ab_prev.sqrt() * data_hat(x_noisy, eps, alpha_bar) + (1 - ab_prev).sqrt() * eps

    mistakes = [
        Mistake("x_data_hat alone (the step does not re-noise)",
                lambda x, e, ab, abp: data_hat(x, e, ab),
                "re-noise the guess to level k': sqrt(alpha_bar_prev) x_data_hat + sqrt(1 - alpha_bar_prev) eps"),
        Mistake("the guess re-noised with alpha_bar (level k) instead of alpha_bar_prev",
                lambda x, e, ab, abp: ab[:, None].sqrt() * data_hat(x, e, ab) + (1 - ab[:, None]).sqrt() * e,
                "that only gives x_noisy back: re-noise with alpha_bar_prev, the level of the earlier step"),
        Mistake("the data estimate divided by alpha_bar instead of its square root",
                lambda x, e, ab, abp: abp[:, None].sqrt() * (x - (1 - ab[:, None]).sqrt() * e) / ab[:, None]
                + (1 - abp[:, None]).sqrt() * e,
                "x_data_hat = (x_noisy - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)"),
    ]
    return check(fn, reference, make_inputs, name="ddim_step", mistakes=mistakes, hints=[BROADCAST_HINT],
                 strict=strict, time_limit_s=time_limit_s)
