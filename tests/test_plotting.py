"""Figures: the right traces and frames, consistent geometry, and JSON that plotly.js can load."""

import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from tutorlib import plotting
from tutorlib.metrics import NoiseFloor


@pytest.fixture()
def points():
    return torch.randn(300, 2, generator=torch.Generator().manual_seed(0))


def rotation(x, t):
    """A rotation field whose speed grows with t: v(x, t) = (1 + t) (-y, x)."""
    return (1 + t[:, None]) * torch.stack([-x[:, 1], x[:, 0]], 1)


def test_scatter_2d_and_grid(points):
    assert len(plotting.scatter_2d(points).data) == 1
    assert len(plotting.scatter_2d({"data": points, "model": points + 1}).data) == 2
    assert len(plotting.scatter_grid({"a": points, "b": points, "c": points, "d": points}, cols=3).data) == 4


def test_image_grid_shape_and_labels():
    images = torch.rand(10, 1, 6, 5) * 2 - 1
    fig = plotting.image_grid(images, nrow=4, labels=torch.arange(10), pad=1)
    z = np.asarray(fig.data[0].z, dtype=float)
    assert z.shape == (3 * 7 + 1, 4 * 6 + 1)
    assert np.isnan(z[0]).all() and np.nanmax(z) <= 1
    with pytest.raises(ValueError, match="grayscale"):
        plotting.image_grid(torch.zeros(2, 3, 4, 4))


def test_density_from_samples_is_a_normalised_histogram(points):
    fig = plotting.density_from_samples(points, bins=40, limit=4.0)
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Heatmap)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (40, 40)
    assert z.sum() * (8.0 / 40) ** 2 == pytest.approx(1.0)
    # z rows are y: put all mass at (x, y) = (3, -3) and find it there.
    corner = plotting.density_from_samples(torch.tensor([[3.0, -3.0]] * 5), bins=8, limit=4.0)
    row, col = np.unravel_index(np.argmax(np.asarray(corner.data[0].z)), (8, 8))
    assert corner.data[0].y[row] < 0 < corner.data[0].x[col]


def test_density_from_log_prob_on_a_grid():
    def log_normal(x):
        return -0.5 * x.square().sum(1) - math.log(2 * math.pi)

    fig = plotting.density_from_log_prob(log_normal, limit=3.0, resolution=31)
    z = np.asarray(fig.data[0].z)
    assert z.shape == (31, 31)
    assert z[15, 15] == pytest.approx(1 / (2 * math.pi), rel=1e-5)
    assert z.sum() * (6.0 / 30) ** 2 == pytest.approx(1.0, abs=0.02)
    logz = np.asarray(plotting.density_from_log_prob(log_normal, resolution=11, log_scale=True).data[0].z)
    assert logz.max() == pytest.approx(-math.log(2 * math.pi), rel=1e-5)


def test_vector_field_arrows_point_along_the_velocity(points):
    fig = plotting.vector_field(rotation, 0.5, data=points, n=5, limit=2.0)
    assert [tr.name for tr in fig.data] == ["data", "velocity"]
    assert len(plotting.vector_field(rotation, 0.5, n=5).data) == 1
    x, y = np.asarray(fig.data[1].x, float), np.asarray(fig.data[1].y, float)
    assert len(x) == 6 * 25  # tail, tip, barb, tip, barb, gap per arrow
    poly = np.stack([x, y], 1).reshape(25, 6, 2)
    tails, tips = poly[:, 0], poly[:, 1]
    v = rotation(torch.from_numpy(tails), torch.full((25,), 0.5, dtype=torch.float64)).numpy()
    d = tips - tails
    assert np.allclose(d[:, 0] * v[:, 1] - d[:, 1] * v[:, 0], 0, atol=1e-9)  # parallel
    assert (np.einsum("ij,ij->i", d, v) >= 0).all()  # same direction
    assert np.isnan(poly[:, 5]).all()
    assert np.linalg.norm(d, axis=1).max() == pytest.approx(0.9 * 4.0 / 5)  # auto scale: 0.9 cells


def test_vector_field_fixed_scale_shows_speed():
    arrows = plotting.VelocityArrows(rotation, n=3, limit=1.5, scale=0.1)
    short, long = arrows(0.0), arrows(1.0)

    def length(line):
        return np.hypot(line["x"][1] - line["x"][0], line["y"][1] - line["y"][0])

    assert length(long) == pytest.approx(2 * length(short))


def test_trajectories_traces(points):
    traj = torch.linspace(0, 1, 11)[:, None, None] * points[None, :50]  # (11, 50, 2)
    fig = plotting.trajectories(traj, n_paths=20, data=points)
    assert [tr.name for tr in fig.data] == ["data", "paths", "x_0 (start)", "end"]
    assert len(fig.data[1].x) == 20 * 12
    assert len(fig.data[3].x) == 20
    assert len(plotting.trajectories(traj, n_paths=5).data) == 3
    with pytest.raises(ValueError, match="S\\+1, B, 2"):
        plotting.trajectories(points)


def test_time_slider_frames_differ(points):
    frames = {t: (1 - t) * points + t * (points + 3) for t in (1.0, 0.0, 0.5)}
    fig = plotting.time_slider(frames, data=points)
    assert len(fig.data) == 2
    assert [f.name for f in fig.frames] == ["0.00", "0.50", "1.00"]  # sorted by t
    assert len(fig.layout.sliders[0].steps) == 3
    assert fig.layout.updatemenus[0].buttons[0].method == "animate"
    xs = [np.asarray(f.data[0].x) for f in fig.frames]
    assert all(f.traces == (1,) for f in fig.frames)
    assert not np.allclose(xs[0], xs[1]) and not np.allclose(xs[1], xs[2])
    assert np.allclose(np.asarray(fig.data[1].x), xs[0])
    go.Figure(fig.to_dict())  # valid plotly
    assert '"frames"' in fig.to_json()


def test_trajectory_frames_keeps_the_ends():
    traj = torch.randn(101, 7, 2)
    times = torch.linspace(0, 1, 101, dtype=torch.float64)
    frames = plotting.trajectory_frames(traj, times, n_frames=6)
    assert list(frames) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert torch.equal(frames[1.0], traj[-1])
    assert len(plotting.time_slider(frames).frames) == 6
    with pytest.raises(ValueError):
        plotting.trajectory_frames(traj, times[:5])


def test_add_slider_checks_labels(points):
    fig = plotting.scatter_2d(points)
    with pytest.raises(ValueError, match="labels"):
        plotting.add_slider(fig, [{0: {"x": [1]}}], ["a", "b"])


def test_metric_curves_with_floor():
    curves = {"euler": ([1, 2, 4, 8], [0.5, 0.2, 0.1, 0.05]), "rk4": (np.array([4, 8]), torch.tensor([0.03, 0.02]))}
    fig = plotting.metric_curves(curves, "NFE", "energy distance", floor=0.01)
    assert [tr.name for tr in fig.data] == ["euler", "rk4"]
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "NFE"
    lines = [s for s in fig.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].y0 == lines[0].y1 == 0.01 and lines[0].line.dash == "dash"
    no_floor = plotting.metric_curves(curves, "w", "acc", log_x=False)
    assert not no_floor.layout.shapes and no_floor.layout.xaxis.type == "linear"
    band = plotting.metric_curves(curves, "NFE", "ED", floor=NoiseFloor(mean=0.01, std=0.002, values=[], n=10))
    assert {s.type for s in band.layout.shapes} == {"line", "rect"}
    with pytest.raises(ValueError, match="euler"):
        plotting.metric_curves({"euler": ([1, 2], [1.0])}, "NFE", "ED")


def test_loss_curve_accepts_lists_arrays_tensors():
    steps, losses = list(range(100)), [1.0 / (s + 1) for s in range(100)]
    assert len(plotting.loss_curve(steps, losses).data) == 1
    fig = plotting.loss_curve(np.array(steps), torch.tensor(losses), window=10)
    assert len(fig.data) == 2
    smooth = np.asarray(fig.data[1].y)
    assert smooth[9] == pytest.approx(np.mean(losses[:10])) and smooth[-1] == pytest.approx(np.mean(losses[-10:]))
    assert fig.layout.yaxis.type == "log"
    with pytest.raises(ValueError):
        plotting.loss_curve([1, 2], [1.0])


def test_image_grids_fill_the_column_without_passing_it():
    for cols in (4, 8, 10, 16, 20, 40):
        fig = plotting.image_grid(torch.zeros(2 * cols, 1, 28, 28), nrow=cols, title="digits")
        assert fig.layout.width <= plotting.MAX_WIDTH, (cols, fig.layout.width)
    ten = plotting.image_grid(torch.zeros(20, 1, 28, 28), nrow=10, title="one class per column")
    assert ten.layout.width > 0.9 * plotting.MAX_WIDTH  # ten digits across at two screen pixels per pixel


def test_long_titles_wrap_clear_of_the_mode_bar():
    """A title wider than its figure would run under the mode bar at the right edge (lesson 01's four-column
    digit grid in the standard build): it is broken onto more lines, and the figure grows to keep its plot."""
    images = torch.zeros(8, 1, 28, 28)
    title = "DDPM on MNIST, 3000 training steps: four samples of each digit"
    fig = plotting.image_grid(images, nrow=4, title=title)
    short = plotting.image_grid(images, nrow=4, title="four digits")
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 2 and " ".join(lines) == title
    assert all(len(line) * 0.56 * 14 <= fig.layout.width - 60 for line in lines)
    assert fig.layout.height == short.layout.height + 18 and fig.layout.margin.t == short.layout.margin.t + 18
    wide = plotting.metric_curves({"a": ([1, 2], [1, 2])}, "x", "y", title="a short title")
    assert "<br>" not in wide.layout.title.text


def test_log_ticks_label_in_full_and_show_at_least_three():
    """1-2-5 ticks, each labelled in full; a narrow range (the Results page's Fréchet panel, 0.6 to 1.5, showed the
    single tick "1") gets finer steps so that at least three fall inside the data."""
    wide = plotting.log_ticks([1, 2, 4, 8, 20, 100])
    assert wide["tickvals"] == [1, 2, 5, 10, 20, 50, 100] and wide["ticktext"][-1] == "100"
    narrow = plotting.log_ticks([0.62, 0.7, 1.3, 1.45])
    inside = [t for t in narrow["tickvals"] if 0.62 / 1.1 <= t <= 1.45 * 1.1]
    assert len(inside) >= 3 and "1.5" in narrow["ticktext"]
    assert plotting.log_ticks([0, -1, float("nan")]) == {}
