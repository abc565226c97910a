"""Lessons' claims: the claim() helper, and the record of the claims command (lessons/claims.json)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tutorlib.claims import claim

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import verify_lessons  # noqa: E402  (the claims command; tooling beside the package)

RECORD = json.loads((ROOT / "lessons" / "claims.json").read_text()) if (ROOT / "lessons" / "claims.json").is_file() else {}
SOURCES = verify_lessons.lesson_sources()


# --- claim() ----------------------------------------------------------------------------------------


def test_claim_thresholds_per_profile(monkeypatch, capsys):
    monkeypatch.setenv("TUTORLIB_PROFILE", "smoke")
    assert claim("x", 5.0, at_most={"standard": 2.0, "smoke": 10.0}) is None  # a cell ending in a claim shows no Out value
    assert "claim holds: x = 5 (<= 10, smoke)" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="claim FAILS: y = 12"):
        claim("y", 12.0, at_most={"standard": 2.0, "smoke": 10.0})
    claim("only standard", 50.0, at_most={"standard": 2.0})  # recorded, not asserted in smoke
    assert "(no bound in smoke)" in capsys.readouterr().out
    monkeypatch.setenv("TUTORLIB_PROFILE", "full")
    with pytest.raises(AssertionError):
        claim("full falls back to standard", 3.0, at_most={"standard": 2.0, "smoke": 10.0})
    monkeypatch.setenv("TUTORLIB_PROFILE", "standard")
    claim("both bounds", 0.5, at_least=0.0, at_most=1.0)
    with pytest.raises(AssertionError):
        claim("below", -0.1, at_least=0.0)
    with pytest.raises(AssertionError):
        claim("nan never holds", float("nan"), at_most=1.0)
    assert claim("a statement", True) is None
    with pytest.raises(AssertionError, match="claim FAILS: false statement"):
        claim("false statement", False)
    with pytest.raises(ValueError, match="give at_most"):
        claim("no threshold", 1.0)
    with pytest.raises(ValueError, match="unknown profile"):
        claim("typo", 1.0, at_most={"standrad": 1.0})


def test_claims_are_recorded_when_the_command_asks(monkeypatch, tmp_path):
    path = tmp_path / "claims.jsonl"
    monkeypatch.setenv("TUTORLIB_CLAIMS_FILE", str(path))
    monkeypatch.setenv("TUTORLIB_PROFILE", "standard")
    claim("a", 1.5, at_most=2.0)
    with pytest.raises(AssertionError):
        claim("b", 3.0, at_most=2.0)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["name"], r["passed"], r["value"]) for r in records] == [("a", True, 1.5), ("b", False, 3.0)]


# --- the lessons and their record -------------------------------------------------------------------


@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_lessons_assert_through_claims_not_behind_a_profile_guard(src):
    text = src.read_text()
    assert not re.search(r"if\s+P\.name\s*[!=]=", text), (
        f"{src.name} guards code with `if P.name ...`: give the claim a threshold per profile instead "
        "(CONTRIBUTING.md, Claims)")
    assert "claim(" in text, f"{src.name} makes no claim"


@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_lesson_has_a_fresh_passing_record_in_both_profiles(src):
    entry = RECORD.get("lessons", {}).get(src.stem)
    assert entry, f"{src.name} has no record in lessons/claims.json: run make verify VERIFY_ARGS='--lessons {src.stem[:2]}'"
    for profile in ("smoke", "standard"):
        run = entry.get(profile)
        assert run, f"{src.name}: no {profile} record; run make verify VERIFY_ARGS='--lessons {src.stem[:2]}'"
        assert run["passed"], f"{src.name} failed its {profile} run: {run.get('error') or 'a claim failed'}"
        assert run["code_sha256"] == verify_lessons.code_hash(src), (
            f"{src.name}'s code changed since its {profile} record: run make verify VERIFY_ARGS='--lessons "
            f"{src.stem[:2]}' and commit lessons/claims.json")
        asserted = [c for c in run["claims"] if c.get("asserted", True)]
        assert asserted, f"{src.name} asserts no claim in the {profile} profile"


@pytest.mark.parametrize("src", SOURCES, ids=[p.stem for p in SOURCES])
def test_run_time_header_is_drawn_from_the_record(src):
    entry = RECORD.get("lessons", {}).get(src.stem, {})
    line = next(ln for ln in src.read_text().splitlines() if ln.startswith("# **Run time**"))
    assert line == verify_lessons.run_time_line(entry), (
        f"{src.name}'s run-time line is not the recorded one: run make verify (it rewrites the line)")


def test_run_time_line_says_when_the_machine_was_busy():
    run = {"seconds": 200.0, "date": "2026-12-02", "machine": {"cores": 2}, "load_average": [0.4, 1.2]}
    quiet = verify_lessons.run_time_line({"standard": run, "smoke": {**run, "seconds": 20.0}})
    assert "CPU standard ≈ 3.3 min" in quiet and "busy" not in quiet
    busy = verify_lessons.run_time_line({"standard": {**run, "load_average": [4.5, 3.0]}})
    assert "busy with other work, load average 4.5" in busy
    assert "busy" not in verify_lessons.run_time_line({"standard": {k: v for k, v in run.items() if k != "load_average"}})


def test_the_record_holds_the_whole_course_total_of_its_runs():
    """The claims command writes the course's total run time per profile (issue 17's target: every lesson and
    appendix in the standard profile in at most 30 minutes); it must be the sum of the recorded runs."""
    stems = [p.stem for p in SOURCES]
    assert RECORD.get("totals") == verify_lessons.course_totals(RECORD, stems), (
        "lessons/claims.json's totals are stale: run python scripts/verify_lessons.py --totals")
    standard = RECORD["totals"]["standard"]
    assert standard["lessons"] == len(stems) and not standard["missing"]
    by_hand = sum(RECORD["lessons"][s]["standard"]["seconds"] for s in stems)
    assert abs(standard["seconds"] - by_hand) < 0.1 * len(stems)


def test_course_totals_mark_missing_and_busy_runs():
    machine = {"cores": 2}
    record = {"lessons": {"a": {"standard": {"seconds": 10.0, "passed": True, "machine": machine,
                                             "load_average": [0.1, 0.2]}},
                          "b": {"standard": {"seconds": 5.0, "passed": False, "machine": machine}},
                          "c": {"standard": {"seconds": 7.0, "passed": True, "machine": machine,
                                             "load_average": [2.0, 3.1]}}}}
    totals = verify_lessons.course_totals(record, ["a", "b", "c", "d"])["standard"]
    assert totals == {"seconds": 17.0, "lessons": 2, "missing": ["b", "d"], "busy": ["c"]}
