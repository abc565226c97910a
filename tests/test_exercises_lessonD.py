"""Appendix D's exercise checks: the correct solutions pass strictly, no bad submission passes, and the
known mistakes are named with their fix."""

from __future__ import annotations

import math

import pytest
import torch

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib import coupling_flows as cf
from tutorlib.exercises.lessonD import check_additive_coupling, check_coupling_inverse, check_pixel_bits_per_dim


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them -------------------------------------------------


def additive_coupling(x, mask, net):
    y = mask * x + (1 - mask) * (x + net(mask * x))
    return y, x.new_zeros(x.shape[0])


def coupling_inverse(y, mask, net, scale):
    s_raw, t = net(mask * y).chunk(2, dim=1)
    s = (1 - mask) * scale * torch.tanh(s_raw)
    return mask * y + (1 - mask) * (y - t) * torch.exp(-s)


def pixel_bits_per_dim(log_p_y, logit_logdet, D):
    return -(log_p_y + logit_logdet) / (D * math.log(2)) + 8


CHECKS = [(check_additive_coupling, additive_coupling), (check_coupling_inverse, coupling_inverse),
          (check_pixel_bits_per_dim, pixel_bits_per_dim)]
IDS = [c.__name__ for c, _ in CHECKS]


@pytest.mark.parametrize("checker, fn", CHECKS, ids=IDS)
def test_correct_solutions_pass_also_strictly(checker, fn, capsys):
    assert checker(fn).passed
    assert checker(fn, strict=True).passed
    assert "PASSED" in capsys.readouterr().out


@pytest.mark.parametrize("checker, fn", CHECKS, ids=IDS)
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


def test_strict_raises_on_a_failure():
    with pytest.raises(AssertionError, match="FAILED"):
        check_pixel_bits_per_dim(lambda lp, ld, D: -(lp + ld) / (D * math.log(2)), strict=True)


# --- the references are the library's maths -------------------------------------------------------------


def test_the_inverse_exercise_inverts_the_library_coupling():
    torch.manual_seed(0)
    mask = torch.tensor([1.0, 0.0, 0.0, 1.0])
    layer = cf.AffineCoupling(mask, cf.ConditionerMLP(4, 8, 2)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(6, 4, dtype=torch.float64)
    y, _ = layer(x)
    torch.testing.assert_close(coupling_inverse(y, mask.double(), layer.conditioner, layer.scale.detach()), x)


def test_the_bits_per_dim_exercise_is_the_library_conversion():
    flow = cf.CouplingFlow([cf.ActNorm(3)], 3).double().eval()  # the identity on logit space
    x = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y, logdet = cf.logit_transform(x)
    torch.testing.assert_close(pixel_bits_per_dim(flow.log_prob(y), logdet, 3), cf.pixel_bits_per_dim(flow, x))


# --- the named mistakes ----------------------------------------------------------------------------------


def test_additive_coupling_mistakes_are_named():
    cases = [
        (lambda x, m, net: (x + (1 - m) * net(x), x.new_zeros(x.shape[0])), "shift computed from the whole x"),
        (lambda x, m, net: (x + net(m * x), x.new_zeros(x.shape[0])), "added to every coordinate"),
        (lambda x, m, net: (x + m * net((1 - m) * x), x.new_zeros(x.shape[0])), "swapped"),
        (lambda x, m, net: (additive_coupling(x, m, net)[0], ((1 - m) * net(m * x)).sum(1)), "sums the shifts"),
    ]
    for fn, text in cases:
        result = check_additive_coupling(fn)
        assert not result.passed and text in result.message, (text, result.message)
    summed = check_additive_coupling(lambda x, m, net: (additive_coupling(x, m, net)[0], x.new_zeros(())))
    assert not summed.passed and "one number per sample" in summed.message, summed.message
    single = check_additive_coupling(lambda x, m, net: additive_coupling(x, m, net)[0])
    assert not single.passed and "tuple of 2" in single.message


def test_coupling_inverse_mistakes_are_named():
    def params(y, m, net, scale):
        s_raw, t = net(m * y).chunk(2, dim=1)
        return (1 - m) * scale * torch.tanh(s_raw), (1 - m) * t

    def sign_flip(y, m, net, scale):
        s, t = params(y, m, net, scale)
        return (y - t) * torch.exp(s)

    def order(y, m, net, scale):
        s, t = params(y, m, net, scale)
        return y * torch.exp(-s) - t

    def unmasked(y, m, net, scale):
        s_raw, t = net(m * y).chunk(2, dim=1)
        return (y - t) * torch.exp(-scale * torch.tanh(s_raw))

    def whole_y(y, m, net, scale):
        s_raw, t = net(y).chunk(2, dim=1)
        s, t = (1 - m) * scale * torch.tanh(s_raw), (1 - m) * t
        return (y - t) * torch.exp(-s)

    cases = [(sign_flip, "the scale not undone"), (order, "removed after the scaling"),
             (unmasked, "kept coordinates too"), (whole_y, "evaluated on the whole y")]
    for fn, text in cases:
        result = check_coupling_inverse(fn)
        assert not result.passed and text in result.message, (text, result.message)
    no_scale = check_coupling_inverse(lambda y, m, net, scale: coupling_inverse(y, m, net, torch.ones_like(scale)))
    assert not no_scale.passed  # a forgotten learned scale fails too (unnamed)


def test_pixel_bits_per_dim_mistakes_are_named():
    L2, L256 = math.log(2), math.log(256)
    cases = [
        (lambda lp, ld, D: -(lp + ld - D * L256) / D, "nats per dimension"),
        (lambda lp, ld, D: -(lp + ld) / (D * L2), "the 256 scaling missing"),
        (lambda lp, ld, D: -(lp + ld) / (D * L2) - 8, "wrong sign"),
        (lambda lp, ld, D: -(lp - ld) / (D * L2) + 8, "log-det with the wrong sign"),
        (lambda lp, ld, D: -lp / (D * L2) + 8, "log-det left out"),
        (lambda lp, ld, D: -(lp + ld - D * L256) / L2, "not divided by D"),
        (lambda lp, ld, D: (lp + ld) / (D * L2) - 8, "instead of its negative"),
        (lambda lp, ld, D: -(lp + ld) / (784 * L2) + 8, "wrong value"),  # a hard-coded D
        (lambda lp, ld, D: -(lp + ld) / (D * math.log(10)) + 8, "wrong value"),  # log10, not log2
    ]
    for fn, text in cases:
        result = check_pixel_bits_per_dim(fn)
        assert not result.passed and text in result.message, (text, result.message)
    mean = check_pixel_bits_per_dim(lambda lp, ld, D: pixel_bits_per_dim(lp, ld, D).mean())
    assert not mean.passed and "do not average over the batch" in mean.message, mean.message
