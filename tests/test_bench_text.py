"""The ``text`` bench case: every model scored in bits per character on the same held-out windows, with samples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench.common import bench_profile
from bench.text import DATASET, EVAL_WINDOWS, FLOWS, N_SAMPLES, SAMPLE_NFE
from tutorlib.text import VOCAB_SIZE, TextRecipe


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("text")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz"), json.loads((out / "results.json").read_text())


def test_every_model_is_scored_in_bits_per_character(smoke):
    doc, _, on_disk = smoke
    assert on_disk["case"] == "text" and on_disk["profile"] == "smoke" and on_disk["metrics"] == doc["metrics"]
    m = doc["metrics"][DATASET]
    L = TextRecipe.from_profile(bench_profile("smoke").P).length
    assert m["windows"] == EVAL_WINDOWS["smoke"] and m["length"] == L and m["n"] == m["windows"] * L
    assert set(m["entries"]) == {"bigram", "autoregressive", *FLOWS}
    for method, e in m["entries"].items():
        assert math.isfinite(e["bpc"]) and 0 < e["bpc"] < 2 * math.log2(VOCAB_SIZE), (method, e)
        assert e["bpc"] == pytest.approx(e["nats"] / (m["n"] * math.log(2)))
        assert e["bound"] == (method in FLOWS) and (e["stderr"] > 0) == (method in FLOWS)
    assert m["entries"]["bigram"]["bpc"] < math.log2(VOCAB_SIZE)  # counts beat a uniform guess
    assert set(doc["timings"]["train"][DATASET]) == {"autoregressive", *FLOWS}
    assert m["corpus"]["heldout_every"] == 10 and len(m["corpus"]["sha256"]) == 64


def test_samples_are_stored_as_tokens_and_text(smoke):
    doc, arrays, _ = smoke
    m = doc["metrics"][DATASET]
    L = m["length"]
    names = {"data", "bigram@1", f"autoregressive@{L}", *(f"{k}@{SAMPLE_NFE}" for k in FLOWS)}
    assert set(arrays.files) == names
    for name in names:
        x = arrays[name]
        assert x.shape == (N_SAMPLES, L) and x.dtype == np.int64 and 0 <= x.min() and x.max() < VOCAB_SIZE
    assert set(m["samples"]) == {"bigram", "autoregressive", *FLOWS}
    assert all(len(s) == L for texts in m["samples"].values() for s in texts)
