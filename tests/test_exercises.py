"""Exercise checks: pass correct code, and fail wrong code with a clear message, never raising."""

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from tutorlib import exercises as ex


# --- correct implementations, as a learner would write them ----------------------------------


@pytest.fixture(autouse=True)
def _lenient(monkeypatch):
    """These tests feed wrong submissions on purpose: report, do not raise."""
    monkeypatch.delenv("TUTORLIB_STRICT_CHECKS", raising=False)


def test_strict_environment_variable_raises_on_failure(monkeypatch):
    monkeypatch.setenv("TUTORLIB_STRICT_CHECKS", "1")
    with pytest.raises(AssertionError, match="euler_step"):
        ex.check_euler_step(lambda velocity, x, t, dt: x)
    assert ex.check_euler_step(lambda velocity, x, t, dt: x + dt[:, None] * velocity(x, t) if torch.is_tensor(dt) else x + dt * velocity(x, t)).passed



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


def cfm_target(x_0, x_1, t):
    t = t[:, None]
    return (1 - t) * x_0 + t * x_1, x_1 - x_0


def minibatch_ot(x_0, x_1):
    _, cols = linear_sum_assignment(torch.cdist(x_0, x_1).square().numpy())
    return x_0, x_1[torch.from_numpy(cols)]


def guided_velocity(v_cond, v_uncond, w):
    return v_uncond + w * (v_cond - v_uncond)


CORRECT = [
    (ex.check_forward_noising, forward_noising),
    (ex.check_ddim_step, ddim_step),
    (ex.check_divergence_exact, divergence),
    (ex.check_hutchinson, hutchinson),
    (ex.check_euler_step, euler_step),
    (ex.check_cfm_target, cfm_target),
    (ex.check_minibatch_ot, minibatch_ot),
    (ex.check_guided_velocity, guided_velocity),
]


@pytest.mark.parametrize("checker, fn", CORRECT, ids=[c.__name__ for c, _ in CORRECT])
def test_correct_implementations_pass(checker, fn):
    result = checker(fn)
    assert result.passed, result.message
    assert bool(result) and str(result).startswith("PASSED")
    assert checker(fn, strict=True).passed


def test_library_style_divergence_output_is_accepted():
    from tutorlib.likelihood import divergence_exact, divergence_hutchinson

    assert ex.check_divergence_exact(divergence_exact).passed
    assert ex.check_hutchinson(divergence_hutchinson).passed


# --- every kind of wrong submission, on one check ---------------------------------------------


def _stub(x_data, noise, alpha_bar):
    raise NotImplementedError


WRONG = {
    "shape": (lambda x, n, ab: forward_noising(x, n, ab).sum(1), "wrong shape: got (9,), expected (9, 2)"),
    "broadcast": (lambda x, n, ab: forward_noising(x, n, ab)[None] + 0 * x[:, None], "wrong shape: got (9, 9, 2)"),
    "dtype": (lambda x, n, ab: forward_noising(x, n, ab).float(),
              "wrong dtype: got torch.float32, expected torch.float64"),
    "nan": (lambda x, n, ab: forward_noising(x, n, ab) * (ab[:, None] - 2).sqrt(), "contains NaN at index (0, 0)"),
    "value": (lambda x, n, ab: ab[:, None] * x + (1 - ab[:, None]).sqrt() * n, "wrong value: largest error"),
    "raises": (lambda x, n, ab: ab.sqrt() * x, "raised RuntimeError: The size of tensor a"),
    "stub": (_stub, "raised NotImplementedError: the exercise is not filled in yet"),
    "none": (lambda x, n, ab: None, "returned None — did you forget `return`?"),
    "list": (lambda x, n, ab: list(forward_noising(x, n, ab)), "returned a list; expected a tensor of shape (9, 2)"),
    "tuple": (lambda x, n, ab: (forward_noising(x, n, ab), n), "returned a tuple of 2 items"),
    "numpy": (lambda x, n, ab: forward_noising(x, n, ab).numpy(), "returned a numpy array"),
    "float": (lambda x, n, ab: 0.5, "returned an object of type float"),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_submissions_fail_with_a_clear_message(kind):
    fn, expected = WRONG[kind]
    result = ex.check_forward_noising(fn)
    assert not result.passed
    assert expected in result.message, result.message
    assert "trial 1 of 3, inputs: x_data (9, 2) float64, noise (9, 2) float64, alpha_bar (9,) float64" in result.message
    assert str(result).startswith("FAILED forward_noising")
    assert "#cf222e" in result._repr_html_()
    with pytest.raises(AssertionError, match=kind == "none" and "forget" or "forward_noising"):
        ex.check_forward_noising(fn, strict=True)
    with pytest.raises(AssertionError):
        result.raise_if_failed()


def test_value_error_reports_index_and_values():
    result = ex.check_forward_noising(lambda x, n, ab: forward_noising(x, n, ab) + (torch.arange(2) == 1) * 0.25
                                      * (torch.arange(9)[:, None] == 3))
    assert "largest error 0.25 at index (3, 1)" in result.message
    assert "1 of 18 entries are off" in result.message


def test_exception_names_the_learners_line():
    def noising(x_data, noise, alpha_bar):
        return x_data / 0 + undefined_name  # noqa: F821

    result = ex.check_forward_noising(noising)
    assert "raised NameError" in result.message and "in noising, line" in result.message


def test_broadcast_hint():
    result = ex.check_cfm_target(lambda x_0, x_1, t: ((1 - t) * x_0 + t * x_1, x_1 - x_0))
    assert not result.passed and "hint: per-sample values have shape (B,)" in result.message


# --- wrong implementations of each specific check ---------------------------------------------


def test_cfm_target_expects_a_pair():
    single = ex.check_cfm_target(lambda x_0, x_1, t: x_1 - x_0)
    assert "returned a single tensor of shape (9, 2); expected a tuple of 2 tensors (x_t, dx_t)" in single.message
    swapped = ex.check_cfm_target(lambda x_0, x_1, t: cfm_target(x_1, x_0, t))
    assert "x_t: wrong value" in swapped.message
    three = ex.check_cfm_target(lambda x_0, x_1, t: (*cfm_target(x_0, x_1, t), t))
    assert "returned 3 item(s)" in three.message


def test_euler_step_at_the_wrong_time():
    result = ex.check_euler_step(lambda v, x, t, dt: x + dt * v(x, t + dt))
    assert not result.passed and "wrong value" in result.message and "velocity a function" in result.message


def test_divergence_exact_failures():
    no_grad = ex.check_divergence_exact(lambda f, x, t: torch.autograd.grad(f(x, t).sum(), x)[0].sum(1))
    assert "does not require grad" in no_grad.message and "hint: make x a leaf" in no_grad.message
    full_sum = ex.check_divergence_exact(lambda f, x, t: hutchinson(f, x, t, torch.ones_like(x)))
    assert "wrong value" in full_sum.message


def test_hutchinson_failures():
    scaled = ex.check_hutchinson(lambda f, x, t, eps: 1.1 * hutchinson(f, x, t, eps))
    assert not scaled.passed and "wrong value" in scaled.message
    passed = ex.check_hutchinson(hutchinson)
    assert "standard errors of the exact divergence" in passed.message


def test_minibatch_ot_failures():
    identity = ex.check_minibatch_ot(lambda x_0, x_1: (x_0, x_1))
    assert "not optimal: total squared distance" in identity.message
    worst = ex.check_minibatch_ot(lambda x_0, x_1: (x_0, x_1[torch.from_numpy(
        linear_sum_assignment(-torch.cdist(x_0, x_1).square().numpy())[1])]))
    assert "not optimal" in worst.message
    moved = ex.check_minibatch_ot(lambda x_0, x_1: minibatch_ot(x_0, x_1 + 1e-3))
    assert "the returned x_1 is not a reordering of the input x_1's rows" in moved.message
    one = ex.check_minibatch_ot(lambda x_0, x_1: minibatch_ot(x_0, x_1)[1])
    assert "returned a single tensor" in one.message
    both_permuted = ex.check_minibatch_ot(lambda x_0, x_1: (x_0.flip(0), minibatch_ot(x_0, x_1)[1].flip(0)))
    assert both_permuted.passed, both_permuted.message


def test_guided_velocity_and_ddim_failures():
    assert "wrong value" in ex.check_guided_velocity(lambda c, u, w: c + w * (c - u)).message
    assert not ex.check_ddim_step(lambda x, e, ab, abp: ddim_step(x, e, abp, ab)).passed


def test_generic_check_with_tuple_inputs_and_tolerances():
    make = lambda g: (torch.rand(4, generator=g, dtype=torch.float64),)  # noqa: E731
    assert ex.check(torch.exp, torch.exp, make, name="exp").passed
    close = ex.check(lambda x: x.exp() + 1e-3, torch.exp, make, name="exp", atol=1e-2)
    assert close.passed and "largest error 0.001" in close.message
    far = ex.check(lambda x: x.exp() + 1e-3, torch.exp, make, name="exp", trials=2)
    assert not far.passed and "trial 1 of 2, inputs: argument 1 (4,) float64" in far.message
    weird = ex.check(lambda x: np.float64(1.0), torch.exp, make, name="exp")
    assert not weird.passed and "returned a numpy scalar" in weird.message
    same_seed = [ex.check(lambda x: x + 1, torch.exp, make, name="e", seed=3).message for _ in range(2)]
    assert same_seed[0] == same_seed[1]


def test_check_energy_distance_and_mmd():
    def ed(x, y):
        return 2 * torch.cdist(x, y).mean() - torch.cdist(x, x).mean() - torch.cdist(y, y).mean()

    def mmd(x, y, h):
        k = lambda a, b: torch.exp(-torch.cdist(a, b) ** 2 / (2 * h * h))
        return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()

    assert ex.check_energy_distance(ed).passed
    assert ex.check_mmd(mmd).passed
    wrong = ex.check_energy_distance(lambda x, y: torch.cdist(x, y).mean() - torch.cdist(x, x).mean())
    assert not wrong.passed and "wrong value" in wrong.message
    assert not ex.check_mmd(lambda x, y, h: mmd(x, y, 2 * h)).passed
    assert "returned None" in ex.check_mmd(lambda x, y, h: None).message


# --- lesson 09: label dropout and the batched CFG pass ----------------------------------------


def label_dropout(y, p, null_class, generator):
    drop = torch.rand(y.shape, generator=generator) < p
    return torch.where(drop, torch.full_like(y, null_class), y)


def cfg_one_pass(model, x, t, y, w):
    B = x.shape[0]
    y_null = torch.full_like(y, model.null_class)
    out = model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null]))
    return out[B:] + w * (out[:B] - out[B:])


@pytest.mark.parametrize("checker, fn", [(ex.check_label_dropout, label_dropout),
                                         (ex.check_cfg_velocity, cfg_one_pass)],
                         ids=["check_label_dropout", "check_cfg_velocity"])
def test_lesson_09_correct_implementations_pass(checker, fn):
    result = checker(fn)
    assert result.passed, result.message
    assert checker(fn, strict=True).passed


def test_label_dropout_library_function_passes_and_global_rng_is_untouched():
    from tutorlib.guidance import drop_labels

    state = torch.random.get_rng_state()
    assert ex.check_label_dropout(lambda y, p, n, g: drop_labels(y, p, n, generator=g)).passed
    assert ex.check_cfg_velocity(cfg_one_pass).passed
    assert torch.equal(state, torch.random.get_rng_state()), "a check moved the global random state"


def test_label_dropout_failures():
    global_rng = ex.check_label_dropout(lambda y, p, n, g: torch.where(torch.rand(y.shape) < p, n, y))
    assert not global_rng.passed and "draw the coin flips from the generator" in global_rng.message
    all_or_none = ex.check_label_dropout(
        lambda y, p, n, g: torch.full_like(y, n) if float(torch.rand((), generator=g)) < p else y.clone())
    assert not all_or_none.passed and "standard errors" in all_or_none.message
    wrong_side = ex.check_label_dropout(lambda y, p, n, g: torch.where(torch.rand(y.shape, generator=g) > p, n, y))
    assert not wrong_side.passed and "with p = 0.0 it must keep every label" in wrong_side.message
    random_label = ex.check_label_dropout(
        lambda y, p, n, g: torch.where(torch.rand(y.shape, generator=g) < p, (y + 1) % n, y))
    assert not random_label.passed and "the input label or the null class 10" in random_label.message
    in_place = ex.check_label_dropout(lambda y, p, n, g: y.masked_fill_(torch.rand(y.shape, generator=g) < p, n))
    assert not in_place.passed and "in place" in in_place.message
    floats = ex.check_label_dropout(lambda y, p, n, g: label_dropout(y, p, n, g).float())
    assert not floats.passed and "wrong dtype" in floats.message
    stub = ex.check_label_dropout(lambda y, p, n, g: None)
    assert not stub.passed and "returned None" in stub.message


def test_cfg_velocity_failures():
    two_calls = ex.check_cfg_velocity(lambda m, x, t, y, w: m(x, t, None) + w * (m(x, t, y) - m(x, t, None)))
    assert not two_calls.passed and "the value is right, but the model was called 3 time(s)" in two_calls.message
    swapped = ex.check_cfg_velocity(lambda m, x, t, y, w: cfg_one_pass(m, x, t, y, 1 - w))
    assert not swapped.passed and "wrong value" in swapped.message and "hint: the first B rows" in swapped.message
    conditional = ex.check_cfg_velocity(lambda m, x, t, y, w: m(x, t, y))
    assert not conditional.passed and "wrong value" in conditional.message
    assert "inputs: model a small PatchUNet, x (" in conditional.message
    raises = ex.check_cfg_velocity(lambda m, x, t, y, w: m(torch.cat([x, x]), t, y))
    assert not raises.passed and "raised" in raises.message


def test_cfg_check_model_depends_on_the_label():
    g = torch.Generator().manual_seed(0)
    model = ex._small_image_model(g, 3)
    x, t = torch.randn(4, 1, 28, 28, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    gap = (model(x, t, torch.tensor([0, 1, 2, 0])) - model(x, t, None)).abs().max()
    assert gap > 1e-2, "the check's model ignores its label: a wrong guidance combination could pass"
