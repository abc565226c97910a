"""Lesson 10's exercise checks: the correct solutions pass, no bad submission does, known mistakes are named."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lesson10 import check_linear_simplex_posterior, check_masked_bound, check_uniform_posterior


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- the solutions, as a learner would write them -----------------------------------------------------


def uniform_posterior(q, x_t, kappa):
    K = q.shape[1]
    lik = kappa[:, None, None] * F.one_hot(x_t, K).to(q.dtype) + (1 - kappa[:, None, None]) / K  # (B, D, K)
    w = q[None] * lik
    return w / w.sum(-1, keepdim=True)


def masked_bound(logits, x_t, x_1, t, n):
    K = logits.shape[-1]
    nll = -torch.log_softmax(logits, -1).gather(-1, x_1[..., None]).squeeze(-1)  # (B, L)
    return n * t ** (n - 1) / (1 - t ** n) * (nll * (x_t == K)).sum(1)


def linear_simplex_posterior(q, x, t):
    w = q[None] * (x >= t[:, None]).to(x.dtype)
    return w / w.sum(-1, keepdim=True)


CHECKS = [(check_uniform_posterior, uniform_posterior), (check_masked_bound, masked_bound),
          (check_linear_simplex_posterior, linear_simplex_posterior)]


@pytest.mark.parametrize("checker, solution", CHECKS)
def test_the_solution_passes_strictly(checker, solution):
    assert checker(solution, strict=True).passed


@pytest.mark.parametrize("checker, solution", CHECKS)
def test_no_bad_submission_passes(checker, solution):
    assert_no_bad_submission_passes(checker, solution)


# --- known mistakes are named -------------------------------------------------------------------------------


def _named(result, words):
    assert not result.passed
    assert all(w in result.message for w in words), result.message


def test_uniform_posterior_mistakes_are_named():
    def no_prior(q, x_t, kappa):
        K = q.shape[1]
        w = kappa[:, None, None] * F.one_hot(x_t, K).to(q.dtype) + (1 - kappa[:, None, None]) / K
        return (w / w.sum(-1, keepdim=True)).expand(-1, -1, -1).clone()

    def delta(q, x_t, kappa):
        return F.one_hot(x_t, q.shape[1]).to(q.dtype)

    def no_one_over_k(q, x_t, kappa):
        w = q[None] * (kappa[:, None, None] * F.one_hot(x_t, q.shape[1]).to(q.dtype) + (1 - kappa[:, None, None]))
        return w / w.sum(-1, keepdim=True)

    def unnormalised(q, x_t, kappa):
        K = q.shape[1]
        return q[None] * (kappa[:, None, None] * F.one_hot(x_t, K).to(q.dtype) + (1 - kappa[:, None, None]) / K)

    _named(check_uniform_posterior(no_prior), ["prior q left out"])
    _named(check_uniform_posterior(delta), ["a delta at x_t"])
    _named(check_uniform_posterior(no_one_over_k), ["without the 1 / K"])
    _named(check_uniform_posterior(unnormalised), ["not normalised"])


def test_masked_bound_mistakes_are_named():
    def ce(logits, x_1):
        return -torch.log_softmax(logits, -1).gather(-1, x_1[..., None]).squeeze(-1)

    def no_weight(logits, x_t, x_1, t, n):
        return (ce(logits, x_1) * (x_t == logits.shape[-1])).sum(1)

    def linear_weight(logits, x_t, x_1, t, n):
        return no_weight(logits, x_t, x_1, t, n) / (1 - t)

    def every_token(logits, x_t, x_1, t, n):
        return n * t ** (n - 1) / (1 - t ** n) * ce(logits, x_1).sum(1)

    def mean(logits, x_t, x_1, t, n):
        m = (x_t == logits.shape[-1])
        return n * t ** (n - 1) / (1 - t ** n) * (ce(logits, x_1) * m).sum(1) / m.sum(1).clamp_min(1)

    _named(check_masked_bound(no_weight), ["no weight"])
    _named(check_masked_bound(linear_weight), ["1 / (1 - t)", "t^n"])
    _named(check_masked_bound(every_token), ["every token counted"])
    _named(check_masked_bound(mean), ["a mean over the masked tokens"])


def test_linear_simplex_posterior_mistakes_are_named():
    def one_minus_t(q, x, t):
        w = q[None] * (x >= 1 - t[:, None]).to(x.dtype)
        return w / w.sum(-1, keepdim=True).clamp_min(1e-300)

    def dirichlet(q, x, t):
        w = q[None] * x ** t[:, None]
        return w / w.sum(-1, keepdim=True)

    def no_prior(q, x, t):
        w = (x >= t[:, None]).to(x.dtype)
        return w / w.sum(-1, keepdim=True)

    _named(check_linear_simplex_posterior(one_minus_t), ["threshold 1 - t"])
    _named(check_linear_simplex_posterior(dirichlet), ["Dirichlet path's posterior"])
    _named(check_linear_simplex_posterior(no_prior), ["prior q left out"])


def test_the_checks_vary_what_a_hard_coded_answer_would_fix():
    """A solution that hard-codes K = 4, n = 2 or D = 2 fails."""
    def fixed_k(q, x_t, kappa):
        w = q[None] * (kappa[:, None, None] * F.one_hot(x_t, q.shape[1]).to(q.dtype) + (1 - kappa[:, None, None]) / 4)
        return w / w.sum(-1, keepdim=True)

    def fixed_n(logits, x_t, x_1, t, n):
        return masked_bound(logits, x_t, x_1, t, 2.0)

    assert not check_uniform_posterior(fixed_k).passed
    assert not check_masked_bound(fixed_n).passed


# --- regressions of the audit ---------------------------------------------------------------------------


def test_more_uniform_posterior_mistakes_are_named():
    def mixture(q, x_t, kappa):
        k = kappa[:, None, None]
        return k * F.one_hot(x_t, q.shape[1]).to(q.dtype) + (1 - k) * q[None]

    def over_tokens(q, x_t, kappa):
        w = q[None] * (kappa[:, None, None] * F.one_hot(x_t, q.shape[1]) + (1 - kappa[:, None, None]) / q.shape[1])
        return w / w.sum(1, keepdim=True)

    def first_law(q, x_t, kappa):
        return uniform_posterior(q[:1].expand_as(q), x_t, kappa)

    _named(check_uniform_posterior(mixture), ["a mixture of the two cases"])
    _named(check_uniform_posterior(over_tokens), ["wrong axis"])
    _named(check_uniform_posterior(first_law), ["first token"])
    _named(check_uniform_posterior(lambda q, x_t, kappa: uniform_posterior(q, x_t, kappa[:, None])),
           ["kappa[:, None, None]"])


def test_the_normalisation_hint_fires_only_for_rows_that_do_not_sum_to_one():
    mixture = check_uniform_posterior(lambda q, x, k: k[:, None, None] * F.one_hot(x, q.shape[1]).to(q.dtype)
                                      + (1 - k[:, None, None]) * q[None])  # sums to one, yet wrong
    assert not mixture.passed and "sum to one" not in mixture.message
    logs = check_uniform_posterior(lambda q, x, k: uniform_posterior(q, x, k).log())
    assert not logs.passed and "sum to one" in logs.message
    dirichlet = check_linear_simplex_posterior(
        lambda q, x, t: (lambda w: w / w.sum(-1, keepdim=True))(q * x ** t[:, None]))
    assert not dirichlet.passed and "sum to one" not in dirichlet.message
    unnormalised = check_linear_simplex_posterior(lambda q, x, t: q * (x >= t[:, None]))
    assert not unnormalised.passed and "sum to one" in unnormalised.message


def test_more_masked_bound_mistakes_are_named_and_errors_hinted():
    def ce(logits, x_1):
        return -torch.log_softmax(logits, -1).gather(-1, x_1[..., None]).squeeze(-1)

    def weighted(w, mask=lambda x_t, K: x_t == K):
        return lambda lo, x_t, x_1, t, n: w(t, n) * (ce(lo, x_1) * mask(x_t, lo.shape[-1])).sum(1)

    _named(check_masked_bound(weighted(lambda t, n: n * t ** (n - 1) / (1 - t))), ["denominator of kappa_t = t"])
    _named(check_masked_bound(weighted(lambda t, n: 1 / (1 - t ** n))), ["kappa'_t left out"])
    _named(check_masked_bound(weighted(lambda t, n: n / t)), ["kappa'_t / kappa_t"])
    _named(check_masked_bound(weighted(lambda t, n: n * t ** (n - 1) / (1 - t ** n), lambda x_t, K: x_t != K)),
           ["revealed tokens"])
    _named(check_masked_bound(lambda *a: -masked_bound(*a)), ["the sign"])
    _named(check_masked_bound(lambda lo, x_t, x_1, t, n: masked_bound(lo, x_t, x_1, t, n) / x_t.shape[1]),
           ["L positions"])
    unreshaped = lambda lo, x_t, x_1, t, n: (n * t ** (n - 1) / (1 - t ** n) * ce(lo, x_1)  # noqa: E731
                                             * (x_t == lo.shape[-1])).sum(1)
    _named(check_masked_bound(unreshaped), ["hint", "weight[:, None]"])
    _named(check_masked_bound(lambda lo, x_t, x_1, t, n: masked_bound(lo, x_t, x_t, t, n)), ["hint", "mask value K"])


def test_linear_simplex_posterior_hints_an_unreshaped_t():
    _named(check_linear_simplex_posterior(lambda q, x, t: (lambda w: w / w.sum(-1, keepdim=True))(q * (x >= t))),
           ["hint", "t[:, None]"])


def test_lesson_specific_bad_submissions_never_pass():
    extra = [("q alone", lambda q, x, t: q[None].expand_as(x).clone(), None),
             ("argmax", lambda q, x, t: F.one_hot(x.argmax(-1), x.shape[1]).to(x.dtype), None),
             ("x <= t", lambda q, x, t: (lambda w: w / w.sum(-1, keepdim=True).clamp_min(1e-300))(
                 q * (x <= t[:, None])), None)]
    assert_no_bad_submission_passes(check_linear_simplex_posterior, linear_simplex_posterior, extra=extra)
