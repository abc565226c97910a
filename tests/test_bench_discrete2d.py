"""The ``discrete2d`` bench case: every method at every NFE, the quantisation floor, the oracle's meaning.

The generic checks (schema, finite metrics, array names and shapes) are in ``test_bench.py``; these
check what only this case promises.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench.common import BENCH_PROFILES
from bench.discrete2d import BINS, DATASETS, HIGH, LOW, ORACLES, SOURCES, histogram_table

METHODS = (*ORACLES, *SOURCES)


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("discrete2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz")


def test_every_method_at_every_nfe(smoke):
    doc, arrays = smoke
    nfes = BENCH_PROFILES["smoke"].nfes
    assert list(doc["metrics"]) == list(DATASETS)
    for dataset, m in doc["metrics"].items():
        assert set(m["entries"]) == {f"{method}@{k}" for method in METHODS for k in nfes}
        for name, e in m["entries"].items():
            assert e["solver"] == "discrete-euler" and e["nfe"] == int(name.rsplit("@", 1)[1])
            x = arrays[e["array"]]
            assert x.min() >= LOW and x.max() <= HIGH  # dequantised tokens stay on the grid
        assert set(doc["timings"]["train"][dataset]) == set(SOURCES)  # the oracles are not trained
    assert doc["config"]["bins"] == BINS["smoke"]


def test_quantisation_floor_is_recorded_and_finite(smoke):
    doc, _ = smoke
    for dataset, m in doc["metrics"].items():
        q = m["quantisation_floor"]
        assert q["bins"] == BINS["smoke"] and q["low"] == LOW and q["high"] == HIGH
        assert q["cell_width"] == pytest.approx((HIGH - LOW) / BINS["smoke"])
        for metric in ("energy", "mmd"):
            r = q[metric]
            assert all(math.isfinite(r[k]) for k in ("mean", "std", "x_floor")) and r["mean"] > 0
            assert r["n"] == m["n"] and r["repeats"] == BENCH_PROFILES["smoke"].floor_repeats
            assert r["x_floor"] == pytest.approx(r["mean"] / m["noise_floor"][metric]["mean"])


def _filled(x: np.ndarray) -> np.ndarray:
    """Whether each point lies on a filled square of the course's checkerboard ((col + row) even)."""
    cell = np.floor((x + 4.0) / 2.0).astype(int)
    return (cell.sum(1) % 2) == 0


def test_oracle_one_step_is_the_product_of_marginals_and_many_steps_the_board(smoke):
    """With the exact posterior, one step draws the two coordinates independently (uniform marginals,
    so half the points land on empty squares); at 100 steps almost every point is on the board."""
    doc, arrays = smoke
    assert _filled(arrays["checkerboard/data"]).all()
    for method in ORACLES:
        one = _filled(arrays[f"checkerboard/{method}@1"]).mean()
        many = _filled(arrays[f"checkerboard/{method}@100"]).mean()
        assert 0.35 < one < 0.65 and many > 0.95, (method, one, many)


def test_histogram_table_is_a_law_on_the_filled_cells():
    table = histogram_table("checkerboard", 8, seed=0, device=torch.device("cpu"))
    assert table.shape == (8, 8) and float(table.sum()) == pytest.approx(1.0)
    filled = (torch.arange(8)[:, None] // 2 + torch.arange(8)[None, :] // 2) % 2 == 0
    assert float(table[~filled].sum()) == 0.0
    torch.testing.assert_close(table[filled], torch.full((32,), 1 / 32, dtype=torch.float64), atol=3e-3, rtol=0)


def test_checkerboard_entries_record_the_share_on_the_board(smoke):
    doc, arrays = smoke
    for name, e in doc["metrics"]["checkerboard"]["entries"].items():
        assert e["on_board"] == pytest.approx(float(_filled(arrays[e["array"]]).mean()), abs=1e-9), name
    assert all("on_board" not in e for e in doc["metrics"]["moons"]["entries"].values())
