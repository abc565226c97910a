"""Plotly figures for the lessons (plotly.graph_objects only; express needs pandas).

Importing this module changes nothing of plotly's global state: figures show with plotly's own
renderer for the environment (JupyterLab's, offline). The book build registers its own renderer
in the kernels it starts (``book/_ext/kernel_startup.py``).

Every function returns a ``go.Figure`` and takes tensors on any device (they are moved to the
CPU here). The figures of the course:

* samples against data: :func:`scatter_2d`, :func:`scatter_grid` (lesson 00 on);
* densities: :func:`density_from_samples` (2D histogram), :func:`density_from_log_prob`
  (a log-density on a grid, lessons 02 and 03);
* a velocity field at a time t as arrows: :func:`vector_field` (lesson 03);
* sample paths from a solver's ``(S+1, B, 2)`` trajectory: :func:`trajectories` (lessons 05, 06);
* p_t evolving under a time slider with a play button, which also moves in the static book:
  :func:`time_slider` (with :func:`trajectory_frames` to pick frames from a trajectory);
* metric against NFE or guidance scale, with the noise floor: :func:`metric_curves`;
* a training loss curve: :func:`loss_curve`; MNIST samples: :func:`image_grid`.

:func:`add_slider` turns per-value trace updates into plotly frames, a slider and play and
pause buttons; :mod:`tutorlib.widgets` uses it for its static fallbacks.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

try:
    import plotly.graph_objects as go
except ModuleNotFoundError as err:  # the figures are the `lab` extra
    raise ModuleNotFoundError("tutorlib.plotting draws with plotly, which is not installed: "
                              "pip install 'tutorlib[lab]' (or pip install plotly)") from err
import torch
from plotly.subplots import make_subplots

from tutorlib.metrics import NoiseFloor

__all__ = [
    "ARROW_COLOR",
    "DATA_COLOR",
    "SAMPLE_COLOR",
    "VelocityArrows",
    "add_slider",
    "arrow_segments",
    "arrow_trace",
    "data_trace",
    "density_from_log_prob",
    "density_from_samples",
    "endpoint_traces",
    "finish",
    "image_canvas",
    "image_grid",
    "log_ticks",
    "loss_curve",
    "metric_curves",
    "path_lines",
    "path_trace",
    "points_xy",
    "scatter_2d",
    "scatter_grid",
    "square_axes",
    "time_slider",
    "trajectories",
    "trajectory_frames",
    "vector_field",
]

DATA_COLOR = "rgba(120, 120, 120, 0.35)"  # the reference data, drawn behind everything
SAMPLE_COLOR = "#1f77b4"
ARROW_COLOR = "#d62728"


# mode-bar buttons a learner does not need here (box and lasso selection, zoom steps): a shorter bar, which stands
# clear of the legend (zoom, pan, autoscale, reset and download stay)
MODEBAR_REMOVE = ["select2d", "lasso2d", "zoomIn2d", "zoomOut2d"]

MAX_WIDTH = 660  # pixels: figures fit the book's cell-output box (676 px in the 1.x theme; tests/test_browser.py checks)


def finish(fig: go.Figure, *, title: str | None = None, height: int | None = None, width: int | None = None,
           top: int = 50) -> go.Figure:
    """The layout every course figure shares: a title on the left, the mode bar upright at the right
    edge (so that it never covers the title), a width that fits the text column."""
    if width is not None:
        fig.update_layout(width=min(int(width), MAX_WIDTH))
    if height is not None:
        fig.update_layout(height=int(height))
    extra = 0
    if title is not None:
        # a title wider than the figure would run under the mode bar at the right edge: wrap it onto more lines
        lines = _wrap(title, (fig.layout.width or MAX_WIDTH) - 60, TITLE_PX)
        extra = TITLE_LINE_PX * (len(lines) - 1)
        fig.update_layout(title=dict(text="<br>".join(lines), x=0.01, xanchor="left", y=0.98, yanchor="top",
                                     font=dict(size=TITLE_PX)))
        if extra and fig.layout.height:
            fig.update_layout(height=fig.layout.height + extra)  # the plot keeps its size
    margin = fig.layout.margin
    fig.update_layout(modebar=dict(orientation="v", remove=MODEBAR_REMOVE),
                      margin=dict(t=max(top if title else 20, margin.t or 0) + extra, r=max(40, margin.r or 0)))
    legend = fig.layout.legend
    if legend.y is None and legend.orientation is None:
        # plotly's default legend starts at the top right, where the mode bar appears on hover: start it at the
        # bottom instead (figures that place their legend themselves keep it)
        fig.update_layout(legend=dict(x=1.02, xanchor="left", y=0, yanchor="bottom"))
    return fig


TITLE_PX = 14  # font size of figure titles
TITLE_LINE_PX = 18  # the height of one more title line


def _wrap(text: str, width_px: float, font_px: float) -> list[str]:
    """``text`` broken at spaces into lines of at most about ``width_px`` pixels (0.56 em per character, a
    generous average for plotly's sans-serif font); a line break already in it (``<br>``) is kept."""
    per_line = max(10, int(width_px / (0.56 * font_px)))
    lines = []
    for part in text.split("<br>"):
        line = ""
        for word in part.split(" "):
            if line and len(line) + 1 + len(word) > per_line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return lines


def log_ticks(values) -> dict:
    """Tick positions and labels for a logarithmic axis over ``values``: 1, 2, 5 x powers of ten, each
    labelled in full ("20", "0.05"), instead of plotly's bare leading digits ("2 5")."""
    v = np.asarray([float(x) for x in np.ravel(values) if np.isfinite(x) and x > 0])
    if not len(v):
        return {}
    lo, hi = math.floor(math.log10(v.min())), math.ceil(math.log10(v.max()))
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7)):  # finer steps when a narrow range would show one tick
        ticks = [m * 10.0 ** e for e in range(lo - 1, hi + 1) for m in mantissas]
        ticks = [float(f"{t:.3g}") for t in ticks if v.min() / 1.5 <= t <= v.max() * 1.5]
        if sum(v.min() / 1.1 <= t <= v.max() * 1.1 for t in ticks) >= 3:  # ticks the axis will actually show
            break
    if len(ticks) > 8:  # a wide range: powers of ten only
        ticks = [10.0 ** e for e in range(lo, hi + 1) if v.min() / 1.5 <= 10.0 ** e <= v.max() * 1.5]
    return dict(tickvals=ticks, ticktext=[f"{t:g}" for t in ticks])


def _np(x: torch.Tensor):
    return x.detach().to("cpu", torch.float32).numpy()


def _array(values) -> np.ndarray:
    """A 1D float array from a list, a numpy array or a tensor."""
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", torch.float64).reshape(-1).numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _points_trace(x: torch.Tensor, name: str, color: str | None = None, size: float = 3, opacity: float = 0.6):
    arr = _np(x)
    return go.Scattergl(
        x=arr[:, 0], y=arr[:, 1], mode="markers", name=name,
        marker=dict(size=size, opacity=opacity, color=color),
    )


def square_axes(fig: go.Figure, limit: float | None, height: int, title: str | None = None) -> go.Figure:
    """Size ``fig`` and give it equal axes spanning ``[-limit, limit]`` (``None``: automatic)."""
    fig.update_layout(margin=dict(l=30, r=40, t=40, b=30))
    finish(fig, title=title, height=height, width=height + 80)
    if limit is not None:
        fig.update_xaxes(range=[-limit, limit])
        fig.update_yaxes(range=[-limit, limit], scaleanchor="x", scaleratio=1)
    return fig


def data_trace(data: torch.Tensor, name: str = "data") -> go.Scatter:
    """The reference data as small grey points (SVG, so that it can sit in animated figures)."""
    arr = _np(data)
    return go.Scatter(x=arr[:, 0], y=arr[:, 1], mode="markers", name=name, hoverinfo="skip",
                      marker=dict(size=3, color=DATA_COLOR))


def points_xy(x: torch.Tensor) -> dict:
    """Trace data ``{"x", "y"}`` of an ``(N, 2)`` point cloud."""
    arr = _np(x)
    return dict(x=arr[:, 0], y=arr[:, 1])


def scatter_2d(
    samples: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    title: str | None = None,
    limit: float | None = 4.5,
    height: int = 420,
) -> go.Figure:
    """Overlay one or more 2D point clouds (e.g. ``{"data": x_1, "model": x_gen}``).

    Args:
        samples: a tensor ``(N, 2)`` or a mapping from legend name to ``(N, 2)`` tensors.
        limit: axes span ``[-limit, limit]`` (None: automatic).
    """
    if isinstance(samples, torch.Tensor):
        samples = {"samples": samples}
    fig = go.Figure([_points_trace(x, name) for name, x in samples.items()])
    return square_axes(fig, limit, height, title)


def scatter_grid(
    samples: Mapping[str, torch.Tensor], *, cols: int = 3, limit: float = 4.5, size: int = 230
) -> go.Figure:
    """One small scatter plot per named point cloud, in a grid (lesson 00's tour of the data)."""
    names = list(samples)
    rows = math.ceil(len(names) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=names, horizontal_spacing=0.04, vertical_spacing=0.08)
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        fig.add_trace(_points_trace(samples[name], name, size=2), row=r + 1, col=c + 1)
    fig.update_xaxes(range=[-limit, limit], showticklabels=False)
    fig.update_yaxes(range=[-limit, limit], showticklabels=False)
    width = min(size * cols, MAX_WIDTH)
    fig.update_layout(showlegend=False, margin=dict(l=10, r=40, t=40, b=10))
    return finish(fig, height=(width / cols) * rows + 40, width=width)


# --- densities -------------------------------------------------------------------------


def density_from_samples(
    samples: torch.Tensor, *, bins: int = 80, limit: float = 4.5, title: str | None = None, height: int = 420,
) -> go.Figure:
    """A 2D histogram of ``(N, 2)`` samples as a heatmap, normalised to a density.

    Args:
        samples: points, shape ``(N, 2)``.
        bins: bins per axis over ``[-limit, limit]``; points outside are dropped.
    """
    arr = _np(samples).astype(np.float64)
    edges = np.linspace(-limit, limit, bins + 1)
    hist, _, _ = np.histogram2d(arr[:, 0], arr[:, 1], bins=[edges, edges], density=True)  # (bins, bins) [x, y]
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = go.Figure(go.Heatmap(x=centres, y=centres, z=hist.T, colorscale="Viridis", colorbar=dict(title="p")))
    return square_axes(fig, limit, height, title)


def _grid(limit: float, resolution: int) -> tuple[np.ndarray, torch.Tensor]:
    """Axis values ``(R,)`` and the grid points ``(R*R, 2)`` in row-major (y, x) order."""
    axis = np.linspace(-limit, limit, resolution)
    xx, yy = np.meshgrid(axis, axis)  # (R, R): row i is y = axis[i]
    points = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], 1))  # (R*R, 2) float64
    return axis, points


def density_from_log_prob(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    *,
    limit: float = 4.5,
    resolution: int = 100,
    log_scale: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """A density ``p(x) = exp(log_prob(x))`` evaluated on a grid, as a heatmap.

    Args:
        log_prob: maps points ``(M, 2)`` to log-densities ``(M,)``; called once on the whole grid,
            as is (wrap a model in ``torch.no_grad`` yourself where it needs no gradients).
        resolution: grid points per axis over ``[-limit, limit]``.
        log_scale: show ``log p`` instead of ``p``.
        dtype, device: of the grid handed to ``log_prob`` (match the model's).
    """
    axis, points = _grid(limit, resolution)
    lp = log_prob(points.to(device=device, dtype=dtype))  # (R*R,)
    z = _array(lp).reshape(resolution, resolution)
    if not log_scale:
        z = np.exp(z)
    fig = go.Figure(go.Heatmap(x=axis, y=axis, z=z, colorscale="Viridis",
                               colorbar=dict(title="log p" if log_scale else "p")))
    return square_axes(fig, limit, height, title)


# --- velocity fields and paths ------------------------------------------------------------


def arrow_segments(points: np.ndarray, vectors: np.ndarray, scale: float, head: float = 0.3) -> dict:
    """Line data ``{"x", "y"}`` drawing one arrow per point in a single Scatter trace.

    Each arrow is the polyline tail -> tip -> left barb -> tip -> right barb, then a gap (NaN).

    Args:
        points: arrow tails, shape ``(M, 2)``.
        vectors: arrow directions, shape ``(M, 2)``; the drawn arrow is ``scale * vector``.
        head: barb length as a fraction of the arrow length.
    """
    tip = points + scale * vectors  # (M, 2)
    back = points - tip  # (M, 2) from the tip towards the tail
    c, s = math.cos(math.radians(25)), math.sin(math.radians(25))
    left = tip + head * np.stack([c * back[:, 0] - s * back[:, 1], s * back[:, 0] + c * back[:, 1]], 1)
    right = tip + head * np.stack([c * back[:, 0] + s * back[:, 1], -s * back[:, 0] + c * back[:, 1]], 1)
    gap = np.full_like(points, np.nan)
    poly = np.stack([points, tip, left, tip, right, gap], 1).reshape(-1, 2)  # (6M, 2)
    return dict(x=poly[:, 0], y=poly[:, 1])


class VelocityArrows:
    """Evaluate ``velocity(x, t)`` on a fixed ``n x n`` grid and turn it into arrow line data.

    Used by :func:`vector_field` and by the widgets (one call per redraw).

    Args:
        velocity: ``velocity(x, t)`` with ``x`` ``(M, 2)`` and ``t`` a tensor of shape ``(M,)``.
        limit: the grid spans ``[-limit, limit]^2`` (inset by half a cell).
        n: arrows per axis.
        scale: arrow length per unit of speed; ``None`` scales each drawing so that the
            fastest arrow is 0.9 grid cells long.
        like: a tensor whose dtype and device the grid takes (default float32 on the CPU).
    """

    def __init__(self, velocity, *, limit: float = 4.5, n: int = 17, scale: float | None = None,
                 like: torch.Tensor | None = None):
        self.velocity = velocity
        self.scale = scale
        self.cell = 2 * limit / n
        axis = np.linspace(-limit + self.cell / 2, limit - self.cell / 2, n)
        xx, yy = np.meshgrid(axis, axis)
        self.points = np.stack([xx.ravel(), yy.ravel()], 1)  # (n*n, 2)
        dtype = like.dtype if like is not None else torch.float32
        device = like.device if like is not None else None
        self._x = torch.as_tensor(self.points, dtype=dtype, device=device)  # (n*n, 2)

    @torch.no_grad()
    def __call__(self, t: float) -> dict:
        """Arrow line data ``{"x", "y"}`` at time ``t``."""
        tt = torch.full((self._x.shape[0],), float(t), dtype=self._x.dtype, device=self._x.device)  # (M,)
        v = _np(self.velocity(self._x, tt)).astype(np.float64)  # (M, 2)
        scale = self.scale
        if scale is None:
            top = float(np.nanmax(np.linalg.norm(v, axis=1))) if len(v) else 0.0
            scale = 0.9 * self.cell / top if top > 0 else 0.0
        return arrow_segments(self.points, v, scale)


def arrow_trace(line: dict, name: str = "velocity") -> go.Scatter:
    """A line trace for arrow data from :func:`arrow_segments`."""
    return go.Scatter(mode="lines", name=name, line=dict(color=ARROW_COLOR, width=1.2), hoverinfo="skip", **line)


def vector_field(
    velocity,
    t: float,
    *,
    data: torch.Tensor | None = None,
    samples: torch.Tensor | None = None,
    limit: float = 4.5,
    n: int = 17,
    scale: float | None = None,
    like: torch.Tensor | None = None,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Arrows of a velocity field ``velocity(x, t)`` at one time ``t`` (lesson 03).

    All arrows are line segments in one Scatter trace (fast for a few hundred arrows).

    Args:
        velocity: ``velocity(x, t)``, ``x`` ``(M, 2)``, ``t`` ``(M,)`` -> ``(M, 2)``.
        t: the time in [0, 1].
        data: optional ``(N, 2)`` reference points drawn underneath.
        samples: optional ``(N, 2)`` points (e.g. x_t) drawn over the data.
        n, scale, like: as in :class:`VelocityArrows`.

    Returns:
        A figure with traces [data], [samples], arrows.
    """
    arrows = VelocityArrows(velocity, limit=limit, n=n, scale=scale, like=like)
    traces = [] if data is None else [data_trace(data)]
    if samples is not None:
        traces.append(go.Scatter(mode="markers", name="samples", marker=dict(size=3, color=SAMPLE_COLOR),
                                 **points_xy(samples)))
    traces.append(arrow_trace(arrows(t)))
    fig = go.Figure(traces)
    return square_axes(fig, limit, height, title if title is not None else f"velocity at t = {float(t):.2f}")


def path_lines(trajectory: torch.Tensor, n_paths: int) -> dict:
    """Line data ``{"x", "y"}`` for the first ``n_paths`` paths of an ``(S+1, B, 2)`` trajectory."""
    arr = _np(trajectory[:, :n_paths]).transpose(1, 0, 2)  # (n, S+1, 2)
    gap = np.full((arr.shape[0], 1, 2), np.nan, dtype=arr.dtype)
    poly = np.concatenate([arr, gap], 1).reshape(-1, 2)  # (n*(S+2), 2)
    return dict(x=poly[:, 0], y=poly[:, 1])


def path_trace(line: dict) -> go.Scatter:
    """A line trace for path data from :func:`path_lines`."""
    return go.Scatter(mode="lines", name="paths", line=dict(color="rgba(31, 119, 180, 0.45)", width=1),
                      hoverinfo="skip", **line)


def endpoint_traces(start: torch.Tensor, end: torch.Tensor) -> list[go.Scatter]:
    """Marker traces for the start ``(B, 2)`` and end ``(B, 2)`` points of paths."""
    return [
        go.Scatter(mode="markers", name="x_0 (start)", marker=dict(size=4, color="#2ca02c"), **points_xy(start)),
        go.Scatter(mode="markers", name="end", marker=dict(size=4, color="#ff7f0e"), **points_xy(end)),
    ]


def trajectories(
    trajectory: torch.Tensor,
    *,
    n_paths: int = 40,
    data: torch.Tensor | None = None,
    limit: float | None = 4.5,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """Sample paths from an ODE solver's trajectory (lessons 05 to 07: crossing, straightness).

    Args:
        trajectory: states, shape ``(S+1, B, 2)`` (``ODESolution.trajectory``).
        n_paths: how many of the B paths to draw (the first ones).
        data: optional ``(N, 2)`` reference points drawn underneath.

    Returns:
        A figure with traces [data], paths (one trace), start points, end points.
    """
    if trajectory.ndim != 3 or trajectory.shape[-1] != 2:
        raise ValueError(f"trajectory must have shape (S+1, B, 2), got {tuple(trajectory.shape)}")
    paths = trajectory[:, :n_paths]
    traces = [] if data is None else [data_trace(data)]
    traces += [path_trace(path_lines(paths, n_paths)), *endpoint_traces(paths[0], paths[-1])]
    return square_axes(go.Figure(traces), limit, height, title)


# --- animation --------------------------------------------------------------------------


def add_slider(
    fig: go.Figure,
    updates: Sequence[Mapping[int, Mapping]],
    labels: Sequence[str],
    *,
    prefix: str = "",
    duration_ms: int = 300,
) -> go.Figure:
    """Animate ``fig`` with plotly frames, a slider and play / pause buttons (works offline in the book).

    Args:
        fig: the figure showing the first frame; its traces give each frame's trace types.
        updates: one mapping per frame, from trace index to that trace's new properties
            (e.g. ``{1: {"x": ..., "y": ...}}``); traces not named stay as they are.
        labels: one slider label per frame (also the frame names, so they must differ).
        prefix: shown before the current label, e.g. ``"t = "``.
        duration_ms: time per frame when playing.

    Returns:
        ``fig``, with ``fig.frames`` set.
    """
    if len(updates) != len(labels):
        raise ValueError(f"got {len(updates)} frame updates but {len(labels)} labels")
    frames = []
    for label, upd in zip(labels, updates):
        idx = sorted(upd)
        data = [type(fig.data[i])(**upd[i]) for i in idx]
        frames.append(go.Frame(name=str(label), data=data, traces=idx))
    fig.frames = frames

    def animate(duration: int) -> dict:
        return dict(mode="immediate", frame=dict(duration=duration, redraw=True), transition=dict(duration=0),
                    fromcurrent=True)

    steps = [dict(method="animate", label=str(lab), args=[[str(lab)], animate(0)]) for lab in labels]
    fig.update_layout(
        sliders=[dict(active=0, steps=steps, x=0.1, len=0.9, xanchor="left", y=0, yanchor="top",
                      pad=dict(t=50, b=10), currentvalue=dict(prefix=prefix, xanchor="right"))],
        updatemenus=[dict(
            type="buttons", direction="left", showactive=False, x=0.1, xanchor="right", y=0, yanchor="top",
            pad=dict(t=87, r=10),
            buttons=[
                dict(label="▶", method="animate", args=[None, animate(duration_ms)]),
                dict(label="❚❚", method="animate", args=[[None], animate(0)]),
            ],
        )],
    )
    fig.update_layout(height=(fig.layout.height or 420) + 110, margin=dict(b=130))
    return fig


def trajectory_frames(
    trajectory: torch.Tensor, times: torch.Tensor | Sequence[float], n_frames: int = 11
) -> dict[float, torch.Tensor]:
    """Pick ``n_frames`` evenly spaced states of a trajectory, keyed by their time (for :func:`time_slider`).

    Args:
        trajectory: states, shape ``(S+1, B, 2)``.
        times: the ``S+1`` times of the states (``ODESolution.times``).
        n_frames: frames wanted (at most ``S+1``); the first and last states are always kept.
    """
    times = _array(times)
    if len(times) != trajectory.shape[0]:
        raise ValueError(f"got {len(times)} times for a trajectory of {trajectory.shape[0]} states")
    idx = np.unique(np.round(np.linspace(0, len(times) - 1, min(n_frames, len(times)))).astype(int))
    return {float(times[i]): trajectory[i] for i in idx}


def time_slider(
    frames: Mapping[float, torch.Tensor],
    *,
    data: torch.Tensor | None = None,
    limit: float | None = 4.5,
    title: str | None = None,
    height: int = 420,
) -> go.Figure:
    """p_t evolving: a point cloud per time, with a slider and a play button (lessons 01, 03, 04).

    The animation is plotly frames, so it also plays in the static book.

    Args:
        frames: ``{t: points (N, 2)}``, e.g. from :func:`trajectory_frames`; sorted by ``t``.
        data: optional ``(N, 2)`` reference points drawn underneath.

    Returns:
        A figure with traces [data], samples, and one frame per time.
    """
    if not frames:
        raise ValueError("time_slider needs at least one frame")
    ts = sorted(frames)
    traces = [] if data is None else [data_trace(data)]
    idx = len(traces)
    traces.append(go.Scatter(mode="markers", name="x_t", marker=dict(size=3, color=SAMPLE_COLOR),
                             **points_xy(frames[ts[0]])))
    fig = square_axes(go.Figure(traces), limit, height, title)
    return add_slider(fig, [{idx: points_xy(frames[t])} for t in ts], [f"{t:.2f}" for t in ts], prefix="t = ")


# --- curves -----------------------------------------------------------------------------


def metric_curves(
    curves: Mapping[str, tuple],
    xlabel: str,
    ylabel: str,
    *,
    floor: float | NoiseFloor | None = None,
    floor_label: str = "noise floor",
    log_x: bool = True,
    log_y: bool = False,
    title: str | None = None,
    height: int = 380,
) -> go.Figure:
    """One line per method of a metric against NFE or guidance scale (lessons 05 to 09).

    Args:
        curves: ``{method: (xs, ys)}``; xs and ys are lists, arrays or tensors of equal length.
        floor: draw a dashed horizontal line at this value (e.g. the metric between two held-out
            data sets: no model can do better); a :class:`tutorlib.metrics.NoiseFloor` draws
            its mean and shades mean +- std.
        log_x: logarithmic x axis (for NFE; set False for guidance scales that include 0).

    Returns:
        A figure with one trace per method (the floor is a layout shape, not a trace).
    """
    fig = go.Figure()
    all_x, all_y = [], []
    for name, (xs, ys) in curves.items():
        xs, ys = _array(xs), _array(ys)
        if len(xs) != len(ys):
            raise ValueError(f"{name!r}: {len(xs)} x values but {len(ys)} y values")
        all_x += list(xs)
        all_y += list(ys)
        mode = "lines+markers" if len(xs) > 2 else "markers"  # two points are not a curve
        fig.add_trace(go.Scatter(x=xs, y=ys, mode=mode, name=str(name), marker=dict(size=8 if mode == "markers" else 6)))
    if isinstance(floor, NoiseFloor):
        fig.add_hrect(y0=floor.mean - floor.std, y1=floor.mean + floor.std, fillcolor="grey", opacity=0.15,
                      line_width=0)
        floor = floor.mean
    if floor is not None:
        floor = float(floor)
        all_y.append(floor)
        fig.add_hline(y=floor, line=dict(dash="dash", color="grey"))
        # the label as an annotation of its own: plotly misplaces hline annotations on log axes
        fig.add_annotation(x=1, xref="paper", y=math.log10(floor) if log_y and floor > 0 else floor, yref="y",
                           text=floor_label, showarrow=False, xanchor="right", yanchor="bottom",
                           font=dict(color="grey", size=11))
    fig.update_xaxes(title=xlabel, type="log" if log_x else "linear", **(log_ticks(all_x) if log_x else {}))
    fig.update_yaxes(title=ylabel, type="log" if log_y else "linear", **(log_ticks(all_y) if log_y else {}))
    # the legend in a row above the plot: the mode bar stands at the right edge, the title above
    fig.update_layout(margin=dict(l=60, r=40, t=80 if title else 50, b=50),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))
    return finish(fig, title=title, height=height, width=MAX_WIDTH, top=80)


def loss_curve(
    steps,
    losses,
    *,
    window: int = 0,
    log_y: bool = True,
    title: str | None = "training loss",
    height: int = 320,
) -> go.Figure:
    """The training loss against the optimiser step (``history.steps``, ``history.losses``).

    Args:
        steps, losses: equal-length lists, arrays or tensors.
        window: if above 1, add a running mean over this many recorded losses.
        log_y: logarithmic loss axis (losses must then be positive to show).

    Returns:
        A figure with the raw curve and, with ``window > 1``, the running mean.
    """
    x, y = _array(steps), _array(losses)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} steps but {len(y)} losses")
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name="loss",
                               line=dict(width=1, color="rgba(31, 119, 180, 0.5)" if window > 1 else SAMPLE_COLOR)))
    if window > 1 and len(y):
        c = np.cumsum(np.insert(y, 0, 0.0))
        lo = np.maximum(np.arange(1, len(y) + 1) - window, 0)
        mean = (c[1:] - c[lo]) / (np.arange(1, len(y) + 1) - lo)
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", name=f"mean of {window}", line=dict(width=2)))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="loss", type="log" if log_y else "linear", **(log_ticks(y) if log_y else {}))
    fig.update_layout(margin=dict(l=60, r=40, t=80 if title else 50, b=50),
                      legend=dict(orientation="h", x=0, xanchor="left", y=1.02, yanchor="bottom"))
    return finish(fig, title=title, height=height, width=620, top=80)


# --- images -----------------------------------------------------------------------------


def image_canvas(images: torch.Tensor, nrow: int = 8, pad: int = 2) -> np.ndarray:
    """Tile ``(N, 1, H, W)`` images in ``[-1, 1]`` into one array.

    Returns:
        A ``(rows * (H + pad) + pad, nrow * (W + pad) + pad)`` array, NaN in the gaps.
    """
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"image_grid expects (N, 1, H, W) grayscale images, got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), float("nan"))
    imgs = images.detach().to("cpu", torch.float32).clamp(-1, 1)
    for i in range(n):
        r, c = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = imgs[i, 0]
    return canvas.numpy()


def image_grid(
    images: torch.Tensor, *, nrow: int = 8, labels: torch.Tensor | None = None, title: str | None = None,
    pixel: int = 3, pad: int = 2,
) -> go.Figure:
    """A grid of grayscale images in ``[-1, 1]``, shape ``(N, 1, H, W)``, as one heatmap.

    Args:
        images: ``(N, 1, H, W)`` tensor with values in ``[-1, 1]``.
        nrow: images per row.
        labels: optional ``(N,)`` labels shown on hover.
        pixel: screen pixels per image pixel.
    """
    canvas = image_canvas(images, nrow, pad)
    _, _, h, w = images.shape
    pixel = min(pixel, max(1, (MAX_WIDTH - 50) // canvas.shape[1]))  # fit the column: the figure is W + 50 wide
    text = None
    if labels is not None:
        text = [["" for _ in range(canvas.shape[1])] for _ in range(canvas.shape[0])]
        for i in range(images.shape[0]):
            r, c = divmod(i, nrow)
            y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
            for yy in range(y0, y0 + h):
                row = text[yy]
                for xx in range(x0, x0 + w):
                    row[xx] = f"label {int(labels[i])}"
    fig = go.Figure(go.Heatmap(
        z=canvas, colorscale="gray", zmin=-1, zmax=1, showscale=False,
        text=text, hoverinfo="text" if text is not None else "skip",
    ))
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x", scaleratio=1)
    fig.update_xaxes(showticklabels=False)
    W, H = canvas.shape[1] * pixel, canvas.shape[0] * pixel
    fig.update_layout(margin=dict(l=10, r=40, t=40 if title else 10, b=10))
    return finish(fig, title=title, width=W + 50, height=H + (60 if title else 20))
