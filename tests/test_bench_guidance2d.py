"""The ``guidance2d`` bench case: every method and scale is written, with its labels and extras.

The generic checks (schema, finite metrics, array shapes, ``ENTRY:labels`` arrays) are in
``test_bench.py``; these check what only this case promises.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from bench.common import BENCH_PROFILES, Run, generator
from bench.guidance2d import (DATASETS, EXACT, EXACT_METHODS, GUIDE_NFE, METHODS, OVERLAP_STD, SCALES, SHARPEN_SCALES,
                              TERM_TIMES, scale_tag)
from tutorlib.data import TOY_DATASETS, sample_labelled

ENTRY_NAME = re.compile(r"^[a-z0-9_][a-z0-9_\-]*@(\d+|dopri5)$")


@pytest.fixture(scope="module")
def smoke(bench_smoke):
    doc, out = bench_smoke("guidance2d")  # the session's one smoke run (tests/conftest.py), shared with tests/test_bench.py
    return doc, np.load(out / "samples.npz")


def test_scale_tags_make_valid_entry_names():
    assert [scale_tag(w) for w in (0.0, 1.0, 1.5, 5, -1.0, 0.25)] == ["w0", "w1", "w1_5", "w5", "wm1", "w0_25"]
    for w in (0.0, 1.5, -2.0):
        assert ENTRY_NAME.match(f"cfgzero-{scale_tag(w)}@{GUIDE_NFE}")


def test_every_method_and_scale_with_labels_and_extras(smoke):
    doc, arrays = smoke
    nfes = BENCH_PROFILES["smoke"].nfes
    assert list(doc["metrics"]) == list(DATASETS)
    for dataset, m in doc["metrics"].items():
        want = {f"{method}-{scale_tag(w)}@{GUIDE_NFE}" for method in METHODS for w in SCALES["smoke"]}
        if dataset in EXACT:
            want |= {f"exact-{method}-{scale_tag(w)}@{GUIDE_NFE}" for method in EXACT_METHODS for w in SCALES["smoke"]}
        want |= {f"cfg-w1@{k}" for k in nfes}
        assert set(m["entries"]) == want
        n, K = m["n"], TOY_DATASETS[dataset].num_classes
        # the samples carry the held-out labels (same draw as the reference)
        x_ref, y_ref = sample_labelled(dataset, n, generator=generator(0, dataset, "heldout"))
        np.testing.assert_array_equal(arrays[f"{dataset}/data"], x_ref.numpy())
        for name, e in m["entries"].items():
            np.testing.assert_array_equal(arrays[e["labels"]], y_ref.numpy())
            g = m["guidance"][name]
            assert g["method"].removeprefix("exact-") in METHODS and g["nfe"] == e["nfe"]
            assert 0.0 <= g["accuracy"] <= 1.0 and math.isfinite(g["spread_ratio"]) and g["spread_ratio"] > 0
            assert math.isfinite(g["mean_shift"]) and g["mean_shift"] >= 0
            if dataset in EXACT:
                assert 0.0 <= g["bayes_accuracy"] <= 1.0 and g["radius"] > 0
            assert math.isfinite(g["energy_x_matched_floor"]) and math.isfinite(g["mmd_x_matched_floor"])
        assert set(m["guidance"]) == want
        assert m["num_classes"] == K and len(m["data_spread"]) == K
        assert 0.0 <= m["judge_accuracy"] <= 1.0 and 0.0 <= m["classifier_accuracy_t1"] <= 1.0
        for metric in ("energy", "mmd"):
            assert m["label_matched_floor"][metric]["mean"] > 0
        # w = 0: classifier guidance is the unconditional field, as is CFG; same noise, same samples
        prefix = f"{dataset}/"
        np.testing.assert_allclose(arrays[prefix + f"clf-w0@{GUIDE_NFE}"], arrays[prefix + f"cfg-w0@{GUIDE_NFE}"],
                                   rtol=0, atol=1e-5)
        assert not np.array_equal(arrays[prefix + f"cfg-w3@{GUIDE_NFE}"], arrays[prefix + f"cfg-w1@{GUIDE_NFE}"])
        # at w = 1 s* changes nothing: CFG-Zero*'s scale alone is the conditional field, as is CFG
        np.testing.assert_allclose(arrays[prefix + f"cfgstar-w1@{GUIDE_NFE}"], arrays[prefix + f"cfg-w1@{GUIDE_NFE}"],
                                   rtol=0, atol=1e-4)
    assert doc["config"]["scales"] == list(SCALES["smoke"])
    for dataset in DATASETS:
        assert set(doc["timings"]["train"][dataset]) == {"cfm-cfg", "classifier", "judge"}


def test_add_samples_checks_and_stores_labels():
    bp = BENCH_PROFILES["smoke"]
    r = Run("t", bp, 0, torch.device("cpu"), ("moons",))
    data = r.set_reference("moons")  # (n, 2)
    n = data.shape[0]
    y = torch.zeros(n, dtype=torch.int64)
    rec = r.add_samples("moons", "m", "euler", 1, data, 0.0, labels=y)
    assert rec["labels"] == "m@1:labels" and r.arrays["m@1:labels"].dtype == np.int64
    assert "labels" not in r.add_samples("moons", "u", "euler", 1, data, 0.0)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        r.add_samples("moons", "m", "euler", 2, data, 0.0, labels=torch.full((n,), 2))
    with pytest.raises(ValueError, match="int64"):
        r.add_samples("moons", "m", "euler", 2, data, 0.0, labels=y[:-1])


def test_the_exact_fields_and_the_sharpened_target_study(smoke):
    """eight_gaussians has exact fields: lesson 08's checks and its study of guidance without a network."""
    doc, arrays = smoke
    m = doc["metrics"]["eight_gaussians"]
    assert m["exact_judge_accuracy"] > 0.99  # ten standard deviations apart: the Bayes classifier is perfect
    g = m["guidance"]
    # exact fields: CFG at w = 1 is the conditional flow of each cluster, far better than at w = 0
    assert g[f"exact-cfg-w1@{GUIDE_NFE}"]["bayes_accuracy"] > 0.95
    assert g[f"exact-cfg-w0@{GUIDE_NFE}"]["bayes_accuracy"] < 0.4
    # ... and strong guidance collapses the classes and pushes their means outwards, without any network
    assert g[f"exact-cfg-w3@{GUIDE_NFE}"]["spread_ratio"] < 0.7 * g[f"exact-cfg-w1@{GUIDE_NFE}"]["spread_ratio"]
    assert g[f"exact-cfg-w3@{GUIDE_NFE}"]["radius"] > 2.6
    assert g[f"exact-cfgzero-w3@{GUIDE_NFE}"]["energy_x_matched_floor"] < g[f"exact-cfg-w3@{GUIDE_NFE}"][
        "energy_x_matched_floor"]
    assert set(m["field_error"]) == set(m["classifier_check"]) and len(m["field_error"]) >= 3
    for row in m["classifier_check"].values():
        assert row["ce_exact"] <= row["ce_classifier"] + 0.05  # nothing beats the exact posterior by much
    rings = m["sharpened_target"]
    assert set(rings) == {"std_0.2", f"std_{OVERLAP_STD:g}"}
    for ring in rings.values():
        assert 0.0 < ring["bayes_accuracy"] <= 1.0
        assert set(ring) == {"bayes_accuracy"} | {scale_tag(w) for w in SHARPEN_SCALES}
        w1 = ring[scale_tag(1.0)]
        assert abs(w1["target_spread_ratio"] - 1.0) < 1e-9  # at w = 1 the target is the data itself
    assert rings["std_0.2"][scale_tag(5.0)]["target_spread_ratio"] > 0.95  # separated: nothing to sharpen
    assert rings["std_0.2"][scale_tag(5.0)]["guided_spread_ratio"] < 0.6  # ... yet guidance collapses it
    term = m["guidance_term"]
    assert term["t"] == list(TERM_TIMES) and len(term["std_0.2"]) == len(TERM_TIMES)
    assert term["std_0.2"][-1] < 0.01 * term["std_0.2"][1]  # gone by the end of the path
    assert "exact_judge_accuracy" not in doc["metrics"]["checkerboard"]
