"""Couplings: minibatch OT is the exact optimal assignment (brute force on tiny batches)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from tutorlib.couplings import Coupling, independent, minibatch_ot, ot_assignment

SHAPES = [(7, 2), (7, 5), (7, 1, 3, 3)]
ALL_PERMS = np.array(list(itertools.permutations(range(7))))  # (5040, 7)


def _cost(x_0, x_1):
    return (x_0 - x_1).reshape(len(x_0), -1).square().sum(1).sum().item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_minibatch_ot_equals_brute_force(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x_0 = torch.randn(shape, generator=g, dtype=torch.float64)
    x_1 = torch.randn(shape, generator=g, dtype=torch.float64) + 0.5
    c = ((x_0.reshape(7, 1, -1) - x_1.reshape(1, 7, -1)) ** 2).sum(-1).numpy()  # (7, 7)
    brute = c[np.arange(7), ALL_PERMS].sum(1).min()
    a, b = minibatch_ot(x_0, x_1)
    assert _cost(a, b) == pytest.approx(brute, rel=1e-12)
    assert torch.equal(a, x_0)  # the source keeps its order
    assert torch.equal(b.reshape(7, -1).sort(0).values, x_1.reshape(7, -1).sort(0).values)  # a permutation
    assert _cost(a, b) <= _cost(x_0, x_1) + 1e-12


def test_assignment_is_a_permutation_and_float32_works():
    g = torch.Generator().manual_seed(3)
    x_0, x_1 = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    perm = ot_assignment(x_0, x_1)
    assert perm.dtype == torch.int64 and sorted(perm.tolist()) == list(range(64))
    out = minibatch_ot(x_0, x_1)
    assert isinstance(out, Coupling) and out.x_1.dtype == torch.float32
    torch.testing.assert_close(out.x_1, x_1[perm])


def test_independent_is_identity_and_checks_batch():
    x_0, x_1 = torch.randn(5, 2), torch.randn(5, 2)
    a, b = independent(x_0, x_1)
    assert a is x_0 and b is x_1
    with pytest.raises(ValueError):
        independent(x_0, torch.randn(4, 2))
    with pytest.raises(ValueError):
        minibatch_ot(x_0, torch.randn(4, 2))


def test_gradients_pass_through_the_reordering():
    x_0 = torch.randn(6, 2)
    x_1 = torch.randn(6, 2, requires_grad=True)
    _, b = minibatch_ot(x_0, x_1)
    b.sum().backward()
    torch.testing.assert_close(x_1.grad, torch.ones(6, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_minibatch_ot_on_cuda():
    x_0, x_1 = torch.randn(7, 1, 2, 2, device="cuda"), torch.randn(7, 1, 2, 2, device="cuda")
    a, b = minibatch_ot(x_0, x_1)
    assert b.device.type == "cuda"
    ca, cb = minibatch_ot(x_0.cpu(), x_1.cpu())
    torch.testing.assert_close(b.cpu(), cb)


# --- block_ot: the block-sorted approximation ---

from tutorlib.couplings import block_ot, block_ot_assignment, hilbert_index  # noqa: E402


def _cost(a, b):
    return float((a - b).reshape(a.shape[0], -1).square().sum())


@pytest.mark.parametrize("shape", [(200, 2), (64, 1), (48, 3, 4), (33, 2)])
def test_block_ot_is_a_permutation_for_any_shape(shape):
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g) + 1
    sigma = block_ot_assignment(x_0, x_1, block=16)
    assert sorted(sigma.tolist()) == list(range(shape[0]))
    a, b = block_ot(x_0, x_1, block=16)
    assert a is x_0 and torch.equal(b, x_1[sigma])


def test_block_ot_between_exact_and_independent_cost():
    from tutorlib.data import gaussian, toy_sampler

    g = torch.Generator().manual_seed(1)
    x_1, x_0 = toy_sampler("checkerboard")(256, generator=g), gaussian(256, generator=g)
    exact = _cost(x_0, x_1[ot_assignment(x_0, x_1)])
    approx = _cost(x_0, x_1[block_ot_assignment(x_0, x_1, block=64)])
    assert exact <= approx + 1e-4 and approx < 1.35 * exact < _cost(x_0, x_1)
    assert _cost(x_0, x_1[block_ot_assignment(x_0, x_1, block=256)]) == pytest.approx(exact, rel=1e-6)


def test_hilbert_index_is_a_bijection_on_the_grid_and_local():
    bits = 3
    n = 1 << bits
    grid = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2).float()
    d = hilbert_index(grid, bits=bits)
    assert sorted(d.tolist()) == list(range(n * n))
    ordered = grid[torch.argsort(d)]
    steps = (ordered[1:] - ordered[:-1]).abs().sum(1)
    assert torch.all(steps == 1)  # consecutive cells are neighbours


# --- the entropic coupling (Sinkhorn, log domain) ---

from scipy.optimize import minimize  # noqa: E402

from tutorlib.couplings import (EntropicPlan, class_ot_assignment, segment_crossings, sinkhorn_ot,  # noqa: E402
                                sinkhorn_plan)


def _entropic_objective(P, C, eps):
    P = np.clip(P, 1e-300, None)
    return float((P * C).sum() + eps * (P * (np.log(P) - 1)).sum())


@pytest.mark.parametrize("shape", [(5, 2), (9, 3), (6, 1, 2, 2)])
@pytest.mark.parametrize("eps", [0.5, 1.0, 5.0])
def test_sinkhorn_plan_has_uniform_marginals(shape, eps):
    g = torch.Generator().manual_seed(0)
    x_0, x_1 = torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64) + 1
    res = sinkhorn_plan(x_0, x_1, eps, tol=1e-9, max_iter=100_000)
    B = shape[0]
    assert isinstance(res, EntropicPlan) and res.log_plan.shape == (B, B) and res.log_plan.dtype == torch.float64
    assert res.marginal_error <= 1e-9 and 1 <= res.iterations < 100_000
    torch.testing.assert_close(res.plan.sum(1), torch.full((B,), 1 / B, dtype=torch.float64), atol=1e-9 / B, rtol=0)
    torch.testing.assert_close(res.plan.sum(0), torch.full((B,), 1 / B, dtype=torch.float64), atol=1e-14, rtol=0)


@pytest.mark.parametrize("eps", [0.3, 1.0, 7.0])
def test_sinkhorn_two_points_closed_form(eps):
    # uniform 2 x 2 plans are [[p, 1/2 - p], [1/2 - p, p]]; pi_ij = exp(u_i + v_j - C_ij / eps) gives
    # p^2 / (1/2 - p)^2 = exp(-(C_00 + C_11 - C_01 - C_10) / eps)
    g = torch.Generator().manual_seed(int(eps * 10))
    x_0, x_1 = torch.randn(2, 2, generator=g, dtype=torch.float64), torch.randn(2, 2, generator=g, dtype=torch.float64)
    C = torch.cdist(x_0, x_1).square()
    r = math.exp(-float(C[0, 0] + C[1, 1] - C[0, 1] - C[1, 0]) / (2 * eps))
    p = 0.5 * r / (1 + r)
    want = torch.tensor([[p, 0.5 - p], [0.5 - p, p]], dtype=torch.float64)
    torch.testing.assert_close(sinkhorn_plan(x_0, x_1, eps, tol=1e-12, max_iter=100_000).plan, want,
                               atol=1e-11, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sinkhorn_plan_minimises_the_entropic_objective(seed):
    # against a generic constrained optimiser (SLSQP) on the 16 entries of a 4 x 4 plan
    g = torch.Generator().manual_seed(seed)
    x_0, x_1 = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    C, eps, B = torch.cdist(x_0, x_1).square().numpy(), 0.3, 4
    cons = [{"type": "eq", "fun": lambda z, i=i: z.reshape(B, B)[i].sum() - 1 / B} for i in range(B)]
    cons += [{"type": "eq", "fun": lambda z, j=j: z.reshape(B, B)[:, j].sum() - 1 / B} for j in range(B - 1)]
    opt = minimize(lambda z: _entropic_objective(z.reshape(B, B), C, eps), np.full(B * B, 1 / B ** 2),
                   method="SLSQP", bounds=[(1e-12, 1.0)] * (B * B), constraints=cons,
                   options={"ftol": 1e-14, "maxiter": 1000})
    plan = sinkhorn_plan(x_0, x_1, eps, tol=1e-12, max_iter=100_000).plan.numpy()
    assert _entropic_objective(plan, C, eps) <= opt.fun + 1e-10
    np.testing.assert_allclose(plan, opt.x.reshape(B, B), atol=1e-5)
    # the solution's form: log pi_ij + C_ij / eps = u_i + v_j (double-centred, it vanishes)
    L = np.log(plan) + C / eps
    L = L - L.mean(0, keepdims=True) - L.mean(1, keepdims=True) + L.mean()
    np.testing.assert_allclose(L, 0.0, atol=1e-8)


def test_sinkhorn_limits_exact_and_independent():
    g = torch.Generator().manual_seed(4)
    x_0, x_1 = torch.randn(7, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    C = torch.cdist(x_0, x_1).square()
    brute = C.numpy()[np.arange(7), ALL_PERMS].sum(1).min() / 7  # mean cost of the best permutation
    costs = []
    for eps in (0.3, 0.1):
        small = sinkhorn_plan(x_0, x_1, eps, tol=1e-8, max_iter=100_000)
        costs.append(float((small.plan * C).sum()))
        # entropic cost - exact cost <= eps (H(pi_exact) - H(pi_eps)) <= eps log B (per unit mass)
        assert brute - 1e-9 <= costs[-1] <= brute + eps * math.log(7)
    assert costs[1] < costs[0]  # closer to the optimum as eps falls
    assert torch.equal(small.plan.argmax(1), ot_assignment(x_0, x_1))  # the plan concentrates on the optimum
    large = sinkhorn_plan(x_0, x_1, 1e5).plan
    torch.testing.assert_close(large, torch.full((7, 7), 1 / 49, dtype=torch.float64), atol=1e-5, rtol=0)


def test_sinkhorn_is_stable_in_the_log_domain_for_tiny_epsilon():
    g = torch.Generator().manual_seed(5)
    x_0, x_1 = 3 * torch.randn(16, 2, generator=g), 3 * torch.randn(16, 2, generator=g)  # float32, C up to ~200
    res = sinkhorn_plan(x_0, x_1, 0.05, max_iter=3000)  # C / eps up to ~4000: exp(-C / eps) underflows, its log not
    assert torch.isfinite(res.log_plan).all() and res.log_plan.dtype == torch.float32
    assert math.isfinite(res.marginal_error) and res.marginal_error < 0.5
    torch.testing.assert_close(res.plan.sum(0), torch.full((16,), 1 / 16), atol=1e-5, rtol=0)  # float32
    with pytest.raises(AssertionError):  # the textbook kernel exp(-C / eps) is all zeros here: 0 / 0
        K = torch.exp(-torch.cdist(x_0, x_1).square() / 0.05)
        assert torch.isfinite(K / K.sum(1, keepdim=True)).all()


def test_sinkhorn_ot_draws_partners_from_the_plan():
    g = torch.Generator().manual_seed(6)
    x_0, x_1 = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64)
    eps = 1.0
    plan = sinkhorn_plan(x_0, x_1, eps, tol=1e-10, max_iter=100_000).plan  # (3, 3)
    n = 400
    counts = torch.zeros(3, 3, dtype=torch.float64)
    draws = torch.Generator().manual_seed(7)
    for _ in range(n):
        a, b = sinkhorn_ot(x_0, x_1, eps, generator=draws, tol=1e-6)
        assert a is x_0
        j = torch.cdist(b, x_1).argmin(1)  # which row of x_1 each partner is
        counts[torch.arange(3), j] += 1
    freq = counts / n  # (3, 3) per row of x_0
    want = 3 * plan  # the law of the partner of row i
    se = (want * (1 - want) / n).sqrt()
    assert bool(((freq - want).abs() <= 5 * se + 1e-9).all()), (freq, want)


def test_sinkhorn_ot_small_epsilon_is_the_exact_assignment_and_reproducible():
    g = torch.Generator().manual_seed(8)
    x_0, x_1 = torch.randn(7, 2, generator=g, dtype=torch.float64), torch.randn(7, 2, generator=g, dtype=torch.float64)
    _, b = sinkhorn_ot(x_0, x_1, 0.02, generator=torch.Generator().manual_seed(0), tol=1e-3, max_iter=20_000)
    assert torch.equal(b, minibatch_ot(x_0, x_1).x_1)
    one = sinkhorn_ot(x_0, x_1, 2.0, generator=torch.Generator().manual_seed(1)).x_1
    two = sinkhorn_ot(x_0, x_1, 2.0, generator=torch.Generator().manual_seed(1)).x_1
    three = sinkhorn_ot(x_0, x_1, 2.0, generator=torch.Generator().manual_seed(2)).x_1
    assert torch.equal(one, two) and not torch.equal(one, three)


def test_sinkhorn_rejects_bad_input():
    x = torch.randn(4, 2)
    for eps in (0.0, -1.0, float("nan"), float("inf"), "0.1", True):
        with pytest.raises(ValueError, match="epsilon"):
            sinkhorn_plan(x, x, eps)
    with pytest.raises(ValueError, match="same shape"):
        sinkhorn_plan(x, torch.randn(5, 2), 0.1)
    with pytest.raises(ValueError, match="max_iter"):
        sinkhorn_plan(x, x, 0.1, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        sinkhorn_plan(x, x, 0.1, tol=0.0)
    with pytest.raises(TypeError, match="tensors"):
        sinkhorn_plan(x.numpy(), x, 0.1)


# --- couplings with labels: OT within each class ---


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_ot_keeps_labels_and_is_optimal_within_each_class(seed):
    g = torch.Generator().manual_seed(seed)
    B = 12
    x_0, x_1 = torch.randn(B, 2, generator=g, dtype=torch.float64), torch.randn(B, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (B,), generator=g)
    y[0] = 3  # a class with a single member
    sigma = class_ot_assignment(x_0, x_1, y)
    assert sigma.dtype == torch.int64 and sorted(sigma.tolist()) == list(range(B))
    assert torch.equal(y[sigma], y)  # the labels stay in their order: noise row i keeps class y[i]
    for k in y.unique().tolist():
        idx = (y == k).nonzero().squeeze(1)
        n = idx.numel()
        c = torch.cdist(x_0[idx], x_1[idx]).square().numpy()  # (n, n)
        perms = np.array(list(itertools.permutations(range(n))))
        brute = c[np.arange(n), perms].sum(1).min()
        got = float((x_0[idx] - x_1[sigma[idx]]).square().sum())
        assert got == pytest.approx(brute, rel=1e-12)


def test_class_ot_with_one_class_is_minibatch_ot_and_checks_labels():
    g = torch.Generator().manual_seed(9)
    x_0, x_1 = torch.randn(10, 2, generator=g), torch.randn(10, 2, generator=g)
    assert torch.equal(class_ot_assignment(x_0, x_1, torch.zeros(10, dtype=torch.int64)), ot_assignment(x_0, x_1))
    with pytest.raises(ValueError, match="int64"):
        class_ot_assignment(x_0, x_1, torch.zeros(10))
    with pytest.raises(ValueError, match=r"\(10,\)"):
        class_ot_assignment(x_0, x_1, torch.zeros(9, dtype=torch.int64))


def test_global_ot_skews_the_noise_of_each_class_and_class_ot_does_not():
    from tutorlib.data import sample_labelled

    g = torch.Generator().manual_seed(10)
    x_1, y = sample_labelled("eight_gaussians", 1024, generator=g)
    x_0 = torch.randn(1024, 2, generator=g)
    skew_global = (x_0[ot_assignment(x_0, x_1).argsort()][y == 0]).mean(0)  # noise paired with class-0 data
    skew_class = x_0[class_ot_assignment(x_0, x_1, y).argsort()][y == 0].mean(0)
    assert skew_global.norm() > 0.8  # class 0 sits at angle 0: its partners are noise with x > 0
    assert skew_class.norm() < 0.3  # an unskewed sample of N(0, I) (about 128 points)


# --- crossings ---


def _crosses(p, p2, q, q2):
    def orient(a, b, c):
        return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return (orient(p, p2, q) * orient(p, p2, q2) < 0) and (orient(q, q2, p) * orient(q, q2, p2) < 0)


def test_segment_crossings_hand_cases_and_brute_force():
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert segment_crossings(x, torch.tensor([[1.0, 1.0], [1.0, 0.0]])) == 1  # an X
    assert segment_crossings(x, torch.tensor([[1.0, 0.0], [1.0, 1.0]])) == 0  # parallel
    assert segment_crossings(x, torch.tensor([[0.0, 2.0], [0.0, 3.0]])) == 0  # collinear, overlapping
    g = torch.Generator().manual_seed(11)
    a, b = torch.randn(40, 2, generator=g), torch.randn(40, 2, generator=g)
    brute = sum(_crosses(a[i].tolist(), b[i].tolist(), a[j].tolist(), b[j].tolist())
                for i in range(40) for j in range(i + 1, 40))
    assert segment_crossings(a, b) == brute > 0
    assert segment_crossings(*minibatch_ot(a, b)) < brute / 5
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        segment_crossings(torch.randn(5, 3), torch.randn(5, 3))
