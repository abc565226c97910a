"""Exercise checks of lesson 10 (discrete flow matching): a posterior, an evidence bound, a simplex posterior."""

from __future__ import annotations

from typing import Callable

import torch

from tutorlib.discrete import MixturePath, tabular_posterior
from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size, check, finish,
                                     learner_name, rand, randn)
from tutorlib.schedulers import CondOTScheduler, PolynomialScheduler
from tutorlib.simplex import LinearSimplexPath, sample_dirichlet

__all__ = ["check_linear_simplex_posterior", "check_masked_bound", "check_uniform_posterior"]

_NORMALISE_HINT = "a posterior is a probability vector: each row (..., K) must sum to one"


def _check_posterior(fn: Callable, reference: Callable, make_inputs: Callable, *, name: str, mistakes: list[Mistake],
                     hints: list[Hint], strict: bool | None, time_limit_s: float | None) -> CheckResult:
    """:func:`check`, adding the normalisation hint only when a wrong value's rows do not sum to one."""
    seen: list = []

    def recorded(*args):
        out = fn(*args)
        seen[:] = [out]
        return out

    recorded.__name__ = learner_name(fn, name)
    result = check(recorded, reference, make_inputs, name=name, mistakes=mistakes, hints=hints, strict=False,
                   time_limit_s=time_limit_s, show=False)
    if not result.passed and result.kind == "value" and seen and isinstance(seen[0], torch.Tensor):
        sums = seen[0].detach().double().sum(-1)
        if not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-6)):
            result.message += f"\n  hint: {_NORMALISE_HINT}"
    return finish(result, strict)


def _int(g: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=g))


# --- the posterior of independent tokens under the uniform source ------------------------------------


def _uniform_inputs(g: torch.Generator) -> dict:
    B, D, K = batch_size(g), _int(g, 1, 3), _int(g, 3, 6)
    q = torch.softmax(1.5 * randn(g, D, K), -1)  # (D, K) one law per token
    return {"q": q, "x_t": torch.randint(K, (B, D), generator=g), "kappa": 0.05 + 0.9 * rand(g, B)}


def _uniform_reference(q, x_t, kappa):
    D, K = q.shape
    table = q[0]
    for i in range(1, D):  # the product law of D independent tokens, (K,) * D
        table = table[..., None] * q[i]
    return tabular_posterior(table, MixturePath(CondOTScheduler(), "uniform", K), x_t, kappa)  # kappa_t = t


def _uniform_mistakes() -> list[Mistake]:
    def post(q, x_t, hit_weight, rest, prior=True, normalise=True):
        hit = torch.nn.functional.one_hot(x_t, q.shape[1]).to(q.dtype)  # (B, D, K)
        w = (q[None] if prior else 1.0) * (hit_weight[:, None, None] * hit + rest[:, None, None])
        return w / w.sum(-1, keepdim=True) if normalise else w

    return [
        Mistake("the prior q left out", lambda q, x, k: post(q, x, k, (1 - k) / q.shape[1], prior=False),
                "Bayes' rule multiplies the likelihood by the prior: weight each category by q as well"),
        Mistake("a delta at x_t (the source's share of the likelihood left out)",
                lambda q, x, k: post(q, x, k, 0 * k),
                "x_t^i may be the source's uniform draw, not the data: every category keeps a likelihood "
                "(1 - kappa) / K from it"),
        Mistake("the source's share without the 1 / K", lambda q, x, k: post(q, x, k, 1 - k),
                "the uniform source puts probability (1 - kappa) on x_0^i, spread over K values: (1 - kappa) / K each"),
        Mistake("kappa and 1 - kappa swapped", lambda q, x, k: post(q, x, 1 - k, k / q.shape[1]),
                "kappa_t is the probability that a token already shows the data: it multiplies [k = x_t^i]"),
        Mistake("not normalised", lambda q, x, k: post(q, x, k, (1 - k) / q.shape[1], normalise=False),
                "divide by the sum over the K categories"),
        Mistake("kappa [k = x_t] + (1 - kappa) q, a mixture of the two cases with fixed weights",
                lambda q, x, k: k[:, None, None] * torch.nn.functional.one_hot(x, q.shape[1]).to(q.dtype)
                + (1 - k[:, None, None]) * q[None],
                "which case happened is uncertain, and how likely each is depends on x_t: apply Bayes' rule, "
                "q_k (kappa [k = x_t^i] + (1 - kappa) / K), then normalise"),
        Mistake("normalised over the wrong axis", lambda q, x, k: (lambda w: w / w.sum(1, keepdim=True))(
                post(q, x, k, (1 - k) / q.shape[1], normalise=False)),
                "each token's posterior is a law over its K values: divide by the sum over the last axis, "
                "w / w.sum(-1, keepdim=True)"),
        Mistake("the law of the first token used for every token", lambda q, x, k: post(q[:1].expand_as(q), x, k,
                                                                                         (1 - k) / q.shape[1]),
                "token i has its own prior q[i]: broadcast q (D, K) as q[None] against (B, D, K)"),
    ]


def check_uniform_posterior(fn: Callable, *, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the posterior of independent tokens on the uniform-source mixture path (lesson 10).

    The learner writes ``fn(q, x_t, kappa) -> (B, D, K)``: ``p(x_1^i = k | x_t)`` when token ``i`` of the
    data is drawn from ``q[i]`` (``q`` ``(D, K)``, tokens independent), ``x_t`` int64 ``(B, D)`` is a draw
    of the mixture path with the uniform source, and ``kappa`` ``(B,)`` is each sample's ``kappa_t``.
    The reference is :func:`tutorlib.discrete.tabular_posterior` on the product law; the check varies
    ``B``, ``D`` (1 to 3), ``K`` (3 to 6) and ``kappa``.
    """
    hints = [Hint("exception", "kappa has shape (B,): reshape it, kappa[:, None, None], before it meets (B, D, K) "
                               "tensors", match="must match the size"),
             Hint("shape", "kappa has shape (B,): reshape it, kappa[:, None, None], before it meets (B, D, K) tensors",
                  match="unintended broadcast")]
    return _check_posterior(fn, _uniform_reference, _uniform_inputs, name="uniform_posterior",
                            mistakes=_uniform_mistakes(), hints=hints, strict=strict, time_limit_s=time_limit_s)


# --- the masked-source bound for another schedule ----------------------------------------------------


def _bound_inputs(g: torch.Generator) -> dict:
    B, L, K = batch_size(g), _int(g, 3, 8), _int(g, 3, 7)
    x_1 = torch.randint(K, (B, L), generator=g)
    masked = rand(g, B, L) < 0.5
    masked[0] = True  # a row with every token masked
    masked[1] = False  # and one with none
    return {"logits": 2 * randn(g, B, L, K), "x_t": torch.where(masked, torch.full_like(x_1, K), x_1), "x_1": x_1,
            "t": 0.05 + 0.9 * rand(g, B), "n": round(1.0 + 2.0 * float(rand(g, 1)), 3)}


def _ce(logits, x_1):
    return -torch.log_softmax(logits, -1).gather(-1, x_1[..., None]).squeeze(-1)  # (B, L)


def _bound_reference(logits, x_t, x_1, t, n):
    K = logits.shape[-1]
    coef = MixturePath(PolynomialScheduler(n), "mask", K).rate_coefficient(t)  # kappa'_t / (1 - kappa_t)
    return coef * (_ce(logits, x_1) * (x_t == K)).sum(1)


def _bound_mistakes() -> list[Mistake]:
    def masked(logits, x_t, x_1):
        return (_ce(logits, x_1) * (x_t == logits.shape[-1])).sum(1)

    return [
        Mistake("no weight (the training loss of the masked tokens)", lambda lo, xt, x1, t, n: masked(lo, xt, x1),
                "the bound weights each time by the jump rate kappa'_t / (1 - kappa_t)"),
        Mistake("the weight of kappa_t = t, 1 / (1 - t)", lambda lo, xt, x1, t, n: masked(lo, xt, x1) / (1 - t),
                "the schedule here is kappa_t = t^n: differentiate it for kappa'_t, and use 1 - t^n below"),
        Mistake("the weight kappa'_t alone", lambda lo, xt, x1, t, n: n * t ** (n - 1) * masked(lo, xt, x1),
                "divide by 1 - kappa_t: the rate at which a masked token is revealed"),
        Mistake("every token counted, masked or not",
                lambda lo, xt, x1, t, n: _bound_reference(lo, torch.full_like(xt, lo.shape[-1]), x1, t, n),
                "a revealed token is already x_1: it costs nothing, sum over the masked tokens only"),
        Mistake("the weight kappa'_t / (1 - t), the denominator of kappa_t = t",
                lambda lo, xt, x1, t, n: n * t ** (n - 1) * masked(lo, xt, x1) / (1 - t),
                "the denominator is 1 - kappa_t, the probability that a token is still masked: 1 - t^n"),
        Mistake("the weight 1 / (1 - kappa_t) (kappa'_t left out)",
                lambda lo, xt, x1, t, n: masked(lo, xt, x1) / (1 - t ** n),
                "for kappa_t = t the derivative is 1 and hides; here multiply by kappa'_t = n t^(n - 1)"),
        Mistake("the weight kappa'_t / kappa_t", lambda lo, xt, x1, t, n: n / t * masked(lo, xt, x1),
                "the rate at which a masked token is revealed divides by the masked share, 1 - kappa_t"),
        Mistake("the revealed tokens counted instead of the masked ones",
                lambda lo, xt, x1, t, n: _bound_reference(lo, torch.where(xt == lo.shape[-1], x1, lo.shape[-1]), x1,
                                                          t, n),
                "the mask is the value K: the costly positions are those with x_t == K"),
        Mistake("log p instead of -log p (the sign)", lambda lo, xt, x1, t, n: -_bound_reference(lo, xt, x1, t, n),
                "the bound is on -log p(x_1): each masked token costs its cross-entropy "
                "-log softmax(logits)[x_1] >= 0"),
        Mistake("a mean over the masked tokens instead of a sum",
                lambda lo, xt, x1, t, n: _bound_reference(lo, xt, x1, t, n)
                / (xt == lo.shape[-1]).sum(1).clamp_min(1),
                "the bound is on -log p of the whole sequence: add the masked tokens' terms up"),
        Mistake("a mean over the L positions instead of a sum",
                lambda lo, xt, x1, t, n: _bound_reference(lo, xt, x1, t, n) / xt.shape[1],
                "the bound is on -log p of the whole sequence: add the masked tokens' terms up"),
    ]


def check_masked_bound(fn: Callable, *, strict: bool | None = None,
                       time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the masked-source evidence bound's integrand for the schedule ``kappa_t = t^n`` (lesson 10).

    The learner writes ``fn(logits, x_t, x_1, t, n) -> (B,)``: for a model's logits ``(B, L, K)`` at the
    tokens ``x_t`` ``(B, L)`` (the mask is the value ``K``), data ``x_1`` ``(B, L)`` and times ``t`` ``(B,)``,
    the quantity whose mean over ``t ~ U[0, 1]`` and ``x_t`` bounds ``-log p(x_1)`` in nats. The reference
    is ``kappa'_t / (1 - kappa_t)`` (``MixturePath(PolynomialScheduler(n), "mask", K).rate_coefficient``)
    times the cross-entropy summed over the masked tokens; the check varies ``n``, ``K``, ``L``, ``B``.
    """
    return check(fn, _bound_reference, _bound_inputs, name="masked_bound", mistakes=_bound_mistakes(),
                 hints=[Hint("shape", "the bound is one number per sequence: sum over its L tokens", match=r"got \("),
                        Hint("exception", "t has shape (B,) and the per-token costs (B, L): apply the weight after "
                                          "the sum over L, or reshape it, weight[:, None]",
                             match="must match the size"),
                        Hint("exception", "the cross-entropy is taken at the data x_1 (values 0 to K - 1); x_t holds "
                                          "the mask value K, which is no category of the logits",
                             match="out of bounds")],
                 strict=strict, time_limit_s=time_limit_s)


# --- the linear path's posterior on the simplex --------------------------------------------------------


def _simplex_inputs(g: torch.Generator) -> dict:
    B, K = batch_size(g), _int(g, 3, 8)
    q = sample_dirichlet(torch.ones(K, dtype=torch.float64), generator=g)  # (K,)
    t = 0.05 + 0.9 * rand(g, B)  # (B,)
    x_1 = torch.multinomial(q, B, replacement=True, generator=g)  # (B,)
    x = LinearSimplexPath(K).sample(x_1, t, generator=g)  # (B, K): points the path reaches at t
    return {"q": q, "x": x, "t": t}


def _simplex_reference(q, x, t):
    return LinearSimplexPath(q.shape[0]).posterior_of(q, x, t)


def _simplex_mistakes() -> list[Mistake]:
    def norm(w):
        return w / w.sum(-1, keepdim=True).clamp_min(1e-300)

    return [
        Mistake("the threshold 1 - t", lambda q, x, t: norm(q * (x >= 1 - t[:, None])),
                "x_t = (1 - t) x_0 + t e_k has x_k >= t (and x_0 >= 0): the threshold is t"),
        Mistake("the prior q left out", lambda q, x, t: norm((x >= t[:, None]).to(x.dtype)),
                "every feasible category keeps its prior weight q_k"),
        Mistake("the Dirichlet path's posterior q_k x_k^t", lambda q, x, t: norm(q * x ** t[:, None]),
                "on the linear path x_t given e_k is uniform on {x : x_k >= t}: the likelihood is an indicator"),
        Mistake("the point x itself", lambda q, x, t: x.clone(), "x is where the sample is, not its posterior"),
        Mistake("not normalised", lambda q, x, t: q * (x >= t[:, None]), "divide by the sum over the K categories"),
    ]


def check_linear_simplex_posterior(fn: Callable, *, strict: bool | None = None,
                                   time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the exact posterior of the linear simplex path (lesson 10).

    The learner writes ``fn(q, x, t) -> (B, K)``: ``p(x_1 = e_k | x_t = x)`` for categories drawn from
    ``q`` ``(K,)``, points ``x`` ``(B, K)`` of the path ``x_t = (1 - t) x_0 + t e_k`` (``x_0`` uniform on the
    simplex) and times ``t`` ``(B,)``. The reference is :meth:`tutorlib.simplex.LinearSimplexPath.posterior_of`;
    the check varies ``K`` (3 to 8), ``q`` and ``t``.
    """
    hints = [Hint("exception", "t has shape (B,): compare x (B, K) with t[:, None]", match="must match the size")]
    return _check_posterior(fn, _simplex_reference, _simplex_inputs, name="linear_simplex_posterior",
                            mistakes=_simplex_mistakes(), hints=hints, strict=strict, time_limit_s=time_limit_s)
