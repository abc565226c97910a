"""The course's main job: execute every lesson and build the book (``make course``).

    python book/course.py build-book    # copy lessons into book/, execute (cached), build HTML
    python book/course.py all           # the same; the name ``make course`` uses
    python book/course.py pages         # only regenerate the toc and the generated pages

Execution uses the profile in ``TUTORLIB_PROFILE`` (default ``standard``). Jupyter Book's
execution cache means an unchanged lesson is not executed again.

Before Sphinx runs, the parts of the book that come from the lessons are generated here, so that
nothing is typed twice: ``book/_toc.yml`` (every lesson and appendix, in order), and under
``book/_generated/`` the learning-path diagram and run-time table of the landing page (from
``book/course_outline.yml`` and each lesson's header) and the bibliography (from
``book/references.yml`` and each lesson's References section). ``book/_ext/course_book.py``
does the rest inside Sphinx (offline assets, notebook downloads, solution toggles).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
GENERATED = BOOK / "_generated"
LESSON_GLOB = "[0-9][0-9]_*.py"  # lessons/00_setup.py, ...
APPENDIX_GLOB = "[A-Z]_*.py"  # lessons/A_mnist_at_scale.py, ...
# Run at the start of each kernel of the build (through IPYTHONDIR): registers the book's plotly
# renderer, figures without plotly.js, which the book serves once from its own _static folder.
KERNEL_STARTUP = BOOK / "_ext" / "kernel_startup.py"
# Hand-written pages after the lessons: (caption, [page, ...]).
EXTRA_PARTS = [
    ("Results", ["results"]),
    ("Reference", ["notation", "glossary", "bibliography"]),
    ("For instructors", ["instructor_guide"]),
]


# --- the lessons ---------------------------------------------------------------------------


@dataclass
class Lesson:
    """What the book needs from one lesson file: its id, title, run times and references."""

    path: Path
    uid: str  # "00", ..., or "A" for an appendix
    title: str  # the header's title, e.g. "00 · Setup, toy data and notation"
    short_title: str  # without the number: "Setup, toy data and notation"
    run_time: dict[str, str] = field(default_factory=dict)  # "cpu", "gpu", "smoke" -> as the header says
    references: list[str] = field(default_factory=list)  # the References section's items (markdown)

    @property
    def docname(self) -> str:
        return f"lessons/{self.path.stem}"

    @property
    def appendix(self) -> bool:
        return not self.uid[0].isdigit()


def lesson_sources() -> list[Path]:
    """The lesson and appendix sources in book order: ``lessons/NN_*.py``, then ``lessons/X_*.py``."""
    src = ROOT / "lessons"
    return sorted(src.glob(LESSON_GLOB)) + sorted(src.glob(APPENDIX_GLOB))


def _markdown_cells(path: Path) -> list[str]:
    """The markdown cells of a py:percent lesson, as text."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    return [c.source for c in nb.cells if c.cell_type == "markdown"]


def parse_run_time(header: str) -> dict[str, str]:
    """The run times in a header's ``**Run time** ... CPU standard ≈ X · GPU standard: Y · smoke ≈ Z`` line.

    Returns ``{"cpu": X, "gpu": Y, "smoke": Z}`` with the text as written (an unfilled
    placeholder such as ``RUNTIME_STD`` reads "not measured yet"); missing entries are absent.
    """
    m = re.search(r"\*\*Run time\*\*(.*?)(?:\n\s*\n|\n\*\*|\Z)", header, re.DOTALL)
    if not m:
        return {}
    text = " ".join(m.group(1).split())
    keys = {"cpu standard": "cpu", "gpu standard": "gpu", "smoke": "smoke"}
    out: dict[str, str] = {}
    for part in re.split(r"\s+·\s+", text):
        hit = re.search(r"\b(CPU standard|GPU standard|smoke)\s*(?:≈|~|:|=)?\s*(.*)$", part, re.IGNORECASE)
        if not hit:
            continue
        value = re.split(r"(?<=[^.\s])\.(?:\s+[A-Z]|\s*$)", hit.group(2).strip(), maxsplit=1)[0].strip()
        if not value or re.fullmatch(r"[A-Z_]+", value):
            value = "not measured yet"
        out[keys[hit.group(1).lower()]] = value
    return out


def parse_references(cells: list[str]) -> list[str]:
    """The list items of the ``## References`` section (one string per item, continuation lines joined)."""
    for cell in cells:
        m = re.search(r"^##\s+References\s*$(.*?)(?=^#{1,2}\s|\Z)", cell, re.MULTILINE | re.DOTALL)
        if not m:
            continue
        items: list[str] = []
        for line in m.group(1).splitlines():
            if re.match(r"^\s*[-*]\s+", line):
                items.append(re.sub(r"^\s*[-*]\s+", "", line).strip())
            elif line.strip() and items:
                items[-1] += " " + line.strip()
        return items
    return []


def read_lesson(path: Path) -> Lesson:
    """Read a lesson's header (title, run times) and References section."""
    cells = _markdown_cells(path)
    header = cells[0] if cells else ""
    title_line = next((ln for ln in header.splitlines() if ln.startswith("# ")), f"# {path.stem}")
    title = title_line[2:].strip()
    short = re.split(r"\s+·\s+", title, maxsplit=1)[-1]
    uid = path.stem.split("_", 1)[0]
    return Lesson(path=path, uid=uid, title=title, short_title=short,
                  run_time=parse_run_time(header), references=parse_references(cells))


def read_lessons() -> list[Lesson]:
    return [read_lesson(p) for p in lesson_sources()]


def sync_lessons() -> list[Path]:
    """Copy the lesson sources into ``book/lessons/`` (only files that changed), drop stale ones."""
    dst_dir = BOOK / "lessons"
    dst_dir.mkdir(parents=True, exist_ok=True)
    sources = lesson_sources()
    wanted = {p.name for p in sources}
    for stale in dst_dir.glob("*.py"):
        if stale.name not in wanted:
            stale.unlink()
    for src in sources:
        dst = dst_dir / src.name
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            shutil.copy2(src, dst)
    return sources


# --- generated pages ------------------------------------------------------------------------


def _load_yaml(path: Path):
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def toc_yaml(lessons: list[Lesson]) -> str:
    """``book/_toc.yml``: the landing page, every lesson, every appendix, then the extra pages."""
    lines = [
        "# Generated by `python book/course.py` from lessons/ (edit EXTRA_PARTS there, not this file).",
        "format: jb-book",
        "root: intro",
        "parts:",
    ]
    parts = [("Lessons", [ls.docname for ls in lessons if not ls.appendix]),
             ("Appendices", [ls.docname for ls in lessons if ls.appendix]), *EXTRA_PARTS]
    for caption, files in parts:
        if not files:
            continue
        lines += [f"  - caption: {caption}", "    chapters:"]
        lines += [f"      - file: {f}" for f in files]
    return "\n".join(lines) + "\n"


CLAIMS = ROOT / "lessons" / "claims.json"  # written by the claims command, scripts/verify_lessons.py


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_time_table(lessons: list[Lesson]) -> str:
    """A markdown table of each lesson's run times, as the claims command measured them (lessons/claims.json)."""
    import json

    record = json.loads(CLAIMS.read_text()).get("lessons", {}) if CLAIMS.is_file() else {}
    rows = ["| lesson | CPU, standard profile | GPU, standard profile | smoke profile (tests) | claims checked |",
            "|---|---|---|---|---|"]
    for ls in lessons:
        entry = record.get(ls.path.stem, {})

        def cell(key: str) -> str:
            run = entry.get(key)
            if not run:
                return "not measured yet"
            where = f"{run['machine']['cores']}-core CPU" if key != "standard@cuda" else run["machine"].get("gpu", "GPU")
            return f"{_duration(run['seconds'])} ({where}, {run['date']})" + ("" if run["passed"] else ", FAILED")

        std = entry.get("standard") or {}
        n_claims = sum(1 for c in std.get("claims", []) if c.get("asserted", True))
        claims = f"{n_claims} (standard)" if std else "–"
        rows.append(f"| {{doc}}`{ls.title} </{ls.docname}>` | {cell('standard')} | {cell('standard@cuda')} | "
                    f"{cell('smoke')} | {claims} |")
    return "\n".join(rows) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    """Greedy word wrap into lines of at most ``width`` characters (at least one word a line)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def learning_path_svg(lessons: list[Lesson], outline: dict) -> str:
    """The course's units as an inline SVG flow chart (written units link to their pages)."""
    box_w, box_h, dx, dy, pad = 160, 54, 178, 92, 12
    written = {ls.uid: ls for ls in lessons}
    units = outline["units"]
    pos = {}
    for u in units:
        depth, lane = u["at"]
        pos[str(u["id"])] = (pad + lane * dx, pad + depth * dy)
    width = max(x for x, _ in pos.values()) + box_w + pad
    height = max(y for _, y in pos.values()) + box_h + pad + 34
    out = [(f'<svg class="course-path" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:.0f} {height:.0f}" '
            'role="img" aria-label="The learning path: which lesson builds on which">'),
           ('<defs><marker id="course-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#666"/></marker></defs>')]
    for u in units:
        x2, y2 = pos[str(u["id"])]
        for src, dashed in [(s, False) for s in u.get("after", [])] + [(s, True) for s in u.get("helpful", [])]:
            x1, y1 = pos[str(src)]
            ax, ay, bx, by = x1 + box_w / 2, y1 + box_h, x2 + box_w / 2, y2 - 2
            mid = (by - ay) / 2
            cls = "edge helpful" if dashed else "edge"
            out.append(f'<path class="{cls}" d="M{ax:.0f},{ay:.0f} C{ax:.0f},{ay + mid:.0f} {bx:.0f},{by - mid:.0f} '
                       f'{bx:.0f},{by:.0f}" marker-end="url(#course-arrow)"/>')
    for u in units:
        uid = str(u["id"])
        x, y = pos[uid]
        lesson = written.get(uid)
        kind = "appendix" if u.get("appendix") else "lesson"
        state = "written" if lesson else "planned"
        label = f"{'Appendix ' if u.get('appendix') else ''}{uid}"
        title = lesson.short_title if lesson else u["title"]
        lines = _wrap(title, 24)[:2]
        planned = "" if lesson else " (planned)"
        text = [f'<text x="{x + box_w / 2:.0f}" y="{y + 17:.0f}" class="uid">{html.escape(label)}{planned}</text>']
        for i, line in enumerate(lines):
            text.append(f'<text x="{x + box_w / 2:.0f}" y="{y + 33 + 14 * i:.0f}">{html.escape(line)}</text>')
        node = [f'<g class="unit {kind} {state}">', f'<title>{html.escape(f"{label}: {title}")}</title>',
                f'<rect x="{x:.0f}" y="{y:.0f}" width="{box_w}" height="{box_h}" rx="8"/>', *text, "</g>"]
        if lesson:
            node = [f'<a href="{lesson.docname}.html">', *node, "</a>"]
        out += node
    ly = height - 22
    out += [f'<g class="legend" transform="translate({pad},{ly:.0f})">',
            '<rect class="written" x="0" y="0" width="14" height="14" rx="3"/><text x="20" y="12">lesson (click to open)</text>',
            '<rect class="appendix" x="190" y="0" width="14" height="14" rx="3"/><text x="210" y="12">appendix</text>',
            '<rect class="planned" x="300" y="0" width="14" height="14" rx="3"/><text x="320" y="12">planned</text>',
            '<path class="edge helpful" d="M420,7 L470,7"/><text x="478" y="12">helps, not needed</text>',
            "</g>", "</svg>"]
    return "\n".join(out) + "\n"


def _norm(title: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9]+", " ", title.lower()).split())


def _cited_title(item: str) -> str | None:
    """The first italic span of a reference item (the course cites papers by title, in italics)."""
    m = re.search(r"(?<![*\w])\*([^*]+)\*(?!\*)", item)
    return m.group(1).strip() if m else None


def match_paper(item: str, papers: list[dict]) -> dict | None:
    """The reading-list paper a reference item cites: same title, or same title before its colon."""
    title = _cited_title(item)
    if not title:
        return None
    want = {_norm(title), _norm(title.split(":")[0])}
    for p in papers:
        if _norm(p["title"]) in want or _norm(p["title"].split(":")[0]) == _norm(title):
            return p
    return None


def bibliography_md(lessons: list[Lesson], refs: dict, outline: dict) -> str:
    """The reading list with, for each paper, the lessons that cite it; then other works the lessons cite."""
    papers = refs["papers"]
    titles = {str(u["id"]): u["title"] for u in outline["units"]}
    cited_by: dict[str, list[Lesson]] = {p["title"]: [] for p in papers}
    others: dict[str, tuple[str, list[Lesson]]] = {}
    for ls in lessons:
        for item in ls.references:
            paper = match_paper(item, papers)
            if paper is not None:
                if ls not in cited_by[paper["title"]]:
                    cited_by[paper["title"]].append(ls)
            else:
                key = _norm(_cited_title(item) or item)
                others.setdefault(key, (item, []))[1].append(ls)

    def unit_name(uid: str) -> str:
        kind = "lesson" if uid[0].isdigit() else "appendix"
        return f"{kind} {uid} ({titles.get(uid, '?')})"

    out = ["## The reading list", ""]
    for p in papers:
        cites = ", ".join(f"{{doc}}`{ls.title} </{ls.docname}>`" for ls in cited_by[p["title"]])
        planned = "; ".join(unit_name(str(u)) for u in p.get("units", []))
        out.append(f"- **{p['title']}** — {p['authors']} ({p['year']}). "
                   f"[arXiv:{p['arxiv']}](https://arxiv.org/abs/{p['arxiv']}). *{p['note']}.*  ")
        out.append(f"  Cited in: {cites or 'no lesson yet'}. Taught in: {planned}.")
    out += ["", "## Other works the lessons cite", ""]
    if not others:
        out.append("None yet.")
    for item, by in others.values():
        names = ", ".join(f"{{doc}}`{ls.title} </{ls.docname}>`" for ls in by)
        out.append(f"- {item}  ")
        out.append(f"  Cited in: {names}.")
    return "\n".join(out) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


README_START = "<!-- lessons: generated by `python book/course.py pages` from book/course_outline.yml -->"
README_END = "<!-- lessons: end -->"


def readme_lessons(lessons: list[Lesson], outline: dict) -> str:
    """The README's list of lessons: every unit of the plan, marked available only where its file exists."""
    have = {lesson.uid: lesson for lesson in lessons}
    rows = ["| | lesson | status |", "|---|---|---|"]
    for unit in sorted(outline["units"], key=lambda u: (bool(u.get("appendix")), u["id"])):
        lesson = have.get(unit["id"])
        name = f"[{lesson.short_title}](lessons/{lesson.path.name})" if lesson else unit["title"]
        rows.append(f"| {unit['id']} | {name} | {'available' if lesson else 'planned'} |")
    return "\n".join([README_START, *rows, README_END])


def update_readme(lessons: list[Lesson], outline: dict) -> bool:
    """Rewrite the README's generated lesson list; True if it changed."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise SystemExit(f"README.md lacks the generated lesson list (between {README_START!r} and {README_END!r})")
    new = text[:start] + readme_lessons(lessons, outline) + text[end + len(README_END):]
    return _write_if_changed(readme, new)


def generate_pages(lessons: list[Lesson] | None = None) -> list[Path]:
    """Write the toc and the generated page parts; returns the files that changed."""
    lessons = read_lessons() if lessons is None else lessons
    outline = _load_yaml(BOOK / "course_outline.yml")
    refs = _load_yaml(BOOK / "references.yml")
    svg = learning_path_svg(lessons, outline)
    files = {
        BOOK / "_toc.yml": toc_yaml(lessons),
        GENERATED / "learning_path.md": "```{raw} html\n" + svg + "```\n",
        GENERATED / "run_times.md": run_time_table(lessons),
        GENERATED / "bibliography.md": bibliography_md(lessons, refs, outline),
    }
    changed = [path for path, text in files.items() if _write_if_changed(path, text)]
    if update_readme(lessons, outline):
        changed.append(ROOT / "README.md")
    return changed


# --- the build ------------------------------------------------------------------------------


def output_dir(profile_name: str) -> Path:
    """Where the book of one profile is built: ``build/book-<profile>/_build/html``.

    Each profile has its own folder, and so its own execution cache: a smoke build never
    serves its outputs to a standard build.
    """
    return ROOT / "build" / f"book-{profile_name}"


def kernel_ipython_dir() -> Path:
    """An IPython folder for the book's kernels whose startup runs ``book/_ext/kernel_startup.py``."""
    folder = ROOT / "build" / "ipython"
    startup = folder / "profile_default" / "startup" / "00-course-book.py"
    _write_if_changed(startup, KERNEL_STARTUP.read_text(encoding="utf-8"))
    return folder


def execution_failures(out: Path) -> list[tuple[str, str]]:
    """``(page, error)`` for every page of the book whose notebook did not execute to the end.

    Read from the build's execution cache: a notebook that failed has no cached result, and its
    project record keeps the traceback. This holds on a later build too, which re-uses the cache and
    would otherwise say nothing about the failure.
    """
    from jupyter_cache import get_cache

    folder = out / "_build" / ".jupyter_cache"
    if not folder.is_dir():
        return []
    cache = get_cache(str(folder))
    failures = []
    for record in cache.list_project_records():
        uri = Path(record.uri)
        if not uri.exists() or BOOK not in uri.parents:
            continue  # a page that is no longer part of the book
        if not _has_cached_result(cache, uri):
            failures.append((str(uri.relative_to(BOOK)), record.traceback or "not executed (no cached result)"))
    return failures


def _has_cached_result(cache, uri: Path) -> bool:
    """Whether the cache holds an executed copy of the page at ``uri``.

    MyST-NB reads ``.py`` pages with jupytext but records them with the default (ipynb) reader, so the
    cache's own ``get_cached_project_nb`` cannot read them back; ``.md`` pages (MyST notebooks such as
    results.md) are recorded with MyST-NB's own reader. Read each as jupytext does: the code cells
    and their metadata, which is all the cache hashes, come out the same.
    """
    import jupytext
    import nbformat

    if uri.suffix == ".ipynb":
        nb = nbformat.read(uri, nbformat.NO_CONVERT)
    else:
        nb = jupytext.read(uri, fmt="py:percent" if uri.suffix == ".py" else None)
    try:
        cache.match_cache_notebook(nb)
    except KeyError:
        return False
    return True


def build_book(strict: bool = False) -> int:
    """Build the HTML book of the current profile; returns the exit code (non-zero if any page failed)."""
    if not ROOT.joinpath("pyproject.toml").is_file():
        raise SystemExit("book/course.py works from a clone of the course repository (no pyproject.toml found)")
    sync_lessons()
    for path in generate_pages():
        print(f"generated {path.relative_to(ROOT)}", flush=True)
    env = dict(os.environ)
    env.setdefault("TUTORLIB_PROFILE", "standard")
    env.setdefault("TUTORLIB_STATIC_WIDGETS", "1")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # tutorlib.device.default_threads: all cores, degrading gracefully
    env.setdefault("TQDM_DISABLE", "1")  # a page shows a training cell's printed summary, not a half-drawn bar
    env["IPYTHONDIR"] = str(kernel_ipython_dir())
    out = output_dir(env["TUTORLIB_PROFILE"])
    cmd = [str(Path(sys.executable).with_name("jupyter-book")), "build", str(BOOK), "--path-output", str(out)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    start = time.perf_counter()
    print(f"building the book in profile {env['TUTORLIB_PROFILE']!r}: {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, env=env, cwd=ROOT)
    failures = execution_failures(out)
    for page, error in failures:
        tail = "\n".join(error.strip().splitlines()[-15:])
        print(f"\n{page} FAILED to execute in the {env['TUTORLIB_PROFILE']} profile:\n{tail}", file=sys.stderr,
              flush=True)
    if failures and code == 0:
        code = 1
    print(f"book build finished in {time.perf_counter() - start:.0f} s with exit code {code}"
          + (f" ({len(failures)} page(s) failed: {', '.join(p for p, _ in failures)})" if failures else "")
          + f"; open {out / '_build' / 'html' / 'index.html'}")
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python book/course.py", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build-book", "all", "pages"])
    parser.add_argument("--strict", action="store_true", help="fail on warnings (-W -n --keep-going)")
    args = parser.parse_args(argv)
    if args.command == "pages":
        sync_lessons()
        for path in generate_pages():
            print(f"generated {path.relative_to(ROOT)}")
        return 0
    return build_book(strict=args.strict)


if __name__ == "__main__":
    raise SystemExit(main())
