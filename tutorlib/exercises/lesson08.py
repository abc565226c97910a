"""Exercise checks of lesson 08 (guidance): the CFG combination, the implicit classifier, another path.

The implicit-classifier check is graded against the truth, not against a formula: its inputs are the
exact conditional and unconditional velocities of a random labelled Gaussian mixture
(:class:`tutorlib.guidance.LabelledGMM`, a new mixture in every trial), and the reference is the
gradient of that mixture's exact noisy posterior ``log p_t(y | x)`` (autograd through Bayes' rule).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from tutorlib.exercises.core import (BROADCAST_HINT, DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size,
                                     check, rand, randn)
from tutorlib.guidance import LabelledGMM, classifier_log_prob_grad, score_velocity_coefficient
from tutorlib.paths import AffinePath, CondOTPath
from tutorlib.schedulers import CosineScheduler

__all__ = ["check_cosine_classifier_guidance", "check_guided_velocity", "check_implicit_classifier_grad"]


def check_guided_velocity(fn: Callable, *, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the classifier-free guidance combination (lesson 08).

    The learner writes ``fn(v_cond, v_uncond, w) -> v_uncond + w (v_cond - v_uncond)``, with
    velocities of shape ``(B, D)`` and a float guidance scale ``w`` (w = 1: the conditional field).
    """
    def make_inputs(g):
        B, D = batch_size(g), int(batch_size(g, 2, 4))
        return {"v_cond": randn(g, B, D), "v_uncond": randn(g, B, D), "w": round(0.5 + float(rand(g, 1)) * 5, 3)}

    mistakes = [
        Mistake("v_cond + w (v_cond - v_uncond)", lambda c, u, w: c + w * (c - u),
                "start from the unconditional velocity: v_uncond + w (v_cond - v_uncond), so that w = 1 is v_cond"),
        Mistake("the difference the wrong way round", lambda c, u, w: u + w * (u - c),
                "guidance pushes towards the class: v_uncond + w (v_cond - v_uncond)"),
        Mistake("the roles of v_cond and v_uncond swapped", lambda c, u, w: c + w * (u - c),
                "w = 0 must give the unconditional field v_uncond"),
        Mistake("w v_cond alone", lambda c, u, w: w * c, "combine both fields: v_uncond + w (v_cond - v_uncond)"),
    ]
    return check(fn, lambda c, u, w: u + w * (c - u), make_inputs, name="guided_velocity", mistakes=mistakes,
                 strict=strict, time_limit_s=time_limit_s)


# --- the implicit classifier of classifier-free guidance -------------------------------------------


_PATH = CondOTPath()


def _random_mixture(g: torch.Generator, K: int, D: int) -> LabelledGMM:
    """K classes of one or two components each in D dimensions, means and widths drawn from ``g``."""
    per_class = torch.randint(1, 3, (K,), generator=g)  # (K,) components of each class
    classes = torch.repeat_interleave(torch.arange(K), per_class)  # (M,)
    M = classes.shape[0]
    return LabelledGMM(means=2.0 * randn(g, M, D), stds=0.3 + 0.5 * rand(g, M), weights=0.2 + rand(g, M),
                       classes=classes)


def _implicit_inputs(g: torch.Generator) -> dict:
    """Exact v_cond, v_uncond of a random mixture at random points, times and labels (plus the truth)."""
    B, K, D = batch_size(g), int(torch.randint(2, 5, (1,), generator=g)), int(torch.randint(2, 4, (1,), generator=g))
    gmm = _random_mixture(g, K, D)
    x = 1.5 * randn(g, B, D)  # (B, D)
    t = 0.1 + 0.8 * rand(g, B)  # (B,) away from the ends, where b_t is 0 or infinite
    y = torch.randint(0, K, (B,), generator=g)  # (B,)
    truth = classifier_log_prob_grad(gmm.logits(_PATH), x, t, y)  # (B, D) grad_x log p_t(y | x)
    return {"v_cond": gmm.velocity(_PATH, x, t, y), "v_uncond": gmm.velocity(_PATH, x, t), "t": t,
            "_truth": truth}


def check_implicit_classifier_grad(fn: Callable, *, strict: bool | None = None,
                                   time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the implicit classifier of classifier-free guidance on the linear path (lesson 08).

    The learner writes ``fn(v_cond, v_uncond, t) -> grad_x log p_t(y | x)``: the gradient of the noisy
    posterior that a class-conditional model implies, from its conditional and unconditional
    velocities ``(B, D)`` at times ``t`` ``(B,)`` on the linear path ``x_t = t x_1 + (1 - t) x_0``.
    Graded against the truth: the velocities are the exact fields of a random labelled Gaussian
    mixture (new classes, components, dimension and batch in every trial), and the reference is the
    autograd gradient of that mixture's exact ``log p_t(y | x)``. (On the linear path it equals
    ``(v_cond - v_uncond) t / (1 - t)``.)
    """
    store: dict = {}

    def make_inputs(g):
        inputs = _implicit_inputs(g)
        store["truth"] = inputs.pop("_truth")
        return inputs

    def reference(v_cond, v_uncond, t):
        return store["truth"]

    def b(t):
        return ((1 - t) / t)[:, None]  # (B, 1) the score coefficient of the linear path

    mistakes = [
        Mistake("(v_cond - v_uncond) b_t: multiplied by b_t = (1 - t) / t instead of divided",
                lambda c, u, t: (c - u) * b(t),
                "the velocities differ by b_t times the gradient, v_cond - v_uncond = b_t grad log p_t(y | x): "
                "divide by b_t"),
        Mistake("the difference the wrong way round", lambda c, u, t: (u - c) / b(t),
                "the conditional field is the unconditional one plus the guidance term: use v_cond - v_uncond"),
        Mistake("v_cond - v_uncond itself (b_t forgotten)", lambda c, u, t: c - u,
                "the difference of the velocities is b_t grad log p_t(y | x), not the gradient itself"),
        Mistake("(v_cond - v_uncond) t: the factor sigma_t = 1 - t of b_t forgotten", lambda c, u, t: (c - u) * t[:, None],
                "b_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t; on the linear path that is (1 - t) / t"),
    ]
    return check(fn, reference, make_inputs, name="implicit_classifier_grad", atol=1e-8, rtol=1e-6,
                 mistakes=mistakes, hints=[BROADCAST_HINT], strict=strict, time_limit_s=time_limit_s)


# --- classifier guidance on another path -----------------------------------------------------------


_COSINE = AffinePath(CosineScheduler())


def check_cosine_classifier_guidance(fn: Callable, *, strict: bool | None = None,
                                     time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the classifier-guided velocity on the cosine path (lesson 08).

    The learner writes ``fn(v_uncond, grad_log_p, t, w) -> v`` for the path
    ``alpha_t = sin(pi t / 2)``, ``sigma_t = cos(pi t / 2)``: ``v_uncond + w b_t grad_log_p`` with
    this path's score coefficient ``b_t`` (the reference is
    :func:`tutorlib.guidance.score_velocity_coefficient` of ``AffinePath(CosineScheduler())``, which
    is ``(pi / 2) / tan(pi t / 2)``). Velocities and gradients are ``(B, D)``, ``t`` is ``(B,)``, ``w``
    a float; all are varied.
    """
    def make_inputs(g):
        B, D = batch_size(g), int(torch.randint(2, 4, (1,), generator=g))
        return {"v_uncond": randn(g, B, D), "grad_log_p": randn(g, B, D), "t": 0.05 + 0.9 * rand(g, B),
                "w": round(0.5 + 4 * float(rand(g, 1)), 3)}

    def reference(v_uncond, grad_log_p, t, w):
        return v_uncond + w * score_velocity_coefficient(_COSINE, t)[:, None] * grad_log_p

    def guided(b):
        return lambda v, gr, t, w: v + w * b(t)[:, None] * gr

    half_pi = 0.5 * math.pi
    mistakes = [
        Mistake("the linear path's coefficient (1 - t) / t", guided(lambda t: (1 - t) / t),
                "b_t depends on the path: work out sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t with "
                "alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)"),
        Mistake("cos / sin without the factor pi / 2", guided(lambda t: torch.cos(half_pi * t) / torch.sin(half_pi * t)),
                "the derivatives of sin(pi t / 2) and cos(pi t / 2) bring a factor pi / 2"),
        Mistake("tan instead of 1 / tan", guided(lambda t: half_pi * torch.tan(half_pi * t)),
                "alpha_t = sin(pi t / 2) is in the denominator: b_t grows without bound as t -> 0 (pure noise)"),
        Mistake("b_t without its first factor sigma_t", guided(lambda t: half_pi / torch.sin(half_pi * t)),
                "b_t = sigma_t (sigma_t d_alpha_t - alpha_t d_sigma_t) / alpha_t: keep the leading sigma_t"),
        Mistake("the guidance term with the wrong sign", guided(lambda t: -half_pi / torch.tan(half_pi * t)),
                "guidance climbs the classifier's log-probability: + w b_t grad log p_t(y | x), with b_t > 0"),
        Mistake("w forgotten", lambda v, gr, t, w: v + half_pi / torch.tan(half_pi * t)[:, None] * gr,
                "scale the guidance term by w"),
    ]
    hints = [BROADCAST_HINT,
             Hint("value", "on this path alpha_t^2 + sigma_t^2 = 1, which simplifies sigma_t d_alpha_t - alpha_t d_sigma_t")]
    return check(fn, reference, make_inputs, name="cosine_classifier_guidance", atol=1e-9, rtol=1e-7,
                 mistakes=mistakes, hints=hints, strict=strict, time_limit_s=time_limit_s)
