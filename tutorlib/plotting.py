"""Plotly figures for the lessons (plotly.graph_objects only; express needs pandas).

Importing this module sets a renderer that works in JupyterLab, in classic notebooks and in
the static book, offline (``plotly_mimetype+notebook``: JupyterLab's own renderer plus HTML
with plotly.js embedded once per notebook). ``PLOTLY_RENDERER`` overrides it.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

__all__ = ["configure_renderer", "image_grid", "scatter_2d", "scatter_grid"]

DEFAULT_RENDERER = "plotly_mimetype+notebook"


def configure_renderer(name: str | None = None) -> str:
    """Set plotly's default renderer (``name``, else ``PLOTLY_RENDERER``, else the default)."""
    chosen = name or os.environ.get("PLOTLY_RENDERER") or DEFAULT_RENDERER
    pio.renderers.default = chosen
    return chosen


configure_renderer()


def _np(x: torch.Tensor):
    return x.detach().to("cpu", torch.float32).numpy()


def _points_trace(x: torch.Tensor, name: str, color: str | None = None, size: float = 3, opacity: float = 0.6):
    arr = _np(x)
    return go.Scattergl(
        x=arr[:, 0], y=arr[:, 1], mode="markers", name=name,
        marker=dict(size=size, opacity=opacity, color=color),
    )


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
    fig.update_layout(title=title, height=height, width=height + 80, margin=dict(l=30, r=10, t=40, b=30))
    if limit is not None:
        fig.update_xaxes(range=[-limit, limit])
        fig.update_yaxes(range=[-limit, limit], scaleanchor="x", scaleratio=1)
    return fig


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
    fig.update_layout(showlegend=False, height=size * rows + 40, width=size * cols, margin=dict(l=10, r=10, t=40, b=10))
    return fig


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
    if images.ndim != 4 or images.shape[1] != 1:
        raise ValueError(f"image_grid expects (N, 1, H, W) grayscale images, got shape {tuple(images.shape)}")
    n, _, h, w = images.shape
    rows = math.ceil(n / nrow)
    canvas = torch.full((rows * (h + pad) + pad, nrow * (w + pad) + pad), float("nan"))
    text = [["" for _ in range(canvas.shape[1])] for _ in range(canvas.shape[0])] if labels is not None else None
    imgs = images.detach().to("cpu", torch.float32).clamp(-1, 1)
    for i in range(n):
        r, c = divmod(i, nrow)
        y0, x0 = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y0 : y0 + h, x0 : x0 + w] = imgs[i, 0]
        if text is not None:
            for yy in range(y0, y0 + h):
                row = text[yy]
                for xx in range(x0, x0 + w):
                    row[xx] = f"label {int(labels[i])}"
    fig = go.Figure(go.Heatmap(
        z=canvas.numpy(), colorscale="gray", zmin=-1, zmax=1, showscale=False,
        text=text, hoverinfo="text" if text is not None else "skip",
    ))
    fig.update_yaxes(autorange="reversed", showticklabels=False, scaleanchor="x", scaleratio=1)
    fig.update_xaxes(showticklabels=False)
    W, H = canvas.shape[1] * pixel, canvas.shape[0] * pixel
    fig.update_layout(title=title, width=W + 20, height=H + (50 if title else 20), margin=dict(l=10, r=10, t=40 if title else 10, b=10))
    return fig
