"""tutorlib.simplex against closed forms: Dirichlet draws, the Dirichlet path's speed, posteriors, the samplers."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.simplex import (DirichletPath, LinearSimplexPath, categorical_tv, dirichlet_coefficient,
                              sample_dirichlet, simplex_euler, simplex_loss)

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_dirichlet_draws_have_the_closed_form_moments_and_follow_the_generator():
    alpha = torch.tensor([0.5, 1.0, 2.5, 7.0], dtype=F64)
    n = 200_000
    x = sample_dirichlet(alpha.expand(n, 4), generator=gen(0))
    a0 = alpha.sum()
    mean, var = alpha / a0, alpha * (a0 - alpha) / (a0**2 * (a0 + 1))
    torch.testing.assert_close(x.sum(1), torch.ones(n, dtype=F64))
    assert float((x.mean(0) - mean).abs().max()) < 5 * float(var.max().sqrt()) / math.sqrt(n)
    torch.testing.assert_close(x.var(0), var, rtol=0.03, atol=0)
    assert torch.equal(sample_dirichlet(alpha.expand(8, 4), generator=gen(3)),
                       sample_dirichlet(alpha.expand(8, 4), generator=gen(3)))
    with pytest.raises(ValueError, match="positive"):
        sample_dirichlet(torch.tensor([1.0, 0.0]))


@pytest.mark.parametrize("K, t, x", [(2, 0.0, 0.5), (2, 3.0, 0.2), (3, 0.5, 0.9), (10, 0.0, 0.99), (60, 0.0, 0.3),
                                     (60, 8.0, 0.01), (100, 20.0, 0.5), (5, 2.0, 1e-4)])
def test_dirichlet_coefficient_matches_a_high_precision_derivative(K, t, x):
    """-dI_x(a, b)/da B(a, b) / (x^t (1 - x)^b), the derivative taken by mpmath at 50 digits."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 50
    a, b = mp.mpf(t) + 1, K - 1
    d = mp.diff(lambda a_: mp.betainc(a_, b, 0, mp.mpf(x), regularized=True), a)
    expected = float(-d * mp.beta(a, b) / (mp.mpf(x) ** mp.mpf(t) * (1 - mp.mpf(x)) ** b))
    got = float(dirichlet_coefficient(torch.tensor([x], dtype=F64), torch.tensor(t, dtype=F64), K))
    assert got == pytest.approx(expected, rel=1e-6)


def test_dirichlet_coefficient_at_k_2_is_log_2_at_the_middle_and_the_table_agrees():
    # K = 2, t = 0: Beta(1, 1), I_x(a, 1) = x^a, dI/da = x^a log x, C = -x log x / (x (1 - x)) = log 2 at x = 1/2
    assert float(dirichlet_coefficient(torch.tensor([0.5], dtype=F64), 0.0, 2)) == pytest.approx(math.log(2), rel=1e-10)
    for K in (2, 7, 64):
        path = DirichletPath(K)
        x = sample_dirichlet(torch.ones(2000, K, dtype=F64), generator=gen(K))
        for t in (0.0, 0.4, 5.0):
            tt = torch.full((2000,), t, dtype=F64)
            exact = dirichlet_coefficient(x, tt, K)
            table = path.coefficient(x, tt)  # one shared time: the interpolated table
            assert float(((table - exact).abs() / exact).max()) < 1e-3


def test_dirichlet_conditional_flow_carries_the_uniform_law_along_the_path():
    """Integrate dx/dt = C(x_k, t) (e_k - x) from Dir(1) to t = 3: x_k ~ Beta(4, K - 1), the rest stays uniform."""
    stats = pytest.importorskip("scipy.stats")
    K, n, T, steps = 4, 4000, 3.0, 600
    x = sample_dirichlet(torch.ones(n, K, dtype=F64), generator=gen(0))
    e = torch.zeros(K, dtype=F64)
    e[1] = 1
    h = T / steps
    for i in range(steps):  # midpoint steps
        def u(x, t):
            return dirichlet_coefficient(x[:, 1], torch.full((n,), t, dtype=F64), K)[:, None] * (e - x)
        x = x + h * u(x + 0.5 * h * u(x, i * h), (i + 0.5) * h)
    assert stats.kstest(x[:, 1].numpy(), stats.beta(T + 1, K - 1).cdf).pvalue > 1e-3
    rest = x[:, [0, 2, 3]] / (1 - x[:, 1:2])  # the other coordinates, renormalised: still Dir(1, 1, 1)
    assert stats.kstest(rest[:, 0].numpy(), stats.beta(1, 2).cdf).pvalue > 1e-3


@pytest.mark.parametrize("make", [lambda K: LinearSimplexPath(K), lambda K: DirichletPath(K, 6.0)])
def test_exact_posteriors_are_bayes_rule(make):
    """E[p(k | x_t)] over the path's marginal is q (the tower property), and p is q times the likelihood."""
    K, n = 5, 100_000
    path = make(K)
    q = torch.tensor([0.05, 0.1, 0.2, 0.25, 0.4], dtype=F64)
    for frac in (0.1, 0.4, 0.8):
        t = frac * path.t_max
        x_1 = torch.multinomial(q, n, replacement=True, generator=gen(1))
        x_t = path.sample(x_1, torch.full((n,), t, dtype=F64), generator=gen(2))
        torch.testing.assert_close(x_t.sum(-1), torch.ones(n, dtype=F64))
        post = path.posterior_of(q, x_t, t)
        assert float((post.mean(0) - q).abs().max()) < 0.005, (frac, post.mean(0))
        # the true category is always possible
        assert bool((post.gather(1, x_1[:, None]) > 0).all())
    x = sample_dirichlet(torch.ones(50, K, dtype=F64), generator=gen(3))
    t = 0.3 * path.t_max
    if isinstance(path, DirichletPath):
        lik = torch.stack([torch.distributions.Dirichlet(1 + t * torch.eye(K, dtype=F64)[k]).log_prob(x).exp()
                           for k in range(K)], 1)  # (50, K)
    else:
        lik = (x >= t).to(F64)
    expected = q * lik
    keep = expected.sum(1) > 0
    torch.testing.assert_close(path.posterior_of(q, x, t)[keep], (expected / expected.sum(1, keepdim=True))[keep])


def test_linear_posterior_off_support_takes_the_largest_coordinate():
    path = LinearSimplexPath(3)
    x = torch.tensor([[0.2, 0.5, 0.3]], dtype=F64)
    q = torch.ones(3, dtype=F64)
    torch.testing.assert_close(path.posterior_of(q, x, 0.6), torch.tensor([[0.0, 1.0, 0.0]], dtype=F64))
    torch.testing.assert_close(path.posterior_of(q, x, 0.25), torch.tensor([[0.0, 0.5, 0.5]], dtype=F64))


@pytest.mark.parametrize("make", [lambda K: LinearSimplexPath(K), lambda K: DirichletPath(K, 4.0)])
def test_velocities_sum_to_zero_and_the_linear_one_is_closed_form(make):
    K, B = 6, 40
    path = make(K)
    x = sample_dirichlet(torch.ones(B, K, dtype=F64), generator=gen(0))
    post = torch.softmax(torch.randn(B, K, generator=gen(1), dtype=F64), -1)
    t = torch.rand(B, generator=gen(2), dtype=F64) * 0.9 * path.t_max
    v = path.velocity(post, x, t)
    torch.testing.assert_close(v.sum(-1), torch.zeros(B, dtype=F64), atol=1e-12, rtol=0)
    if isinstance(path, LinearSimplexPath):
        torch.testing.assert_close(v, (post - x) / (1 - t[:, None]))
    else:  # towards every vertex with weight p_k C(x_k, t)
        C = dirichlet_coefficient(x, t, K)
        torch.testing.assert_close(v, sum(post[:, k:k + 1] * C[:, k:k + 1] * (torch.eye(K, dtype=F64)[k] - x)
                                          for k in range(K)))


def test_samplers_with_exact_posteriors_reproduce_a_small_categorical_law():
    K, n = 4, 20_000
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    g = gen(9)
    floor = sum(categorical_tv(torch.multinomial(q, n, replacement=True, generator=g), q) for _ in range(5)) / 5
    lin = LinearSimplexPath(K)
    sol = simplex_euler(lambda x, t: lin.posterior_of(q, x, t), lin, lin.sample_source((n,), generator=gen(0)),
                        steps=200, exact=True)
    assert sol.nfe == 200 and sol.x.shape == (n, K) and sol.categories.shape == (n,)
    assert categorical_tv(sol.categories, q) < 4 * floor + 0.01
    dirichlet = DirichletPath(K, 12.0)
    sol = simplex_euler(lambda x, t: dirichlet.posterior_of(q, x, t), dirichlet,
                        dirichlet.sample_source((n,), generator=gen(1)), steps=200, exact=True)
    assert categorical_tv(sol.categories, q) < 4 * floor + 0.01
    with pytest.raises(ValueError, match="steps"):
        simplex_euler(lambda x, t: x, lin, sol.x, steps=0)


def test_linear_path_with_exact_posterior_needs_steps_as_k_grows():
    """With K = 64 categories the linear path decides the category in t < ~ log(K) / K: 8 Euler steps miss it."""
    K, n = 64, 4000
    q = sample_dirichlet(torch.ones(K, dtype=F64), generator=gen(0))
    lin = LinearSimplexPath(K)
    x_0 = lin.sample_source((n,), generator=gen(1))
    tv = {N: categorical_tv(simplex_euler(lambda x, t: lin.posterior_of(q, x, t), lin, x_0, steps=N,
                                          exact=True).categories, q) for N in (8, 512)}
    assert tv[8] > 2 * tv[512], tv


def test_simplex_loss_is_the_cross_entropy_at_the_category():
    K, B = 5, 64
    path = DirichletPath(K, 4.0)
    x_1 = torch.randint(K, (B,), generator=gen(0))
    t = torch.rand(B, generator=gen(1), dtype=F64) * 4.0
    seen = {}

    def model(x, s):
        seen["s"] = s
        return torch.log(x)

    loss = simplex_loss(model, path, x_1, t, generator=gen(2))
    x_t = path.sample(x_1, t, generator=gen(2))
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(torch.log(x_t), x_1))
    torch.testing.assert_close(seen["s"], t / 4.0)  # the model sees the normalised time
    with pytest.raises(ValueError, match="logits of shape"):
        simplex_loss(lambda x, s: x[:, :3], path, x_1, t)


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="K must be"):
        LinearSimplexPath(1)
    with pytest.raises(ValueError, match="t_max"):
        DirichletPath(3, 0.0)
    with pytest.raises(ValueError, match=r"x_1 must lie in \[0, 2\]"):
        LinearSimplexPath(3).sample(torch.tensor([3]), 0.5)
    with pytest.raises(ValueError, match="t must lie"):
        LinearSimplexPath(3).sample(torch.tensor([1]), 1.5)
    with pytest.raises(ValueError, match="x_t must be points"):
        DirichletPath(3).velocity(torch.ones(2, 3), torch.ones(2, 4) / 4, 0.5)
    with pytest.raises(ValueError, match="q must be"):
        DirichletPath(3).posterior_of(torch.ones(4), torch.ones(2, 3) / 3, 0.5)
