"""The ``paths2d`` bench case (lesson 04), run directly in the smoke profile: every entry is there, scored
against the held-out data, and DDIM equals Euler on the linear path (the case's own record).

``bench/__init__.py`` registers the case for ``python -m bench``; until it does, the generic checks of
``test_bench.py`` do not reach it, so the essentials of those checks are repeated here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.common import bench_profile
from bench.paths2d import DATASETS, ETAS, NFES, PATHS, SI_A, SI_NOISES, run_case, tag


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("paths2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz")


def test_every_entry_is_recorded_and_scored(smoke):
    doc, arrays = smoke
    assert doc["case"] == "paths2d" and list(doc["metrics"]) == list(DATASETS)
    m = doc["metrics"]["checkerboard"]
    fm = {f"fm-{p}" for p in PATHS} | {f"fm-{p}-on-{q}" for p in PATHS for q in PATHS if p != q}
    ddpm = {"ancestral", "ddim", "pf-ode", "pf-ode-linear", "pf-ode-linear-midpoint", "fm-linear-ddpmgrid"}
    sde = {f"sde-eta{tag(e)}" for e in ETAS}
    si = {"si-a0", f"si-a{tag(SI_A)}"} | {f"si-a{tag(SI_A)}-sde{tag(s)}" for s in SI_NOISES}
    want = {f"{method}@{nfe}" for method in fm | ddpm | sde | si for nfe in NFES}
    assert set(m["entries"]) == want
    n = m["n"]
    assert arrays["data"].shape == (n, 2)
    for name, e in m["entries"].items():
        assert e["array"] == name and e["nfe"] == int(name.rsplit("@", 1)[1])
        assert arrays[name].shape == (n, 2) and np.isfinite(arrays[name]).all(), name
        assert all(math.isfinite(e[k]) and e[k] >= 0 for k in ("energy", "mmd", "energy_x_floor", "mmd_x_floor")), e
    assert set(doc["timings"]["train"]["checkerboard"]) == {"fm-linear", "fm-cosine", "fm-vp", "ddpm", "si-a0",
                                                           f"si-a{tag(SI_A)}"}
    assert doc["config"]["nfes"] == list(NFES) and doc["config"]["etas"] == list(ETAS)


def test_ddim_is_euler_on_the_linear_path_and_eta_zero_is_the_ode(smoke):
    doc, arrays = smoke
    m = doc["metrics"]["checkerboard"]
    assert m["ddim_equals_linear_euler"] < 1e-3
    for nfe in NFES:  # the SDE with no noise is the probability-flow ODE (same Euler steps, same denoising)
        np.testing.assert_allclose(arrays[f"sde-eta0@{nfe}"], arrays[f"pf-ode@{nfe}"], rtol=0, atol=1e-5)
        assert not np.array_equal(arrays[f"sde-eta1@{nfe}"], arrays[f"pf-ode@{nfe}"])


def test_same_seeds_same_samples(smoke):
    """A second run of the case gives the same sample sets (every draw comes from a seeded generator)."""
    doc, arrays = smoke
    again = run_case(bench_profile("smoke"), 0, torch.device("cpu")).arrays
    for name in ("fm-linear@10", "ddim@10", "ancestral@10", f"si-a{tag(SI_A)}-sde1@10"):
        np.testing.assert_array_equal(again[name], arrays[name])
