"""Widgets for live exploration in JupyterLab, each with a static fallback for the book.

Each function returns an :class:`Explorer`: an ipywidgets box with controls above a
``plotly.graph_objects.FigureWidget`` that is updated in place (``batch_update``) when a
control changes; nothing is re-created, so a redraw of a small 2D model costs milliseconds to
a few tens of milliseconds on a CPU (``explorer.last_redraw_s`` says how long the last took).

* :func:`flow_explorer`: a velocity field and its samples over time (sliders t and steps,
  a solver dropdown; lessons 03 and 07);
* :func:`guidance_explorer`: samples against the guidance scale (lesson 08);
* :func:`choice_explorer`: any precomputed or computed set of results under a slider, e.g.
  the OT batch size (lesson 05) or the reflow round (lesson 06).

The book is static: with ``static=True``, or whenever the environment variable
``TUTORLIB_STATIC_WIDGETS=1`` is set (the book build sets it), each function instead returns a
plain ``go.Figure`` whose plotly frames, slider and play button step through the same values of
its main parameter (t for the flow explorer; the other controls stay at their first values).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Sequence

try:
    import ipywidgets as widgets
except ModuleNotFoundError as err:  # the notebook UI is the `lab` extra
    raise ModuleNotFoundError("tutorlib.widgets needs ipywidgets, which is not installed: "
                              "pip install 'tutorlib[lab]' (or pip install ipywidgets anywidget plotly)") from err
import numpy as np
import plotly.graph_objects as go
import torch

from tutorlib.plotting import (
    SAMPLE_COLOR,
    VelocityArrows,
    arrow_trace,
    data_trace,
    endpoint_traces,
    finish,
    path_trace,
    points_xy,
    square_axes,
    add_slider,
    image_canvas,
    path_lines,
)
from tutorlib.solvers import ode_solve

__all__ = ["Explorer", "Redraw", "choice_explorer", "flow_explorer", "guidance_explorer", "static_widgets"]

STATIC_ENV = "TUTORLIB_STATIC_WIDGETS"


def static_widgets(static: bool | None = None) -> bool:
    """Whether widgets should return static figures: ``static`` if given, else ``TUTORLIB_STATIC_WIDGETS=1``."""
    if static is not None:
        return bool(static)
    return os.environ.get(STATIC_ENV, "").strip() == "1"


@dataclass
class Redraw:
    """What one redraw changes: new properties per trace index, and a line of text."""

    traces: dict[int, dict]  # trace index -> properties to set, e.g. {"x": ..., "y": ...}
    note: str = ""  # shown under the figure (widgets only)


class Explorer(widgets.VBox):
    """Controls above a FigureWidget; changing a control calls ``draw`` and updates the figure in place.

    Attributes:
        figure: the ``go.FigureWidget``.
        controls: ``{name: widget}``; ``draw`` is called with the values as keyword arguments.
        status: an HTML line with the redraw's note and its time.
        last_redraw_s: seconds the latest redraw took (the computation and the figure update).
    """

    def __init__(self, figure: go.FigureWidget, controls: Mapping[str, widgets.ValueWidget],
                 draw: Callable[..., Redraw]):
        status = widgets.HTML()
        super().__init__(children=[widgets.HBox(list(controls.values())), figure, status])
        self.figure = figure
        self.controls = dict(controls)
        self.status = status
        self.last_redraw_s = float("nan")
        self._draw = draw
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self.redraw()

    def values(self) -> dict:
        """The controls' current values, by name."""
        return {name: c.value for name, c in self.controls.items()}

    def _on_change(self, _change) -> None:
        self.redraw()

    def redraw(self) -> float:
        """Recompute and update the figure; returns (and stores) the seconds it took."""
        start = time.perf_counter()
        out = self._draw(**self.values())
        with self.figure.batch_update():
            for i, props in out.traces.items():
                self.figure.data[i].update(props)
        self.last_redraw_s = time.perf_counter() - start
        self.status.value = f"<small>{out.note} &nbsp; (redraw {1000 * self.last_redraw_s:.0f} ms)</small>"
        return self.last_redraw_s


def _finish(fig: go.Figure, controls: dict[str, widgets.ValueWidget], draw: Callable[..., Redraw], static: bool,
            sweep: str, prefix: str) -> Explorer | go.Figure:
    """The widget, or the static figure sweeping control ``sweep`` (others at their current values)."""
    if not static:
        return Explorer(go.FigureWidget(fig), controls, draw)
    fixed = {name: c.value for name, c in controls.items()}
    options = controls[sweep].options
    labels = [lab for lab, _ in options]
    updates = [draw(**{**fixed, sweep: value}).traces for _, value in options]
    for i, props in updates[0].items():
        fig.data[i].update(props)
    return add_slider(fig, updates, labels, prefix=prefix)


def _slider(label: str, values: Sequence, fmt: Callable[[object], str] = str, *,
            continuous: bool = True) -> widgets.SelectionSlider:
    options = [(fmt(v), v) for v in values]
    return widgets.SelectionSlider(options=options, value=options[0][1], description=label,
                                   continuous_update=continuous, style=dict(description_width="initial"),
                                   layout=widgets.Layout(width="320px"))


# --- the flow explorer -------------------------------------------------------------------


def flow_explorer(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x_0: torch.Tensor,
    data: torch.Tensor | None = None,
    *,
    n_times: int = 21,
    steps: Sequence[int] = (100, 64, 32, 16, 8, 4, 2, 1),
    methods: Sequence[str] = ("euler", "midpoint", "heun", "rk4"),
    n_paths: int = 30,
    n_arrows: int = 17,
    arrow_scale: float | None = None,
    limit: float = 4.5,
    static: bool | None = None,
    height: int = 460,
) -> Explorer | go.Figure:
    """Samples moving under a velocity field: time t, number of solver steps and solver (lessons 03, 07).

    Shows the velocity field at t (arrows), the solver's samples at the last grid time <= t,
    and the first ``n_paths`` paths up to there, over the data. Each (steps, method) pair is
    solved once (from t = 0 to 1, keeping the trajectory) and cached; moving t only slices.

    Args:
        velocity: ``velocity(x, t)``, x ``(B, 2)`` and t ``(B,)`` -> ``(B, 2)``; called under no_grad.
        x_0: source samples ``(B, 2)`` on the model's device and dtype.
        data: optional ``(N, 2)`` reference points drawn underneath.
        n_times: t slider values, evenly spaced over [0, 1].
        steps: the steps slider's values; the first is the initial one.
        methods: the solver dropdown's values (see ``tutorlib.solvers.METHODS``).
        n_paths, n_arrows, arrow_scale: paths drawn, arrows per axis, arrow scale (None: automatic).
        static: return a static figure with a t slider (default: ``TUTORLIB_STATIC_WIDGETS=1``).

    Returns:
        An :class:`Explorer` (controls ``t``, ``steps``, ``method``), or a ``go.Figure`` with one
        frame per t when static.
    """
    if x_0.ndim != 2 or x_0.shape[1] != 2:
        raise ValueError(f"x_0 must have shape (B, 2), got {tuple(x_0.shape)}")
    arrows = VelocityArrows(velocity, limit=limit, n=n_arrows, scale=arrow_scale, like=x_0)
    cache: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, int]] = {}

    def solve(n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray, int]:
        key = (n_steps, method)
        if key not in cache:
            sol = ode_solve(velocity, x_0, method=method, steps=n_steps, return_trajectory=True)
            traj = sol.trajectory.detach().to("cpu", torch.float32).numpy()  # (S+1, B, 2)
            cache[key] = (traj, sol.times.numpy(), sol.nfe)
        return cache[key]

    traces = [] if data is None else [data_trace(data)]
    i_paths, i_points, i_arrows = len(traces), len(traces) + 1, len(traces) + 2
    traces += [path_trace({"x": [], "y": []}),
               go.Scatter(mode="markers", name="x_t", marker=dict(size=3, color=SAMPLE_COLOR), x=[], y=[]),
               arrow_trace({"x": [], "y": []})]
    fig = square_axes(go.Figure(traces), limit, height)

    def draw(t: float, steps: int, method: str) -> Redraw:
        traj, times, nfe = solve(steps, method)
        j = int(np.searchsorted(times, t + 1e-9, side="right")) - 1  # last grid time <= t
        j = max(0, min(j, len(times) - 1))
        lines = path_lines(torch.from_numpy(traj[: j + 1]), n_paths)
        return Redraw(
            traces={i_paths: lines, i_points: dict(x=traj[j, :, 0], y=traj[j, :, 1]), i_arrows: arrows(t)},
            note=f"velocity at t = {t:.2f}; samples at the solver's t = {times[j]:.2f} "
                 f"(step {j} of {len(times) - 1}, {method}, {nfe} NFE for the whole solve)",
        )

    t_values = [round(float(v), 6) for v in np.linspace(0.0, 1.0, n_times)]
    controls = {
        "t": _slider("t", t_values, lambda v: f"{v:.2f}"),
        "steps": _slider("steps", [int(s) for s in steps], continuous=False),
        "method": widgets.Dropdown(options=list(methods), value=methods[0], description="solver",
                                   layout=widgets.Layout(width="200px")),
    }
    static = static_widgets(static)
    if static:
        finish(fig, title=f"{controls['steps'].value} {controls['method'].value} steps")
    return _finish(fig, controls, draw, static, "t", "t = ")


# --- results under a slider: OT batch size, reflow round, guidance scale ---------------


class _View:
    """How one kind of result tensor is drawn: its traces, and the update for a new result."""

    def __init__(self, first: torch.Tensor, data: torch.Tensor | None, n_paths: int, nrow: int):
        self.kind = {2: "points", 3: "paths", 4: "images"}.get(first.ndim)
        if self.kind is None or (self.kind != "images" and first.shape[-1] != 2):
            raise ValueError("results must be points (N, 2), trajectories (S+1, B, 2) or images (N, 1, H, W); "
                             f"got shape {tuple(first.shape)}")
        self.n_paths, self.nrow = n_paths, nrow
        self.traces = [] if data is None or self.kind == "images" else [data_trace(data)]
        self.first = len(self.traces)
        if self.kind == "points":
            self.traces.append(go.Scatter(mode="markers", name="samples", marker=dict(size=3, color=SAMPLE_COLOR)))
        elif self.kind == "paths":
            self.traces += [path_trace({"x": [], "y": []}), *endpoint_traces(first[0, :0], first[-1, :0])]
        else:
            self.canvas_shape = image_canvas(first, nrow).shape  # (rows, cols) of the tiled images
            self.traces.append(go.Heatmap(colorscale="gray", zmin=-1, zmax=1, showscale=False, hoverinfo="skip"))

    def update(self, result: torch.Tensor) -> dict[int, dict]:
        i = self.first
        if self.kind == "points":
            return {i: points_xy(result)}
        if self.kind == "paths":
            paths = result[:, : self.n_paths]
            return {i: path_lines(paths, self.n_paths), i + 1: points_xy(paths[0]), i + 2: points_xy(paths[-1])}
        return {i: {"z": image_canvas(result, self.nrow)}}

    def figure(self, limit: float, height: int) -> go.Figure:
        fig = go.Figure(self.traces)
        if self.kind == "images":
            rows, cols = self.canvas_shape
            pixel = max(1, min(3, 680 // cols, height // rows))  # screen pixels per image pixel
            fig.update_yaxes(autorange="reversed", showticklabels=False, showgrid=False, zeroline=False,
                             scaleanchor="x", scaleratio=1)
            fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
            fig.update_layout(height=rows * pixel + 20, width=cols * pixel + 20, plot_bgcolor="white",
                              margin=dict(l=10, r=10, t=10, b=10))
            return fig
        return square_axes(fig, limit, height)


def choice_explorer(
    options: Mapping[Hashable, torch.Tensor] | Callable[[Hashable], torch.Tensor],
    label: str = "option",
    *,
    values: Sequence[Hashable] | None = None,
    data: torch.Tensor | None = None,
    limit: float = 4.5,
    n_paths: int = 40,
    nrow: int = 8,
    static: bool | None = None,
    height: int = 440,
) -> Explorer | go.Figure:
    """Results under a slider: e.g. samples per OT batch size (lesson 05), paths per reflow round (lesson 06).

    Each result is drawn by its shape: points ``(N, 2)`` as a scatter over the data,
    trajectories ``(S+1, B, 2)`` as paths (the first ``n_paths``), images ``(N, 1, H, W)`` in
    ``[-1, 1]`` as a grid of ``nrow`` per row.

    Args:
        options: ``{value: result}``, or a function ``value -> result`` (called once per value,
            when first shown; the results are cached).
        label: the slider's name, e.g. ``"OT batch size"``.
        values: the slider's values; required when ``options`` is a function (default: the keys).
        data: optional ``(N, 2)`` reference points drawn under points and paths.
        static: return a static figure with a slider (default: ``TUTORLIB_STATIC_WIDGETS=1``).

    Returns:
        An :class:`Explorer` with the control ``"value"``, or a ``go.Figure`` with one frame per value.
    """
    if callable(options) and not isinstance(options, Mapping):
        if values is None:
            raise ValueError("choice_explorer needs `values` when `options` is a function")
        compute = options
    else:
        values = list(options) if values is None else list(values)
        compute = options.__getitem__
    if not values:
        raise ValueError("choice_explorer needs at least one value")
    cache: dict = {}

    def result(value) -> torch.Tensor:
        if value not in cache:
            with torch.no_grad():
                out = compute(value)
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"the result for {label} = {value!r} is a {type(out).__name__}, not a tensor")
            cache[value] = out.detach()
        return cache[value]

    view = _View(result(values[0]), data, n_paths, nrow)
    fig = view.figure(limit, height)

    def draw(value) -> Redraw:
        return Redraw(traces=view.update(result(value)), note=f"{label} = {value}")

    controls = {"value": _slider(label, list(values), continuous=False)}
    return _finish(fig, controls, draw, static_widgets(static), "value", f"{label} = ")


def guidance_explorer(
    sample_fn: Callable[[float], torch.Tensor],
    scales: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 5.0, 8.0),
    *,
    data: torch.Tensor | None = None,
    limit: float = 4.5,
    nrow: int = 8,
    static: bool | None = None,
    height: int = 440,
) -> Explorer | go.Figure:
    """Samples against the guidance scale w (lesson 08; MNIST digits in lesson 09).

    Args:
        sample_fn: ``sample_fn(w)`` -> samples ``(N, 2)`` or images ``(N, 1, H, W)``; use the same
            noise for every w (e.g. a fixed ``x_0``) so that only the guidance changes.
        scales: the slider's values of w.
        data, limit, nrow, static: as in :func:`choice_explorer`.

    Returns:
        An :class:`Explorer` with the control ``"value"``, or a static ``go.Figure``.
    """
    return choice_explorer(sample_fn, "guidance scale w", values=[float(s) for s in scales], data=data,
                           limit=limit, nrow=nrow, static=static, height=height)
