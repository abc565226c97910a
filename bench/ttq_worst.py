"""Case ``ttq2d_worst``: the worst seed of the project's 2D recipe, measured precisely (issue 17).

The ``ttq2d`` loop (:mod:`bench.ttq`) with the project recipe alone and many more draws behind every score:
the noise floor from ``floor_repeats`` draws (its standard error under a fifth of its mean, recorded as
``ttq_floor.se_over_mean``) and each snapshot's energy distance from ``repeats`` draws. The summary's
``worst_x_floor_from`` gives each seed's highest ratio from 10 s of training on, and whether every seed of every
dataset stayed within 1.5 x the floor to the end of the budget.
"""

from __future__ import annotations

import torch

from bench.common import BenchProfile, Run
from bench.ttq import WORST_CONFIGS
from bench.ttq import run_case as _run_ttq

__all__ = ["run_case"]


def run_case(bp: BenchProfile, seed: int, device: torch.device, datasets: tuple[str, ...] | None = None) -> Run:
    return _run_ttq(bp, seed, device, datasets, cfg=WORST_CONFIGS[bp.name], case="ttq2d_worst")
