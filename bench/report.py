"""``python -m bench report DIR... --out FILE.md``: results.json files as markdown tables.

One section per run: the energy distance and MMD of every entry as a multiple of its noise floor
(rows: dataset and method; columns: NFE, then dopri5 with its NFE), training speed, case extras
(CNF likelihood, reflow straightness) and, for ``peers2d``, the speed ratios and quality per
implementation. The header names the date and the machine of the runs.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
from pathlib import Path
from typing import Any

from bench import CASES


def load_results(inputs: list[str | Path]) -> list[dict[str, Any]]:
    """Read the results in ``inputs``, in the given order.

    Each item is a results file, a run folder holding ``results.json``, or a folder of collected
    results files (``bench/results/*.json``, read in name order).
    """
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = [path / "results.json"] if (path / "results.json").is_file() else sorted(path.glob("*.json"))
            if not found:
                raise FileNotFoundError(f"{path} holds neither results.json nor any *.json results file")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise FileNotFoundError(f"no results file or folder at {path}")
    return [json.loads(p.read_text()) for p in paths]


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        if math.isnan(x):
            return "nan"
        return f"{x:.{digits}g}" if abs(x) < 1e4 else f"{x:.3g}"
    return str(x)


def _machine_line(doc: dict[str, Any]) -> str:
    m, v = doc["machine"], doc["versions"]
    return (f"{m.get('cpu', '?')}, {m.get('cpu_count', '?')} cores, {m.get('torch_threads', '?')} torch thread(s), "
            f"device {doc['device']}; {m.get('platform', '?')}; python {v.get('python')}, torch {v.get('torch')}")


def _label_key(label: str) -> tuple[int, float]:
    return (0, float(label)) if label.replace(".", "", 1).isdigit() else (1, 0.0)


def _metric_table(doc: dict[str, Any], metric: str) -> list[str]:
    rows, labels = [], set()
    for dataset, m in doc["metrics"].items():
        methods: dict[str, dict[str, Any]] = {}
        for name, e in m["entries"].items():
            method, label = name.rsplit("@", 1)
            methods.setdefault(method, {})[label] = e
            labels.add(label)
        for method, by_label in methods.items():
            rows.append((dataset, method, by_label))
    cols = sorted(labels, key=_label_key)
    head = ["dataset", "method", *[f"NFE {c}" if c != "dopri5" else "dopri5 (NFE)" for c in cols]]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, method, by_label in rows:
        cells = []
        for c in cols:
            e = by_label.get(c)
            if e is None:
                cells.append("")
            elif c == "dopri5":
                cells.append(f"{_fmt(e[metric + '_x_floor'], 3)} ({e['nfe']})")
            else:
                cells.append(_fmt(e[metric + "_x_floor"], 3))
        out.append(f"| {dataset} | {method} | " + " | ".join(cells) + " |")
    return out


def _floors(doc: dict[str, Any]) -> str:
    parts = []
    for dataset, m in doc["metrics"].items():
        f = m["noise_floor"]
        parts.append(f"{dataset} energy {_fmt(f['energy']['mean'])} ± {_fmt(f['energy']['std'], 2)}, "
                     f"MMD {_fmt(f['mmd']['mean'])} ± {_fmt(f['mmd']['std'], 2)} (n = {m['n']})")
    return "; ".join(parts)


def _training_table(doc: dict[str, Any]) -> list[str]:
    out = ["| dataset | method | steps | steps/s | wall s | final loss |", "|---|---|---|---|---|---|"]
    for dataset, methods in doc["timings"]["train"].items():
        for method, t in methods.items():
            out.append(f"| {dataset} | {method} | {t['steps']} | {_fmt(t['steps_per_s'])} | {_fmt(t['wall_s'])} "
                       f"| {_fmt(t['final_loss'])} |")
    return out


def _spread(s: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    if not s or s.get("median") is None:
        return "–"
    return (f"{_fmt(scale * s['median'], digits)} [{_fmt(scale * s['min'], digits)}–"
            f"{_fmt(scale * s['max'], digits)}]")


def _peers_table(doc: dict[str, Any]) -> list[str]:
    cfg = doc["config"]
    out = [f"Same MLP, data, seed, batch {cfg.get('batch')}, {cfg.get('steps')} AdamW steps for all; times are "
           f"medians [min–max] over {cfg.get('timing_rounds')} interleaved rounds; ratios are project / "
           f"implementation per round (above 1: the project is slower). Sampling: {cfg.get('sample_steps')} Euler "
           f"steps, {cfg.get('sample_points')} points.", "",
           "| implementation | version | status | train ms/step | train ratio | sample s | sample ratio | "
           "energy (× floor) |", "|---|---|---|---|---|---|---|---|"]
    for name, p in doc["peers"].items():
        if p["status"] != "ok":
            out.append(f"| {name} | {_fmt(p.get('version'))} | {p['status']}: {p.get('reason')} | | | | | |")
            continue
        out.append(f"| {name} | {_fmt(p.get('version'))} | ok | {_spread(p['train_ms_per_step'])} | "
                   f"{_spread(p['train_ratio'])} | {_spread(p['sample_s'])} | {_spread(p['sample_ratio'])} | "
                   f"{_fmt(p['energy'])} ({_fmt(p['energy_x_floor'])}) |")
    return out


def _ttq_table(doc: dict[str, Any]) -> list[str]:
    """Time to quality (``ttq2d``): per dataset and recipe, medians [min-max] over seeds."""
    cfg = doc["config"]["ttq"]
    target = cfg["target_x_floor"]
    out = [f"Each recipe trains for {_fmt(cfg['budget_s'])} s of wall-clock time (scoring excluded), scored at "
           f"{', '.join(_fmt(t) for t in cfg['snapshots_s'])} s: energy distance at {cfg['euler_steps']} Euler steps "
           f"/ noise floor (n = {cfg['n']}, {cfg['repeats']} draws). Medians [min–max] over {cfg['seeds']} seed(s); "
           f"`>B` = not reached within the budget. Peer trained through {doc['config']['peer_path']}.", "",
           f"| dataset | recipe | time to ≤ {_fmt(target)}× floor (s) | × floor at {_fmt(cfg['budget_s'])} s | "
           f"steps at {_fmt(cfg['budget_s'])} s |", "|---|---|---|---|---|"]
    for dataset, recipes in doc["ttq_summary"].items():
        for recipe, r in recipes.items():
            ttt = r["time_to_target_s"]
            vals = ttt["values"]
            txt = ">B" if ttt["median"] is None else _fmt(ttt["median"])
            txt += " [" + "–".join(">B" if v is None else _fmt(v) for v in (
                min((v for v in vals if v is not None), default=None), None if None in vals else max(vals))) + "]"
            steps = [c[-1]["steps"] for c in doc["ttq"][dataset][recipe].values()]
            out.append(f"| {dataset} | {recipe} | {txt} | {_spread(r['final_x_floor'])} | "
                       f"{sorted(steps)[(len(steps) - 1) // 2]} |")
    worst = [(dataset, recipe, r["worst_x_floor_from"]) for dataset, recipes in doc["ttq_summary"].items()
             for recipe, r in recipes.items() if "worst_x_floor_from" in r]
    if worst:  # the worst seed, and how precisely the floor is known
        w0 = worst[0][2]
        out += ["", f"Worst seed: each seed's highest ratio at the snapshots from {_fmt(w0['from_s'])} s of training "
                    f"on (target: every seed ≤ {_fmt(w0['target'])}× floor to the end of the budget).", "",
                "| dataset | recipe | per seed | worst | met | floor ± s.e. (s.e. / mean) |", "|---|---|---|---|---|---|"]
        for dataset, recipe, w in worst:
            fl = doc["metrics"].get(dataset, {}).get("ttq_floor") or {}
            se = fl.get("se_over_mean")
            floor = (f"{_fmt(fl['energy'])} ± {_fmt(fl['energy'] * se)} ({_fmt(se)}, {fl['repeats']} draws)"
                     if se is not None else "")
            per_seed = ", ".join("–" if v is None else _fmt(v) for v in w["per_seed"])
            out.append(f"| {dataset} | {recipe} | {per_seed} | {'–' if w['max'] is None else _fmt(w['max'])} | "
                       f"{'yes' if w['met'] else 'no'} | {floor} |")
    return out


def _is_image_doc(doc: dict[str, Any]) -> bool:
    return any("judge_accuracy" in e for m in doc["metrics"].values() for e in m["entries"].values())


def _image_tables(doc: dict[str, Any]) -> list[str]:
    """MNIST cases: judge accuracy / Frechet distance per method and NFE, the training curves, sampling time."""
    out = []
    for dataset, m in doc["metrics"].items():
        f = m["noise_floor"]
        out += [f"Each cell: judge accuracy (%) / Frechet distance in the judge's features, n = {m['n']} digits "
                f"(n/10 per class) against held-out test digits. Floors: Frechet {_fmt(f['frechet']['mean'])} "
                f"(training vs test digits), judge {_fmt(100 * f['judge_accuracy']['mean'])} % on test digits.", ""]
        methods: dict[str, dict[str, Any]] = {}
        nfes = set()
        for name, e in m["entries"].items():
            method, label = name.rsplit("@", 1)
            methods.setdefault(method, {})[int(label)] = e
            nfes.add(int(label))
        cols = sorted(nfes)
        out += ["| method | guidance | " + " | ".join(f"NFE {c}" for c in cols) + " |",
                "|---|---|" + "---|" * len(cols)]
        for method, by_nfe in methods.items():
            w = next(iter(by_nfe.values()))["guidance"]
            cells = [f"{_fmt(100 * by_nfe[c]['judge_accuracy'], 3)} / {_fmt(by_nfe[c]['frechet'], 3)}"
                     if c in by_nfe else "" for c in cols]
            out.append(f"| {method} | {_fmt(w)}{' (zero*)' if next(iter(by_nfe.values())).get('zero_star') else ''} | "
                       + " | ".join(cells) + " |")
        out.append("")
        for method, curve in m.get("curve", {}).items():
            out += [f"Training curve of `{method}` (EMA weights, w = {_fmt(curve[0]['w'])}, {curve[0]['nfe']} Euler "
                    f"steps, n = {curve[0]['n']}):", "", "| train s | steps | judge % | Frechet |", "|---|---|---|---|"]
            out += [f"| {_fmt(p['train_s'], 4)} | {p['steps']} | {_fmt(100 * p['judge_accuracy'], 3)} | "
                    f"{_fmt(p['frechet'], 3)} |" for p in curve] + [""]
        if "sampling" in m:
            sm = m["sampling"]
            out += [f"Sampling {sm['images']} digits with {sm['nfe']} guided Euler steps (w = {_fmt(sm['w'])}): "
                    f"{_fmt(sm['median_s'])} s median [{_fmt(sm['min_s'])}–{_fmt(sm['max_s'])}] of {sm['repeats']}.", ""]
    return out


def _is_text_doc(doc: dict[str, Any]) -> bool:
    return any("bpc" in e for m in doc["metrics"].values() for e in m["entries"].values())


def _text_table(doc: dict[str, Any]) -> list[str]:
    """The ``text`` case: held-out bits per character of every model (bounds marked), with standard errors."""
    out = ["Held-out bits per character (lower is better; a bound is an upper bound on the model's true value, "
           "± its Monte Carlo standard error):", "", "| corpus | model | bits per character | kind |", "|---|---|---|---|"]
    for dataset, m in doc["metrics"].items():
        for name, e in m["entries"].items():
            err = f" ± {_fmt(e['stderr'], 2)}" if e.get("stderr") else ""
            out.append(f"| {dataset} | {name} | {_fmt(e['bpc'], 4)}{err} | "
                       f"{'upper bound (ELBO)' if e.get('bound') else 'exact'} |")
    return out


def _extras(doc: dict[str, Any]) -> list[str]:
    out = []
    for dataset, m in doc["metrics"].items():
        if "nll" in m:
            n = m["nll"]
            out.append(f"- {dataset}: held-out NLL {_fmt(n['nats'], 4)} nats (n = {n['n']}, {n['method']}, "
                       f"{n['nfe']} NFE)")
        if "quantisation_floor" in m:
            q = m["quantisation_floor"]
            out.append(f"- {dataset}: quantisation floor ({q['bins']} bins per axis on [{_fmt(q['low'])}, "
                       f"{_fmt(q['high'])}]): energy {_fmt(q['energy']['x_floor'])} x, MMD {_fmt(q['mmd']['x_floor'])} x "
                       "the noise floor (what tokenising alone costs)")
        if "guidance" in m:
            out.append(f"- {dataset}: guidance (judge accuracy on held-out data {_fmt(100 * m['judge_accuracy'])} %): "
                       "class accuracy % / within-class spread relative to the data / energy x label-matched floor")
            out.append("")
            out += ["  | entry | accuracy % | spread ratio | energy x matched floor |", "  |---|---|---|---|"]
            out += [f"  | {k} | {_fmt(100 * g['accuracy'])} | {_fmt(g['spread_ratio'])} | "
                    f"{_fmt(g['energy_x_matched_floor'])} |" for k, g in m["guidance"].items()]
            out.append("")
        if "straightness" in m:
            out.append(f"- {dataset}: straightness (100 Euler steps; 0 = straight) "
                       + ", ".join(f"{k} {_fmt(v)}" for k, v in m["straightness"].items()))
    return out


def render(docs: list[dict[str, Any]], sources: list[str] | None = None) -> str:
    """The markdown report of the given results documents."""
    today = _dt.datetime.now(_dt.timezone.utc).date().isoformat()
    lines = ["# Bench results", "",
             f"Written {today} by `python -m bench report` from {len(docs)} run(s)"
             + (f" ({', '.join(sources)})" if sources else "") + ". Re-run a case with "
             "`python -m bench CASE --profile PROFILE --seed N --out DIR`.", ""]
    machines = {_machine_line(d) for d in docs}
    if len(machines) == 1:
        lines += [f"Machine: {machines.pop()}.", ""]
    lines += ["Quality columns are the energy distance (and MMD) of each sample set against held-out data, "
              "as a multiple of the noise floor: the same V-statistic between two independent data draws of the "
              "same size (1 = indistinguishable from data at this n; lower is better). `NFE k`: k network "
              "evaluations (Euler steps for flows); dopri5 shows its NFE in brackets.", ""]
    for doc in docs:
        case = doc["case"]
        summary = CASES[case].summary if case in CASES else ""
        lines += [f"## {case}: {summary}", "",
                  f"Run {doc['date']} (UTC), profile `{doc['profile']}`, seed {doc['seed']}, "
                  f"{_fmt(doc['timings']['total_s'], 4)} s wall time, device {doc['device']}, "
                  f"{doc['machine'].get('torch_threads')} thread(s).", ""]
        if len({_machine_line(d) for d in docs}) > 1:
            lines += [f"Machine: {_machine_line(doc)}.", ""]
        if "peers" in doc:
            lines += _peers_table(doc) + [""]
        if "ttq_summary" in doc:
            lines += ["Time to quality:", ""] + _ttq_table(doc) + [""]
        if _is_image_doc(doc):
            lines += _image_tables(doc)
        elif _is_text_doc(doc):
            lines += _text_table(doc) + [""]
        else:
            lines += ["Energy distance / noise floor:", ""] + _metric_table(doc, "energy") + [""]
            lines += ["MMD / noise floor:", ""] + _metric_table(doc, "mmd") + [""]
            lines += [f"Noise floors: {_floors(doc)}.", ""]
        lines += ["Training:", ""] + _training_table(doc) + [""]
        extras = _extras(doc)
        if extras:
            lines += extras + [""]
    five = five_minute_summary(docs)
    if five is not None:
        lines += _five_minute_table(five)
    return "\n".join(lines).rstrip() + "\n"


def five_minute_summary(docs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Issue 17's bar over every ``mnist_5min`` run given (one per seed): per method, the median and range
    over seeds of the judge accuracy and the Frechet distance (x floor) at the method's own guidance scale,
    and whether both medians meet the target. ``None`` when there is no such run."""
    runs = sorted((d for d in docs if d["case"] == "mnist_5min"), key=lambda d: d["seed"])
    if not runs:
        return None
    rows: dict[str, list[dict[str, Any]]] = {}
    for d in runs:
        m = d["metrics"]["mnist"]
        for method, entry in m["own_scale"].items():
            e = m["entries"][entry]
            rows.setdefault(method, []).append({
                "seed": d["seed"], "w": e["guidance"], "nfe": e["nfe"], "judge_accuracy": e["judge_accuracy"],
                "frechet_x_floor": e["frechet_x_floor"], "steps": d["timings"]["train"]["mnist"][method]["steps"]})
    target = runs[0]["metrics"]["mnist"]["target"]

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    methods = {}
    for method, rs in rows.items():
        judge = spread([r["judge_accuracy"] for r in rs])
        fx = spread([r["frechet_x_floor"] for r in rs])
        methods[method] = {"seeds": [r["seed"] for r in rs], "w": rs[0]["w"], "nfe": rs[0]["nfe"],
                           "steps": spread([float(r["steps"]) for r in rs]), "judge_accuracy": judge,
                           "frechet_x_floor": fx, "per_seed": rs,
                           "met": judge["median"] >= target["judge_accuracy"]
                           and fx["median"] <= target["frechet_x_floor"] and rs[0]["nfe"] <= target["nfe"]}
    return {"target": target, "n": runs[0]["metrics"]["mnist"]["n"], "methods": methods}


def _five_minute_table(summary: dict[str, Any]) -> list[str]:
    t = summary["target"]
    out = [f"## MNIST in five minutes (issue 17): median over seeds", "",
           f"Target: judge accuracy >= {_fmt(100 * t['judge_accuracy'])} % and Frechet distance <= "
           f"{_fmt(t['frechet_x_floor'])} x the train-vs-test floor, at <= {t['nfe']} NFE, after {_fmt(t['budget_s'])} s "
           f"of training; each method at its own guidance scale, n = {summary['n']} digits. Median [min–max] over the "
           "seeds' runs.", "",
           "| method | seeds | w | steps in the budget | judge accuracy % | Frechet x floor | target |",
           "|---|---|---|---|---|---|---|"]
    for method, r in summary["methods"].items():
        j, f, s = r["judge_accuracy"], r["frechet_x_floor"], r["steps"]
        out.append(f"| {method} | {len(r['seeds'])} | {_fmt(r['w'])} | {s['median']:.0f} [{s['min']:.0f}–{s['max']:.0f}] | "
                   f"{_fmt(100 * j['median'], 3)} [{_fmt(100 * j['min'], 3)}–{_fmt(100 * j['max'], 3)}] | "
                   f"{_fmt(f['median'])} [{_fmt(f['min'])}–{_fmt(f['max'])}] | {'met' if r['met'] else 'not met'} |")
    return out + [""]


README_START = "<!-- bench-summary:start (written by `python -m bench report ... --readme README.md`) -->"
README_END = "<!-- bench-summary:end -->"


def _entry_x_floor(doc: dict[str, Any], dataset: str, key: str) -> str:
    entry = doc["metrics"].get(dataset, {}).get("entries", {}).get(key)
    return _fmt(entry["energy_x_floor"]) if entry else "–"


def readme_summary(docs: list[dict[str, Any]]) -> str:
    """A short, dated markdown summary for the README: quality at a few NFE, and speed vs peers."""
    by_case = {d["case"]: d for d in docs if d.get("device", "cpu") == "cpu"}
    lines = []
    used = [by_case[c] for c in ("fm2d", "ddpm2d", "reflow2d", "peers2d", "mnist", "mnist_ttq") if c in by_case]
    dates = sorted({d["date"][:10] for d in used})
    if dates:
        machines = "; ".join(sorted({_machine_line(d) for d in used}))
        when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
        lines += [f"Measured {when} on {machines}. Energy distance to held-out data as a multiple of its "
                  "noise floor (1 = as close as two independent data draws); full tables in "
                  "[bench/RESULTS.md](bench/RESULTS.md).", ""]
    rows = []
    fm, reflow, ddpm = by_case.get("fm2d"), by_case.get("reflow2d"), by_case.get("ddpm2d")
    if fm:
        for method, label in (("fm-ind", "flow matching, independent coupling"), ("fm-ot", "flow matching, minibatch OT")):
            rows.append((label, "checkerboard", *(_entry_x_floor(fm, "checkerboard", f"{method}@{k}") for k in (1, 4, 100))))
    if ddpm:
        rows.append(("DDPM, DDIM sampler", "checkerboard", "–", "–", _entry_x_floor(ddpm, "checkerboard", "ddim@100")))
    if reflow:
        for method, label in (("1rf", "1-rectified flow"), ("2rf", "2-rectified flow"), ("distill", "distilled 2-RF")):
            rows.append((label, "eight_gaussians", _entry_x_floor(reflow, "eight_gaussians", f"{method}@1"), "–", "–"))
    if rows:
        lines += ["| method | data | 1 NFE | 4 NFE | 100 NFE |", "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(r)} |" for r in rows] + [""]
    image_rows = []
    five = five_minute_summary([d for d in docs if d.get("device", "cpu") == "cpu"])
    if five is not None:
        labels = {"project": "lesson 09 recipe (PatchUNet)", "previous": "the previous recipe (PatchUNet, batch 128)",
                  "baseline": "0.58 M U-Net baseline"}
        for method, r in five["methods"].items():
            image_rows.append(f"| {labels.get(method, method)} (mnist_5min, median of {len(r['seeds'])} seeds) | "
                              f"{_fmt(five['target']['budget_s'], 4)} s, {r['steps']['median']:.0f} steps | {r['nfe']} NFE, "
                              f"w = {_fmt(r['w'])} | {_fmt(100 * r['judge_accuracy']['median'], 3)} % | "
                              f"{_fmt(r['frechet_x_floor']['median'])} x floor (n = {five['n']}) |")
    for case, label_of in (("mnist", {"fm": "flow matching, PatchUNet"}),
                           ("mnist_ttq", {"project": "PatchUNet", "baseline": "0.58 M U-Net baseline"})):
        doc = by_case.get(case)
        if not doc:
            continue
        m = doc["metrics"]["mnist"]
        batch = doc.get("config", {}).get("recipe", {}).get("batch")
        label_of = {k: f"{v}, batch {batch}" if k != "baseline" and batch else v for k, v in label_of.items()}
        for method, curve in m.get("curve", {}).items():
            last = curve[-1]
            image_rows.append(f"| {label_of.get(method, method)} ({case}) | {_fmt(last['train_s'], 4)} s, {last['steps']} "
                              f"steps | {last['nfe']} NFE, w = {_fmt(last['w'])} | {_fmt(100 * last['judge_accuracy'], 3)} % "
                              f"| {_fmt(last['frechet'], 3)} (n = {last['n']}) |")
    if image_rows:
        lines += ["MNIST, class-conditional, Euler steps with classifier-free guidance: judge accuracy and Frechet "
                  "distance in the judge's features after CPU training for the budget:", "",
                  "| model | training | sampling | judge accuracy | Frechet |", "|---|---|---|---|---|", *image_rows, ""]
    peers = by_case.get("peers2d")
    if peers:
        ok = {n: p for n, p in peers["peers"].items() if p["status"] == "ok" and n != "project"}
        if ok:
            lines += ["Speed against peers on the same task (project time / peer time, median [min–max]):", "",
                      "| peer | training step | sampling |", "|---|---|---|"]
            lines += [f"| {n} | {_spread(p['train_ratio'])} | {_spread(p['sample_ratio'])} |" for n, p in ok.items()]
            lines += [""]
    return "\n".join(lines).rstrip() + "\n"


def update_readme(path: str | Path, summary: str) -> None:
    """Replace the text between the bench-summary markers of ``path`` with ``summary``."""
    path = Path(path)
    text = path.read_text()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{path} has no bench summary block: add the two lines\n{README_START}\n{README_END}\n"
                         "where the summary should go")
    path.write_text(text[: start + len(README_START)] + "\n" + summary + text[end:])


def write_report(inputs: list[str | Path], out: str | Path | None = None) -> str:
    """Render ``inputs`` (result folders or files) and write the markdown to ``out`` if given."""
    docs = load_results(inputs)
    text = render(docs, [str(Path(i)) for i in inputs])
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text
