"""The ``reflow2d`` bench case: every comparison of lesson 06 is recorded, and the records mean what they say.

The generic checks (schema, finite metrics, array names and shapes) are in ``test_bench.py``; these check
what only this case promises. The run is ``run_case`` itself, in the smoke profile, on the CPU.
"""

from __future__ import annotations

import math

import pytest
import torch

from bench.common import bench_profile
from bench.reflow2d import DATASETS, ROUND_FRACTION, VARIANTS, run_case

FLOWS = ("1rf", "2rf", "3rf", *VARIANTS, "2rf-data")


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("reflow2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return None, doc


def test_every_flow_at_every_nfe_and_the_distilled_model(smoke):
    _, doc = smoke
    bp = bench_profile("smoke")
    assert list(doc["metrics"]) == list(DATASETS)
    for dataset, m in doc["metrics"].items():
        want = {f"{f}@{k}" for f in FLOWS for k in (*bp.nfes, "dopri5")} | {"distill@1", "distill-1rf@1"}
        assert set(m["entries"]) == want
        train = doc["timings"]["train"][dataset]
        assert set(train) == {*FLOWS, "distill", "distill-1rf"}
        rounds = bp.P.steps_2d // ROUND_FRACTION
        assert train["1rf"]["steps"] == bp.P.steps_2d
        assert all(train[k]["steps"] == rounds for k in train if k != "1rf")
        assert train["2rf"]["init"] == "1rf" and train["3rf"]["init"] == "2rf" and train["distill"]["init"] == "2rf"
        assert train["distill-1rf"]["init"] == "1rf"
        assert all(train[k]["init"] == "1rf" for k in (*VARIANTS, "2rf-data"))
    assert doc["config"]["round_steps"] == bench_profile("smoke").P.steps_2d // ROUND_FRACTION


def test_trajectory_and_coupling_records(smoke):
    _, doc = smoke
    for dataset, m in doc["metrics"].items():
        assert set(m["straightness"]) == {"1rf", "2rf", "3rf"}
        assert set(m["straightness_variants"]) == {*VARIANTS, "2rf-data"}
        assert all(v >= 0 and math.isfinite(v) for v in (*m["straightness"].values(), *m["straightness_variants"].values()))
        assert set(m["endpoint_drift"]) == {"1rf", "2rf", "3rf"}
        cost = m["transport_cost"]
        assert set(cost) == {"independent", "1rf", "2rf", "data-side", "optimal_assignment"}
        # the optimal assignment is the cheapest pairing of its points; the independent one is far above it
        assert cost["optimal_assignment"] < cost["independent"]
        assert set(m["coupling_x1"]) == {"1rf", "2rf"} and all(v > 0 for v in m["coupling_x1"].values())
        assert m["encoded_noise_energy"] >= 0
        lbt = m["loss_by_time"]
        assert lbt["t"] == [k / 10 for k in range(11)] and len(lbt["2rf"]) == 11
        assert all(v >= 0 and math.isfinite(v) for v in lbt["2rf"])


def test_the_1rf_one_step_collapse_is_recorded(smoke):
    """Even the smoke 1-RF is straighter after a reflow round and collapses at one step (an untrained model would not)."""
    _, doc = smoke
    for dataset, m in doc["metrics"].items():
        e = m["entries"]
        assert e["1rf@1"]["energy_x_floor"] > e["1rf@100"]["energy_x_floor"], dataset
        assert m["straightness"]["2rf"] < m["straightness"]["1rf"], dataset


def test_checkerboard_outside_shares(smoke):
    _, doc = smoke
    share = doc["metrics"]["checkerboard"]["outside_share"]
    want = {f"{f}@{k}" for f in FLOWS for k in (1, 2, 4, 100)} | {"distill@1", "distill-1rf@1", "pairs-1rf", "pairs-2rf"}
    assert set(share) == want
    assert all(0.0 <= v <= 1.0 for v in share.values())
    assert "outside_share" not in doc["metrics"]["eight_gaussians"]


def test_the_case_is_reproducible(smoke):
    _, a = smoke
    b = run_case(bench_profile("smoke"), 0, torch.device("cpu")).result()
    for dataset in DATASETS:
        ea, eb = a["metrics"][dataset]["entries"], b["metrics"][dataset]["entries"]
        assert {k: v["energy"] for k, v in ea.items()} == {k: v["energy"] for k, v in eb.items()}
