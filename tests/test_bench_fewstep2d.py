"""The ``fewstep2d`` bench case (lesson 07), run directly in the smoke profile: every method at every NFE,
the trainings recorded, and the instantaneous fields of the two-time models scored."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.fewstep2d import DATASETS, NFES


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("fewstep2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz")


def test_every_method_at_every_nfe(smoke):
    doc, arrays = smoke
    assert doc["case"] == "fewstep2d" and list(doc["metrics"]) == list(DATASETS)
    for dataset, m in doc["metrics"].items():
        want = {f"{method}@{k}" for method in ("fm", "meanflow", "shortcut", "2rf") for k in NFES} | {"distill@1"}
        assert set(m["entries"]) == want
        for name, e in m["entries"].items():
            assert e["nfe"] == int(name.rsplit("@", 1)[1]) and math.isfinite(e["energy_x_floor"])
            assert arrays[e["array"]].shape == (m["n"], 2)
        assert m["entries"]["meanflow@1"]["solver"] == "jumps"
        assert set(doc["timings"]["train"][dataset]) == {"fm", "meanflow", "shortcut", "2rf", "distill"}
        assert set(m["as_flow"]) == {"meanflow", "shortcut"} and all(math.isfinite(v) for v in m["as_flow"].values())
    assert set(doc["config"]["objectives"]) == {"meanflow", "shortcut"}

