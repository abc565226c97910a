"""Exercise checks of lesson 09 (flow matching on MNIST): label dropout and classifier-free guidance.

The guidance checks call the learner's function with a small class-conditional ``PatchUNet`` whose
weights are drawn at a large scale (so that its output depends clearly on the label and a wrong
combination of the two halves cannot pass), wrapped so that the check can count its calls.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from tutorlib.exercises.core import (DEFAULT_TIME_LIMIT_S, CheckResult, Mistake, _exception_text,
                                     _inputs_text, _matches, compare, describe_row, finish, guarded_call, learner_name,
                                     rand, randn)
from tutorlib.guidance import cfg_velocity, guided_velocity, zero_star_velocity
from tutorlib.models import PatchUNet

__all__ = ["check_cfg_velocity", "check_cfg_zero_init", "check_label_dropout"]


# --- label dropout ---------------------------------------------------------------------------------


def check_label_dropout(fn: Callable, *, seed: int = 0, strict: bool | None = None,
                        time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check label dropout for classifier-free guidance training (lesson 09).

    The learner writes ``fn(y, p, null_class, generator) -> y_dropped``: a new int64 ``(B,)`` tensor in
    which each label of ``y`` is replaced by ``null_class`` independently with probability ``p``, the
    coin flips drawn from ``generator`` (a CPU ``torch.Generator``). Checked, for several null classes
    (3, 7, 10, 12: a hard-coded 10 fails) and several ``p``: the type, shape and dtype; that ``y`` is
    left unchanged; that every output is the input label or the null class, and a label that already is
    the null class stays so; ``p = 0`` keeps every label and ``p = 1`` drops every one; the same
    generator state gives the same output and other states other outputs (the draws come from
    ``generator``, not from the global seed, and not from a fixed pattern); and, on 20,000 labels, that
    the fraction dropped is within five standard errors of ``p`` overall, in each tenth of the batch and
    at every residue modulo 2, 3, 5 and 7 (rows are dropped one by one, independently).
    """
    name = learner_name(fn, "label_dropout")
    g = torch.Generator().manual_seed(seed)

    def labels(B: int, null: int) -> torch.Tensor:
        return torch.randint(0, null, (B,), generator=g)  # (B,)

    def call(y: torch.Tensor, p: float, null: int, gen_seed: int) -> tuple[Any, str | None]:
        inputs = {"y": y, "p": p, "null_class": null, "generator": torch.Generator()}
        where = f"p = {p}, null_class = {null}, inputs: {_inputs_text(inputs)}"
        y_in = y.clone()
        out, err = guarded_call(fn, [y_in, p, null, torch.Generator().manual_seed(gen_seed)], time_limit_s)
        if err is not None:
            return None, f"{_exception_text(err)} ({where})"
        if not torch.equal(y_in, y):
            return None, f"{name} changed its input y in place; return a new tensor, e.g. with torch.where ({where})"
        failure, _ = compare(out, torch.empty_like(y), atol=math.inf, rtol=0.0)  # type, shape, dtype, device only
        if failure is not None:
            hint = " (labels are int64: torch.full_like(y, null_class) keeps the dtype)" if failure.kind == "dtype" else ""
            return None, f"{failure.message}{hint} ({where})"
        ok = (out == y) | (out == null)
        if not bool(ok.all()):
            i = int((~ok).nonzero()[0])
            return None, (f"output {i} is {int(out[i])} for the label {int(y[i])}: every output must be the "
                          f"input label or the null class {null} (use the null_class argument, not a fixed "
                          f"number) ({where})")
        if bool((out[y == null] != null).any()):
            return None, f"a label that already was the null class {null} must stay so ({where})"
        return out, None

    def fail(message: str, kind: str = "value") -> CheckResult:
        return finish(CheckResult(name, False, message, kind), strict)

    for null in (3, 7, 10, 12):
        B = int(torch.randint(20, 41, (1,), generator=g))
        y = labels(B, null)
        y[0] = null  # an already-dropped label
        for p, expect in ((0.0, "keep every label"), (1.0, "drop every label")):
            out, problem = call(y, p, null, 1)
            if problem is not None:
                return fail(problem)
            want = y if p == 0.0 else torch.full_like(y, null)
            if not torch.equal(out, want):
                n_wrong = int((out != want).sum())
                return fail(f"with p = {p} it must {expect}, but {n_wrong} of {B} outputs differ (drop where a "
                            f"uniform draw is below p: torch.rand(B, generator=generator) < p)")
    y = labels(400, 10)
    first, problem = call(y, 0.5, 10, 2)
    if problem is not None:
        return fail(problem)
    torch.manual_seed(12345)  # the global RNG moves between the calls: draws from it would differ
    again, _ = call(y, 0.5, 10, 2)
    if again is None or not torch.equal(first, again):
        return fail("two calls with generators in the same state gave different outputs: draw the coin flips "
                    "from the generator, torch.rand(B, generator=generator)")
    other, _ = call(y, 0.5, 10, 3)
    if other is not None and torch.equal(first, other):
        return fail("generators in different states gave the same output: the dropped rows must come from "
                    "random draws (torch.rand(B, generator=generator) < p), not from a fixed pattern")
    n, p = 20_000, 0.3
    y_big = labels(n, 7)
    out, problem = call(y_big, p, 7, 4)
    if problem is not None:
        return fail(problem)
    dropped = (out == 7) & (y_big != 7)  # (n,)
    se = math.sqrt(p * (1 - p) / n)
    frac = float(dropped.double().mean())
    if abs(frac - p) > 5 * se:
        return fail(f"on {n} labels with p = {p} it dropped a fraction {frac:.4f}, more than 5 standard errors "
                    f"({5 * se:.4f}) from p: drop each label on its own coin flip, one uniform draw per label")
    idx = torch.arange(n)
    groups = [(f"the {k + 1}. tenth of the batch", (idx * 10 // n) == k) for k in range(10)]
    groups += [(f"rows i with i % {m} == {r}", idx % m == r) for m in (2, 3, 5, 7) for r in range(m)]
    for what, mask in groups:
        k = int(mask.sum())
        f = float(dropped[mask].double().mean())
        if abs(f - p) > 5 * math.sqrt(p * (1 - p) / k):
            return fail(f"on {n} labels with p = {p} it dropped {f:.3f} of {what} ({k} rows), far from p: every "
                        "row must be dropped on its own independent coin flip, not by position")
    return finish(CheckResult(name, True, (
        f"keeps or drops single labels for null classes 3, 7, 10 and 12, p = 0 and p = 1 exact, reproducible "
        f"under a generator and different under another, and dropped {frac:.4f} of {n} labels at p = {p} "
        f"(within {abs(frac - p) / se:.1f} standard errors), evenly across positions")), strict)


# --- classifier-free guidance in one pass -------------------------------------------------------------


class _CountingModel(torch.nn.Module):
    """Wraps a class-conditional model and records the batch size of every call."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.calls: list[int] = []

    @property
    def null_class(self) -> int:
        return self.model.null_class

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.calls.append(int(x.shape[0]))
        return self.model(x, t, y)


def _small_image_model(g: torch.Generator, num_classes: int) -> torch.nn.Module:
    """A small class-conditional PatchUNet in float64 with weights drawn from ``g`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        model = PatchUNet(1, None, base_channels=8, num_classes=num_classes).double().eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(0.3 * randn(g, *param.shape))
    return model


def _halves(model: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return model(x, t, y), model(x, t, torch.full_like(y, model.null_class))


def _guidance_check(fn: Callable, name: str, reference: Callable, mistakes_for: Callable, extra_input: Callable | None,
                    strict: bool | None, time_limit_s: float | None, what: str) -> CheckResult:
    """Shared loop of the one-pass guidance checks: vary classes, batch, w; count calls; name mistakes."""
    g = torch.Generator().manual_seed(0)
    largest = 0.0
    trials = 3
    for trial, num_classes in zip(range(1, trials + 1), (3, 5, 4)):
        model = _small_image_model(g, num_classes)
        B = int(torch.randint(3, 7, (1,), generator=g))
        x = randn(g, B, 1, 28, 28)  # (B, 1, 28, 28)
        t = rand(g, B)  # (B,)
        y = torch.randint(0, num_classes, (B,), generator=g)  # (B,)
        w = round(1.5 + 3 * float(rand(g, 1)), 3)
        inputs = {"x": x, "t": t, "y": y, "w": w}
        if extra_input is not None:
            inputs.update(extra_input(g, t))
        where = (f"trial {trial} of {trials}, inputs: model a small PatchUNet with {num_classes} classes "
                 f"(null class {num_classes}), {_inputs_text(inputs)}")
        expected = reference(model, **inputs)
        counting = _CountingModel(model)
        args = [counting] + [v.clone() if isinstance(v, torch.Tensor) else v for v in inputs.values()]
        with torch.no_grad():
            got, err = guarded_call(fn, args, time_limit_s)
        if err is not None:
            return finish(CheckResult(name, False, f"{_exception_text(err)} ({where})", "exception"), strict)
        changed = [k for k, a in zip(inputs, args[1:]) if isinstance(a, torch.Tensor) and not torch.equal(a, inputs[k])]
        if changed:
            return finish(CheckResult(name, False, f"{name} changed its input {', '.join(changed)} in place "
                                                   f"({where})", "mutation"), strict)
        failure, err_value = compare(got, expected, None, 1e-9, 1e-7)
        if failure is not None:
            message = failure.message
            if failure.kind == "value":
                known = None
                for m in mistakes_for(model, inputs):
                    if _matches(got, m.fn(), 1e-9, 1e-7):
                        known = f"{name} looks like {m.what}: {m.fix}"
                        break
                if known is not None:
                    message = f"{known} ({message})"
                else:
                    row = describe_row(inputs, failure.index)
                    message += f"; the inputs there: {row}" if row else ""
            return finish(CheckResult(name, False, f"{message} ({where})", failure.kind), strict)
        if counting.calls != [2 * B]:
            sizes = ", ".join(str(c) for c in counting.calls) or "none"
            return finish(CheckResult(name, False, (
                f"the value is right, but the model was called {len(counting.calls)} time(s) with batch sizes "
                f"{sizes}; evaluate both halves in one call on the doubled batch of {2 * B}: "
                f"model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, y_null])) ({where})"), "calls"), strict)
        largest = max(largest, err_value)
    return finish(CheckResult(name, True, f"matches {what} on {trials} random trials with 3, 5 and 4 classes "
                                          f"(largest error {largest:.2g}), one model call per evaluation"), strict)


def check_cfg_velocity(fn: Callable, *, strict: bool | None = None,
                       time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check classifier-free guidance in one batched forward pass (lesson 09).

    The learner writes ``fn(model, x, t, y, w) -> v``: the guided velocity
    ``v_uncond + w (v_cond - v_uncond)`` of a class-conditional ``model(x, t, y)`` (with a
    ``model.null_class`` attribute) at images ``x`` ``(B, 1, 28, 28)``, times ``t`` ``(B,)`` and labels
    ``y`` int64 ``(B,)``, computed with **one** call of ``model`` on the doubled batch (``[x, x]`` with
    labels ``[y, null_class]``). The reference is :func:`tutorlib.guidance.cfg_velocity`; the check
    varies the number of classes (so the null class), counts the calls and their batch size, and names
    the halves swapped and other known mistakes.
    """
    def reference(model, x, t, y, w):
        with torch.no_grad():
            return cfg_velocity(model, y, w)(x, t)

    def mistakes_for(model, inputs):
        v_c, v_u = _halves(model, inputs["x"], inputs["t"], inputs["y"])
        w = inputs["w"]
        return [
            Mistake("the two halves swapped (out[:B] taken as unconditional)", lambda: guided_velocity(v_u, v_c, w),
                    "the first B rows of the doubled output belong to the labels y (conditional), the last B to "
                    "the null class: v_c, v_u = out[:B], out[B:]"),
            Mistake("v_cond + w (v_cond - v_uncond)", lambda: v_c + w * (v_c - v_u),
                    "start from the unconditional velocity: v_uncond + w (v_cond - v_uncond)"),
            Mistake("the conditional velocity alone (no guidance)", lambda: v_c,
                    "combine both halves: v_uncond + w (v_cond - v_uncond)"),
        ]

    return _guidance_check(fn, learner_name(fn, "cfg_velocity"), reference, mistakes_for, None, strict, time_limit_s,
                           "tutorlib.guidance.cfg_velocity")


def check_cfg_zero_init(fn: Callable, *, strict: bool | None = None,
                        time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check CFG-Zero* with zero-init, in one batched forward pass (lesson 09).

    The learner writes ``fn(model, x, t, y, w, zero_until) -> v``: zero for the samples with
    ``t < zero_until``; elsewhere ``s* v_u + w (v_c - s* v_u)`` with the per-sample scale
    ``s* = <v_c, v_u> / ||v_u||^2`` (inner products over all pixels of a sample), ``v_c`` and ``v_u``
    from **one** model call on the doubled batch. The reference is
    ``tutorlib.guidance.cfg_velocity(model, y, w, zero_star=True, zero_init_until=zero_until)``.
    """
    def extra(g, t):
        return {"zero_until": float(t.median())}  # some samples before it, some after

    def reference(model, x, t, y, w, zero_until):
        with torch.no_grad():
            return cfg_velocity(model, y, w, zero_star=True, zero_init_until=zero_until)(x, t)

    def mistakes_for(model, inputs):
        x, t, y, w, z = (inputs[k] for k in ("x", "t", "y", "w", "zero_until"))
        v_c, v_u = _halves(model, x, t, y)
        keep = (t >= z).to(x.dtype)[:, None, None, None]  # (B, 1, 1, 1)
        B = x.shape[0]
        s_batch = (v_c * v_u).sum() / v_u.square().sum()  # one scale for the whole batch
        return [
            Mistake("plain CFG (no s*)", lambda: keep * guided_velocity(v_c, v_u, w),
                    "rescale the unconditional velocity by s* = <v_c, v_u> / ||v_u||^2 before combining"),
            Mistake("CFG-Zero* without the zero-init", lambda: zero_star_velocity(v_c, v_u, w),
                    "set the velocity to 0 for the samples with t < zero_until"),
            Mistake("one s* for the whole batch", lambda: keep * guided_velocity(v_c, s_batch * v_u, w),
                    "s* is per sample: sum over the pixels of each sample (reshape(B, -1).sum(1)), not over the batch"),
            Mistake("zero-init where t >= zero_until (the condition reversed)",
                    lambda: (1 - keep) * zero_star_velocity(v_c, v_u, w),
                    "the first steps (small t, t < zero_until) are the ones set to zero"),
        ] if B else []

    return _guidance_check(fn, learner_name(fn, "cfg_zero_init"), reference, mistakes_for, extra, strict, time_limit_s,
                           "CFG-Zero* with zero-init (tutorlib.guidance.cfg_velocity)")


