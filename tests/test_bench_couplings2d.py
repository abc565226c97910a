"""The ``couplings2d`` bench case (lesson 05): every coupling and NFE is written, with the extras it promises.

Runs :func:`bench.couplings2d.run_case` directly in the smoke profile (the case is registered in
``bench/__init__.py`` by the lead), writes it with :meth:`bench.common.Run.write` and checks the files.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from bench.common import bench_profile, generator
from bench.couplings2d import COUPLINGS, DATASETS, LABELLED
from tutorlib.data import TOY_DATASETS, sample_labelled

ENTRY_NAME = re.compile(r"^[a-z0-9_][a-z0-9_\-]*@(\d+|dopri5)$")
ENTRY_KEYS = {"array", "method", "solver", "nfe", "energy", "mmd", "energy_x_floor", "mmd_x_floor"}


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("couplings2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return json.loads((out / "results.json").read_text()), np.load(out / "samples.npz")


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def test_every_entry_is_named_scored_and_stored(smoke):
    doc, arrays = smoke
    nfes = bench_profile("smoke").nfes
    assert doc["case"] == "couplings2d" and list(doc["metrics"]) == list(DATASETS)
    want = {"checkerboard": {f"{m}@{k}" for m in COUPLINGS for k in nfes} | {f"{m}@dopri5" for m in COUPLINGS},
            "eight_gaussians": {f"{m}@{k}" for m in LABELLED for k in nfes}}
    expected_arrays = set()
    for dataset, m in doc["metrics"].items():
        assert set(m["entries"]) == want[dataset]
        n = m["n"]
        assert arrays[f"{dataset}/data"].shape == (n, 2)
        expected_arrays.add(f"{dataset}/data")
        for name, e in m["entries"].items():
            assert ENTRY_NAME.match(name) and ENTRY_KEYS <= set(e) and e["array"] == f"{dataset}/{name}"
            assert all(_finite(e[k]) for k in ("energy", "mmd", "energy_x_floor", "mmd_x_floor")), (name, e)
            x = arrays[e["array"]]
            assert x.shape == (n, 2) and x.dtype == np.float32 and np.isfinite(x).all()
            expected_arrays.add(e["array"])
            if dataset == "eight_gaussians":
                y = arrays[e["labels"]]
                assert y.shape == (n,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < 8
                expected_arrays.add(e["labels"])
            else:
                assert "labels" not in e
        assert set(doc["timings"]["train"][dataset]) == set(COUPLINGS if dataset == "checkerboard" else LABELLED)
    assert set(arrays.files) == expected_arrays


def test_coupling_records(smoke):
    doc, _ = smoke
    rec = doc["metrics"]["checkerboard"]["couplings"]
    assert set(rec) == set(COUPLINGS)
    for method, r in rec.items():
        for key in ("straightness", "transport_x_exact", "loss_mean", "loss_std", "step_ms", "step_x_independent"):
            assert _finite(r[key]) and r[key] >= 0, (method, key, r)
        assert len(r["step_ms_all"]) == bench_profile("smoke").timing_repeats
    assert rec["fm-ot"]["transport_x_exact"] == pytest.approx(1.0)
    assert rec["fm-ind"]["step_x_independent"] == pytest.approx(1.0)
    assert rec["fm-ind"]["transport_x_exact"] > 2.0  # the independent pairs cost far more than the optimum
    for method in ("fm-sinkhorn", "fm-block"):
        assert 1.0 <= rec[method]["transport_x_exact"] < rec["fm-ind"]["transport_x_exact"]
    assert rec["fm-ot"]["loss_mean"] < rec["fm-ind"]["loss_mean"]  # the target varies less under OT


def test_conditional_records_use_the_held_out_labels(smoke):
    doc, arrays = smoke
    m = doc["metrics"]["eight_gaussians"]
    n = m["n"]
    _, y_ref = sample_labelled("eight_gaussians", n, generator=generator(0, "eight_gaussians", "heldout"))
    for name, e in m["entries"].items():
        np.testing.assert_array_equal(arrays[e["labels"]], y_ref.numpy())
        c = m["conditional"][name]
        assert c["method"] == e["method"] and c["nfe"] == e["nfe"] and 0.0 <= c["accuracy"] <= 1.0
    assert m["num_classes"] == TOY_DATASETS["eight_gaussians"].num_classes
    assert m["bayes_accuracy_data"] > 0.99
    assert set(m["straightness"]) == set(LABELLED) and all(_finite(v) for v in m["straightness"].values())
    skew = m["noise_skew"]
    assert skew["cond-ot"] > 0.8 > 0.4 > max(skew["cond-ind"], skew["cond-classot"])  # OT over the batch skews it
