"""Exercise checks of lesson 08 (guidance): the classifier-free guidance combination."""

from __future__ import annotations

from typing import Callable

from tutorlib.exercises.core import DEFAULT_TIME_LIMIT_S, CheckResult, Mistake, batch_size, check, rand, randn

__all__ = ["check_guided_velocity"]


def check_guided_velocity(fn: Callable, *, strict: bool | None = None,
                          time_limit_s: float | None = DEFAULT_TIME_LIMIT_S) -> CheckResult:
    """Check the classifier-free guidance combination (lesson 08).

    The learner writes ``fn(v_cond, v_uncond, w) -> v_uncond + w (v_cond - v_uncond)``, with
    velocities of shape ``(B, D)`` and a float guidance scale ``w`` (w = 1: the conditional field).
    """
    def make_inputs(g):
        B, D = batch_size(g), int(batch_size(g, 2, 4))
        return {"v_cond": randn(g, B, D), "v_uncond": randn(g, B, D), "w": round(0.5 + float(rand(g, 1)) * 5, 3)}

    mistakes = [
        Mistake("v_cond + w (v_cond - v_uncond)", lambda c, u, w: c + w * (c - u),
                "start from the unconditional velocity: v_uncond + w (v_cond - v_uncond), so that w = 1 is v_cond"),
        Mistake("the difference the wrong way round", lambda c, u, w: u + w * (u - c),
                "guidance pushes towards the class: v_uncond + w (v_cond - v_uncond)"),
        Mistake("the roles of v_cond and v_uncond swapped", lambda c, u, w: c + w * (u - c),
                "w = 0 must give the unconditional field v_uncond"),
        Mistake("w v_cond alone", lambda c, u, w: w * c, "combine both fields: v_uncond + w (v_cond - v_uncond)"),
    ]
    return check(fn, lambda c, u, w: u + w * (c - u), make_inputs, name="guided_velocity", mistakes=mistakes,
                 strict=strict, time_limit_s=time_limit_s)
