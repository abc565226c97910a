"""Small tensor helpers shared by every layer: times per sample, and broadcasting them.

Per-sample scalars (times ``t``, ``alpha_t``, ...) have shape ``(B,)`` throughout the course.
:func:`batch_times` turns whatever a caller passes for ``t`` (a float, a 0-d tensor, ``(1,)`` or
``(B,)``) into that shape; :func:`expand_t` views a ``(B,)`` tensor as ``(B, 1, ..., 1)`` so that it
broadcasts against a batch ``x`` of any shape. This module is the bottom layer of ``tutorlib``
(CONTRIBUTING.md, "Layers"): it imports nothing of the library.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_times", "expand_t"]


def batch_times(t: Tensor | float, x: Tensor, *, check_range: bool = False) -> Tensor:
    """``t`` as a ``(B,)`` tensor on ``x``'s device, ``B = x.shape[0]``.

    A single time (a float, a 0-d or one-element tensor) is broadcast with ``expand``, so the
    result has stride 0: models use that to embed one shared time once for the whole batch (an
    ODE solver's step). The dtype is ``x``'s when ``x`` is floating (points, images), else ``t``'s
    own floating dtype or torch's default (for integer tokens).

    Args:
        t: times: a float, a 0-d tensor, ``(1,)`` or ``(B,)``; ``(B, 1, ..., 1)`` is accepted too.
        x: the batch the times belong to, shape ``(B, ...)``.
        check_range: also check ``0 <= t <= 1`` (on the CPU only: elsewhere it would force a sync).

    Returns:
        ``(B,)`` floating tensor.

    Raises:
        ValueError: ``t`` has another number of entries than the batch, or lies outside ``[0, 1]``.
    """
    if x.is_floating_point():
        dtype = x.dtype
    else:
        dtype = t.dtype if isinstance(t, Tensor) and t.is_floating_point() else torch.get_default_dtype()
    batch = x.shape[0]
    t = torch.as_tensor(t, device=x.device, dtype=dtype)
    if t.numel() == 1:
        t = t.reshape(1).expand(batch)  # (B,), stride 0: one shared time
    elif t.dim() > 1 and t.shape[0] == batch and t[0].numel() == 1:
        t = t.reshape(batch)  # (B, 1, ..., 1) -> (B,)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape ({batch},) to match x of shape {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    if check_range and t.device.type == "cpu" and (bool((t < 0).any()) or bool((t > 1).any())):
        raise ValueError(f"t must lie in [0, 1], got values in [{float(t.min()):.4g}, {float(t.max()):.4g}]")
    return t


def expand_t(t: Tensor | float, x: Tensor) -> Tensor:
    """Reshape per-sample values ``t`` of shape (B,) to (B, 1, ..., 1) to broadcast against ``x``.

    Args:
        t: a tensor of shape (B,), or a 0-d tensor / Python float (returned as a 0-d tensor).
        x: the tensor to broadcast against, shape (B, ...).

    Returns:
        ``t`` viewed with shape (B,) + (1,) * (x.ndim - 1), or a 0-d tensor.
    """
    t = torch.as_tensor(t, device=x.device)
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(f"t must have shape ({x.shape[0]},) to match x of shape {tuple(x.shape)}, "
                         f"got {tuple(t.shape)}")
    return t.view(-1, *([1] * (x.ndim - 1)))
