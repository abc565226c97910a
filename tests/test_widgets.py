"""Widgets: they build without a kernel, redraw in place, stay fast, and fall back to static frames."""

import ipywidgets as ipw
import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from torch import nn

from tutorlib import widgets


@pytest.fixture(scope="module")
def mlp_velocity():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 64), nn.SiLU(), nn.Linear(64, 64), nn.SiLU(), nn.Linear(64, 2))

    def velocity(x, t):
        return net(torch.cat([x, t[:, None]], 1))

    return velocity


@pytest.fixture(scope="module")
def x_0():
    return torch.randn(2000, 2, generator=torch.Generator().manual_seed(1))


def shift(x, t):
    """Everything moves right at unit speed: x_1 = x_0 + (1, 0)."""
    return torch.stack([torch.ones_like(x[:, 0]), torch.zeros_like(x[:, 1])], 1)


def xs(fig, i):
    return np.asarray(fig.data[i].x, dtype=float)


def test_flow_explorer_builds_and_redraws_in_place(x_0):
    data = x_0 + 1
    ex = widgets.flow_explorer(shift, x_0[:200], data, steps=(4, 1), n_paths=5, static=False)
    assert isinstance(ex, ipw.VBox) and isinstance(ex, widgets.Explorer)
    assert isinstance(ex.figure, go.FigureWidget) and ex.figure in ex.children
    assert set(ex.controls) == {"t", "steps", "method"}
    assert [tr.name for tr in ex.figure.data] == ["data", "paths", "x_t", "velocity"]
    fig = ex.figure
    assert np.allclose(xs(fig, 2), x_0[:200, 0].numpy(), atol=1e-6)  # t = 0: the source
    arrows_before = xs(fig, 3).copy()
    ex.controls["t"].value = 0.5
    assert np.allclose(xs(fig, 2), x_0[:200, 0].numpy() + 0.5, atol=1e-5)  # grid time 0.5 of 4 steps
    assert len(xs(fig, 1)) == 5 * (3 + 1)  # 5 paths of 3 states (t = 0, 0.25, 0.5) and a gap
    assert np.allclose(xs(fig, 3), arrows_before, equal_nan=True)  # a constant field: same arrows
    ex.controls["steps"].value = 1
    assert np.allclose(xs(fig, 2), x_0[:200, 0].numpy(), atol=1e-6)  # one step: still at t = 0
    assert "step 0 of 1" in ex.status.value
    ex.controls["t"].value = 1.0
    assert np.allclose(xs(fig, 2), x_0[:200, 0].numpy() + 1, atol=1e-5)
    ex.controls["method"].value = "rk4"
    assert "rk4, 4 NFE" in ex.status.value


def test_flow_explorer_field_changes_with_t(mlp_velocity, x_0):
    ex = widgets.flow_explorer(mlp_velocity, x_0[:100], static=False, steps=(8,))
    before = xs(ex.figure, 2).copy(), xs(ex.figure, 1).copy()
    ex.controls["t"].value = 0.75
    assert not np.allclose(xs(ex.figure, 2), before[0])  # the points moved
    assert not np.allclose(xs(ex.figure, 1)[:10], before[1][:10], equal_nan=True)  # the arrows changed


def test_flow_explorer_redraw_is_fast(mlp_velocity, x_0):
    """One redraw with an MLP velocity on 2000 points and 100 Euler steps: well under 1 s on a CPU."""
    ex = widgets.flow_explorer(mlp_velocity, x_0, x_0, steps=(100,), methods=("euler",), static=False)
    first = ex.last_redraw_s  # includes the 100-step solve
    ex.controls["t"].value = 0.5
    print(f"\nflow_explorer redraw: solve + draw {1000 * first:.0f} ms, move t {1000 * ex.last_redraw_s:.1f} ms")
    assert first < 1.0 and ex.last_redraw_s < 1.0


def test_flow_explorer_static_frames(mlp_velocity, x_0, monkeypatch):
    fig = widgets.flow_explorer(mlp_velocity, x_0[:100], n_times=6, steps=(10,), static=True)
    assert type(fig) is go.Figure
    assert [f.name for f in fig.frames] == ["0.00", "0.20", "0.40", "0.60", "0.80", "1.00"]
    assert len(fig.layout.sliders[0].steps) == 6
    pts = [np.asarray(f.data[1].x, dtype=float) for f in fig.frames]
    assert all(not np.allclose(a, b) for a, b in zip(pts, pts[1:]))
    monkeypatch.setenv("TUTORLIB_STATIC_WIDGETS", "1")
    assert type(widgets.flow_explorer(mlp_velocity, x_0[:50], n_times=3, steps=(2,))) is go.Figure
    assert widgets.static_widgets() and not widgets.static_widgets(False)
    monkeypatch.setenv("TUTORLIB_STATIC_WIDGETS", "0")
    assert not widgets.static_widgets()


def test_choice_explorer_points_and_cache(x_0):
    calls = []

    def samples(batch_size):
        calls.append(batch_size)
        return x_0[:300] * batch_size / 256

    ex = widgets.choice_explorer(samples, "OT batch size", values=[16, 256, 1024], data=x_0, static=False)
    assert [tr.name for tr in ex.figure.data] == ["data", "samples"]
    before = xs(ex.figure, 1).copy()
    ex.controls["value"].value = 1024
    assert np.allclose(xs(ex.figure, 1), before * 64, atol=1e-4)
    ex.controls["value"].value = 16
    assert calls == [16, 1024]  # each value computed once
    with pytest.raises(ValueError, match="values"):
        widgets.choice_explorer(samples, "OT batch size")


def test_choice_explorer_paths_images_and_static():
    g = torch.Generator().manual_seed(0)
    rounds = {r: torch.randn(11, 30, 2, generator=g) / r for r in (1, 2, 3)}  # (S+1, B, 2) per reflow round
    ex = widgets.choice_explorer(rounds, "reflow round", n_paths=10, static=False)
    assert [tr.name for tr in ex.figure.data] == ["paths", "x_0 (start)", "end"]
    assert len(xs(ex.figure, 0)) == 10 * 12
    first = xs(ex.figure, 2).copy()
    ex.controls["value"].value = 2
    assert np.allclose(xs(ex.figure, 2), rounds[2][-1, :10, 0].numpy(), atol=1e-6)
    assert not np.allclose(xs(ex.figure, 2), first)
    fig = widgets.choice_explorer(rounds, "reflow round", static=True)
    assert type(fig) is go.Figure and [f.name for f in fig.frames] == ["1", "2", "3"]
    images = {w: torch.rand(6, 1, 4, 4, generator=g) * 2 - 1 for w in (0.0, 2.0)}
    ex = widgets.choice_explorer(images, "w", nrow=3, static=False)
    z0 = np.asarray(ex.figure.data[0].z, dtype=float).copy()
    assert z0.shape == (2 * 6 + 2, 3 * 6 + 2)
    ex.controls["value"].value = 2.0
    assert not np.allclose(np.asarray(ex.figure.data[0].z, dtype=float), z0, equal_nan=True)
    with pytest.raises(ValueError, match="results must be"):
        widgets.choice_explorer({1: torch.zeros(5, 3)}, "bad", static=False)


def test_guidance_explorer(x_0):
    sample = lambda w: x_0[:100] * (1 + w)  # noqa: E731
    ex = widgets.guidance_explorer(sample, scales=(0, 1, 4), data=x_0, static=False)
    assert ex.controls["value"].options == (("0.0", 0.0), ("1.0", 1.0), ("4.0", 4.0))
    ex.controls["value"].value = 4.0
    assert np.allclose(xs(ex.figure, 1), x_0[:100, 0].numpy() * 5, atol=1e-4)
    fig = widgets.guidance_explorer(sample, scales=(0, 1, 4), static=True)
    assert len(fig.frames) == 3 and fig.layout.sliders[0].currentvalue.prefix == "guidance scale w = "
