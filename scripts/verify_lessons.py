"""The claims command (``make verify``): run every lesson, check its claims, record its time.

Each lesson (``lessons/NN_*.py``, then the appendices ``lessons/X_*.py``) is executed top to bottom
in a fresh kernel, in each requested profile, with strict exercise checks and its
:func:`tutorlib.claims.claim` calls recorded. The results go to ``lessons/claims.json``: per lesson and
profile, the wall time, whether it passed, every claim (value, thresholds, verdict), the machine and
a hash of the lesson's code cells (so a test can tell a stale record). Then each lesson's
**Run time** header line is rewritten from the record (and its notebook re-synced), so that no run
time in the course is typed by hand; the book's run-time table reads the same file.

    python scripts/verify_lessons.py                          # smoke and standard, every lesson
    python scripts/verify_lessons.py --profiles standard --lessons 03 09
    python scripts/verify_lessons.py --profiles standard --load busy --record /tmp/busy.json --no-headers

``--load busy`` runs a competing busy process (one core's worth of pure-Python work, like a browser
tab) during every lesson: the measurement behind the threading defaults of
:func:`tutorlib.device.set_threads`. Exits non-zero, naming the lesson and its error, when any lesson
fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
RECORD = LESSONS / "claims.json"
SCHEMA = 1
BUSY = "import time\nend = time.time() + 7200\nwhile time.time() < end:\n    pass\n"


def lesson_sources() -> list[Path]:
    return sorted(LESSONS.glob("[0-9][0-9]_*.py")) + sorted(LESSONS.glob("[A-Z]_*.py"))


def code_hash(path: Path) -> str:
    """sha256 of the lesson's code cells (markdown, including the run-time header, does not count)."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    code = "\n# --- cell ---\n".join(c.source.strip() for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = "cuda" if torch.cuda.is_available() and os.environ.get("TUTORLIB_DEVICE", "") != "cpu" else "cpu"
    info = {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "device": device}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_lesson(path: Path, profile: str, timeout_s: int) -> dict:
    """Execute one lesson in a fresh kernel; returns its record (seconds, passed, error, claims)."""
    import jupytext
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = jupytext.read(path, fmt="py:percent")
    fd, claims_file = tempfile.mkstemp(prefix=f"claims-{path.stem}-", suffix=".jsonl")
    os.close(fd)
    env_before = dict(os.environ)
    os.environ.update({"TUTORLIB_PROFILE": profile, "TUTORLIB_STRICT_CHECKS": "1", "TUTORLIB_CLAIMS_FILE": claims_file,
                       "PYDEVD_DISABLE_FILE_VALIDATION": "1"})
    error = None
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        client = NotebookClient(nb, timeout=timeout_s, kernel_name="python3",
                                resources={"metadata": {"path": str(LESSONS)}})
        client.execute()
    except CellExecutionError as err:
        error = str(err)
    except Exception as err:  # a kernel that died, a timeout
        error = f"{type(err).__name__}: {err}"
    finally:
        seconds = time.perf_counter() - start
        os.environ.clear()
        os.environ.update(env_before)
    claims = [json.loads(line) for line in Path(claims_file).read_text().splitlines() if line.strip()]
    os.unlink(claims_file)
    passed = error is None and all(c["passed"] for c in claims)
    return {"seconds": round(seconds, 1), "passed": passed, "error": error[-3000:] if error else None,
            "claims": claims, "code_sha256": code_hash(path), "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "machine": machine(), "threads_env": os.environ.get("TUTORLIB_THREADS"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            # the 1-minute load average before and after (the run itself adds about one): a time taken on a
            # busy machine says so in the record
            "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)]}


def load_record(path: Path) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    return {"schema": SCHEMA, "lessons": {}}


def course_totals(record: dict, lessons: list[str]) -> dict:
    """Per profile key: the whole course's recorded run time (every lesson and appendix, top to bottom, one after
    another), and which lessons have no passing record there (then the total is a lower bound)."""
    keys = sorted({key for entry in record["lessons"].values() for key in entry})
    out = {}
    for key in keys:
        runs = {stem: record["lessons"].get(stem, {}).get(key) for stem in lessons}
        missing = sorted(stem for stem, run in runs.items() if not run or not run.get("passed"))
        seconds = sum(run["seconds"] for run in runs.values() if run and run.get("passed"))
        busy = sorted(stem for stem, run in runs.items() if run and (run.get("load") == "busy" or max(
            run.get("load_average") or [0.0]) > run["machine"]["cores"] + 0.5))  # as the run-time line says
        out[key] = {"seconds": round(seconds, 1), "lessons": len(lessons) - len(missing), "missing": missing,
                    "busy": busy}
    return out


def save_record(path: Path, record: dict) -> None:
    record["totals"] = course_totals(record, [p.stem for p in lesson_sources()])
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_time_line(entry: dict) -> str:
    """The header line of a lesson, from its record entry (``{profile_key: run}``)."""
    std, gpu, smoke = entry.get("standard"), entry.get("standard@cuda"), entry.get("smoke")
    where = ""
    if std:
        m = std["machine"]
        where = f" on {std['date']}, {m['cores']}-core CPU"
        load = max(std.get("load_average") or [0.0])
        if load > m["cores"] + 0.5:  # more runnable work than cores: the time is an upper bound
            where += f" busy with other work, load average {load:.1f}"
    parts = [f"CPU standard ≈ {_duration(std['seconds'])}" if std else "CPU standard: not measured yet",
             f"GPU standard ≈ {_duration(gpu['seconds'])} ({gpu['machine'].get('gpu', 'GPU')})" if gpu
             else "GPU standard: not measured yet",
             f"smoke ≈ {_duration(smoke['seconds'])}" if smoke else "smoke: not measured yet"]
    return (f"# **Run time** (measured by `make verify`{where}): " + " · ".join(parts)
            + ". The last cell prints this run's time.")


def rewrite_header(path: Path, entry: dict) -> bool:
    """Replace the lesson's **Run time** paragraph by the recorded one; returns whether it changed."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("# **Run time**")), None)
    if start is None:
        raise SystemExit(f"{path.name} has no '# **Run time**' header line")
    end = start + 1
    while end < len(lines) and lines[end].startswith("# ") and not lines[end].startswith("# **"):
        end += 1  # the paragraph's continuation lines
    new = run_time_line(entry) + "\n"
    if lines[start:end] == [new]:
        return False
    lines[start:end] = [new]
    path.write_text("".join(lines), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "jupytext", "--sync", "--quiet", str(path)], check=True, cwd=ROOT)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", nargs="+", default=["smoke", "standard"])
    ap.add_argument("--lessons", nargs="*", default=None, help="lesson ids or stems (default: all)")
    ap.add_argument("--record", type=Path, default=RECORD)
    ap.add_argument("--load", choices=["idle", "busy"], default="idle")
    ap.add_argument("--no-headers", action="store_true", help="do not rewrite the lessons' run-time lines")
    ap.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    ap.add_argument("--totals", action="store_true", help="run nothing: recompute and print the course totals")
    args = ap.parse_args(argv)
    if args.totals:
        record = load_record(args.record)
        save_record(args.record, record)
        for key, total in sorted(record["totals"].items()):
            print(f"{key}: {total['lessons']} lessons, {_duration(total['seconds'])}"
                  + (f"; missing {', '.join(total['missing'])}" if total["missing"] else "")
                  + (f"; measured on a busy machine: {', '.join(total['busy'])}" if total["busy"] else ""))
        return 0
    sources = lesson_sources()
    if args.lessons:
        sources = [p for p in sources if any(p.stem == k or p.stem.split("_")[0] == k for k in args.lessons)]
        if not sources:
            raise SystemExit(f"no lesson matches {args.lessons}")
    record = load_record(args.record)
    competitor = subprocess.Popen([sys.executable, "-c", BUSY]) if args.load == "busy" else None
    failures = []
    try:
        for profile in args.profiles:
            for path in sources:
                print(f"[verify] {path.stem} ({profile}{', busy machine' if competitor else ''}) ...", flush=True)
                run = run_lesson(path, profile, args.timeout)
                run["load"] = args.load
                key = profile if run["machine"]["device"] == "cpu" else f"{profile}@cuda"
                record["lessons"].setdefault(path.stem, {})[key] = run
                save_record(args.record, record)
                n_assert = sum(1 for c in run["claims"] if c.get("asserted", True))
                status = "passed" if run["passed"] else "FAILED"
                print(f"[verify] {path.stem} ({profile}): {status} in {run['seconds']:.1f} s, "
                      f"{len(run['claims'])} claims ({n_assert} asserted)", flush=True)
                for c in run["claims"]:
                    if not c["passed"]:
                        print(f"    claim failed: {c['name']} = {c['value']}", flush=True)
                if not run["passed"]:
                    failures.append((path.stem, profile, run["error"]))
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    if not args.no_headers and args.record == RECORD:
        for path in lesson_sources():
            entry = record["lessons"].get(path.stem)
            if entry and rewrite_header(path, entry):
                print(f"[verify] rewrote the run-time line of {path.name}")
    for key, total in sorted(record.get("totals", {}).items() if args.record == RECORD else []):
        gap = f"; no passing record for {', '.join(total['missing'])}" if total["missing"] else ""
        print(f"[verify] the whole course, {key}: {total['lessons']} lessons in {_duration(total['seconds'])} "
              f"(the sum of their recorded runs{gap})")
    for stem, profile, error in failures:
        tail = "\n".join((error or "a claim failed").splitlines()[-12:])
        print(f"\n[verify] {stem} FAILED in the {profile} profile:\n{tail}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
