"""Exercise checks of appendix B (latent flow matching): the latent normalisation, the latent CFM loss
on images with a frozen encoder, and midpoint sampling in the latent followed by one decoding.

The checks vary the batch size and the latent's shape (a vector ``(d,)`` or a small feature map
``(C, H, W)``), use small random float64 networks for the encoder, the decoder and the velocity
model (their weights drawn from the check's own generator), and name the likely mistakes:
per-batch statistics, a forgotten normalisation, gradients flowing into the frozen encoder,
decoding before the ODE has ended, and the like.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Hint, Mistake, _exception_text,
                                     _inputs_text, _matches, check, compare, finish, guarded_call,
                                     learner_name, rand, randn)
from tutorlib.guidance import cfg_velocity
from tutorlib.latent import LatentStats, encoded_cfm_loss, sample_latent_digits
from tutorlib.models import TimeMLP

__all__ = ["check_latent_cfm_loss", "check_normalise_latents", "check_sample_and_decode"]


def _latent_shape(g: torch.Generator, trial: int) -> tuple[int, ...]:
    """A vector latent on odd trials, a small feature map on even ones."""
    if trial % 2:
        return (int(torch.randint(3, 13, (1,), generator=g)),)
    return (int(torch.randint(2, 4, (1,), generator=g)), 7, 7)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


class _FlatVelocity(nn.Module):
    """A class-conditional TimeMLP on latents of any shape ``S`` (flattened in, reshaped out), float64."""

    def __init__(self, g: torch.Generator, shape: tuple[int, ...], num_classes: int, scale: float = 0.4):
        super().__init__()
        self.shape = shape
        with torch.random.fork_rng(devices=[]):
            self.net = TimeMLP(dim=_numel(shape), hidden=24, depth=2, num_classes=num_classes).double()
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(scale * randn(g, *p.shape))

    @property
    def null_class(self) -> int:
        return self.net.null_class

    def forward(self, u: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(u.reshape(u.shape[0], -1), t, y).reshape(u.shape)

    def __repr__(self) -> str:  # what a failure message shows
        return f"a small velocity model on latents {self.shape} ({self.null_class} classes)"


class _Encoder(nn.Module):
    """Images ``(B, 1, 28, 28)`` -> latents ``(B, *S)``: a random linear map and a tanh, offset and scaled."""

    def __init__(self, g: torch.Generator, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape
        with torch.random.fork_rng(devices=[]):
            self.lin = nn.Linear(784, _numel(shape)).double()
        with torch.no_grad():
            self.lin.weight.copy_(randn(g, *self.lin.weight.shape) / 10)
            self.lin.bias.copy_(randn(g, _numel(shape)))
        # an offset and per-coordinate scales far from (0, 1): forgetting to normalise shows
        self.register_buffer("offset", 3 * randn(g, _numel(shape)))
        self.register_buffer("scale", 0.5 + 4 * rand(g, _numel(shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.tanh(self.lin(x.reshape(x.shape[0], -1))) * self.scale + self.offset  # (B, prod S)
        return z.reshape(x.shape[0], *self.shape)


class _Decoder(nn.Module):
    """Latents ``(B, *S)`` -> images ``(B, 1, 28, 28)``: a random linear map (values beyond [-1, 1] too)."""

    def __init__(self, g: torch.Generator, shape: tuple[int, ...]):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            self.lin = nn.Linear(_numel(shape), 784).double()
        with torch.no_grad():
            self.lin.weight.copy_(randn(g, *self.lin.weight.shape) / math.sqrt(_numel(shape)))
            self.lin.bias.copy_(0.5 * randn(g, 784))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.lin(z.reshape(z.shape[0], -1)).reshape(z.shape[0], 1, 28, 28)


# --- exercise 1: the latent normalisation ----------------------------------------------------------------


def _normalise(z: torch.Tensor, z_train: torch.Tensor) -> torch.Tensor:
    return LatentStats.fit(z_train).normalise(z)


def check_normalise_latents(fn: Callable, *, trials: int = 4, seed: int = 0, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the latent normalisation of appendix B.

    The learner writes ``fn(z, z_train) -> u``: latents ``z`` ``(B, *S)`` standardised per coordinate
    with the mean and standard deviation of the **training** latents ``z_train`` ``(N, *S)`` (over their
    first axis), ``u = (z - mean) / std``. Either standard deviation (``torch.std``'s unbiased one or
    the population one) passes: ``N`` is about 2000. Checked on vector latents ``(d,)`` and on small
    feature maps ``(C, 7, 7)``, with coordinates of different offsets and scales; named mistakes: the
    batch's own statistics, one scale for all coordinates, no centring, no scaling, the variance for
    the standard deviation, the inverse map.
    """
    state = {"trial": 0}

    def make_inputs(g: torch.Generator) -> dict:
        state["trial"] += 1
        shape = _latent_shape(g, state["trial"])
        N, B = int(torch.randint(1500, 2501, (1,), generator=g)), int(torch.randint(5, 13, (1,), generator=g))
        offset, scale = 3 * randn(g, *shape), 0.3 + 3 * rand(g, *shape)  # per-coordinate mean and spread
        z_train = offset + scale * randn(g, N, *shape)  # (N, *S)
        z = offset + 1.5 * scale * randn(g, B, *shape) + scale  # (B, *S): a batch unlike the training set
        return {"z": z, "z_train": z_train}

    mistakes = [
        Mistake("standardised with the batch's own statistics", lambda z, zt: (z - z.mean(0)) / z.std(0),
                "use the fixed statistics of the training latents, z_train.mean(0) and z_train.std(0): a batch's "
                "own mean and spread change from batch to batch, and at sampling time there is no batch of data"),
        Mistake("one mean and one standard deviation for all coordinates",
                lambda z, zt: (z - zt.mean()) / zt.std(),
                "standardise each coordinate on its own: reduce over the first axis only, z_train.mean(0)"),
        Mistake("scaled but not centred", lambda z, zt: z / zt.std(0), "subtract the mean first: (z - mean) / std"),
        Mistake("centred but not scaled", lambda z, zt: z - zt.mean(0), "divide by the standard deviation too"),
        Mistake("divided by the variance", lambda z, zt: (z - zt.mean(0)) / zt.var(0),
                "divide by the standard deviation, z_train.std(0), not the variance"),
        Mistake("the inverse map (denormalised)", lambda z, zt: z * zt.std(0) + zt.mean(0),
                "normalising subtracts the mean and divides: (z - mean) / std"),
    ]
    hints = [Hint("shape", "reduce over the first (batch) axis only and keep the latent's shape: z_train.mean(0) has "
                           "the shape of one latent, and broadcasts against z")]
    return check(fn, _normalise, make_inputs, name="normalise_latents", atol=1e-4, rtol=1e-3, trials=trials,
                 seed=seed, mistakes=mistakes, hints=hints, time_limit_s=time_limit_s, strict=strict)


# --- exercise 2: the latent CFM loss on images, with a frozen encoder ------------------------------------


def _loss_mistakes(model, encoder, mean, std, x_1, x_0, t, y) -> list[Mistake]:
    """Wrong losses with the learner's signature (evaluated without gradients, for naming)."""
    with torch.no_grad():
        z = encoder(x_1)  # (B, *S)
        t_ = t.reshape(-1, *([1] * (z.dim() - 1)))  # (B, 1, ...)

        def loss(u_1, *, swap=False, target=None, labels=y, reduce="mean"):
            u_t = (t_ * x_0 + (1 - t_) * u_1) if swap else ((1 - t_) * x_0 + t_ * u_1)
            tgt = (u_1 - x_0) if target is None else target(u_1)
            err = (model(u_t, t, labels) - tgt).square()
            return err.mean() if reduce == "mean" else err.reshape(err.shape[0], -1).sum(1).mean()

        u_1 = (z - mean) / std
        return [
            Mistake("the latent without its normalisation", lambda *a: loss(z),
                    "normalise the encoded latent with the fixed statistics, (z - mean) / std, before the path"),
            Mistake("normalised with the batch's own statistics", lambda *a: loss((z - z.mean(0)) / z.std(0)),
                    "use the mean and std you were given (fitted once on the training latents), not the batch's"),
            Mistake("the inverse map (z * std + mean)", lambda *a: loss(z * std + mean),
                    "normalising is (z - mean) / std; z * std + mean is what the decoder needs after sampling"),
            Mistake("the target reversed (u_0 - u_1)", lambda *a: loss(u_1, target=lambda u: x_0 - u),
                    "the velocity of u_t = (1 - t) u_0 + t u_1 is u_1 - u_0"),
            Mistake("t and 1 - t swapped in u_t", lambda *a: loss(u_1, swap=True),
                    "the path starts at the noise: u_t = (1 - t) u_0 + t u_1"),
            Mistake("the labels left out (model(u_t, t))", lambda *a: loss(u_1, labels=None),
                    "pass the labels: model(u_t, t, y)"),
            Mistake("summed over the latent's coordinates", lambda *a: loss(u_1, reduce="sum"),
                    "average over the batch and every coordinate: (...).square().mean()"),
        ]


def check_latent_cfm_loss(fn: Callable, *, trials: int = 4, seed: int = 0, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the latent CFM loss on images with a frozen encoder (appendix B).

    The learner writes ``fn(model, encoder, mean, std, x_1, x_0, t, y) -> loss``: encode the images
    ``x_1`` ``(B, 1, 28, 28)`` **without a gradient** into ``encoder``, normalise with the fixed ``mean``
    and ``std`` (shape ``S``), put ``u_t = (1 - t) x_0 + t u_1`` on the linear path from the noise
    ``x_0`` ``(B, *S)``, and return the scalar ``mean || model(u_t, t, y) - (u_1 - x_0) ||^2``. The
    reference is :func:`tutorlib.latent.encoded_cfm_loss`. Checked, for vector and feature-map latents
    and several batch sizes: a float64 scalar that autograd can differentiate, its value, that its
    gradient with respect to the model's weights is the reference's, that **no** gradient reaches the
    encoder's weights, and that no input (nor a weight) is changed. Named mistakes: no normalisation,
    per-batch statistics, the inverse map, the target reversed, ``t`` and ``1 - t`` swapped, no labels,
    a sum over coordinates.
    """
    name = learner_name(fn, "latent_cfm_loss")
    g = torch.Generator().manual_seed(seed)
    largest = 0.0
    for trial in range(1, trials + 1):
        shape = _latent_shape(g, trial)
        num_classes = int(torch.randint(3, 8, (1,), generator=g))
        model, encoder = _FlatVelocity(g, shape, num_classes), _Encoder(g, shape)
        B = int(torch.randint(5, 13, (1,), generator=g))
        with torch.no_grad():
            stats = LatentStats.fit(encoder(randn(g, 400, 1, 28, 28)))  # "training" latents of this encoder
        inputs = {"model": model, "encoder": encoder, "mean": stats.mean, "std": stats.std,
                  "x_1": randn(g, B, 1, 28, 28), "x_0": randn(g, B, *shape), "t": rand(g, B),
                  "y": torch.randint(0, num_classes + 1, (B,), generator=g)}  # some rows are the null class
        where = f"trial {trial} of {trials}, inputs: latents of shape {shape}, {_inputs_text(inputs)}"
        model.zero_grad(set_to_none=True)
        expected = encoded_cfm_loss(model, encoder, stats, inputs["x_1"], inputs["x_0"], inputs["t"], inputs["y"])
        expected.backward()
        want_grads = [p.grad.detach().clone() for p in model.parameters()]
        weights = [p.detach().clone() for p in (*model.parameters(), *encoder.parameters())]
        model.zero_grad(set_to_none=True)
        encoder.zero_grad(set_to_none=True)
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        args = [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs.values()]

        def fail(message: str, kind: str) -> CheckResult:
            return finish(CheckResult(name, False, f"{message} ({where})", kind), strict)

        got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return fail(_exception_text(err), "exception")
        changed = [k for k, a in zip(inputs, args) if k in tensors and not torch.equal(a, tensors[k])]
        if changed:
            return fail(f"{name} changed its input {', '.join(changed)} in place; compute new tensors instead",
                        "mutation")
        if any(not torch.equal(p.detach(), w) for p, w in zip((*model.parameters(), *encoder.parameters()), weights)):
            return fail(f"{name} changed the weights of the model or the encoder: the loss only computes, the "
                        "optimiser updates", "mutation")
        failure, err_value = compare(got, expected.detach(), None, 1e-9, 1e-7)
        if failure is not None:
            message = failure.message
            if failure.kind == "value":
                for m in _loss_mistakes(*[inputs[k] for k in inputs]):
                    if _matches(got.detach(), m.fn(), 1e-9, 1e-7):
                        message = f"{name} looks like {m.what}: {m.fix} ({message})"
                        break
            return fail(message, failure.kind)
        if not got.requires_grad:
            return fail("the value is right, but the loss does not depend on the model's weights (requires_grad is "
                        "False): only the encoding goes under torch.no_grad(); the model's forward pass must be "
                        "recorded for backward()", "gradient")
        try:
            got.backward()
        except Exception as exc:  # a graph the learner's code broke
            return fail(f"backward() on the loss failed: {type(exc).__name__}: {exc}", "gradient")
        finally:
            for p in encoder.parameters():
                p.requires_grad_(True)  # a learner may have frozen the encoder in place; that is allowed
        leaked = [n for n, p in encoder.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
        if leaked:
            return fail(f"the value is right, but backward() put gradients into the frozen encoder ({', '.join(leaked)}): "
                        "encode under torch.no_grad() (or detach the latent), so that training the velocity model "
                        "neither changes nor spends memory on the encoder", "gradient")
        for (pname, p), want in zip(model.named_parameters(), want_grads):
            if p.grad is None or not torch.allclose(p.grad, want, atol=1e-9, rtol=1e-6):
                return fail(f"the value is right, but the gradient with respect to the model's weight {pname} is not "
                            "the loss's: is part of the model's output detached?", "gradient")
        largest = max(largest, err_value)
    return finish(CheckResult(name, True, (
        f"matches tutorlib.latent.encoded_cfm_loss on {trials} random trials with vector and feature-map latents "
        f"(largest error {largest:.2g}); gradients reach the model and not the encoder")), strict)


# --- exercise 3: sampling in the latent with the midpoint method, then decoding once ---------------------


def _sample_and_decode(model, decoder, mean, std, y, u_0, w, steps):
    return sample_latent_digits(model, decoder, LatentStats(mean, std), y, w=w, nfe=2 * steps, u_0=u_0,
                                method="midpoint")


def _solve(model, y, w, u_0, steps, *, taken=None, guided=True, method="midpoint", half_time=True):
    """Fixed steps of the guided latent ODE; ``taken`` of the ``steps`` grid's steps (default: all)."""
    velocity = cfg_velocity(model, y, w if guided else 1.0)
    u, h = u_0, 1.0 / steps

    def f(x, t):
        return velocity(x, torch.full((x.shape[0],), t, dtype=x.dtype))

    with torch.no_grad():
        for k in range(steps if taken is None else taken):
            t = k * h
            if method == "euler":
                u = u + h * f(u, t)
            else:
                u = u + h * f(u + 0.5 * h * f(u, t), t + 0.5 * h if half_time else t)
    return u


def check_sample_and_decode(fn: Callable, *, trials: int = 4, seed: int = 0, strict: bool | None = None,
                            time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check latent sampling with the midpoint method followed by one decoding (appendix B).

    The learner writes ``fn(model, decoder, mean, std, y, u_0, w, steps) -> images``: ``steps`` uniform
    **midpoint** steps from ``t = 0`` to ``1`` (``u <- u + h v(u + h/2 v(u, t), t + h/2)``, two
    evaluations each) of the guided velocity ``v_u + w (v_c - v_u)`` of the latent model, starting at
    the noise ``u_0`` ``(B, *S)``; **then** denormalise with the fixed ``mean`` and ``std``
    (``u * std + mean``), decode, and clamp to ``[-1, 1]``: ``(B, 1, 28, 28)``. The reference is
    :func:`tutorlib.latent.sample_latent_digits` with ``method="midpoint"`` and ``nfe = 2 * steps``.
    Varied: latent shape, batch, classes, ``w``, ``steps``. Named mistakes: decoding one step before
    the ODE ends, decoding the noise, no denormalisation or the wrong map, no clamp, no guidance,
    Euler steps, the midpoint's second evaluation at ``t`` instead of ``t + h/2``.
    """
    state = {"trial": 0}

    def make_inputs(g: torch.Generator) -> dict:
        state["trial"] += 1
        shape = _latent_shape(g, state["trial"])
        num_classes = int(torch.randint(3, 8, (1,), generator=g))
        B = int(torch.randint(5, 11, (1,), generator=g))
        return {"model": _FlatVelocity(g, shape, num_classes, scale=0.5), "decoder": _Decoder(g, shape),
                "mean": 2 * randn(g, *shape), "std": 0.5 + 2 * rand(g, *shape),
                "y": torch.randint(0, num_classes, (B,), generator=g), "u_0": randn(g, B, *shape),
                "w": round(1.5 + 2 * float(rand(g, 1)), 3), "steps": int(torch.randint(2, 6, (1,), generator=g))}

    def decode(decoder, mean, std, u, clamp=True):
        with torch.no_grad():
            x = decoder(u * std + mean)
        return x.clamp(-1, 1) if clamp else x

    mistakes = [
        Mistake("decoded one step before the ODE ends",
                lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, _solve(m, y, w, u0, n, taken=n - 1)),
                "take all `steps` steps to t = 1 first; the latent is a digit's code only at the end of the ODE"),
        Mistake("decoded the starting noise (no ODE)", lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, u0),
                "integrate the guided velocity from u_0 first, then decode"),
        Mistake("decoded without denormalising",
                lambda m, d, mu, sd, y, u0, w, n: d(_solve(m, y, w, u0, n)).clamp(-1, 1),
                "the model samples normalised latents: decode u * std + mean"),
        Mistake("normalised instead of denormalised",
                lambda m, d, mu, sd, y, u0, w, n: d((_solve(m, y, w, u0, n) - mu) / sd).clamp(-1, 1),
                "after sampling, undo the normalisation: u * std + mean"),
        Mistake("no clamp to [-1, 1]", lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, _solve(m, y, w, u0, n), False),
                "clamp the decoded images to [-1, 1], the range of the data (and of the judge)"),
        Mistake("no guidance (the conditional velocity alone)",
                lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, _solve(m, y, w, u0, n, guided=False)),
                "combine both halves at every evaluation: v_u + w (v_c - v_u)"),
        Mistake("Euler steps, not midpoint steps",
                lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, _solve(m, y, w, u0, n, method="euler")),
                "a midpoint step evaluates the velocity twice: first at (u, t), then at (u + h/2 v, t + h/2)"),
        Mistake("the midpoint's second evaluation at t instead of t + h/2",
                lambda m, d, mu, sd, y, u0, w, n: decode(d, mu, sd, _solve(m, y, w, u0, n, half_time=False)),
                "the half-step point lives at time t + h/2: evaluate v(u + h/2 v(u, t), t + h/2)"),
    ]
    return check(fn, _sample_and_decode, make_inputs, name="sample_and_decode", atol=1e-8, rtol=1e-6, trials=trials,
                 seed=seed, mistakes=mistakes, time_limit_s=time_limit_s, strict=strict)
