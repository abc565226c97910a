"""Couplings: minibatch OT is the exact optimal assignment (brute force on tiny batches)."""

from __future__ import annotations

import itertools

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
