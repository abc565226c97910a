"""The ``solvers2d`` bench case (lesson 07), run directly in the smoke profile: every solver, tolerance and
grid is written, the order records are complete, and the exact field's orders are the textbook ones."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bench.solvers2d import (DATASETS, GRID_NFES, NFES, ORDER_NFES, STAGES, TOLERANCES, eight_gaussians_field,
                             solver_errors)

ENTRY_NAME = re.compile(r"^[a-z0-9_][a-z0-9_\-]*@(\d+|dopri5)$")


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("solvers2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz")


def test_every_solver_tolerance_and_grid(smoke):
    doc, arrays = smoke
    assert doc["case"] == "solvers2d" and list(doc["metrics"]) == list(DATASETS)
    for dataset, m in doc["metrics"].items():
        names = set(m["entries"])
        want = {f"{method}@{n}" for method, st in STAGES.items() for n in NFES if n % st == 0}
        want |= {f"euler-{g}@{n}" for g in ("power", "bellman", "fitted") for n in GRID_NFES}
        assert want <= names
        dopri = sorted(k for k in names if k.startswith("dopri5-"))
        assert len(dopri) == len(TOLERANCES) and all(ENTRY_NAME.match(k) for k in names)
        for name, e in m["entries"].items():
            assert e["nfe"] == int(name.rsplit("@", 1)[1]) and math.isfinite(e["energy_x_floor"])
            x = arrays[e["array"]]
            assert x.shape == (m["n"], 2) and np.isfinite(x).all()
        assert set(doc["timings"]["train"][dataset]) == {"fm"}
        for grid, by_nfe in m["grid_error"].items():
            assert set(by_nfe) == {str(n) for n in GRID_NFES}
            for n, rec in by_nfe.items():
                times = rec["times"]
                assert len(times) == int(n) + 1 and times[0] == 0.0 and times[-1] == 1.0 and rec["rms_error"] >= 0
        fields = {"trained", "exact"} if dataset == "eight_gaussians" else {"trained"}
        assert set(m["solver_error"]) == fields
        for errs in m["solver_error"].values():
            assert set(errs) == set(STAGES)
            for r in errs.values():
                assert r["nfe"] == list(ORDER_NFES) and len(r["rms_error"]) == len(ORDER_NFES)


def test_the_exact_field_has_the_textbook_orders(smoke):
    doc, _ = smoke
    exact = doc["metrics"]["eight_gaussians"]["solver_error"]["exact"]
    for method, r in exact.items():
        assert abs(r["measured_order"] - r["theory"]) < 0.3, (method, r["measured_order"])
        errs = r["rms_error"]
        assert errs[-1] < errs[0]


def test_solver_errors_on_a_linear_field():
    """dx/dt = -x: the orders of the fixed-step methods are exact enough to check on a tiny batch."""
    x_0 = torch.randn(16, 2, dtype=torch.float64)
    out = solver_errors(lambda x, t: -x, x_0)
    for method, r in out.items():
        assert r["measured_order"] == pytest.approx(r["theory"], abs=0.1), method
    v = eight_gaussians_field(torch.float64, torch.device("cpu"))
    assert v(x_0, torch.full((16,), 0.5, dtype=torch.float64)).shape == (16, 2)
