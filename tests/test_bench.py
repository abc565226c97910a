"""The bench: every available case runs in the smoke profile and writes well-formed results.

Checks the JSON schema (required keys), that metrics are finite, and that the sample arrays have
the right names and shapes; never the numbers themselves. Peers that are not installed (as in CI)
are reported as skipped, which is checked too.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from bench import CASES, PLANNED, PlannedCaseError, run
from bench.__main__ import main
from bench.common import BENCH_PROFILES
from bench.report import write_report
from tutorlib.data import TOY_DATASETS

TOP_KEYS = {"schema", "case", "profile", "seed", "date", "device", "machine", "versions", "config", "timings",
            "metrics"}
MACHINE_KEYS = {"platform", "cpu", "cpu_count", "torch_threads"}
ENTRY_KEYS = {"array", "method", "solver", "nfe", "energy", "mmd", "energy_x_floor", "mmd_x_floor"}
TEXT_CASES = {"text"}  # character windows scored in bits per character
IMAGE_CASES = {"mnist", "mnist_ttq", "mnist_5min"}  # images (n, 1, 28, 28) scored by the judge instead of 2D points
IMAGE_ENTRY_KEYS = {"array", "method", "solver", "nfe", "guidance", "labels", "judge_accuracy", "frechet",
                    "frechet_x_floor", "feature_spread"}
TRAIN_KEYS = {"steps", "steps_per_s", "wall_s", "final_loss", "stop_reason"}
ENTRY_NAME = re.compile(r"^[a-z0-9_][a-z0-9_\-]*@(\d+|dopri5)$")

@pytest.fixture(scope="module")
def smoke(bench_smoke):
    """``smoke(case) -> (doc, out folder)``: the session's one smoke run of a case (tests/conftest.py)."""
    return bench_smoke


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.mark.parametrize("case", list(CASES))
def test_smoke_case_writes_valid_results(case, smoke):
    _, out = smoke(case)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["case"] == case
    assert TOP_KEYS <= set(on_disk), TOP_KEYS - set(on_disk)
    assert on_disk["profile"] == "smoke" and on_disk["seed"] == 0 and on_disk["device"] == "cpu"
    assert MACHINE_KEYS <= set(on_disk["machine"])
    assert {"tutorlib", "torch", "numpy", "python"} <= set(on_disk["versions"])
    assert _finite(on_disk["timings"]["total_s"])

    arrays = np.load(out / "samples.npz")
    names = set(arrays.files)
    datasets = list(on_disk["metrics"])
    assert datasets and set(on_disk["timings"]["train"]) == set(datasets)
    if case in TEXT_CASES:  # bits per character of token windows, no energy distances (tests/test_bench_text.py)
        for dataset, m in on_disk["metrics"].items():
            assert m["entries"] and all(_finite(e["bpc"]) and e["bpc"] > 0 for e in m["entries"].values())
            assert arrays["data"].dtype == np.int64 and arrays["data"].ndim == 2
            for method, t in on_disk["timings"]["train"][dataset].items():
                assert TRAIN_KEYS <= set(t), (method, TRAIN_KEYS - set(t))
        return
    prefix = (lambda d: f"{d}/") if len(datasets) > 1 else (lambda d: "")
    expected_arrays = set()
    images = case in IMAGE_CASES
    shape = (lambda n: (n, 1, 28, 28)) if images else (lambda n: (n, 2))
    scores = ("judge_accuracy", "frechet", "frechet_x_floor", "feature_spread") if images else \
        ("energy", "mmd", "energy_x_floor", "mmd_x_floor")
    for dataset, m in on_disk["metrics"].items():
        n = m["n"]
        assert arrays[prefix(dataset) + "data"].shape == shape(n)
        expected_arrays.add(prefix(dataset) + "data")
        for metric in (("frechet", "judge_accuracy", "feature_spread") if images else ("energy", "mmd")):
            floor = m["noise_floor"][metric]
            assert _finite(floor["mean"]) and floor["mean"] > 0 and floor["n"] == n
        if images:  # the held-out digits' labels, balanced
            y = arrays["data:labels"]
            assert y.shape == (n,) and y.dtype == np.int64 and np.bincount(y, minlength=10).tolist() == [n // 10] * 10
            expected_arrays.add("data:labels")
        assert m["entries"], f"{case}/{dataset} has no sample entries"
        for name, e in m["entries"].items():
            assert ENTRY_NAME.match(name), name
            keys = IMAGE_ENTRY_KEYS if images else ENTRY_KEYS
            assert keys <= set(e), (name, keys - set(e))
            assert e["array"] == prefix(dataset) + name
            assert all(_finite(e[k]) for k in scores), (name, e)
            assert isinstance(e["nfe"], int) and e["nfe"] >= 1
            if name.endswith("@dopri5"):
                assert e["nfe"] > 1
            else:
                assert e["nfe"] == int(name.rsplit("@", 1)[1])
            x = arrays[e["array"]]
            assert x.shape == shape(n) and x.dtype == np.float32 and np.isfinite(x).all()
            if images:
                assert x.min() >= -1.0 and x.max() <= 1.0 and 0.0 <= e["judge_accuracy"] <= 1.0
            assert _finite(on_disk["timings"]["sample_s"][dataset][name])
            expected_arrays.add(e["array"])
            if "labels" in e:  # a class-conditional set: its labels, ENTRY:labels
                assert e["labels"] == e["array"] + ":labels"
                y = arrays[e["labels"]]
                assert y.shape == (n,) and y.dtype == np.int64
                assert y.min() >= 0 and y.max() < (10 if images else TOY_DATASETS[dataset].num_classes)
                expected_arrays.add(e["labels"])
        for method, t in on_disk["timings"]["train"][dataset].items():
            assert TRAIN_KEYS <= set(t), (method, TRAIN_KEYS - set(t))
            assert t["steps"] > 0 and _finite(t["steps_per_s"]) and _finite(t["wall_s"]) and _finite(t["final_loss"])
    assert names == expected_arrays


def test_fm2d_names_every_dataset_method_and_nfe(smoke):
    doc, _ = smoke("fm2d")
    bp = BENCH_PROFILES["smoke"]
    assert list(doc["metrics"]) == ["checkerboard", "eight_gaussians", "moons", "two_spirals"]
    for m in doc["metrics"].values():
        want = {f"{method}@{k}" for method in ("fm-ind", "fm-ot") for k in (*bp.nfes, "dopri5")}
        assert set(m["entries"]) == want


def test_ddpm2d_and_reflow2d_entries(smoke):
    ddpm = smoke("ddpm2d")[0]["metrics"]["checkerboard"]["entries"]
    assert {"ancestral@10", "ddim@1", "pf-ode@2", "pf-ode@dopri5"} <= set(ddpm)
    reflow = smoke("reflow2d")[0]["metrics"]["eight_gaussians"]
    assert {"1rf@1", "2rf@1", "3rf@1", "2rf@dopri5", "distill@1"} <= set(reflow["entries"])
    assert set(reflow["straightness"]) == {"1rf", "2rf", "3rf"}
    assert math.isfinite(smoke("cnf2d")[0]["metrics"]["moons"]["nll"]["nats"])


def test_peers2d_reports_every_implementation(smoke):
    doc, _ = smoke("peers2d")
    peers = doc["peers"]
    assert list(peers) == ["project", "plain", "flow_matching", "torchcfm"]
    entries = doc["metrics"]["checkerboard"]["entries"]
    for name, p in peers.items():
        assert p["status"] in ("ok", "skipped"), (name, p)
        if p["status"] == "skipped":
            assert name in ("flow_matching", "torchcfm") and p["reason"]
            continue
        assert f"{name}@100" in entries
        rounds = doc["config"]["timing_rounds"]
        for key in ("train_ms_per_step", "sample_s", "train_ratio", "sample_ratio"):
            assert len(p[key]["values"]) == rounds >= 5 and p[key]["min"] <= p[key]["median"] <= p[key]["max"]
        assert _finite(p["energy"])


def test_peers2d_skips_a_peer_that_cannot_be_imported(monkeypatch):
    from bench import peers2d

    def refuse(module: str):
        raise ImportError(f"No module named {module!r} (simulated)")

    monkeypatch.setattr(peers2d, "import_peer", refuse)
    base = peers2d.ConcatMLP(2, 8, 1)
    batch = (torch.zeros(4, 2), torch.ones(4, 2), torch.rand(4))
    cfg = peers2d.TrainConfig(steps=1, progress=False, ema_decay=None, grad_clip=None)
    impls = peers2d._make_impls(base, cfg, lambda i: batch, torch.device("cpu"))
    status = {i.name: (i.status, i.reason) for i in impls}
    assert status["project"][0] == status["plain"][0] == "ok"
    for name in ("flow_matching", "torchcfm"):
        assert status[name][0] == "skipped" and "simulated" in status[name][1]


def test_concat_mlp_accepts_scalar_and_batched_times():
    from bench.peers2d import ConcatMLP

    model = ConcatMLP(2, 8, 2)
    x = torch.randn(5, 2)
    full = model(x, torch.full((5,), 0.3))
    assert torch.allclose(model(x, torch.tensor(0.3)), full) and full.shape == (5, 2)


def test_report_renders_every_run(smoke, tmp_path):
    folders = [smoke(case)[1] for case in CASES]
    out = tmp_path / "RESULTS.md"
    text = write_report(folders, out)
    assert out.read_text() == text
    assert "Machine:" in text
    for case in CASES:
        assert f"## {case}:" in text
    assert "| checkerboard | fm-ot |" in text and "| implementation |" in text
    assert "| bigram |" in text and "upper bound (ELBO)" in text


def test_cli_list_and_planned_cases(capsys, tmp_path):
    assert main(["--list"]) == 0
    listing = capsys.readouterr().out
    for name in (*CASES, *PLANNED):
        assert name in listing
    assert ("planned" in listing) == bool(PLANNED)
    assert main(["no-such-case", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no-such-case" in err and "unknown bench case" in err and "mnist" in err
    with pytest.raises(PlannedCaseError, match="unknown bench case"):
        run("no-such-case", "smoke", out=tmp_path)
    assert not any(tmp_path.iterdir())


def test_ttq2d_records_curves_and_the_time_to_quality_table(smoke, tmp_path):
    from bench.ttq import TTQ_CONFIGS

    doc, out = smoke("ttq2d")
    cfg = TTQ_CONFIGS["smoke"]
    assert list(doc["ttq"]) == ["checkerboard", "eight_gaussians", "moons", "two_spirals"]
    for dataset, curves in doc["ttq"].items():
        assert set(curves) == {"project", "project-raw", "peer"}
        for recipe, by_seed in curves.items():
            assert len(by_seed) == cfg.seeds
            for curve in by_seed.values():
                assert len(curve) == len(cfg.snapshots_s)
                times = [p["train_s"] for p in curve]
                assert times == sorted(times) and times[-1] >= cfg.budget_s
                assert all(p["steps"] > 0 and _finite(p["energy_x_floor"]) for p in curve)
            s = doc["ttq_summary"][dataset][recipe]
            assert s["final_x_floor"]["min"] <= s["final_x_floor"]["median"] <= s["final_x_floor"]["max"]
    text = write_report([out], tmp_path / "r.md")
    assert "Time to quality:" in text and "| checkerboard | peer |" in text


def test_ttq_summary_counts_unreached_targets():
    from bench.ttq import summarise

    curve = lambda xs: [{"train_s": t, "steps": 1, "energy_x_floor": x} for t, x in zip((5, 10), xs)]  # noqa: E731
    s = summarise({"a": {"0": curve((3, 1.5)), "1": curve((1, 1)), "2": curve((9, 9))}}, 2.0)["a"]
    assert s["time_to_target_s"]["values"] == [10, 5, None]
    assert s["time_to_target_s"]["median"] == 10 and s["final_x_floor"]["median"] == 1.5


def test_ttq_summary_finds_the_worst_seed():
    from bench.ttq import summarise

    curve = lambda xs: [{"train_s": t, "steps": 1, "energy_x_floor": x} for t, x in zip((5, 10, 20), xs)]  # noqa: E731
    s = summarise({"a": {"0": curve((3, 1.2, 1.1)), "1": curve((9, 1.4, 1.6))}}, 2.0, 10.0, 1.5)["a"]
    w = s["worst_x_floor_from"]
    assert w["per_seed"] == [1.2, 1.6] and w["max"] == 1.6 and not w["met"]  # the 5 s snapshot does not count
    ok = summarise({"a": {"0": curve((3, 1.2, 1.1)), "1": curve((9, 1.4, 1.3))}}, 2.0, 10.0, 1.5)["a"]
    assert ok["worst_x_floor_from"]["met"]
    assert "a" not in summarise({"a": {}}, 2.0)  # a recipe that did not train


def test_ttq2d_worst_scores_the_project_recipe_precisely(smoke, tmp_path):
    from bench.ttq import TTQ_CONFIGS, WORST_CONFIGS

    doc, out = smoke("ttq2d_worst")
    cfg = WORST_CONFIGS["smoke"]
    assert cfg.floor_repeats > TTQ_CONFIGS["smoke"].repeats and cfg.recipes == ("project",)
    for dataset, curves in doc["ttq"].items():
        assert not curves["peer"] and len(curves["project"]) == cfg.seeds
        fl = doc["metrics"][dataset]["ttq_floor"]
        assert fl["repeats"] == cfg.floor_repeats and 0 < fl["se_over_mean"] < 1
        w = doc["ttq_summary"][dataset]["project"]["worst_x_floor_from"]
        assert _finite(w["max"]) and w["max"] == max(w["per_seed"]) and isinstance(w["met"], bool)
    text = write_report([out], tmp_path / "r.md")
    assert "Worst seed:" in text and "| checkerboard | project |" in text and "peer" not in text.split("Worst seed:")[1]


def test_datasets_subset_only_for_cases_that_take_one(tmp_path):
    with pytest.raises(ValueError, match="dataset subset"):
        run("fm2d", "smoke", out=tmp_path, datasets=("moons",))


def test_readme_summary_block_is_rewritten_between_its_markers(tmp_path):
    from pathlib import Path

    from bench.report import README_END, README_START, load_results, readme_summary, update_readme

    results = Path(__file__).resolve().parents[1] / "bench" / "results"
    docs = load_results([results])
    assert {d["case"] for d in docs} >= {"fm2d", "peers2d"}
    summary = readme_summary(docs)
    assert "| flow matching, minibatch OT | checkerboard |" in summary and "Measured 20" in summary
    fm = next(d for d in docs if d["case"] == "fm2d")
    assert fm["date"][:10] in summary and fm["machine"]["cpu"] in summary  # the date and machine of the rows shown
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{README_START}\nold table\n{README_END}\nrest\n")
    update_readme(readme, summary)
    text = readme.read_text()
    assert "old table" not in text and summary in text and text.startswith("intro") and text.endswith("rest\n")
    update_readme(readme, summary)  # idempotent
    assert readme.read_text() == text
    readme.write_text("no markers here\n")
    with pytest.raises(ValueError, match="bench summary block"):
        update_readme(readme, summary)


@pytest.mark.parametrize("case", sorted(IMAGE_CASES))
def test_mnist_cases_record_curves_sweeps_and_sampling_time(case, smoke):
    from bench.mnist import MNIST_5MIN_CONFIGS, MNIST_CONFIGS, scale_tag

    doc, _ = smoke(case)
    cfg = (MNIST_5MIN_CONFIGS if case == "mnist_5min" else MNIST_CONFIGS)["smoke"]
    m = doc["metrics"]["mnist"]
    methods = {"mnist": ["fm"], "mnist_ttq": ["project", "baseline"], "mnist_5min": ["project", "previous", "baseline"]}[case]
    assert set(m["curve"]) == set(methods)
    for method in methods:
        curve = m["curve"][method]
        assert len(curve) == len(cfg.snapshots)
        assert [p["steps"] for p in curve] == sorted(p["steps"] for p in curve) and curve[-1]["steps"] > 0
        assert all(0.0 <= p["judge_accuracy"] <= 1.0 and _finite(p["frechet"]) for p in curve)
        for w in (cfg.scales if case == "mnist" else cfg.ttq_scales):  # the guidance sweep at the sweep's NFE
            e = m["entries"][f"{method}-cfg{scale_tag(w)}@{cfg.nfe}"]
            assert e["guidance"] == w and e["nfe"] == cfg.nfe
        assert doc["timings"]["train"]["mnist"][method]["parameters"] > 0
    if case == "mnist":
        w = cfg.recipe.guidance
        assert {f"fm-cfg{scale_tag(w)}@{k}" for k in cfg.nfes} <= set(m["entries"])
        assert {f"fm-cfgzero{scale_tag(w)}@{cfg.nfe}" for w in cfg.zero_star_scales} <= set(m["entries"])
        s = m["sampling"]
        assert s["images"] == cfg.timing_images and s["nfe"] == cfg.timing_nfe and _finite(s["median_s"])
    if case == "mnist_5min":  # each method scored at its own guidance scale, recorded for the report
        from bench.mnist import PREVIOUS_RECIPE

        assert m["own_scale"]["project"] == f"project-cfg{scale_tag(cfg.recipe.guidance)}@{cfg.nfe}"
        assert m["own_scale"]["previous"] == f"previous-cfg{scale_tag(PREVIOUS_RECIPE.guidance)}@{cfg.nfe}"
        assert set(m["own_scale"]) == set(methods) and all(e in m["entries"] for e in m["own_scale"].values())
        assert m["target"]["frechet_x_floor"] == 1.5 and m["target"]["budget_s"] == cfg.budget_s


def test_five_minute_summary_takes_medians_over_seed_runs(smoke):
    """Three runs of different seeds: medians and ranges per method, and 'met' only when both medians pass."""
    import copy

    from bench.report import five_minute_summary, render

    doc, _ = smoke("mnist_5min")
    docs = []
    for seed, (judge, fx) in enumerate([(0.995, 1.2), (0.98, 1.4), (0.999, 1.7)]):
        d = copy.deepcopy(doc)
        d["seed"] = seed
        m = d["metrics"]["mnist"]
        for method, entry in m["own_scale"].items():
            m["entries"][entry].update(judge_accuracy=judge if method == "project" else 0.5, frechet_x_floor=fx)
        docs.append(d)
    s = five_minute_summary(docs)
    p = s["methods"]["project"]
    assert p["seeds"] == [0, 1, 2]
    assert p["judge_accuracy"] == {"median": 0.995, "min": 0.98, "max": 0.999}
    assert p["frechet_x_floor"]["median"] == 1.4 and p["met"]  # the medians pass though seed 2's Frechet fails
    assert not s["methods"]["previous"]["met"]  # judge 50 %
    for d in docs:
        d["metrics"]["mnist"]["entries"][d["metrics"]["mnist"]["own_scale"]["project"]]["frechet_x_floor"] = 1.6
    assert not five_minute_summary(docs)["methods"]["project"]["met"]
    text = render(docs)
    assert "MNIST in five minutes" in text and "| project | 3 |" in text and "not met" in text
    assert five_minute_summary([]) is None
