"""Guidance: closed forms on a labelled Gaussian mixture, the CFG combinations, batching and errors.

The oracle: data is a mixture whose components carry class labels. ``gmm_marginal_velocity`` on
one class's components is the exact conditional velocity ``v_t(x | y)``, on all components the
unconditional ``v_t(x)``, and ``gmm_marginal_log_prob`` gives the exact posterior
``log p_t(y | x) = log pi_y + log p_t(x | y) - log p_t(x)`` by Bayes' rule.
"""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.exercises.lesson08 import check_guided_velocity
from tutorlib.data import LabelledBatch, labelled_batches
from tutorlib.metrics import within_class_spread
from tutorlib.guidance import (
    LabelledGMM as OracleGMM,
    cfg_velocity,
    classifier_guided_velocity,
    classifier_log_prob_grad,
    classifier_loss,
    drop_labels,
    guided_velocity,
    score_velocity_coefficient,
    zero_star_scale,
    zero_star_velocity,
)
from tutorlib.models import NoisyClassifier2D, TimeMLP
from tutorlib.paths import AffinePath, CondOTPath, gmm_marginal_log_prob, gmm_marginal_velocity
from tutorlib.schedulers import CosineScheduler, LinearVPScheduler, PolynomialScheduler
from tutorlib.solvers import ode_solve

F64 = torch.float64
PATHS = [CondOTPath(), AffinePath(CosineScheduler()), AffinePath(PolynomialScheduler(2.0)),
         AffinePath(LinearVPScheduler())]
SHAPES = [(2,), (1, 2, 2)]  # trailing shape of x: points and tiny images


class LabelledGMM:
    """Three classes, two components each (unequal weights and widths), in float64."""

    def __init__(self, event_shape: tuple[int, ...], seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.K = 3
        self.comp_class = torch.tensor([0, 0, 1, 1, 2, 2])
        self.means = 2.0 * torch.randn((6, *event_shape), generator=g, dtype=F64)
        self.stds = 0.3 + 0.4 * torch.rand(6, generator=g, dtype=F64)
        self.within = torch.tensor([0.3, 0.7, 0.5, 0.5, 0.8, 0.2], dtype=F64)  # p(component | class)
        self.prior = torch.tensor([0.5, 0.2, 0.3], dtype=F64)  # p(class)
        self.weights = self.within * self.prior[self.comp_class]  # p(component)

    def _part(self, k: int):
        sel = self.comp_class == k
        return self.means[sel], self.stds[sel], self.within[sel]

    def v_uncond(self, path, x, t):
        return gmm_marginal_velocity(path, x, t, self.means, self.stds, self.weights)

    def v_cond(self, path, x, t, y):
        out = torch.empty_like(x)
        for k in range(self.K):
            rows = y == k
            if rows.any():
                out[rows] = gmm_marginal_velocity(path, x[rows], t[rows], *self._part(k))
        return out

    def classifier(self, path):
        """Exact 'logits' log pi_k + log p_t(x | k): their log-softmax is log p_t(k | x)."""

        def logits(x, t):
            return torch.stack([math.log(self.prior[k]) + gmm_marginal_log_prob(path, x, t, *self._part(k))
                                for k in range(self.K)], 1)  # (B, K)

        return logits


def _points(shape, B=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn((B, *shape), generator=g, dtype=F64)
    t = 0.05 + 0.9 * torch.rand(B, generator=g, dtype=F64)
    y = torch.randint(3, (B,), generator=g)
    return x, t, y


# --- classifier guidance against the closed form ---


@pytest.mark.parametrize("path", PATHS, ids=repr)
@pytest.mark.parametrize("shape", SHAPES)
def test_classifier_guidance_with_the_exact_posterior_gives_the_exact_conditional_field(path, shape):
    gmm = LabelledGMM(shape)
    x, t, y = _points(shape)
    v_u = lambda x, t: gmm.v_uncond(path, x, t)  # noqa: E731
    v_c = gmm.v_cond(path, x, t, y)
    guided = classifier_guided_velocity(v_u, gmm.classifier(path), path, y, 1.0)
    torch.testing.assert_close(guided(x, t), v_c, rtol=1e-9, atol=1e-9)
    # ... and at any scale it is classifier-free guidance on the exact fields
    for w in (0.0, 2.5, -1.0):
        g_w = classifier_guided_velocity(v_u, gmm.classifier(path), path, y, w)(x, t)
        torch.testing.assert_close(g_w, guided_velocity(v_c, v_u(x, t), w), rtol=1e-9, atol=1e-9)
    # the conditional field differs from the unconditional one here: the check can fail
    assert (v_c - v_u(x, t)).abs().max() > 0.1


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_score_velocity_coefficient_matches_the_paths_conversion(path):
    x, t, _ = _points((2,), B=16)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    b = score_velocity_coefficient(path, t)  # (B,)
    expected = path.score_to_velocity(g, x, t) - path.score_to_velocity(torch.zeros_like(g), x, t)
    torch.testing.assert_close(b[:, None] * g, expected, rtol=1e-8, atol=1e-8)
    if isinstance(path, CondOTPath):
        torch.testing.assert_close(b, (1 - t) / t)


@pytest.mark.parametrize("path", [CondOTPath(), AffinePath(CosineScheduler())], ids=repr)
def test_classifier_guidance_is_finite_at_the_ends_and_near_its_limit(path):
    """At t = 0 the coefficient is infinite and the posterior gradient 0; the term's limit is v_c - v_u."""
    gmm = LabelledGMM((2,))
    x, _, y = _points((2,), B=16)
    v_u = lambda x, t: gmm.v_uncond(path, x, t)  # noqa: E731
    for t_end in (0.0, 1.0):
        t = torch.full((16,), t_end, dtype=F64)
        out = classifier_guided_velocity(v_u, gmm.classifier(path), path, y, 1.0, t_eps=1e-5)(x, t)
        assert torch.isfinite(out).all()
        if t_end == 0.0:  # the limit: v(x, 0 | y) - v(x, 0) = d_alpha_0 (E[x_1 | y] - E[x_1])
            torch.testing.assert_close(out, gmm.v_cond(path, x, t, y), rtol=0, atol=1e-3)
    vp = AffinePath(LinearVPScheduler())  # b_t is 0 * inf at t = 1 (the VP velocity itself is singular there)
    t1 = torch.ones(16, dtype=F64)
    assert not torch.isfinite(score_velocity_coefficient(vp, t1)).any()
    term = classifier_guided_velocity(lambda x, t: torch.zeros_like(x), gmm.classifier(vp), vp, y, 2.0)(x, t1)
    assert torch.isfinite(term).all() and term.abs().max() > 0


def test_classifier_guidance_with_a_network_under_no_grad_and_in_ode_solve():
    torch.manual_seed(0)
    clf = NoisyClassifier2D(4, hidden=16, depth=1)
    base = lambda x, t: -x  # noqa: E731
    y = torch.tensor([0, 1, 2, 3])
    x = torch.randn(4, 2)
    t = torch.full((4,), 0.5)
    with torch.no_grad():
        out = classifier_guided_velocity(base, clf, CondOTPath(), y, 2.0)(x, t)
    grad = classifier_log_prob_grad(clf, x, t, y)
    torch.testing.assert_close(out, -x + 2.0 * 1.0 * grad)  # b_0.5 = 1 on the linear path
    sol = ode_solve(classifier_guided_velocity(base, clf, CondOTPath(), 1, 3.0), x, steps=4)
    assert sol.x.shape == (4, 2) and torch.isfinite(sol.x).all()
    assert not any(p.grad is not None for p in clf.parameters())  # no gradients leak into the weights
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        classifier_guided_velocity(base, clf, CondOTPath(), 4, 1.0)(x, t)
    with pytest.raises(RuntimeError, match="inference_mode"), torch.inference_mode():
        classifier_guided_velocity(base, clf, CondOTPath(), y, 1.0)(x, t)


def test_classifier_log_prob_grad_by_hand():
    """Linear logits W x: grad log softmax(W x)[y] = W_y - sum_k p_k W_k."""
    W = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=F64)
    x = torch.tensor([[0.3, -0.2], [1.0, 0.5]], dtype=F64)
    y = torch.tensor([1, 2])
    p = torch.softmax(x @ W.T, 1)
    expected = W[y] - p @ W
    torch.testing.assert_close(classifier_log_prob_grad(lambda x, t: x @ W.T, x, torch.zeros(2), y), expected)


# --- classifier-free guidance ---


def test_guided_velocity_endpoints_and_the_exercise_convention():
    g = torch.Generator().manual_seed(0)
    v_c, v_u = torch.randn(5, 2, generator=g, dtype=F64), torch.randn(5, 2, generator=g, dtype=F64)
    torch.testing.assert_close(guided_velocity(v_c, v_u, 0.0), v_u)
    torch.testing.assert_close(guided_velocity(v_c, v_u, 1.0), v_c)
    torch.testing.assert_close(guided_velocity(v_c, v_u, 3.0), 3.0 * v_c - 2.0 * v_u)
    assert check_guided_velocity(guided_velocity).passed
    with pytest.raises(ValueError, match="same shape"):
        guided_velocity(v_c, v_u[:, :1], 2.0)
    with pytest.raises(ValueError, match="finite"):
        guided_velocity(v_c, v_u, float("nan"))


def test_zero_star_scale_is_the_least_squares_projection():
    g = torch.Generator().manual_seed(1)
    v_c, v_u = torch.randn(6, 1, 3, 3, generator=g, dtype=F64), torch.randn(6, 1, 3, 3, generator=g, dtype=F64)
    s = zero_star_scale(v_c, v_u)
    assert s.shape == (6,)
    expected = (v_c * v_u).flatten(1).sum(1) / v_u.flatten(1).square().sum(1)
    torch.testing.assert_close(s, expected)
    residual = v_c - s[:, None, None, None] * v_u  # orthogonal to v_u
    assert (residual * v_u).flatten(1).sum(1).abs().max() < 1e-12
    torch.testing.assert_close(zero_star_velocity(v_c, v_u, 2.0), 2.0 * v_c - s[:, None, None, None] * v_u)
    torch.testing.assert_close(zero_star_velocity(v_c, v_u, 1.0), v_c)
    # parallel fields: s* is their ratio and the guided velocity is v_c at any w
    torch.testing.assert_close(zero_star_velocity(-0.5 * v_u, v_u, 4.0), -0.5 * v_u)
    assert (zero_star_scale(v_c, torch.zeros_like(v_u)) == 0).all()


class Recorder(torch.nn.Module):
    """A class-conditional model that records the batch size of every call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    @property
    def null_class(self):
        return self.model.null_class

    def forward(self, x, t, y=None):
        self.calls.append(x.shape[0])
        return self.model(x, t, y)


def _cond_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TimeMLP(dim=2, hidden=16, depth=2, num_classes=3, **kw).double()


@pytest.mark.parametrize("zero_star", [False, True])
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_cfg_velocity_batched_equals_two_separate_calls(w, zero_star):
    model = Recorder(_cond_model())
    g = torch.Generator().manual_seed(2)
    x, t = torch.randn(7, 2, generator=g, dtype=F64), torch.rand(7, generator=g, dtype=F64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    v_c, v_u = model.model(x, t, y), model.model(x, t)
    expected = (zero_star_velocity if zero_star else guided_velocity)(v_c, v_u, w)
    out = cfg_velocity(model, y, w, zero_star=zero_star)(x, t)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # one forward pass; half the batch when one field is not needed
    needs_both = w not in (0.0, 1.0) or (zero_star and w == 0.0)
    assert model.calls == [14 if needs_both else 7]


def test_cfg_velocity_at_zero_and_one_gives_the_unconditional_and_conditional_fields():
    model = _cond_model(1)
    x, t = torch.randn(5, 2, dtype=F64), torch.rand(5, dtype=F64)
    y = torch.tensor([2, 2, 1, 0, 1])
    torch.testing.assert_close(cfg_velocity(model, y, 0.0)(x, t), model(x, t))
    torch.testing.assert_close(cfg_velocity(model, y, 1.0)(x, t), model(x, t, y))
    torch.testing.assert_close(cfg_velocity(model, 2, 1.0)(x, t), model(x, t, torch.full((5,), 2)))
    assert (model(x, t, y) - model(x, t)).abs().max() > 1e-4  # the two fields differ


def test_cfg_velocity_on_images_with_a_unet():
    from tutorlib.models import UNet

    torch.manual_seed(0)
    unet = UNet(base_channels=4, num_classes=10)
    x, t, y = torch.randn(3, 1, 28, 28), torch.rand(3), torch.tensor([1, 5, 9])
    with torch.no_grad():
        v_c, v_u = unet(x, t, y), unet(x, t)
        for zero_star, combine in ((False, guided_velocity), (True, zero_star_velocity)):
            out = cfg_velocity(unet, y, 1.5, zero_star=zero_star)(x, t)
            torch.testing.assert_close(out, combine(v_c, v_u, 1.5), rtol=1e-5, atol=1e-5)


def test_zero_init_returns_zero_before_the_threshold_without_calling_the_model():
    model = Recorder(_cond_model())
    x = torch.randn(4, 2, dtype=F64)
    y = torch.tensor([0, 1, 2, 0])
    f = cfg_velocity(model, y, 2.0, zero_star=True, zero_init_until=0.1)
    assert (f(x, torch.full((4,), 0.05, dtype=F64)) == 0).all() and model.calls == []
    t = torch.tensor([0.0, 0.3, 0.09, 0.1], dtype=F64)  # zero for t < 0.1 only
    out = f(x, t)
    expected = cfg_velocity(model.model, y, 2.0, zero_star=True)(x, t)
    assert (out[[0, 2]] == 0).all() and (out[[1, 3]] != 0).all()
    torch.testing.assert_close(out[[1, 3]], expected[[1, 3]])
    # in a solve: the first of 10 Euler steps (t = 0) is skipped, so x moves for 9 steps only
    sol = ode_solve(cfg_velocity(model.model, y, 2.0, zero_init_until=0.05), x, steps=10)
    manual = x.clone()
    for k in range(1, 10):
        manual = manual + 0.1 * cfg_velocity(model.model, y, 2.0)(manual, torch.full((4,), k / 10, dtype=F64))
    torch.testing.assert_close(sol.x, manual)


def test_cfg_velocity_rejects_bad_models_labels_and_scales():
    x, t = torch.randn(3, 2), torch.rand(3)
    with pytest.raises(ValueError, match="unconditional"):
        cfg_velocity(TimeMLP(hidden=8, depth=1), torch.tensor([0, 1, 2]), 2.0)
    model = TimeMLP(hidden=8, depth=1, num_classes=3)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cfg_velocity(model, torch.tensor([0, 3, 1]), 2.0)  # 3 is the null class
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        cfg_velocity(model, -1, 2.0)
    with pytest.raises(ValueError, match="int64"):
        cfg_velocity(model, torch.tensor([0.0, 1.0, 2.0]), 2.0)
    with pytest.raises(ValueError, match="finite"):
        cfg_velocity(model, 1, float("inf"))
    with pytest.raises(ValueError, match="zero_init_until"):
        cfg_velocity(model, 1, 2.0, zero_init_until=1.5)
    with pytest.raises(ValueError, match="2 labels for a batch of 3"):
        cfg_velocity(model, torch.tensor([0, 1]), 2.0)(x, t)


# --- label dropout, the classifier loss, batches, spread ---


def test_drop_labels_rate_determinism_and_errors():
    y = torch.randint(5, (100_000,), generator=torch.Generator().manual_seed(0))
    out = drop_labels(y, 0.2, 5, generator=torch.Generator().manual_seed(1))
    dropped = out == 5
    assert abs(dropped.float().mean().item() - 0.2) < 0.01  # binomial std 0.0013
    assert torch.equal(out[~dropped], y[~dropped]) and out.dtype == torch.int64
    assert torch.equal(out, drop_labels(y, 0.2, 5, generator=torch.Generator().manual_seed(1)))
    assert not torch.equal(out, drop_labels(y, 0.2, 5, generator=torch.Generator().manual_seed(2)))
    assert torch.equal(drop_labels(y, 0.0, 5), y) and (drop_labels(y, 1.0, 5) == 5).all()
    assert torch.equal(drop_labels(torch.tensor([5, 5]), 0.0, 5), torch.tensor([5, 5]))  # null stays null
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        drop_labels(y, 1.5, 5)
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        drop_labels(torch.tensor([0, 6]), 0.1, 5)
    with pytest.raises(ValueError, match="int64"):
        drop_labels(y.float(), 0.1, 5)


def test_classifier_loss_is_cross_entropy_on_the_noisy_point():
    path = AffinePath(CosineScheduler())
    g = torch.Generator().manual_seed(0)
    x_1, x_0 = torch.randn(6, 2, generator=g, dtype=F64), torch.randn(6, 2, generator=g, dtype=F64)
    t, y = torch.rand(6, generator=g, dtype=F64), torch.tensor([0, 1, 2, 0, 1, 2])
    W = torch.randn(3, 2, generator=g, dtype=F64)
    clf = lambda x, t: x @ W.T + t[:, None]  # noqa: E731
    a, s = torch.sin(math.pi * t / 2)[:, None], torch.cos(math.pi * t / 2)[:, None]
    logits = clf(a * x_1 + s * x_0, t)
    expected = -(torch.log_softmax(logits, 1)[torch.arange(6), y]).mean()
    torch.testing.assert_close(classifier_loss(clf, path, x_1, y, t, x_0), expected)


def test_labelled_batches_are_reproducible_and_shaped():
    draw = labelled_batches("eight_gaussians", 16, generator=torch.Generator().manual_seed(0))
    b = draw(0)
    assert isinstance(b, LabelledBatch)
    assert b.x_0.shape == b.x_1.shape == (16, 2) and b.t.shape == b.y.shape == (16,)
    assert b.y.dtype == torch.int64 and 0 <= int(b.y.min()) and int(b.y.max()) < 8
    again = labelled_batches("eight_gaussians", 16, generator=torch.Generator().manual_seed(0))(0)
    assert torch.equal(b.x_1, again.x_1) and torch.equal(b.y, again.y) and torch.equal(b.t, again.t)
    with pytest.raises(ValueError, match="unknown toy dataset"):
        labelled_batches("nope", 4)


def test_within_class_spread_by_hand():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 7.0], [1.0, 1.0]], dtype=F64)
    y = torch.tensor([0, 0, 1, 1, 2])
    s = within_class_spread(x, y, 4)
    torch.testing.assert_close(s[:2], torch.tensor([1.0, 1.0], dtype=F64))
    assert math.isnan(s[2]) and math.isnan(s[3])  # one point, no point
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        within_class_spread(x, torch.tensor([0, 0, 1, 1, 4]), 4)



# --- the oracle: tutorlib.guidance.LabelledGMM against the independent closed form above ---


def _oracle(gmm: LabelledGMM) -> OracleGMM:
    return OracleGMM(gmm.means, gmm.stds, gmm.weights, gmm.comp_class)


@pytest.mark.parametrize("path", PATHS, ids=repr)
def test_oracle_velocities_are_the_closed_forms(path):
    gmm = LabelledGMM((2,))
    oracle = _oracle(gmm)
    x, t, y = _points((2,))
    torch.testing.assert_close(oracle.velocity(path, x, t, y), gmm.v_cond(path, x, t, y), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(oracle.velocity(path, x, t), gmm.v_uncond(path, x, t), rtol=1e-12, atol=1e-12)
    # the null class K = 3 gives the unconditional field, row by row
    y_mixed = torch.where(torch.arange(len(y)) % 2 == 0, y, torch.full_like(y, 3))
    expected = torch.where((y_mixed == 3)[:, None], gmm.v_uncond(path, x, t), gmm.v_cond(path, x, t, y))
    torch.testing.assert_close(oracle.velocity(path, x, t, y_mixed), expected, rtol=1e-12, atol=1e-12)
    # the noisy classifier: log-softmax of the logits is the exact posterior
    torch.testing.assert_close(torch.log_softmax(oracle.logits(path)(x, t), 1),
                               torch.log_softmax(gmm.classifier(path)(x, t), 1), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(oracle.class_prior, gmm.prior)


def test_oracle_flow_model_is_a_perfect_cfg_network():
    """cfg_velocity on the exact fields equals classifier guidance with the exact posterior, at any w."""
    path = CondOTPath()
    oracle = _oracle(LabelledGMM((2,)))
    model = oracle.flow_model(path)
    assert model.null_class == oracle.num_classes == 3
    x, t, y = _points((2,))
    for w in (0.0, 1.0, 3.0):
        cfg = cfg_velocity(model, y, w)(x, t)
        clf = classifier_guided_velocity(lambda x, t: model(x, t), oracle.logits(path), path, y, w, t_eps=0.01)(x, t)
        torch.testing.assert_close(cfg, clf, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(cfg_velocity(model, y, 1.0)(x, t), oracle.velocity(path, x, t, y))


def test_oracle_posterior_at_t1_and_bayes_classifier():
    oracle = OracleGMM.ring(4, radius=2.0, std=0.5)
    x = torch.tensor([[2.0, 0.0], [0.1, 1.9], [-3.0, 0.2], [0.0, -2.5], [1.0, 1.0]], dtype=F64)
    lp = oracle.log_posterior(x)
    # equal weights and widths: the posterior is a softmax of -|x - mu|^2 / (2 s^2)
    expected = torch.log_softmax(-(x[:, None] - oracle.means[None]).square().sum(-1) / (2 * 0.25), 1)
    torch.testing.assert_close(lp, expected)
    assert oracle.classify(x)[:4].tolist() == [0, 1, 2, 3]
    # at t = 1 the noisy posterior of the linear path is the data's
    torch.testing.assert_close(torch.log_softmax(oracle.logits(CondOTPath())(x, torch.ones(5, dtype=F64)), 1), lp)


def test_ring_is_eight_gaussians_and_samples_follow_the_prior():
    from tutorlib.data import sample_labelled

    ring = OracleGMM.ring()
    x, y = sample_labelled("eight_gaussians", 40_000, generator=torch.Generator().manual_seed(0))
    for k in range(8):
        torch.testing.assert_close(x[y == k].mean(0).double(), ring.means[k], rtol=0, atol=0.01)  # se 0.003
    assert ring.classify(x).eq(y).float().mean() > 0.9999
    skewed = OracleGMM(torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), torch.tensor([1.0, 0.5, 0.5]),
                       torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0, 1, 1]))
    xs, ys = skewed.sample(50_000, generator=torch.Generator().manual_seed(1))
    assert xs.shape == (50_000, 2) and xs.dtype == torch.float32 and ys.dtype == torch.int64
    assert abs(ys.eq(0).float().mean().item() - 0.2) < 0.01  # p(y = 0) = 0.2, se 0.002
    assert torch.equal(skewed.sample(10, generator=torch.Generator().manual_seed(2))[0],
                       skewed.sample(10, generator=torch.Generator().manual_seed(2))[0])
    torch.testing.assert_close(skewed.class_prior, torch.tensor([0.2, 0.8], dtype=F64))
    # label-matched draws: class 1 picks its two components 3 : 5, class 0 its only one
    y = torch.tensor([0] * 20_000 + [1] * 40_000)
    xg = skewed.sample_given(y, generator=torch.Generator().manual_seed(3))
    assert xg.shape == (60_000, 2) and xg.dtype == torch.float32
    torch.testing.assert_close(xg[:20_000].mean(0), torch.zeros(2), rtol=0, atol=0.03)  # se 0.007
    on_x_axis = (xg[20_000:, 0] > 2.5).float().mean().item()
    assert abs(on_x_axis - 0.375) < 0.01  # p(component 1 | class 1) = 0.3 / 0.8, se 0.0024
    assert skewed.classify(xg[20_000:]).eq(1).float().mean() > 0.999


def test_oracle_rejects_bad_mixtures_and_labels():
    means, stds, w, c = torch.zeros(3, 2), torch.ones(3), torch.ones(3), torch.tensor([0, 1, 1])
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        OracleGMM(torch.zeros(3), stds, w, c)
    with pytest.raises(ValueError, match="stds must have shape"):
        OracleGMM(means, torch.ones(2), w, c)
    with pytest.raises(ValueError, match="positive"):
        OracleGMM(means, stds, torch.tensor([1.0, 0.0, 1.0]), c)
    with pytest.raises(ValueError, match="every id"):
        OracleGMM(means, stds, w, torch.tensor([0, 2, 2]))
    with pytest.raises(ValueError, match="int64"):
        OracleGMM(means, stds, w, c.float())
    oracle = OracleGMM(means, stds, w, c)
    x, t = torch.zeros(2, 2), torch.rand(2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        oracle.velocity(CondOTPath(), x, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="2 points"):
        oracle.velocity(CondOTPath(), x, t, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="non-negative int"):
        oracle.sample(-1)


def test_sharpened_target_at_w1_is_the_data_and_sharpens_overlapping_classes():
    overlap = OracleGMM.ring(4, radius=1.0, std=0.7)  # neighbours overlap: the Bayes classifier errs often
    g = torch.Generator().manual_seed(0)
    x, y = overlap.sample(40_000, generator=g)
    right = overlap.classify(x.double()).eq(y).double()
    bayes = sum(right[y == k].mean().item() for k in range(4)) / 4  # the mean over classes
    one = overlap.sharpened_target(1.0, 40_000, generator=torch.Generator().manual_seed(0))
    assert abs(one["accuracy"] - bayes) < 1e-9 and abs(one["spread_ratio"] - 1.0) < 1e-9  # same draw, weights 1
    sharp = [overlap.sharpened_target(w, 40_000, generator=torch.Generator().manual_seed(1))
             for w in (2.0, 5.0)]
    assert bayes < sharp[0]["accuracy"] < sharp[1]["accuracy"] <= 1.0
    assert 1.0 > sharp[0]["spread_ratio"] > sharp[1]["spread_ratio"]
    # two classes, one Gaussian each, far apart: p(y | x) = 1 on the data, nothing to sharpen
    apart = OracleGMM(torch.tensor([[-10.0, 0.0], [10.0, 0.0]]), torch.ones(2), torch.ones(2), torch.tensor([0, 1]))
    s = apart.sharpened_target(5.0, 4000, generator=torch.Generator().manual_seed(2))
    assert abs(s["accuracy"] - 1.0) < 1e-9 and abs(s["spread_ratio"] - 1.0) < 1e-6
    with pytest.raises(ValueError, match="draw more"):
        apart.sharpened_target(2.0, 1, generator=g)
