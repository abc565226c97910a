"""Exercise checks: correct code passes, and no wrong submission does, each with a message that helps.

The sweep at the end feeds every check at least twenty kinds of bad submissions built from its own
correct solution (wrong values, types, shapes, devices, layouts, mutated inputs, endless loops, known
mistakes) and asserts that none passes and none makes the check raise.
"""

import math
import time

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from exercise_sweep import _mutating, _nan_first, assert_no_bad_submission_passes
from tutorlib.exercises import CheckResult, Hint, Mistake, check
from tutorlib.exercises import core
from tutorlib.exercises.lesson00 import check_energy_distance, check_mmd
from tutorlib.exercises.lesson01 import check_ddim_step, check_forward_noising
from tutorlib.exercises.lesson02 import check_divergence_exact, check_hutchinson
from tutorlib.exercises.lesson03 import check_cfm_target, check_euler_step, check_midpoint_step, check_polynomial_target
from tutorlib.exercises.lesson05 import check_minibatch_ot
from tutorlib.exercises.lesson08 import check_guided_velocity
from tutorlib.exercises.lesson09 import _small_image_model, check_cfg_velocity, check_cfg_zero_init, check_label_dropout


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


# --- correct implementations, as a learner would write them ----------------------------------------


def energy_distance(x, y):
    return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()


def mmd(x, y, h):
    k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))  # noqa: E731
    return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def forward_noising(x_data, noise, alpha_bar):
    ab = alpha_bar[:, None]
    return ab.sqrt() * x_data + (1 - ab).sqrt() * noise


def ddim_step(x_noisy, eps, alpha_bar, alpha_bar_prev):
    ab, ab_prev = alpha_bar[:, None], alpha_bar_prev[:, None]
    x_data_hat = (x_noisy - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ab_prev.sqrt() * x_data_hat + (1 - ab_prev).sqrt() * eps


def divergence(f, x, t):
    x = x.detach().requires_grad_(True)
    v = f(x, t)
    return sum(torch.autograd.grad(v[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


def hutchinson(f, x, t, eps):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x, t), x, grad_outputs=eps)
    return (g * eps).sum(1)


def euler_step(velocity, x, t, dt):
    return x + dt * velocity(x, t)


def midpoint_step(velocity, x, t, dt):
    return x + dt * velocity(x + 0.5 * dt * velocity(x, t), t + 0.5 * dt)


def cfm_target(x_0, x_1, t):
    t = t[:, None]
    return (1 - t) * x_0 + t * x_1, x_1 - x_0


def polynomial_target(x_0, x_1, t, n):
    t = t[:, None]
    return t ** n * x_1 + (1 - t ** n) * x_0, n * t ** (n - 1) * (x_1 - x_0)


def minibatch_ot(x_0, x_1):
    _, cols = linear_sum_assignment(torch.cdist(x_0, x_1).square().numpy())
    return x_0, x_1[torch.from_numpy(cols)]


def guided_velocity(v_cond, v_uncond, w):
    return v_uncond + w * (v_cond - v_uncond)


def label_dropout(y, p, null_class, generator):
    drop = torch.rand(y.shape, generator=generator) < p
    return torch.where(drop, torch.full_like(y, null_class), y)


def cfg_one_pass(model, x, t, y, w):
    B = x.shape[0]
    y_null = torch.full_like(y, model.null_class)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null]))
    return out[B:] + w * (out[:B] - out[B:])


def cfg_zero_init(model, x, t, y, w, zero_until):
    B = x.shape[0]
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, model.null_class)]))
    v_c, v_u = out[:B], out[B:]
    s = (v_c * v_u).reshape(B, -1).sum(1) / v_u.square().reshape(B, -1).sum(1)
    v_u = s[:, None, None, None] * v_u
    return (v_u + w * (v_c - v_u)) * (t >= zero_until).to(x.dtype)[:, None, None, None]


CORRECT = [
    (check_energy_distance, energy_distance),
    (check_mmd, mmd),
    (check_forward_noising, forward_noising),
    (check_ddim_step, ddim_step),
    (check_divergence_exact, divergence),
    (check_hutchinson, hutchinson),
    (check_euler_step, euler_step),
    (check_midpoint_step, midpoint_step),
    (check_cfm_target, cfm_target),
    (check_polynomial_target, polynomial_target),
    (check_minibatch_ot, minibatch_ot),
    (check_guided_velocity, guided_velocity),
    (check_label_dropout, label_dropout),
    (check_cfg_velocity, cfg_one_pass),
    (check_cfg_zero_init, cfg_zero_init),
]
IDS = [c.__name__ for c, _ in CORRECT]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=IDS)
def test_correct_implementations_pass(checker, fn, capsys):
    result = checker(fn)
    assert result.passed, result.message
    assert bool(result) and str(result).startswith(f"PASSED {fn.__name__}")
    assert checker(fn, strict=True).passed
    assert f"PASSED {fn.__name__}" in capsys.readouterr().out  # shown in a script, not only returned


def test_library_functions_pass_their_own_checks():
    from tutorlib.guidance import drop_labels
    from tutorlib.likelihood import divergence_exact, divergence_hutchinson

    assert check_divergence_exact(divergence_exact).passed
    assert check_hutchinson(divergence_hutchinson).passed
    state = torch.random.get_rng_state()
    assert check_label_dropout(lambda y, p, n, g: drop_labels(y, p, n, generator=g)).passed
    assert check_cfg_velocity(cfg_one_pass).passed
    assert torch.equal(state, torch.random.get_rng_state()), "a check moved the global random state"


# --- the machinery ---------------------------------------------------------------------------------


def test_strict_environment_variable(monkeypatch):
    monkeypatch.setenv("TUTORLIB_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError, match="euler_step"):
        check_euler_step(lambda velocity, x, t, dt: x)
    assert check_euler_step(euler_step).passed
    monkeypatch.setenv("TUTORLIB_STRICT_CHECKS", "yes")
    with pytest.raises(ValueError, match=r"TUTORLIB_STRICT_CHECKS='yes'.*set it to 1"):
        check_euler_step(euler_step)


def _forward_inputs(result: CheckResult) -> bool:
    return "inputs: x_data (" in result.message


@pytest.mark.parametrize("fn, expected", [
    (lambda x, n, ab: forward_noising(x, n, ab).sum(1), "wrong shape: got (9,), expected (9, 3)"),
    (lambda x, n, ab: forward_noising(x, n, ab)[None] + 0 * x[:, None], "wrong shape: got (9, 9, 3)"),
    (lambda x, n, ab: forward_noising(x, n, ab).float(), "wrong dtype: got torch.float32, expected torch.float64"),
    (lambda x, n, ab: forward_noising(x, n, ab) * (ab[:, None] - 2).sqrt(), "contains NaN at index (0, 0)"),
    (lambda x, n, ab: ab.sqrt() * x, "raised RuntimeError: The size of tensor a"),
    (lambda x, n, ab: None, "returned None: did you forget `return`?"),
    (lambda x, n, ab: list(forward_noising(x, n, ab)), "returned a list; expected a tensor of shape (9, 3)"),
    (lambda x, n, ab: (forward_noising(x, n, ab), n), "returned a tuple of 2 items"),
    (lambda x, n, ab: forward_noising(x, n, ab).numpy(), "returned a numpy array"),
    (lambda x, n, ab: 0.5, "returned an object of type float"),
    (lambda x, n, ab: forward_noising(x, n, ab).to_sparse(), "returned a sparse_coo tensor"),
], ids=["shape", "broadcast", "dtype", "nan", "raises", "none", "list", "tuple", "numpy", "float", "sparse"])
def test_wrong_submissions_fail_with_a_clear_message(fn, expected):
    result = check_forward_noising(fn)
    assert not result.passed and expected in result.message, result.message
    assert "trial 1 of 3" in result.message and _forward_inputs(result)
    assert "#cf222e" in result._repr_html_()
    with pytest.raises(AssertionError):
        check_forward_noising(fn, strict=True)


def test_stub_and_learner_line():
    def noising(x_data, noise, alpha_bar):
        raise NotImplementedError

    assert "not filled in yet" in check_forward_noising(noising).message

    def noising2(x_data, noise, alpha_bar):
        return x_data / 0 + undefined_name  # noqa: F821

    result = check_forward_noising(noising2)
    assert "raised NameError" in result.message and "in noising2, line" in result.message
    assert str(result).startswith("FAILED noising2")  # messages use the learner's own function name


def test_a_wrong_value_names_the_known_mistake_or_shows_the_inputs():
    minus = check_euler_step(lambda v, x, t, dt: x - dt * v(x, t))
    assert "looks like x - dt v: the course integrates forwards in time: x + dt v" in minus.message
    late = check_euler_step(lambda v, x, t, dt: x + dt * v(x, t + dt))
    assert "looks like the field evaluated at t + dt" in late.message
    odd = check_euler_step(lambda v, x, t, dt: x + 0.9 * dt * v(x, t))
    assert "looks like" not in odd.message
    assert "the inputs there: x[" in odd.message and "dt = " in odd.message and "t[" in odd.message
    swapped = check_cfm_target(lambda x_0, x_1, t: cfm_target(x_0, x_1, t)[::-1])
    assert "the outputs swapped" in swapped.message
    assert "t and 1 - t swapped" in check_cfm_target(lambda x_0, x_1, t: cfm_target(x_1, x_0, t)).message
    no_n = check_polynomial_target(lambda x0, x1, t, n: (polynomial_target(x0, x1, t, n)[0],
                                                         t[:, None] ** (n - 1) * (x1 - x0)))
    assert "the factor n missing" in no_n.message
    euler = check_midpoint_step(euler_step)
    assert "looks like an Euler step" in euler.message
    assert "looks like the U-statistic" in check_energy_distance(
        lambda x, y: 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).sum() / (len(x) * (len(x) - 1))
        - torch.cdist(y, y).sum() / (len(y) * (len(y) - 1))).message


def test_hints_fire_only_for_their_failure():
    broadcast = check_cfm_target(lambda x_0, x_1, t: ((1 - t) * x_0 + t * x_1, x_1 - x_0))
    assert "hint: per-sample values have shape (B,)" in broadcast.message
    value = check_cfm_target(lambda x_0, x_1, t: (cfm_target(x_0, x_1, t)[0] + 1, x_1 - x_0))
    assert "hint" not in value.message
    make = lambda g: (torch.rand(4, generator=g, dtype=torch.float64),)  # noqa: E731
    hints = [Hint("shape", "SHAPE HINT"), Hint("exception", "OTHER HINT", match="size of tensor")]
    assert "SHAPE HINT" in check(lambda x: x[:2], torch.exp, make, name="e", hints=hints).message
    assert "HINT" not in check(lambda x: x + 1, torch.exp, make, name="e", hints=hints).message
    def divide_by_zero(x):
        return 1 / 0

    assert "hint" not in check(divide_by_zero, torch.exp, make, name="e", hints=hints).message


def test_inputs_changed_in_place_fail():
    for result in (check_euler_step(lambda v, x, t, dt: x.add_(dt * v(x, t))),
                   check_forward_noising(lambda x, n, ab: forward_noising(x.mul_(1), n.add_(0), ab.clamp_(0.5, 1))),
                   check_minibatch_ot(lambda x_0, x_1: (x_0, x_1.copy_(minibatch_ot(x_0, x_1.clone())[1]))),
                   check_cfm_target(lambda x_0, x_1, t: cfm_target(x_0, x_1, t.mul_(1.0001)))):
        assert not result.passed and "in place" in result.message, result.message


def test_time_limit_stops_a_slow_or_endless_function():
    def forever(v, x, t, dt):
        while True:
            pass

    start = time.perf_counter()
    endless = check_euler_step(forever, time_limit_s=0.5)
    sleepy = check_euler_step(lambda v, x, t, dt: time.sleep(30), time_limit_s=0.5)
    assert time.perf_counter() - start < 5
    for result in (endless, sleepy):
        assert not result.passed and "did not finish within the check's time limit of 0.5 s" in result.message


def test_time_limit_outside_the_main_thread():
    import threading

    box = {}
    worker = threading.Thread(target=lambda: box.setdefault("r", check_euler_step(
        lambda v, x, t, dt: time.sleep(3), time_limit_s=0.3)))
    worker.start()
    worker.join(10)
    assert not box["r"].passed and "time limit" in box["r"].message


def test_generic_check_with_tuple_inputs_and_tolerances():
    make = lambda g: (torch.rand(4, generator=g, dtype=torch.float64),)  # noqa: E731
    assert check(torch.exp, torch.exp, make, name="exp").passed
    close = check(lambda x: x.exp() + 1e-3, torch.exp, make, name="exp", atol=1e-2)
    assert close.passed and "largest error 0.001" in close.message
    far = check(lambda x: x.exp() + 1e-3, torch.exp, make, name="exp", trials=2)
    assert not far.passed and "trial 1 of 2, inputs: argument 1 (4,) float64" in far.message
    weird = check(lambda x: np.float64(1.0), torch.exp, make, name="exp")
    assert not weird.passed and "returned a numpy scalar" in weird.message
    same_seed = [check(lambda x: x + 1, torch.exp, make, name="e", seed=3).message for _ in range(2)]
    assert same_seed[0] == same_seed[1]
    mistake = check(lambda x: -x.exp(), torch.exp, make, name="e", mistakes=[Mistake("-exp", lambda x: -x.exp(), "FIX")])
    assert "e looks like -exp: FIX" in mistake.message or "<lambda>" not in mistake.message


def test_result_is_shown_once_in_a_notebook(monkeypatch):
    shown = []

    class FakeShell:
        pass

    monkeypatch.setattr(core, "_ipython_kernel", lambda: FakeShell())
    import IPython.display

    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    result = check_euler_step(euler_step)
    assert len(shown) == 1 and "euler_step" in shown[0].data
    result._ipython_display_()  # the cell's last expression: already shown, not again
    assert len(shown) == 1


# --- specific checks ---------------------------------------------------------------------------------


def test_cfm_target_expects_a_pair():
    single = check_cfm_target(lambda x_0, x_1, t: x_1 - x_0)
    assert "returned a single tensor of shape" in single.message and "expected a tuple of 2 tensors (x_t, dx_t)" in single.message
    three = check_cfm_target(lambda x_0, x_1, t: (*cfm_target(x_0, x_1, t), t))
    assert "returned 3 item(s)" in three.message


def test_divergence_checks():
    no_grad = check_divergence_exact(lambda f, x, t: torch.autograd.grad(f(x, t).sum(), x)[0].sum(1))
    assert "does not require grad" in no_grad.message and "hint: make x a leaf" in no_grad.message
    full_sum = check_divergence_exact(lambda f, x, t: hutchinson(f, x, t, torch.ones_like(x)))
    assert "looks like the sum of the whole Jacobian" in full_sum.message
    scaled = check_hutchinson(lambda f, x, t, eps: 1.1 * hutchinson(f, x, t, eps))
    assert not scaled.passed and "wrong value" in scaled.message
    assert "standard errors of the exact divergence" in check_hutchinson(hutchinson).message


def test_minibatch_ot_failures():
    identity = check_minibatch_ot(lambda x_0, x_1: (x_0, x_1))
    assert "not optimal" in identity.message and "nothing was re-paired" in identity.message
    worst = check_minibatch_ot(lambda x_0, x_1: (x_0, x_1[torch.from_numpy(
        linear_sum_assignment(-torch.cdist(x_0, x_1).square().numpy())[1])]))
    assert "not optimal" in worst.message
    moved = check_minibatch_ot(lambda x_0, x_1: minibatch_ot(x_0, x_1 + 1e-3))
    assert "the returned x_1 is not a reordering of the input x_1's rows" in moved.message
    assert "returned a single tensor" in check_minibatch_ot(lambda x_0, x_1: minibatch_ot(x_0, x_1)[1]).message
    both_permuted = check_minibatch_ot(lambda x_0, x_1: (x_0.flip(0), minibatch_ot(x_0, x_1)[1].flip(0)))
    assert both_permuted.passed, both_permuted.message


def test_guidance_and_ddim_failures():
    assert "looks like v_cond + w (v_cond - v_uncond)" in check_guided_velocity(lambda c, u, w: c + w * (c - u)).message
    assert not check_ddim_step(lambda x, e, ab, abp: ddim_step(x, e, abp, ab)).passed


def test_label_dropout_false_passes_are_caught():
    """The submissions that fooled the earlier check, and more."""
    bad = {
        "global rng": lambda y, p, n, g: torch.where(torch.rand(y.shape) < p, n, y),
        "all or none": lambda y, p, n, g: torch.full_like(y, n) if float(torch.rand((), generator=g)) < p else y.clone(),
        "wrong side": lambda y, p, n, g: torch.where(torch.rand(y.shape, generator=g) > p, n, y),
        "another label": lambda y, p, n, g: torch.where(torch.rand(y.shape, generator=g) < p, (y + 1) % n, y),
        "in place": lambda y, p, n, g: y.masked_fill_(torch.rand(y.shape, generator=g) < p, n),
        "floats": lambda y, p, n, g: label_dropout(y, p, n, g).float(),
        "none": lambda y, p, n, g: None,
        "first round(p B)": lambda y, p, n, g: torch.where(torch.arange(len(y)) < round(p * len(y)), n, y),
        "every fifth": lambda y, p, n, g: torch.where(torch.arange(len(y)) % 5 == 0, n, y) if 0 < p < 1 else
        label_dropout(y, p, n, g),
        "hard-coded null 10": lambda y, p, n, g: label_dropout(y, p, 10, g),
        "fixed seed": lambda y, p, n, g: label_dropout(y, p, n, torch.Generator().manual_seed(0)),
        "first half only": lambda y, p, n, g: torch.where((torch.rand(y.shape, generator=g) < 2 * p)
                                                          & (torch.arange(len(y)) < len(y) // 2), n, y),
        "even rows only": lambda y, p, n, g: torch.where((torch.rand(y.shape, generator=g) < 2 * p)
                                                         & (torch.arange(len(y)) % 2 == 0), n, y),
    }
    for what, fn in bad.items():
        result = check_label_dropout(fn)
        assert not result.passed, f"{what} passed: {result.message}"
    assert "use the null_class argument" in check_label_dropout(bad["hard-coded null 10"]).message
    assert "fixed pattern" in check_label_dropout(bad["fixed seed"]).message


def test_cfg_velocity_failures():
    two_calls = check_cfg_velocity(lambda m, x, t, y, w: m(x, t, None) + w * (m(x, t, y) - m(x, t, None)))
    assert "the value is right, but the model was called 3 time(s)" in two_calls.message
    swapped = check_cfg_velocity(lambda m, x, t, y, w: cfg_one_pass(m, x, t, y, 1 - w))
    assert "looks like the two halves swapped" in swapped.message
    other = check_cfg_velocity(lambda m, x, t, y, w: 0.5 * cfg_one_pass(m, x, t, y, w))
    assert "looks like" not in other.message and "halves" not in other.message  # no hint for another mistake
    conditional = check_cfg_velocity(lambda m, x, t, y, w: m(x, t, y))
    assert "looks like the conditional velocity alone" in conditional.message
    assert "a small PatchUNet with 3 classes (null class 3)" in conditional.message
    hard_null = check_cfg_velocity(lambda m, x, t, y, w: cfg_one_pass(type("M", (), {
        "null_class": 10, "__call__": lambda self, *a: m(*a)})(), x, t, y, w))
    assert not hard_null.passed
    raises = check_cfg_velocity(lambda m, x, t, y, w: m(torch.cat([x, x]), t, y))
    assert not raises.passed and "raised" in raises.message


def test_cfg_zero_init_failures():
    plain = check_cfg_zero_init(lambda m, x, t, y, w, z: cfg_one_pass(m, x, t, y, w) * (t >= z)[:, None, None, None])
    assert "looks like plain CFG (no s*)" in plain.message
    no_zero = check_cfg_zero_init(lambda m, x, t, y, w, z: cfg_zero_init(m, x, t, y, w, -1.0))
    assert "looks like CFG-Zero* without the zero-init" in no_zero.message


def test_cfg_check_model_depends_on_the_label():
    g = torch.Generator().manual_seed(0)
    model = _small_image_model(g, 3)
    x, t = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    gap = (model(x, t, torch.tensor([0, 1, 2, 0])) - model(x, t, None)).abs().max()
    assert gap > 1e-2, "the check's model ignores its label: a wrong guidance combination could pass"


# --- the sweep: many kinds of bad submissions for every check (tests/exercise_sweep.py) --------------


@pytest.mark.parametrize("checker, ok", CORRECT, ids=IDS)
def test_no_bad_submission_passes_and_none_escapes(checker, ok):
    assert_no_bad_submission_passes(checker, ok)


def test_the_sweep_is_not_trivially_failing():
    """The wrappers of the sweep return correct values where they should (else the sweep proves nothing)."""
    x = torch.randn(3, 2, dtype=torch.float64)
    same = _mutating(lambda a: a * 2)(x.clone())
    torch.testing.assert_close(same, x * 2)
    assert math.isnan(float(_nan_first(torch.ones(2, dtype=torch.float64))[0]))
