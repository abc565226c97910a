"""Appendix A's exercise checks: the correct solutions pass, no bad submission does, known mistakes are named."""

from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from exercise_sweep import assert_no_bad_submission_passes
from tutorlib.exercises.lessonA import check_class_ot_images, check_guided_jump
from tutorlib.fewstep import TwoTimePatchUNet, average_velocity_jump
from tutorlib.methods import cfg_average_velocity


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct solutions, as a learner would write them ---


def guided_jump(u, x, s, t, y, w, null):
    uncond = u(x, s, t, torch.full_like(y, null))
    cond = u(x, s, t, y)
    return x + (t - s).view(-1, *[1] * (x.dim() - 1)) * (uncond + w * (cond - uncond))


def class_ot_images(x_0, x_1, y):
    out = x_1.clone()
    for k in y.unique():
        rows = (y == k).nonzero().flatten()
        cost = torch.cdist(x_0[rows].flatten(1), x_1[rows].flatten(1)).square()
        _, cols = linear_sum_assignment(cost.numpy())
        out[rows] = x_1[rows[torch.from_numpy(cols)]]
    return out


CORRECT = [(check_guided_jump, guided_jump), (check_class_ot_images, class_ot_images)]
IDS = [c.__name__ for c, _ in CORRECT]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_correct_solutions_pass_also_strictly(checker, fn):
    assert checker(fn).passed
    assert checker(fn, strict=True).passed


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_no_bad_submission_passes(checker, fn):
    assert_no_bad_submission_passes(checker, fn)


def test_the_reference_guided_jump_is_the_librarys():
    """The check's closed form is what the appendix samples with: cfg_average_velocity and one jump."""
    torch.manual_seed(0)
    net = TwoTimePatchUNet(base_channels=8, num_classes=10)
    torch.nn.init.normal_(net.gap_embed[-1].weight, std=0.1)  # the gap matters
    x, y = torch.randn(3, 1, 28, 28), torch.tensor([1, 4, 7])
    s, t = torch.tensor([0.0, 0.25, 0.5]), torch.tensor([0.5, 0.5, 1.0])
    with torch.no_grad():
        want = average_velocity_jump(cfg_average_velocity(net, y, 2.5), x, s, t)
        got = guided_jump(lambda a, b, c, d: net(a, b, c, d), x, s, t, y, 2.5, net.null_class)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_guided_jump_mistakes_are_named():
    def swapped(u, x, s, t, y, w, null):
        uncond, cond = u(x, s, t, torch.full_like(y, null)), u(x, s, t, y)
        return x + (t - s).view(-1, 1, 1, 1) * (cond + w * (uncond - cond))

    def end_time(u, x, s, t, y, w, null):
        uncond, cond = u(x, s, t, torch.full_like(y, null)), u(x, s, t, y)
        return x + t.view(-1, 1, 1, 1) * (uncond + w * (cond - uncond))

    cases = [
        (swapped, "guidance around the conditional output"),
        (lambda *a: guided_jump(*a) - a[1], "not the state after the jump"),
        (end_time, "taken as t instead of t - s"),
        (lambda u, x, s, t, y, w, null: x + (t - s).view(-1, 1, 1, 1) * u(x, s, t, y), "no guidance"),
        (lambda u, x, s, t, y, w, null: guided_jump(lambda a, b, c, d: u(a, b, b, d), x, s, t, y, w, null),
         "instantaneous velocity used for a whole jump"),
    ]
    for fn, text in cases:
        result = check_guided_jump(fn)
        assert not result.passed and text in result.message, (text, result.message)


def test_class_ot_mistakes_are_named():
    def whole_batch(x_0, x_1, y):
        _, cols = linear_sum_assignment(torch.cdist(x_0.flatten(1), x_1.flatten(1)).square().numpy())
        return x_1[torch.from_numpy(cols)]

    def maximised(x_0, x_1, y):
        out = x_1.clone()
        for k in y.unique():
            rows = (y == k).nonzero().flatten()
            cost = torch.cdist(x_0[rows].flatten(1), x_1[rows].flatten(1)).square()
            _, cols = linear_sum_assignment(-cost.numpy())
            out[rows] = x_1[rows[torch.from_numpy(cols)]]
        return out

    cases = [
        (whole_batch, "minibatch OT over the whole batch"),
        (lambda x_0, x_1, y: x_1.clone(), "nothing was re-paired"),
        (maximised, "not optimal within the classes"),
        (lambda x_0, x_1, y: x_1.flip(0), "paired across classes"),
    ]
    for fn, text in cases:
        result = check_class_ot_images(fn)
        assert not result.passed and text in result.message, (text, result.message)
