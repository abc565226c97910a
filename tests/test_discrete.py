"""Discrete flow matching against closed forms: tokenising, the mixture path's marginals, the
posterior loss, Bayes posteriors, the probability velocity and the discrete Euler sampler."""

from __future__ import annotations

import math

import pytest
import torch

from tutorlib.discrete import (
    DiscreteSolution,
    MixturePath,
    PosteriorMLP,
    TokenImagePosterior,
    cfg_posterior,
    dequantise,
    discrete_euler,
    discrete_loss,
    mixture_elbo,
    one_hot_input,
    quantise,
    tabular_posterior,
)
from tutorlib.schedulers import CondOTScheduler, PolynomialScheduler

F64 = torch.float64
SOURCES = ["mask", "uniform"]
SCHEDULERS = [CondOTScheduler(), PolynomialScheduler(2.0)]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def independent_table(K: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent tokens with different, non-uniform laws: (p (2, K), table (K, K))."""
    p = torch.tensor([[0.5, 0.2, 0.15, 0.1, 0.05], [0.05, 0.05, 0.1, 0.3, 0.5]], dtype=F64)[:, :K]
    p = p / p.sum(1, keepdim=True)
    return p, torch.outer(p[0], p[1])


def correlated_table(K: int = 4) -> torch.Tensor:
    """Two strongly dependent tokens: mostly equal, otherwise spread out."""
    table = torch.full((K, K), 0.2 / (K * K), dtype=F64) + torch.diag(torch.linspace(1.0, 2.0, K, dtype=F64))
    return table / table.sum()


def joint_law(tokens: torch.Tensor, K: int) -> torch.Tensor:
    """Empirical law (K, K) of two-token samples (B, 2)."""
    return torch.bincount(tokens[:, 0] * K + tokens[:, 1], minlength=K * K).to(F64).view(K, K) / tokens.shape[0]


def tv(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def exact_fn(table: torch.Tensor, path: MixturePath):
    """The exact posterior of ``table`` as a posterior model (log-probabilities)."""
    return lambda x_t, t: tabular_posterior(table, path, x_t, t).log()


# --------------------------------------------------------------------------------------
# quantise / dequantise
# --------------------------------------------------------------------------------------


def test_quantise_known_values_and_edges():
    x = torch.tensor([[-4.0, 4.0], [-3.99, 3.99], [0.0, -0.001], [-3.5, 1.0]])
    tok = quantise(x, 8, -4.0, 4.0)  # cells of width 1
    assert tok.dtype == torch.int64 and tok.shape == x.shape
    assert tok.tolist() == [[0, 7], [0, 7], [4, 3], [0, 5]]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("bins,low,high", [(64, -4.0, 4.0), (7, -1.3, 2.9), (1000, 0.0, 1.0)])
def test_dequantise_then_quantise_is_the_identity(dtype, bins, low, high):
    tok = torch.randint(bins, (4000, 2), generator=gen(0))
    for jitter in (True, False):
        x = dequantise(tok, bins, low, high, generator=gen(1), jitter=jitter, dtype=dtype)
        assert x.dtype == dtype and x.shape == tok.shape
        assert torch.equal(quantise(x, bins, low, high), tok)
    width = (high - low) / bins
    centres = dequantise(tok, bins, low, high, jitter=False, dtype=F64)
    torch.testing.assert_close(centres, low + (tok.to(F64) + 0.5) * width)


def test_dequantise_jitter_is_uniform_inside_the_cell():
    tok = torch.full((200_000, 1), 3)
    x = dequantise(tok, 10, 0.0, 1.0, generator=gen(2), dtype=F64)  # cell [0.3, 0.4)
    u = (x - 0.3) / 0.1
    assert float(u.min()) >= 0.0 and float(u.max()) < 1.0
    assert abs(float(u.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / u.numel())
    assert abs(float(u.var()) - 1 / 12) < 0.002
    x2 = dequantise(tok, 10, 0.0, 1.0, generator=gen(2), dtype=F64)
    assert torch.equal(x, x2)  # reproducible under a generator


def test_quantise_of_dequantised_data_keeps_each_point_in_its_cell():
    x = torch.rand(1000, 2, generator=gen(3), dtype=F64) * 8 - 4
    back = dequantise(quantise(x, 16, -4, 4), 16, -4, 4, generator=gen(4), dtype=F64)
    assert float((back - x).abs().max()) < 0.5  # one cell width


def test_quantise_range_and_argument_errors():
    x = torch.tensor([[0.0, 4.5], [-5.0, 1.0]])
    with pytest.raises(ValueError, match="outside"):
        quantise(x, 8, -4.0, 4.0)
    assert quantise(x, 8, -4.0, 4.0, clip=True).tolist() == [[4, 7], [0, 5]]
    with pytest.raises(ValueError, match="NaN"):
        quantise(torch.tensor([float("nan")]), 8, -4.0, 4.0)
    with pytest.raises(ValueError, match="floating"):
        quantise(torch.tensor([1, 2]), 8, -4.0, 4.0)
    with pytest.raises(ValueError, match="bins"):
        quantise(x, 0, -4.0, 4.0)
    with pytest.raises(ValueError, match="low < high"):
        quantise(x, 8, 4.0, -4.0)
    with pytest.raises(ValueError, match=r"\[0, 7\]"):
        dequantise(torch.tensor([[0, 8]]), 8, -4.0, 4.0)
    with pytest.raises(ValueError, match="integer"):
        dequantise(torch.tensor([[0.0, 1.0]]), 8, -4.0, 4.0)


# --------------------------------------------------------------------------------------
# The mixture path
# --------------------------------------------------------------------------------------


def test_path_arguments_and_state_counts():
    mask = MixturePath(CondOTScheduler(), "mask", 10)
    unif = MixturePath(CondOTScheduler(), "uniform", 10)
    assert (mask.num_states, mask.mask_token) == (11, 10) and (unif.num_states, unif.mask_token) == (10, None)
    assert MixturePath(CondOTScheduler(), "mask", 10, mask_token=10).mask_token == 10
    with pytest.raises(ValueError, match="source"):
        MixturePath(CondOTScheduler(), "gaussian", 10)
    with pytest.raises(ValueError, match="mask_token"):
        MixturePath(CondOTScheduler(), "mask", 10, mask_token=0)
    with pytest.raises(ValueError, match="mask_token"):
        MixturePath(CondOTScheduler(), "uniform", 10, mask_token=10)
    with pytest.raises(ValueError, match="vocab_size"):
        MixturePath(CondOTScheduler(), "mask", 1)


def test_sample_source():
    mask = MixturePath(CondOTScheduler(), "mask", 6)
    assert torch.equal(mask.sample_source((3, 2)), torch.full((3, 2), 6))
    unif = MixturePath(CondOTScheduler(), "uniform", 6)
    x = unif.sample_source((60_000, 2), generator=gen(0))
    assert x.dtype == torch.int64 and int(x.min()) == 0 and int(x.max()) == 5
    freq = torch.bincount(x.flatten(), minlength=6).to(F64) / x.numel()
    assert float((freq - 1 / 6).abs().max()) < 5 * math.sqrt(1 / 6 * 5 / 6 / x.numel())
    assert torch.equal(x, unif.sample_source((60_000, 2), generator=gen(0)))


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=repr)
def test_path_marginal_takes_the_data_token_with_probability_kappa(source, scheduler):
    """P(x_t = x_1) = kappa_t and P(x_t = x_0) = 1 - kappa_t (x_0 != x_1 everywhere), tokens independent."""
    K, n = 7, 100_000
    path = MixturePath(scheduler, source, K)
    x_1 = torch.randint(K, (n, 2), generator=gen(1))
    x_0 = path.sample_source((n, 2), generator=gen(2)) if source == "mask" else (x_1 + 1) % K
    for t in (0.0, 0.1, 0.5, 0.8, 1.0):
        s = path.sample(x_0, x_1, torch.full((n,), t), generator=gen(3))
        kappa = float(scheduler(torch.tensor(t, dtype=F64)).alpha_t)
        data = s.x_t == x_1  # (n, 2)
        assert bool((data | (s.x_t == x_0)).all())
        tol = 5 * math.sqrt(kappa * (1 - kappa) / n) + 1e-12
        assert abs(float(data[:, 0].to(F64).mean()) - kappa) < tol, (t, kappa)
        assert abs(float(data[:, 1].to(F64).mean()) - kappa) < tol
        assert abs(float(data.all(1).to(F64).mean()) - kappa**2) < tol  # independent across tokens


def test_path_sample_checks_shapes_and_tokens():
    path = MixturePath(CondOTScheduler(), "mask", 5)
    x_1 = torch.randint(5, (4, 2))
    x_0 = path.sample_source((4, 2))
    with pytest.raises(ValueError, match="same shape"):
        path.sample(x_0[:, :1], x_1, torch.rand(4))
    with pytest.raises(ValueError, match="x_1 must lie"):
        path.sample(x_0, x_1 + 5, torch.rand(4))  # the mask is not a data token
    with pytest.raises(ValueError, match="x_0 must lie"):
        path.sample(x_0 + 1, x_1, torch.rand(4))
    with pytest.raises(ValueError, match="integer"):
        path.sample(x_0, x_1.float(), torch.rand(4))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(4,\)"):
        path.sample(x_0, x_1, torch.rand(3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x_0, x_1, torch.full((4,), 1.5))


# --------------------------------------------------------------------------------------
# Exact posteriors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=repr)
def test_tabular_posterior_of_independent_tokens_masked_source(scheduler):
    """Masked source: the posterior is the data marginal at a masked token, a delta elsewhere."""
    p, table = independent_table()
    K = p.shape[1]
    path = MixturePath(scheduler, "mask", K)
    x_t = torch.tensor([[K, K], [2, K], [K, 4], [1, 3]])
    post = tabular_posterior(table, path, x_t, torch.full((4,), 0.37))
    expected = torch.stack([p, torch.stack([torch.eye(K, dtype=F64)[2], p[1]]),
                            torch.stack([p[0], torch.eye(K, dtype=F64)[4]]), torch.eye(K, dtype=F64)[[1, 3]]])
    torch.testing.assert_close(post, expected)


@pytest.mark.parametrize("scheduler", SCHEDULERS, ids=repr)
def test_tabular_posterior_of_independent_tokens_uniform_source(scheduler):
    """Uniform source: p_{1|t}(x | x_t) = p(x) (kappa [x = x_t] + (1 - kappa) / K) / Z."""
    p, table = independent_table()
    K = p.shape[1]
    path = MixturePath(scheduler, "uniform", K)
    x_t = torch.randint(K, (50, 2), generator=gen(0))
    t = torch.rand(50, generator=gen(1), dtype=F64)
    kappa = scheduler(t).alpha_t[:, None, None]  # (B, 1, 1)
    w = p[None] * (kappa * torch.nn.functional.one_hot(x_t, K) + (1 - kappa) / K)  # (B, 2, K)
    torch.testing.assert_close(tabular_posterior(table, path, x_t, t), w / w.sum(-1, keepdim=True))
    # the limits: the prior at t = 0, a delta at t = 1
    torch.testing.assert_close(tabular_posterior(table, path, x_t, torch.zeros(50)), p.expand(50, 2, K))
    torch.testing.assert_close(tabular_posterior(table, path, x_t, torch.ones(50)),
                               torch.nn.functional.one_hot(x_t, K).to(F64))


def test_tabular_posterior_of_dependent_tokens_is_the_conditional():
    table = correlated_table()
    K = table.shape[0]
    path = MixturePath(CondOTScheduler(), "mask", K)
    post = tabular_posterior(table, path, torch.tensor([[K, 2], [1, K], [K, K]]), torch.full((3,), 0.5))
    torch.testing.assert_close(post[0, 0], table[:, 2] / table[:, 2].sum())
    torch.testing.assert_close(post[1, 1], table[1] / table[1].sum())
    torch.testing.assert_close(post[2], torch.stack([table.sum(1), table.sum(0)]))
    with pytest.raises(ValueError, match="table must have shape"):
        tabular_posterior(table[:3], path, torch.tensor([[K, 2]]), 0.5)


@pytest.mark.parametrize("source", SOURCES)
def test_tabular_posterior_matches_the_brute_force_joint_for_three_tokens(source):
    """Bayes on the full (B, K, K, K) joint, then marginals: what tabular_posterior contracts token by token."""
    K = 3
    path = MixturePath(PolynomialScheduler(2.0), source, K)
    table = torch.rand(K, K, K, generator=gen(0), dtype=F64)
    table /= table.sum()
    x_1 = torch.randint(K, (40, 3), generator=gen(1))
    t = torch.rand(40, generator=gen(2), dtype=F64) * 0.98 + 0.01
    x_t = path.sample(path.sample_source((40, 3), generator=gen(3)), x_1, t, generator=gen(4)).x_t
    kappa = (t**2)[:, None, None]
    if source == "mask":
        hit = torch.nn.functional.one_hot(x_t.clamp(max=K - 1), K)  # (B, 3, K)
        lik = torch.where((x_t == K)[..., None], 1 - kappa, kappa * hit)
    else:
        lik = kappa * torch.nn.functional.one_hot(x_t, K) + (1 - kappa) / K  # (B, 3, K)
    joint = table[None] * lik[:, 0, :, None, None] * lik[:, 1, None, :, None] * lik[:, 2, None, None, :]
    joint = joint / joint.sum((1, 2, 3), keepdim=True)
    expected = torch.stack([joint.sum((2, 3)), joint.sum((1, 3)), joint.sum((1, 2))], 1)
    torch.testing.assert_close(tabular_posterior(table, path, x_t, t), expected)


# --------------------------------------------------------------------------------------
# The loss
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_loss_is_the_cross_entropy_of_the_posterior_at_the_data(source):
    """Same generator, same x_t: the loss equals -log p_{1|t}(x_1 | x_t) written out by hand."""
    p, table = independent_table()
    K, n = p.shape[1], 4000
    path = MixturePath(CondOTScheduler(), source, K)
    x_1 = torch.multinomial(table.flatten(), n, replacement=True, generator=gen(0))
    x_1 = torch.stack([x_1 // K, x_1 % K], 1)  # (n, 2)
    x_0 = path.sample_source((n, 2), generator=gen(1))
    t = torch.rand(n, generator=gen(2), dtype=F64)
    loss = discrete_loss(exact_fn(table, path), path, x_0, x_1, t, generator=gen(3))
    x_t = path.sample(x_0, x_1, t, generator=gen(3)).x_t
    kappa = t[:, None]
    if source == "mask":
        nll = torch.where(x_t == K, -p.log().gather(1, x_1.T).T, torch.zeros((), dtype=F64))  # 0 where known
    else:
        w = p[None] * (kappa[..., None] * torch.nn.functional.one_hot(x_t, K) + (1 - kappa[..., None]) / K)
        post = w / w.sum(-1, keepdim=True)
        nll = -post.gather(2, x_1[..., None]).squeeze(-1).log()
    torch.testing.assert_close(loss, nll.mean())
    # ... and its expectation: with kappa_t = t, E[loss] = E[1 - t] H = H / 2 for the masked source
    if source == "mask":
        entropy = float(-(p * p.log()).sum(1).mean())
        assert abs(float(loss) - entropy / 2) < 0.05
        masked = discrete_loss(exact_fn(table, path), path, x_0, x_1, t, generator=gen(3), masked_only=True)
        assert abs(float(masked) - entropy) < 0.05
    # the exact posterior beats a perturbed one (Gibbs' inequality), on the same draws
    def worse(x_t, t):
        return exact_fn(table, path)(x_t, t) + 0.3 * torch.randn(*x_t.shape, K, generator=gen(4), dtype=F64)

    assert float(discrete_loss(worse, path, x_0, x_1, t, generator=gen(3))) > float(loss)


def test_loss_errors():
    path = MixturePath(CondOTScheduler(), "uniform", 4)
    x_0, x_1 = path.sample_source((8, 2), generator=gen(0)), torch.randint(4, (8, 2))
    with pytest.raises(ValueError, match="logits of shape"):
        discrete_loss(lambda x, t: torch.zeros(8, 2, 5), path, x_0, x_1, torch.rand(8))
    with pytest.raises(ValueError, match="masked_only"):
        discrete_loss(lambda x, t: torch.zeros(8, 2, 4), path, x_0, x_1, torch.rand(8), masked_only=True)


# --------------------------------------------------------------------------------------
# The probability velocity and one Euler step
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
def test_velocity_is_the_closed_form_rate_matrix(source):
    """u_t = kappa'/(1 - kappa) (p_{1|t} - delta_{x_t}): rows sum to 0, off-diagonal entries >= 0."""
    K, B = 4, 64
    path = MixturePath(PolynomialScheduler(2.0), source, K)
    S = path.num_states
    posterior = torch.softmax(torch.randn(B, 2, K, generator=gen(0), dtype=F64), -1)
    x_t = torch.randint(S, (B, 2), generator=gen(1))
    t = torch.rand(B, generator=gen(2), dtype=F64) * 0.99
    u = path.velocity(posterior, x_t, t)  # (B, 2, S)
    coef = (2 * t / (1 - t**2))[:, None, None]
    expected = coef * (torch.nn.functional.pad(posterior, (0, S - K)) - torch.nn.functional.one_hot(x_t, S))
    torch.testing.assert_close(u, expected)
    torch.testing.assert_close(u.sum(-1), torch.zeros(B, 2, dtype=F64), atol=1e-12, rtol=0)
    off = torch.ones_like(u, dtype=torch.bool).scatter_(-1, x_t[..., None], False)
    assert bool((u[off] >= 0).all())
    with pytest.raises(ValueError, match="posterior must have shape"):
        path.velocity(posterior[..., :3], x_t, t)


@pytest.mark.parametrize("source", SOURCES)
def test_last_euler_step_always_takes_the_posterior_draw(source):
    """With kappa_t = t^2 and 2 steps, h kappa'/(1 - kappa) = 4/3 > 1 at t = 1/2 (clamped), and the last
    step must land on the posterior: its law is exactly p_{1|t} whatever the state before it."""
    K, n = 4, 100_000
    path = MixturePath(PolynomialScheduler(2.0), source, K)
    posterior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    x_0 = path.sample_source((n, 1), generator=gen(0))
    model = lambda x, t: posterior.log().expand(*x.shape, K)  # noqa: E731
    for steps in (1, 2):
        sol = discrete_euler(model, path, x_0, steps=steps, generator=gen(steps), return_trajectory=True)
        if source == "mask":
            start = sol.trajectory[-2, :, 0] == K  # still masked before the last step
        else:
            start = torch.ones(n, dtype=torch.bool)
        law = torch.bincount(sol.x[start, 0], minlength=K).to(F64) / int(start.sum())
        assert float((law - posterior).abs().max()) < 0.01


@pytest.mark.parametrize("source", SOURCES)
def test_single_interior_euler_step_has_law_delta_plus_h_u(source):
    """From t = 0.2 with h = 0.1 (c < 1), P(x_{t+h} = x) = delta_{x_t}(x) + h u_t(x | x_t)."""
    K, n = 4, 200_000
    path = MixturePath(CondOTScheduler(), source, K)
    S = path.num_states
    posterior = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    start = K if source == "mask" else 2
    # ten steps on [0, 1]: step k = 2 goes from t = 0.2 to 0.3; feed a fixed posterior and record x at t = 0.3
    seen = {}

    def model(x, t):
        if abs(float(t[0]) - 0.3) < 1e-6:
            seen["x"] = x.clone()
        return posterior.log().expand(*x.shape, K)

    x_0 = torch.full((n, 1), start)
    sol = discrete_euler(model, path, x_0, steps=10, generator=gen(1), return_trajectory=True)
    x_02, x_03 = sol.trajectory[2, :, 0], sol.trajectory[3, :, 0]
    assert torch.equal(seen["x"][:, 0], x_03)
    keep = x_02 == start
    law = torch.bincount(x_03[keep], minlength=S).to(F64) / int(keep.sum())
    u = path.velocity(posterior.view(1, 1, K), torch.tensor([[start]]), torch.tensor([0.2]))[0, 0]
    expected = torch.eye(S, dtype=F64)[start] + 0.1 * u
    assert float((law - expected).abs().max()) < 5 * math.sqrt(0.25 / int(keep.sum()))


# --------------------------------------------------------------------------------------
# The discrete Euler sampler with exact posteriors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("steps", [1, 3, 50])
def test_euler_with_the_exact_posterior_reproduces_independent_data(source, steps):
    """Independent tokens, kappa_t = t: the sampler is exact at every step count (TV ~ sampling noise)."""
    p, table = independent_table()
    K, n = p.shape[1], 40_000
    path = MixturePath(CondOTScheduler(), source, K)
    x_0 = path.sample_source((n, 2), generator=gen(0))
    sol = discrete_euler(exact_fn(table, path), path, x_0, steps=steps, generator=gen(1))
    assert isinstance(sol, DiscreteSolution) and sol.nfe == steps and sol.trajectory is None
    assert sol.x.shape == (n, 2) and int(sol.x.max()) < K  # nothing left masked
    assert tv(joint_law(sol.x, K), table) < 0.02  # E[TV] ~ 0.01 at n = 40k, 25 cells


@pytest.mark.parametrize("source", SOURCES)
def test_euler_with_a_polynomial_scheduler_reproduces_independent_data(source):
    p, table = independent_table()
    K, n = p.shape[1], 40_000
    path = MixturePath(PolynomialScheduler(2.0), source, K)
    sol = discrete_euler(exact_fn(table, path), path, path.sample_source((n, 2), generator=gen(0)), steps=20, generator=gen(1))
    assert tv(joint_law(sol.x, K), table) < 0.02


@pytest.mark.parametrize("steps", [1, 2, 4, 100])
def test_masked_euler_on_dependent_tokens_mixes_joint_and_product_exactly(steps):
    """kappa_t = t, masked source, D = 2: both tokens unmask in the same step with probability 1/N, and
    only then are they drawn independently, so the law is (1 - 1/N) joint + (1/N) product of marginals."""
    table = correlated_table()
    K, n = table.shape[0], 40_000
    product = torch.outer(table.sum(1), table.sum(0))
    assert tv(table, product) > 0.5  # the two laws are far apart
    path = MixturePath(CondOTScheduler(), "mask", K)
    sol = discrete_euler(exact_fn(table, path), path, path.sample_source((n, 2)), steps=steps, generator=gen(steps))
    law = joint_law(sol.x, K)
    assert tv(law, (1 - 1 / steps) * table + product / steps) < 0.015


def test_uniform_euler_on_dependent_tokens_converges_with_steps():
    table = correlated_table()
    K, n = table.shape[0], 40_000
    path = MixturePath(CondOTScheduler(), "uniform", K)
    x_0 = path.sample_source((n, 2), generator=gen(0))
    errors = {N: tv(joint_law(discrete_euler(exact_fn(table, path), path, x_0, steps=N, generator=gen(N)).x, K), table)
              for N in (1, 200)}
    assert errors[1] > 0.5 and errors[200] < 0.02, errors


def test_euler_trajectory_generator_and_errors():
    p, table = independent_table()
    K = p.shape[1]
    path = MixturePath(CondOTScheduler(), "mask", K)
    x_0 = path.sample_source((500, 2))
    a = discrete_euler(exact_fn(table, path), path, x_0, steps=5, generator=gen(7), return_trajectory=True)
    b = discrete_euler(exact_fn(table, path), path, x_0, steps=5, generator=gen(7))
    assert torch.equal(a.x, b.x)  # reproducible under a generator
    assert a.trajectory.shape == (6, 500, 2) and torch.equal(a.trajectory[-1], a.x)
    assert torch.equal(a.trajectory[0], x_0)
    torch.testing.assert_close(a.times, torch.linspace(0, 1, 6))
    masked = (a.trajectory == K).to(F64).mean((1, 2))  # fraction still masked at t_k: 1 - t_k
    assert float((masked - (1 - a.times.to(F64))).abs().max()) < 0.05
    # a masked-source token once revealed never changes
    revealed = a.trajectory[:-1] != K
    assert bool((a.trajectory[1:][revealed] == a.trajectory[:-1][revealed]).all())
    with pytest.raises(ValueError, match="steps"):
        discrete_euler(exact_fn(table, path), path, x_0, steps=0)
    with pytest.raises(ValueError, match="x_0 must lie"):
        discrete_euler(exact_fn(table, path), path, x_0 + 1, steps=2)
    with pytest.raises(ValueError, match="logits must have shape"):
        discrete_euler(lambda x, t: torch.zeros(*x.shape, K + 1), path, x_0, steps=2)


def test_masked_source_keeps_revealed_tokens_whatever_the_model_says():
    """A revealed token is data: posterior_probs makes it a delta even if the model disagrees."""
    K = 5
    path = MixturePath(CondOTScheduler(), "mask", K)
    x_t = torch.tensor([[K, 1], [3, K]])
    logits = torch.zeros(2, 2, K)  # a model that knows nothing: uniform everywhere
    probs = path.posterior_probs(logits, x_t)
    torch.testing.assert_close(probs[0, 0], torch.full((K,), 1 / K))
    torch.testing.assert_close(probs[0, 1], torch.eye(K)[1])
    torch.testing.assert_close(probs[1, 0], torch.eye(K)[3])
    unif = MixturePath(CondOTScheduler(), "uniform", K)
    torch.testing.assert_close(unif.posterior_probs(logits, x_t.clamp(max=K - 1)), torch.full((2, 2, K), 1 / K))
    sol = discrete_euler(lambda x, t: torch.zeros(*x.shape, K), path, path.sample_source((2000, 3)), steps=8, generator=gen(0),
                         return_trajectory=True)
    revealed = sol.trajectory[:-1] != K
    assert bool((sol.trajectory[1:][revealed] == sol.trajectory[:-1][revealed]).all())


# --------------------------------------------------------------------------------------
# The network side
# --------------------------------------------------------------------------------------


def test_one_hot_input():
    tok = torch.tensor([[0, 3], [2, 1]])
    out = one_hot_input(tok, 4)
    assert out.shape == (2, 8) and out.dtype == torch.float32
    assert out[0].tolist() == [1, 0, 0, 0, 0, 0, 0, 1] and out[1].tolist() == [0, 0, 1, 0, 0, 1, 0, 0]
    with pytest.raises(ValueError, match=r"\[0, 3\]"):
        one_hot_input(tok, 3)
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        one_hot_input(tok[None], 4)


@pytest.mark.parametrize("source", SOURCES)
def test_posterior_mlp_learns_the_posterior_of_independent_tokens(source):
    """A small PosteriorMLP trained by the loss gets close to the exact posterior's loss."""
    p, table = independent_table(4)
    K, B = 4, 256
    path = MixturePath(CondOTScheduler(), source, K)
    torch.manual_seed(0)
    model = PosteriorMLP.for_path(path, 2, hidden=32, depth=1)
    assert model(path.sample_source((3, 2), generator=gen(0)), torch.rand(3)).shape == (3, 2, K)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = gen(1)
    flat = table.flatten()
    losses, exact = [], []
    for step in range(150):
        idx = torch.multinomial(flat, B, replacement=True, generator=g)
        x_1 = torch.stack([idx // K, idx % K], 1)
        x_0, t = path.sample_source((B, 2), generator=g), torch.rand(B, generator=g)
        state = g.get_state()
        loss = discrete_loss(model, path, x_0, x_1, t, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 100:
            losses.append(loss.item())
            g2 = torch.Generator().manual_seed(0)
            g2.set_state(state)
            exact.append(float(discrete_loss(exact_fn(table, path), path, x_0, x_1, t.to(F64), generator=g2)))
    gap = sum(losses) / len(losses) - sum(exact) / len(exact)
    assert -0.02 < gap < 0.06, gap
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 2\)"):
        model(torch.zeros(3, 3, dtype=torch.int64), torch.rand(3))


# --------------------------------------------------------------------------------------
# The evidence bound
# --------------------------------------------------------------------------------------


def test_masked_elbo_is_tight_for_the_exact_posterior():
    """Masked source, exact posterior: revealing tokens one by one is an exact chain rule, so the bound's mean
    over t and x_t is -log p(x_1) itself (for each x_1, within the Monte Carlo error)."""
    K, n = 3, 60_000
    table = torch.rand(K, K, K, generator=gen(0), dtype=F64) + 0.05
    table /= table.sum()
    path = MixturePath(CondOTScheduler(), "mask", K)
    for target in ([0, 1, 2], [2, 2, 0]):
        x_1 = torch.tensor(target).expand(n, 3)
        t = torch.rand(n, generator=gen(1), dtype=F64) * 0.999
        e = mixture_elbo(exact_fn(table, path), path, path.sample_source((n, 3)), x_1, t, generator=gen(2))
        assert e.shape == (n,) and e.dtype == F64 and bool((e >= 0).all())
        se = float(e.std()) / math.sqrt(n)
        assert abs(float(e.mean()) + math.log(float(table[tuple(target)]))) < 4 * se, (float(e.mean()), se)


def test_masked_elbo_is_the_weighted_cross_entropy_of_the_masked_tokens():
    K, B, D = 6, 50, 5
    path = MixturePath(CondOTScheduler(), "mask", K)
    logits = torch.randn(B, D, K, generator=gen(0), dtype=F64)
    x_1 = torch.randint(K, (B, D), generator=gen(1))
    t = torch.rand(B, generator=gen(2), dtype=F64)
    e = mixture_elbo(lambda x, tt: logits, path, path.sample_source((B, D)), x_1, t, generator=gen(3))
    x_t = path.sample(path.sample_source((B, D)), x_1, t, generator=gen(3)).x_t
    ce = -torch.log_softmax(logits, -1).gather(-1, x_1[..., None]).squeeze(-1)  # (B, D)
    torch.testing.assert_close(e, (ce * (x_t == K)).sum(1) / (1 - t))


@pytest.mark.parametrize("source", SOURCES)
def test_elbo_is_the_limit_of_the_discrete_time_bound_and_bounds_the_nll(source):
    """One token, K = 4, exact posterior. The N-step sampler's discrete-time ELBO (a sum of KL divergences
    between the path's step given x_1 and the model's Euler step, enumerated exactly) tends to the
    continuous bound as N grows; the bound is >= -log q(x_1), with equality for the masked source."""
    q = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64)
    K, n, N = 4, 200_000, 4000
    path = MixturePath(CondOTScheduler(), source, K)
    S = path.num_states
    model = exact_fn(q, path)
    states = torch.arange(S)
    for k in (0, 3):
        # the discrete-time bound: P(x_t = s | x_1 = k) exactly, and each step's KL exactly (kappa_t = t)
        total = 0.0
        for i in range(N):
            t, h = i / N, 1.0 / N
            jump = h / (1 - t)  # both chains jump to (the path) / a posterior draw (the model) with this probability
            p0 = torch.zeros(S, dtype=F64)
            p0[K if source == "mask" else slice(None)] = 1.0 if source == "mask" else 1.0 / K
            marg = (1 - t) * p0 + t * torch.eye(S, dtype=F64)[k]  # (S,) law of x_t given x_1 = k
            post = path.posterior_probs(model(states[:, None], torch.full((S,), t, dtype=F64)), states[:, None])[:, 0]
            post = torch.nn.functional.pad(post, (0, S - K))  # (S, S): row s = the model's draw law at x_t = s
            model_step = (1 - jump) * torch.eye(S, dtype=F64) + jump * post  # (S, S)
            path_step = torch.eye(S, dtype=F64).clone()
            path_step[:, :] = (1 - jump) * torch.eye(S, dtype=F64)
            path_step[:, k] += jump  # from s != k: to k with probability `jump`; from k: stay
            path_step[k] = torch.eye(S, dtype=F64)[k]
            kl = (path_step * (path_step.clamp_min(1e-300).log() - model_step.clamp_min(1e-300).log())).sum(1)  # (S,)
            total += float((marg * kl).sum())
        x_1 = torch.full((n, 1), k)
        t = torch.rand(n, generator=gen(k), dtype=F64)
        e = mixture_elbo(model, path, path.sample_source((n, 1), generator=gen(10 + k)), x_1, t, generator=gen(20 + k))
        se = float(e.std()) / math.sqrt(n)
        assert abs(float(e.mean()) - total) < 4 * se + 0.003 * total, (float(e.mean()), se, total)
        nll = -math.log(float(q[k]))
        if source == "mask":
            assert total == pytest.approx(nll, rel=2e-3)
        else:
            assert total > nll + 0.05  # loose: the path's chain and the model's differ even with the exact posterior


def test_elbo_errors():
    path = MixturePath(CondOTScheduler(), "uniform", 4)
    x_0, x_1 = path.sample_source((8, 2), generator=gen(0)), torch.randint(4, (8, 2))
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        mixture_elbo(lambda x, t: torch.zeros(8, 2, 4), path, x_0, x_1, torch.ones(8))
    with pytest.raises(ValueError, match="logits of shape"):
        mixture_elbo(lambda x, t: torch.zeros(8, 2, 5), path, x_0, x_1, torch.rand(8))


# --------------------------------------------------------------------------------------
# Token images and guidance
# --------------------------------------------------------------------------------------


class _RecordingNet(torch.nn.Module):
    """A class-conditional 'image network' that records its inputs: logits from the one-hot input and y."""

    def __init__(self, S: int, K: int, num_classes: int = 3):
        super().__init__()
        self.mix = torch.nn.Conv2d(S, K, 1, bias=False)
        self.emb = torch.nn.Embedding(num_classes + 1, K)
        self.num_classes, self.calls = num_classes, []

    @property
    def null_class(self):
        return self.num_classes

    def forward(self, x, t, y=None):
        self.calls.append((x.clone(), None if y is None else y.clone()))
        y = torch.full((x.shape[0],), self.num_classes) if y is None else y
        return self.mix(x) + self.emb(y)[:, :, None, None] * (1 + t[:, None, None, None])


def test_token_image_posterior_feeds_one_hot_channels_and_moves_the_category_axis_last():
    S, K = 3, 2
    net = _RecordingNet(S, K)
    post = TokenImagePosterior(net, S, K)
    x = torch.randint(S, (4, 5, 6), generator=gen(0))
    t = torch.rand(4, generator=gen(1))
    out = post(x, t, torch.tensor([0, 1, 2, 3]))
    seen, y = net.calls[-1]
    assert seen.shape == (4, S, 5, 6) and torch.equal(seen.argmax(1), x) and float(seen.sum()) == x.numel()
    assert out.shape == (4, 5, 6, K) and y.tolist() == [0, 1, 2, 3]
    with torch.no_grad():
        ref = net.mix(seen) + net.emb(y)[:, :, None, None] * (1 + t[:, None, None, None])
    torch.testing.assert_close(out, ref.permute(0, 2, 3, 1))
    assert post.null_class == 3
    post(x, t)
    assert net.calls[-1][1] is None  # y=None: the network's own unconditional branch
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        post(x[0], t)
    with pytest.raises(ValueError, match="x_t must lie"):
        post(x + 1, t)


def test_cfg_posterior_is_the_logit_combination_in_one_pass():
    S, K = 3, 2
    net = _RecordingNet(S, K)
    torch.nn.init.normal_(net.emb.weight, std=2.0, generator=gen(5))
    post = TokenImagePosterior(net, S, K)
    x = torch.randint(S, (4, 5, 6), generator=gen(0))
    t = torch.rand(4, generator=gen(1))
    y = torch.tensor([0, 2, 1, 1])
    with torch.no_grad():
        cond, uncond = post(x, t, y), post(x, t, torch.full_like(y, 3))
        for w in (0.0, 1.0, 2.5):
            net.calls.clear()
            guided = cfg_posterior(post, y, w)(x, t)
            torch.testing.assert_close(guided, uncond + w * (cond - uncond))
            assert len(net.calls) == 1  # one forward pass (of the doubled batch when both halves are needed)
    path = MixturePath(CondOTScheduler(), "mask", K)
    sol = discrete_euler(cfg_posterior(post, y, 2.0), path, path.sample_source((4, 5, 6)), steps=3, generator=gen(2))
    assert sol.x.shape == (4, 5, 6) and int(sol.x.max()) < K
