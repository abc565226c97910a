"""Appendix B's exercise checks: the correct solutions pass, no bad submission does, known mistakes are named."""

from __future__ import annotations

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lessonB import check_latent_cfm_loss, check_normalise_latents, check_sample_and_decode


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them ---


def normalise_latents(z, z_train):
    return (z - z_train.mean(0)) / z_train.std(0)


def normalise_latents_population_std(z, z_train):
    mean = z_train.mean(0)
    return (z - mean) / (z_train - mean).square().mean(0).sqrt()


def latent_cfm_loss(model, encoder, mean, std, x_1, x_0, t, y):
    with torch.no_grad():
        u_1 = (encoder(x_1) - mean) / std  # (B, *S)
    t_ = t.reshape(-1, *([1] * (u_1.dim() - 1)))  # (B, 1, ...)
    u_t = (1 - t_) * x_0 + t_ * u_1
    return (model(u_t, t, y) - (u_1 - x_0)).square().mean()


def latent_cfm_loss_detached(model, encoder, mean, std, x_1, x_0, t, y):
    u_1 = ((encoder(x_1) - mean) / std).detach()  # detaching instead of no_grad: also correct
    t_ = t.reshape(-1, *([1] * (u_1.dim() - 1)))
    u_t = (1 - t_) * x_0 + t_ * u_1
    return torch.nn.functional.mse_loss(model(u_t, t, y), u_1 - x_0)


def sample_and_decode(model, decoder, mean, std, y, u_0, w, steps):
    null, h = torch.full_like(y, model.null_class), 1.0 / steps

    def v(u, t):  # the guided velocity at one shared time t
        t = torch.full((u.shape[0],), t, dtype=u.dtype)
        v_c, v_u = model(u, t, y), model(u, t, null)
        return v_u + w * (v_c - v_u)

    u = u_0
    with torch.no_grad():
        for k in range(steps):
            u = u + h * v(u + 0.5 * h * v(u, k * h), (k + 0.5) * h)
        return decoder(u * std + mean).clamp(-1, 1)


CORRECT = [(check_normalise_latents, normalise_latents), (check_normalise_latents, normalise_latents_population_std),
           (check_latent_cfm_loss, latent_cfm_loss), (check_latent_cfm_loss, latent_cfm_loss_detached),
           (check_sample_and_decode, sample_and_decode)]
IDS = [fn.__name__ for _, fn in CORRECT]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_correct_solutions_pass_also_strictly(checker, fn):
    assert checker(fn).passed
    assert checker(fn, strict=True).passed


@pytest.mark.parametrize("checker, fn", CORRECT[::2], ids=IDS[::2])
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


def test_strict_raises_on_a_failure():
    with pytest.raises(AssertionError, match="FAILED"):
        check_normalise_latents(lambda z, zt: z, strict=True)


# --- exercise 1: the normalisation ---


def test_normalisation_mistakes_are_named():
    cases = [
        (lambda z, zt: (z - z.mean(0)) / z.std(0), "batch's own statistics"),
        (lambda z, zt: (z - zt.mean()) / zt.std(), "one mean and one standard deviation"),
        (lambda z, zt: z / zt.std(0), "scaled but not centred"),
        (lambda z, zt: z - zt.mean(0), "centred but not scaled"),
        (lambda z, zt: (z - zt.mean(0)) / zt.var(0), "divided by the variance"),
        (lambda z, zt: z * zt.std(0) + zt.mean(0), "the inverse map"),
    ]
    for fn, text in cases:
        result = check_normalise_latents(fn)
        assert not result.passed and text in result.message, (text, result.message)


def test_normalisation_check_varies_the_latent_shape():
    # an answer that only works for vector latents (it flattens and never reshapes back) fails on feature maps
    def flat_only(z, zt):
        zf, ztf = z.reshape(z.shape[0], -1), zt.reshape(zt.shape[0], -1)
        return (zf - ztf.mean(0)) / ztf.std(0)

    result = check_normalise_latents(flat_only)
    assert not result.passed and "shape" in result.message


# --- exercise 2: the latent loss with a frozen encoder ---


def test_gradient_into_the_encoder_is_caught():
    def with_grad(model, encoder, mean, std, x_1, x_0, t, y):
        u_1 = (encoder(x_1) - mean) / std  # no torch.no_grad(): the value is right, the gradient leaks
        t_ = t.reshape(-1, *([1] * (u_1.dim() - 1)))
        u_t = (1 - t_) * x_0 + t_ * u_1
        return (model(u_t, t, y) - (u_1 - x_0)).square().mean()

    result = check_latent_cfm_loss(with_grad)
    assert not result.passed and "frozen encoder" in result.message, result.message


def test_a_loss_without_a_graph_is_caught():
    def all_no_grad(*args):
        with torch.no_grad():
            return latent_cfm_loss(*args)

    result = check_latent_cfm_loss(all_no_grad)
    assert not result.passed and "requires_grad is False" in result.message, result.message


def test_latent_loss_mistakes_are_named():
    def variant(transform=None, swap=False, target=None, labels=True, summed=False):
        def fn(model, encoder, mean, std, x_1, x_0, t, y):
            with torch.no_grad():
                z = encoder(x_1)
            u_1 = transform(z, mean, std) if transform else (z - mean) / std
            t_ = t.reshape(-1, *([1] * (u_1.dim() - 1)))
            u_t = t_ * x_0 + (1 - t_) * u_1 if swap else (1 - t_) * x_0 + t_ * u_1
            tgt = target(u_1, x_0) if target else u_1 - x_0
            err = (model(u_t, t, y if labels else None) - tgt).square()
            return err.reshape(err.shape[0], -1).sum(1).mean() if summed else err.mean()
        return fn

    cases = [
        (variant(lambda z, m, s: z), "without its normalisation"),
        (variant(lambda z, m, s: (z - z.mean(0)) / z.std(0)), "batch's own statistics"),
        (variant(lambda z, m, s: z * s + m), "the inverse map"),
        (variant(target=lambda u, x: x - u), "the target reversed"),
        (variant(swap=True), "t and 1 - t swapped"),
        (variant(labels=False), "the labels left out"),
        (variant(summed=True), "summed over the latent's coordinates"),
    ]
    for fn, text in cases:
        result = check_latent_cfm_loss(fn)
        assert not result.passed and text in result.message, (text, result.message)


def test_latent_loss_check_refuses_changed_weights():
    def steps_the_optimiser(model, encoder, mean, std, x_1, x_0, t, y):
        loss = latent_cfm_loss(model, encoder, mean, std, x_1, x_0, t, y)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return loss

    result = check_latent_cfm_loss(steps_the_optimiser)
    assert not result.passed and "changed the weights" in result.message


# --- exercise 3: sample, then decode ---


def test_sampling_mistakes_are_named():
    def variant(taken=None, denorm=lambda u, m, s: u * s + m, clamp=True, guided=True, euler=False, half=0.5):
        def fn(model, decoder, mean, std, y, u_0, w, steps):
            null, h = torch.full_like(y, model.null_class), 1.0 / steps

            def v(u, t):
                t = torch.full((u.shape[0],), t, dtype=u.dtype)
                v_c, v_u = model(u, t, y), model(u, t, null)
                return v_u + w * (v_c - v_u) if guided else v_c

            u = u_0
            with torch.no_grad():
                for k in range(steps if taken is None else taken(steps)):
                    u = u + h * (v(u, k * h) if euler else v(u + 0.5 * h * v(u, k * h), (k + half) * h))
                x = decoder(denorm(u, mean, std))
            return x.clamp(-1, 1) if clamp else x
        return fn

    cases = [
        (variant(taken=lambda n: n - 1), "one step before the ODE ends"),
        (variant(taken=lambda n: 0), "decoded the starting noise"),
        (variant(denorm=lambda u, m, s: u), "without denormalising"),
        (variant(denorm=lambda u, m, s: (u - m) / s), "normalised instead of denormalised"),
        (variant(clamp=False), "no clamp"),
        (variant(guided=False), "no guidance"),
        (variant(euler=True), "Euler steps"),
        (variant(half=0.0), "second evaluation at t instead"),
    ]
    for fn, text in cases:
        result = check_sample_and_decode(fn)
        assert not result.passed and text in result.message, (text, result.message)
