"""Lesson 08's exercise checks: each passes its solution, names the known mistakes, and passes no bad submission."""

from __future__ import annotations

import math

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lesson08 import (check_cosine_classifier_guidance, check_guided_velocity,
                                         check_implicit_classifier_grad)


# --- the solutions, as the lesson's solution cells write them ---


def guided_velocity(v_cond, v_uncond, w):
    return v_uncond + w * (v_cond - v_uncond)


def implicit_classifier_grad(v_cond, v_uncond, t):
    b = ((1 - t) / t)[:, None]  # (B, 1) the linear path's score coefficient
    return (v_cond - v_uncond) / b


def cosine_classifier_guidance(v_uncond, grad_log_p, t, w):
    angle = 0.5 * math.pi * t  # (B,)
    b = 0.5 * math.pi * torch.cos(angle) / torch.sin(angle)  # (B,) sigma (sigma d_alpha - alpha d_sigma) / alpha
    return v_uncond + w * b[:, None] * grad_log_p


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


CASES = [(check_guided_velocity, guided_velocity), (check_implicit_classifier_grad, implicit_classifier_grad),
         (check_cosine_classifier_guidance, cosine_classifier_guidance)]


@pytest.mark.parametrize("checker, solution", CASES, ids=[c.__name__ for c, _ in CASES])
def test_the_solution_passes_strictly(checker, solution):
    assert checker(solution, strict=True).passed


@pytest.mark.parametrize("checker, solution", CASES, ids=[c.__name__ for c, _ in CASES])
def test_no_bad_submission_passes(checker, solution):
    assert_no_bad_submission_passes(checker, solution)


def _fails_naming(result, *words):
    assert not result.passed
    for w in words:
        assert w in result.message, (w, result.message)


def test_guided_velocity_names_its_mistakes():
    _fails_naming(check_guided_velocity(lambda c, u, w: c + w * (c - u)), "looks like v_cond + w (v_cond - v_uncond)")
    _fails_naming(check_guided_velocity(lambda c, u, w: u + w * (u - c)), "wrong way round")
    _fails_naming(check_guided_velocity(lambda c, u, w: c + w * (u - c)), "swapped")
    _fails_naming(check_guided_velocity(lambda c, u, w: w * c), "w v_cond alone")


def test_implicit_classifier_grad_names_its_mistakes():
    b = lambda t: ((1 - t) / t)[:, None]  # noqa: E731
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: (c - u) * b(t)), "multiplied by b_t")
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: (u - c) / b(t)), "wrong way round")
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: c - u), "b_t forgotten")
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: (c - u) * t[:, None]), "sigma_t = 1 - t")
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: (c - u) / ((1 - t) / t)), "must match the size",
                  "hint: per-sample values")
    # another path's coefficient (cosine): a wrong value with the inputs shown
    cos_b = lambda t: (0.5 * math.pi / torch.tan(0.5 * math.pi * t))[:, None]  # noqa: E731
    _fails_naming(check_implicit_classifier_grad(lambda c, u, t: (c - u) / cos_b(t)), "wrong value", "the inputs there")


def test_implicit_classifier_is_graded_against_the_exact_posterior():
    """The reference is autograd through the mixture's exact log p_t(y | x), and it equals the formula."""
    from tutorlib.exercises.lesson08 import _implicit_inputs

    inputs = _implicit_inputs(torch.Generator().manual_seed(3))
    truth = inputs.pop("_truth")
    torch.testing.assert_close(implicit_classifier_grad(**inputs), truth, rtol=1e-7, atol=1e-9)
    assert truth.abs().max() > 0.1  # the posterior is not flat there: a zero answer cannot pass


def test_cosine_classifier_guidance_names_its_mistakes():
    h = 0.5 * math.pi

    def guided(b):
        return lambda v, g, t, w: v + w * b(t)[:, None] * g

    _fails_naming(check_cosine_classifier_guidance(guided(lambda t: (1 - t) / t)), "linear path")
    _fails_naming(check_cosine_classifier_guidance(guided(lambda t: torch.cos(h * t) / torch.sin(h * t))), "pi / 2")
    _fails_naming(check_cosine_classifier_guidance(guided(lambda t: h * torch.tan(h * t))), "tan instead")
    _fails_naming(check_cosine_classifier_guidance(guided(lambda t: h / torch.sin(h * t))), "first factor sigma_t")
    _fails_naming(check_cosine_classifier_guidance(guided(lambda t: -h / torch.tan(h * t))), "wrong sign")
    _fails_naming(check_cosine_classifier_guidance(lambda v, g, t, w: v + (h / torch.tan(h * t))[:, None] * g),
                  "w forgotten")
    _fails_naming(check_cosine_classifier_guidance(lambda v, g, t, w: v + w * h / torch.tan(h * t) * g),
                  "hint: per-sample values")
