"""The course book's Sphinx extension: an offline site, notebook downloads, marked exercises.

Loaded by ``book/_config.yml`` (``sphinx.local_extensions``). What it does:

* **Offline assets.** Copies plotly.js (from the ``plotly`` Python package) and MathJax 3 (from
  the ``sphinx-mathjax-offline`` package) into the site's ``_static`` folder, and loads plotly.js
  on each page that has a figure (the lessons' figures come from tutorlib's ``tutorlib_book``
  renderer, which leaves plotly.js out). ``_config.yml`` points ``mathjax_path`` at the local copy
  and replaces myst-nb's CDN widget manager with ``_static/course-widgets.js``.
* **Notebooks.** Each lesson page offers its notebook (made from the ``.py`` source by jupytext,
  without outputs) in the download menu, an "Open in JupyterLab" button (for a local
  ``make lab``), and a "Run this lesson yourself" note under its title.
* **Exercises and solutions.** Exercise prompts are boxed (see :func:`mark_exercises`), the
  cell a learner completes is labelled, and the toggle of a cell tagged ``solution`` reads
  "Show the solution" (the cell also carries ``hide-input``, so it starts folded).
* **No dead weight.** Switches sphinx-thebe off (no live kernels; see :func:`switch_off_thebe`)
  and writes a ``/favicon.ico`` so that no request of a page fails.
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import zlib
from pathlib import Path

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.transforms.post_transforms import SphinxPostTransform

JUPYTERLAB_URL = "http://localhost:8888/lab/tree/"  # where `make lab` serves lessons/
PLOTLY_JS = "plotly.min.js"
# What the site needs of MathJax 3 for CommonHTML output: the combined component, its fonts,
# the TeX extensions it autoloads, and the menu's accessibility parts.
MATHJAX_PARTS = ["tex-mml-chtml.js", "output/chtml", "input/tex/extensions", "input/mml", "a11y", "ui",
                 "sre", "adaptors"]


def _is_lesson(docname: str) -> bool:
    return docname.startswith("lessons/")


# --- assets --------------------------------------------------------------------------------


def plotly_js_path() -> Path:
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
    if not path.is_file():
        raise FileNotFoundError(f"plotly.js not found at {path}: reinstall the plotly package")
    return path


def mathjax_dir() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("sphinx-mathjax-offline")
    except PackageNotFoundError as err:
        raise FileNotFoundError("MathJax is served from the sphinx-mathjax-offline package: "
                                "pip install -e '.[book]'") from err
    path = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (path / "tex-mml-chtml.js").is_file():
        raise FileNotFoundError(f"MathJax not found at {path}")
    return path


def _copy(src: Path, dst: Path) -> None:
    """Copy a file or a folder, skipping files whose size and time already match."""
    files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
    for f in files:
        target = dst if src.is_file() else dst / f.relative_to(src)
        st = f.stat()
        if target.is_file() and target.stat().st_size == st.st_size and target.stat().st_mtime >= st.st_mtime:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)


def favicon_ico(size: int = 32, rgb: tuple[int, int, int] = (31, 119, 180)) -> bytes:
    """A one-colour square icon in ICO format (a PNG inside), for browsers that ask for /favicon.ico.

    The pages link ``_static/favicon.svg``; a page without that link (the root ``index.html``,
    a redirect) makes the browser ask for ``/favicon.ico``, which should not be a 404.
    """
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    header = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", size, size, 0, 0, 1, 32, len(png), 22)
    return header + png


def copy_assets(app: Sphinx, exc: Exception | None) -> None:
    if exc is not None or app.builder.format != "html":
        return
    (Path(app.outdir) / "favicon.ico").write_bytes(favicon_ico())
    static = Path(app.outdir) / "_static"
    _copy(plotly_js_path(), static / PLOTLY_JS)
    mj = mathjax_dir()
    for part in MATHJAX_PARTS:
        _copy(mj / part, static / "mathjax" / part)


# --- lesson pages ----------------------------------------------------------------------------


def add_launch_note(app: Sphinx, doctree: nodes.document) -> None:
    """Put a "Run this lesson yourself" note under each lesson's title."""
    docname = app.env.docname
    if not _is_lesson(docname):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    if section is None:
        return
    stem = Path(docname).name
    note = nodes.admonition(classes=["course-launch", "tip"])
    note += nodes.title("", "Run this lesson yourself")
    para = nodes.paragraph()
    para += nodes.Text("In a clone of the course, ")
    para += nodes.literal("", "make lab")
    para += nodes.Text(" starts JupyterLab on the lessons (the README says how to install); then ")
    para += nodes.reference("", "open this lesson in JupyterLab", refuri=f"{JUPYTERLAB_URL}{stem}.ipynb")
    para += nodes.Text(f" (or double-click {stem}.ipynb there), or ")
    para += nodes.reference("", "download the notebook", refuri=f"../_sources/{docname}.ipynb")
    para += nodes.Text(" (without outputs). Set TUTORLIB_PROFILE=smoke for a quick run.")
    note += para
    section.insert(1, note)


def _first_child(node: nodes.Element):
    """The first child that is not empty text (MyST starts some paragraphs with an empty one)."""
    return next((c for c in node.children if not (isinstance(c, nodes.Text) and not c.strip())), None)


def _title(section: nodes.section) -> str:
    first = _first_child(section)
    return first.astext().strip().lower() if isinstance(first, nodes.title) else ""


def mark_exercises(app: Sphinx, doctree: nodes.document) -> None:
    """Mark the lessons' exercise prompts, however a lesson writes them.

    A paragraph that starts with a bold "Exercise ...", or with any bold text directly inside an
    "Exercises" section, is boxed (``course-exercise``); a section titled "Exercise ..." gets
    ``course-exercise-section``.
    """
    if not _is_lesson(app.env.docname):
        return
    for section in doctree.findall(nodes.section):
        title = _title(section)
        if title.startswith("exercise") and not title.startswith("exercises"):
            section["classes"].append("course-exercise-section")
    for para in doctree.findall(nodes.paragraph):
        first = _first_child(para)
        if not isinstance(first, nodes.strong):
            continue
        in_exercises = isinstance(para.parent, nodes.section) and _title(para.parent).startswith("exercises")
        if in_exercises or first.astext().lstrip().lower().startswith("exercise"):
            para["classes"].append("course-exercise")


class SolutionPrompts(SphinxPostTransform):
    """Label the toggle of ``solution`` cells "Show the solution" (before myst-nb wraps them).

    The code cell just before a solution cell is the one the learner completes (the stub):
    it gets the class ``course-exercise-stub``.
    """

    default_priority = 198  # myst-nb's HideInputCells runs at 199
    formats = ("html",)

    def run(self, **kwargs) -> None:
        cells = [n for n in self.document.findall(nodes.container) if n.get("nb_element") == "cell_code"]
        for i, node in enumerate(cells):
            if "tag_solution" not in node.get("classes", []):
                continue
            if node.get("hide_mode"):
                node["prompt_show"] = "Show the solution"
                node["prompt_hide"] = "Hide the solution"
            before = cells[i - 1] if i > 0 else None
            if before is not None and "tag_solution" not in before.get("classes", []):
                before["classes"].append("course-exercise-stub")  # the cell the learner completes


def offer_notebook(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Write the lesson's notebook into ``_sources`` and let the theme's download menu offer it."""
    if doctree is None or not _is_lesson(pagename) or app.builder.format != "html":
        return
    import jupytext

    source = Path(app.env.doc2path(pagename))
    target = Path(app.outdir) / "_sources" / f"{pagename}.ipynb"
    if not target.is_file() or target.stat().st_mtime < source.stat().st_mtime:
        target.parent.mkdir(parents=True, exist_ok=True)
        nb = jupytext.read(source, fmt="py:percent")
        jupytext.write(nb, target, fmt="ipynb")
    context["ipynb_source"] = f"{pagename}.ipynb"


def page_extras(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """Load plotly.js on pages with figures; add the "Open in JupyterLab" header button to lessons."""
    if doctree is None:
        return
    if "Plotly.newPlot" in context.get("body", ""):
        app.add_js_file(PLOTLY_JS, priority=450)
    if _is_lesson(pagename) and "header_buttons" in context:
        context["header_buttons"].append({
            "type": "link",
            "url": f"{JUPYTERLAB_URL}{Path(pagename).name}.ipynb",
            "tooltip": "Open in JupyterLab (start it with `make lab` in your clone)",
            "icon": "fas fa-rocket",
            "label": "open-in-jupyterlab-button",
        })


def switch_off_thebe(app: Sphinx) -> None:
    """Disconnect sphinx-thebe (Jupyter Book loads it always): the book has no live kernels.

    Its page scripts point at a CDN, and sphinx-thebe 0.3 adds its inline configuration twice
    under Sphinx 7, which throws "Identifier 'THEBE_JS_URL' has already been declared" on every
    page. Running a lesson live is JupyterLab's job (``make lab``).
    """
    for event in ("env-before-read-docs", "doctree-resolved"):
        for listener in list(app.events.listeners.get(event, [])):
            if getattr(listener.handler, "__module__", "").startswith("sphinx_thebe"):
                app.disconnect(listener.id)


def setup(app: Sphinx) -> dict:
    switch_off_thebe(app)
    app.connect("doctree-read", add_launch_note)
    app.connect("doctree-read", mark_exercises)
    app.add_post_transform(SolutionPrompts)
    app.connect("html-page-context", offer_notebook, priority=400)  # before the theme's buttons (501)
    app.connect("html-page-context", page_extras, priority=600)  # after them
    app.connect("build-finished", copy_assets)
    # A new version of this file re-reads every page (Sphinx keys its cache on env_version).
    env_version = int(hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8], 16)
    return {"version": "1.0", "env_version": env_version, "parallel_read_safe": True, "parallel_write_safe": True}
