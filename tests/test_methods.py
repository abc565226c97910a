"""Appendix A's library: the two-time U-Net, the shortcut objective on images, the teacher's pairs, OT within
classes on digits, and the samplers."""

from __future__ import annotations

import pytest
import torch

from tutorlib.couplings import class_ot_assignment
from tutorlib.device import PROFILES
from tutorlib.fewstep import Shortcut, TwoTimePatchUNet, TwoTimeMLP
from tutorlib.models import PatchUNet
from tutorlib.recipes import MNISTRecipe
from tutorlib import methods as M


def _flow(seed=0, C=8):
    torch.manual_seed(seed)
    net = PatchUNet(1, None, base_channels=C, num_classes=10)
    for p in net.parameters():  # a non-trivial field (fresh GroupNorm/zero biases make it too tame)
        p.data.add_(0.05 * torch.randn_like(p))
    return net.eval()


def test_two_time_unet_starts_as_the_flow_for_every_gap():
    flow = _flow()
    net = TwoTimePatchUNet.from_flow(flow).eval()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 10, 9])
    s, t = torch.tensor([0.0, 0.2, 0.5, 0.9]), torch.tensor([1.0, 0.7, 0.5, 0.95])
    with torch.no_grad():
        torch.testing.assert_close(net(x, s, t, y), flow(x, s, y), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(net.velocity(x, s, y), flow(x, s, y), atol=1e-6, rtol=1e-6)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    # the gap MLP is trainable and, once non-zero, makes the output depend on t - s
    loss = net(x, s, t, y).square().mean()
    loss.backward()
    assert net.gap_embed[-1].weight.grad is not None and float(net.gap_embed[-1].weight.grad.abs().sum()) > 0
    torch.nn.init.normal_(net.gap_embed[-1].weight, std=0.5)
    with torch.no_grad():
        assert not torch.allclose(net(x, s, t, y), net(x, s, s, y))
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())  # the copy shares no weights
    with pytest.raises(TypeError, match="PatchUNet"):
        TwoTimePatchUNet.from_flow(TwoTimeMLP())
    with pytest.raises(ValueError, match="gap_freq_dim"):
        TwoTimePatchUNet(gap_freq_dim=5)


def test_shortcut_jumps_of_the_copied_flow_are_its_euler_steps():
    """u(x, s, t) = v(x, s) for every gap, so k equal jumps are k Euler steps, guided or not."""
    flow = _flow(1)
    net = TwoTimePatchUNet.from_flow(flow).eval()
    y = torch.arange(6) % 10
    x_0 = torch.randn(6, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for nfe, w in ((1, 1.0), (3, 1.0), (4, 2.5)):
        torch.testing.assert_close(M.sample_shortcut(net, y, nfe, x_0, w=w), M.sample_flow(flow, y, nfe, x_0, w=w),
                                   atol=1e-5, rtol=1e-5)


def test_shortcut_loss_on_images_is_the_loss_on_flattened_vectors():
    """The objective does not care about the shape: images and their flattened vectors give one loss."""
    torch.manual_seed(2)
    mlp = TwoTimeMLP(dim=12, hidden=16, depth=1)
    y = torch.tensor([0, 1, 2, 1, 0, 2, 1, 0])
    shift = torch.randn(3, 12)

    def on_vectors(x, s, t, lab):
        return mlp(x, s, t) + shift[lab]

    def on_images(x, s, t, lab):
        return on_vectors(x.reshape(x.shape[0], -1), s, t, lab).reshape(x.shape)

    obj = Shortcut(levels=3, bootstrap_fraction=0.5)
    s, t = obj.times(8, generator=torch.Generator().manual_seed(0))
    assert bool((t > s).any()) and bool((t == s).any())
    x_0, x_1 = torch.randn(8, 1, 3, 4), torch.randn(8, 1, 3, 4)
    a = obj.loss(on_images, x_0, x_1, s, t, y=y)
    b = obj.loss(on_vectors, x_0.reshape(8, -1), x_1.reshape(8, -1), s, t, y=y)
    torch.testing.assert_close(a, b)
    # the labels matter (each bootstrap row keeps its own), and a wrong-length y is refused
    assert not torch.allclose(a, obj.loss(on_images, x_0, x_1, s, t, y=y.flip(0)))
    with pytest.raises(ValueError, match="one label per row"):
        obj.loss(on_images, x_0, x_1, s, t, y=y[:3])


def test_teacher_pairs_are_balanced_deterministic_and_the_teachers_digits():
    flow = _flow(3)
    a = M.teacher_pairs(flow, 23, w=2.0, nfe=2, generator=torch.Generator().manual_seed(5), chunk=10)
    b = M.teacher_pairs(flow, 23, w=2.0, nfe=2, generator=torch.Generator().manual_seed(5), chunk=7)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, atol=1e-5, rtol=1e-5)  # chunking changes nothing
    x_0, x_1, y = a
    assert torch.equal(torch.bincount(y[:20]), torch.full((10,), 2))
    torch.testing.assert_close(x_1, M.sample_flow(flow, y, 2, x_0, w=2.0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positive whole number"):
        M.teacher_pairs(flow, 0, w=1.0, nfe=1, generator=torch.Generator())


def test_ot_batches_keep_the_classes_and_lower_the_cost():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(300, 1, 28, 28, generator=g) * 2 - 1
    labels = torch.randint(0, 3, (300,), generator=g)
    recipe = MNISTRecipe(batch=48, p_uncond=0.0, channels_last=False)
    from tutorlib.recipes import mnist_fm_batches

    ot = M.ot_fm_batches(images, labels, recipe, generator=torch.Generator().manual_seed(1))(0)
    ind = mnist_fm_batches(images, labels, recipe, generator=torch.Generator().manual_seed(1))(0)
    torch.testing.assert_close(ot[0], ind[0])  # the same noise, times and labels: only the pairing differs
    torch.testing.assert_close(ot[2], ind[2])
    assert torch.equal(ot[3], ind[3])
    for k in range(3):  # each class's digits are the same set, re-paired
        rows = ot[3] == k
        assert torch.allclose(ot[1][rows].flatten(1).sum(0), ind[1][rows].flatten(1).sum(0), atol=1e-4)
    cost = lambda b: float((b[1] - b[0]).square().sum())  # noqa: E731
    assert cost(ot) < 0.99 * cost(ind)
    sigma = class_ot_assignment(ind[0], ind[1], ind[3])
    torch.testing.assert_close(ot[1], ind[1][sigma])


def test_reflow_and_distillation_train_copies_and_lower_their_losses():
    flow = _flow(4)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    cfg = M.ScaleConfig.from_profile(PROFILES["smoke"]).replace(reflow_steps=12, distill_steps=12, batch=8, lr=2e-3)
    pairs = M.teacher_pairs(flow, 16, w=1.0, nfe=2, generator=torch.Generator().manual_seed(0))
    rf, hist = M.train_reflow(flow, pairs, cfg)
    st, hist_d = M.train_distilled(rf, pairs, cfg)
    assert all(torch.equal(v, flow.state_dict()[k]) for k, v in before.items())  # the teacher is untouched
    assert rf is not flow and st is not rf
    assert hist.steps_done == 12 and hist_d.steps_done == 12
    assert sum(hist_d.losses[-4:]) < sum(hist_d.losses[:4])
    with pytest.raises(ValueError, match="teacher_pairs"):
        M.train_reflow(flow, pairs[:2], cfg)


def test_scale_config_has_every_profile():
    for name, P in PROFILES.items():
        cfg = M.ScaleConfig.from_profile(P)
        assert cfg.nfes[0] == 1 and list(cfg.nfes) == sorted(cfg.nfes) and cfg.n_eval % 10 == 0
        assert cfg.train_config(100, "x").steps == 100
    assert M.ScaleConfig.from_profile(PROFILES["smoke"]).pairs < M.ScaleConfig.from_profile(PROFILES["standard"]).pairs
