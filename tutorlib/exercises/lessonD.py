"""Exercise checks of appendix D (coupling normalizing flows): an additive coupling, the affine coupling's
inverse, and bits per dimension of dequantised pixels."""

from __future__ import annotations

import math
from typing import Callable

import torch

from tutorlib.exercises.core import DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, batch_size, check, rand, randn

__all__ = ["check_additive_coupling", "check_coupling_inverse", "check_pixel_bits_per_dim"]


def _random_mask(g: torch.Generator, D: int) -> torch.Tensor:
    """A random float64 0/1 mask ``(D,)`` with at least one kept (1) and one transformed (0) coordinate."""
    while True:
        mask = (torch.rand(D, generator=g) < 0.5).double()
        if 0 < int(mask.sum()) < D:
            return mask


def _random_net(g: torch.Generator, D: int, out: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A smooth random network ``(B, D) -> (B, out)`` that depends on every input coordinate."""
    W1 = randn(g, D, 8) / math.sqrt(D)
    b1 = randn(g, 8)
    W2 = randn(g, 8, out) / math.sqrt(8)
    b2 = 0.3 * randn(g, out)

    def net(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ W1.to(x) + b1.to(x)) @ W2.to(x) + b2.to(x)

    return net


_NET_HINT = Hint("exception", "the network takes one (B, D) tensor, the masked input: net(mask * x)",
                 match="takes|positional argument|mat1 and mat2")
_LOGDET_SHAPE_HINT = Hint("shape", "the log-determinant is one number per sample, shape (B,): reduce over the "
                                   "coordinates (dim=1), never over the batch", match="logdet")


# --- exercise 1: an additive (NICE) coupling ---------------------------------------------------------


def _additive(x, mask, net):
    y = x + (1 - mask) * net(mask * x)
    return y, torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


def _additive_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(3, 8, (1,), generator=g))
    return {"x": 1.5 * randn(g, B, D), "mask": _random_mask(g, D), "net": _random_net(g, D, D)}


def check_additive_coupling(fn: Callable, *, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check NICE's additive coupling ``fn(x, mask, net) -> (y, logdet)`` (appendix D, exercise 1).

    ``y = x + (1 - mask) * net(mask * x)`` for ``x`` ``(B, D)``, a 0/1 ``mask`` ``(D,)`` (1 = kept) and a
    network ``net`` ``(B, D) -> (B, D)``; ``logdet`` ``(B,)`` is ``log|det dy/dx|`` per sample (zero:
    an additive coupling preserves volume). The masks and dimensions vary between trials.
    """
    mistakes = [
        Mistake("the shift computed from the whole x",
                lambda x, m, net: (x + (1 - m) * net(x), _additive(x, m, net)[1]),
                "the network may see only the kept part, net(mask * x): otherwise the layer cannot be inverted"),
        Mistake("the shift added to every coordinate", lambda x, m, net: (x + net(m * x), _additive(x, m, net)[1]),
                "multiply the shift by (1 - mask): the kept coordinates must pass unchanged"),
        Mistake("the roles of mask and 1 - mask swapped",
                lambda x, m, net: (x + m * net((1 - m) * x), _additive(x, m, net)[1]),
                "mask = 1 marks the kept coordinates: condition on mask * x, shift the (1 - mask) part"),
        Mistake("a log-det that sums the shifts",
                lambda x, m, net: (_additive(x, m, net)[0], ((1 - m) * net(m * x)).sum(1)),
                "dy/dx is triangular with ones on its diagonal: the log-det of a shift is 0 for every sample"),
        Mistake("a log-det that sums the network's output",
                lambda x, m, net: (_additive(x, m, net)[0], net(m * x).sum(1)),
                "dy/dx is triangular with ones on its diagonal: the log-det of a shift is 0 for every sample"),
    ]
    return check(fn, _additive, _additive_inputs, name="additive_coupling", output_names=("y", "logdet"),
                 mistakes=mistakes, hints=[_NET_HINT, _LOGDET_SHAPE_HINT], strict=strict, time_limit_s=time_limit_s)


# --- exercise 2: the inverse of the affine coupling ------------------------------------------------------


def _affine_params(y, mask, net, scale):
    s_raw, t = net(mask * y).chunk(2, dim=1)  # (B, D) each
    return (1 - mask) * scale * torch.tanh(s_raw), (1 - mask) * t


def _affine_inverse(y, mask, net, scale):
    s, t = _affine_params(y, mask, net, scale)
    return (y - t) * torch.exp(-s)


def _inverse_inputs(g: torch.Generator) -> dict:
    B, D = batch_size(g), int(torch.randint(3, 8, (1,), generator=g))
    return {"y": 1.5 * randn(g, B, D), "mask": _random_mask(g, D), "net": _random_net(g, D, 2 * D),
            "scale": 0.5 + rand(g, D)}


def _unmasked_inverse(y, mask, net, scale):
    s_raw, t = net(mask * y).chunk(2, dim=1)
    return (y - t) * torch.exp(-scale * torch.tanh(s_raw))


def _params_from_whole_y(y, mask, net, scale):
    s_raw, t = net(y).chunk(2, dim=1)
    s, t = (1 - mask) * scale * torch.tanh(s_raw), (1 - mask) * t
    return (y - t) * torch.exp(-s)


def check_coupling_inverse(fn: Callable, *, strict: bool | None = None,
                           time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the inverse of the affine coupling, ``fn(y, mask, net, scale) -> x`` (appendix D, exercise 2).

    The forward map is ``y = mask * x + (1 - mask) * (x * exp(s) + t)`` with
    ``(s_raw, t) = net(mask * x).chunk(2, dim=1)`` and ``s = scale * tanh(s_raw)``; ``y`` ``(B, D)``, a 0/1
    ``mask`` ``(D,)``, ``net`` ``(B, D) -> (B, 2 D)`` and ``scale`` ``(D,)``. Masks, sizes and scales vary.
    """
    def mistake_with(formula):
        def wrong(y, mask, net, scale):
            s, t = _affine_params(y, mask, net, scale)
            return formula(y, s, t)
        return wrong

    mistakes = [
        Mistake("(y - t) exp(s): the scale not undone", mistake_with(lambda y, s, t: (y - t) * torch.exp(s)),
                "the forward map multiplied by exp(s): divide, x = (y - t) * exp(-s)"),
        Mistake("y exp(-s) - t: the shift removed after the scaling",
                mistake_with(lambda y, s, t: y * torch.exp(-s) - t),
                "undo the steps in reverse order: first subtract t, then divide by exp(s)"),
        Mistake("the forward map", mistake_with(lambda y, s, t: y * torch.exp(s) + t),
                "the inverse runs the other way: x = (y - t) * exp(-s)"),
        Mistake("s and t applied to the kept coordinates too", _unmasked_inverse,
                "multiply s and t by (1 - mask): the kept coordinates pass unchanged"),
        Mistake("the network evaluated on the whole y", _params_from_whole_y,
                "feed the network mask * y: the kept part of y equals that of x, the rest does not"),
    ]
    return check(fn, _affine_inverse, _inverse_inputs, name="coupling_inverse", mistakes=mistakes,
                 hints=[_NET_HINT], strict=strict, time_limit_s=time_limit_s)


# --- exercise 3: bits per dimension of dequantised pixels ----------------------------------------------


def _bpd(log_p_y, logit_logdet, D):
    return -(log_p_y + logit_logdet - D * math.log(256)) / (D * math.log(2))


def _bpd_inputs(g: torch.Generator) -> dict:
    B = batch_size(g)
    D = int(torch.randint(2, 900, (1,), generator=g))
    return {"log_p_y": -D * (0.5 + 2 * rand(g, B)), "logit_logdet": D * (1 + 2 * rand(g, B)), "D": D}


def check_pixel_bits_per_dim(fn: Callable, *, strict: bool | None = None,
                             time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check ``fn(log_p_y, logit_logdet, D) -> (B,)`` bits per dimension in pixel space (appendix D, exercise 3).

    ``log_p_y`` ``(B,)`` is the flow's log-density (nats) of ``y = logit(alpha + (1 - 2 alpha) x)``,
    ``logit_logdet`` ``(B,)`` the log-determinant of that logit transform at ``x = (k + u) / 256``, ``D`` the
    number of dimensions. The answer is ``-log2 p(k + u) / D`` for the density on ``[0, 256)^D``. ``D`` varies.
    """
    L2, L256 = math.log(2), math.log(256)
    mistakes = [
        Mistake("nats per dimension", lambda lp, ld, D: -(lp + ld - D * L256) / D,
                "bits are log base 2: divide the nats by ln 2"),
        Mistake("bits per dimension of x in [0, 1) (the 256 scaling missing)", lambda lp, ld, D: -(lp + ld) / (D * L2),
                "the data were divided by 256: the pixel density is p(x) / 256^D, which adds log2(256) = 8 bits per "
                "dimension"),
        Mistake("the 256 scaling with the wrong sign", lambda lp, ld, D: -(lp + ld + D * L256) / (D * L2),
                "p(k + u) = p(x) / 256^D: subtract D log 256 from log p(x), which adds 8 bits per dimension"),
        Mistake("the logit's log-det with the wrong sign", lambda lp, ld, D: -(lp - ld - D * L256) / (D * L2),
                "log p(x) = log p(y) + log|dy/dx|: add the logit transform's log-det"),
        Mistake("the logit's log-det left out", lambda lp, ld, D: -(lp - D * L256) / (D * L2),
                "the flow models y = logit(...), not x: add the logit transform's log-det, "
                "log p(x) = log p(y) + logdet"),
        Mistake("bits per image (not divided by D)", lambda lp, ld, D: -(lp + ld - D * L256) / L2,
                "bits per dimension divide the image's bits by its number of dimensions D"),
        Mistake("the log-likelihood instead of its negative", lambda lp, ld, D: (lp + ld - D * L256) / (D * L2),
                "bits per dimension measure the negative log-likelihood: put a minus sign in front"),
    ]
    hints = [Hint("shape", "return one value per image, shape (B,): do not average over the batch")]
    return check(fn, _bpd, _bpd_inputs, name="pixel_bits_per_dim", mistakes=mistakes, hints=hints, strict=strict,
                 time_limit_s=time_limit_s)
