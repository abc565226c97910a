"""The book builds strictly (warnings are errors) in the smoke profile, with every lesson in it.

The build itself is the session fixture ``smoke_book`` (tests/conftest.py), shared with
tests/test_browser.py, so the book is built once per test run.
"""

import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book"))  # the book's build script, book/course.py (tooling, not the library)
import course  # noqa: E402


@pytest.mark.slow
@pytest.mark.xdist_group("book")  # with pytest-xdist, one worker builds the book and runs the browser checks
def test_book_builds_strictly_in_smoke_profile(smoke_book, request):
    if getattr(request.config.option, "loadgroup", False):  # under make test: this worker alone builds the book
        assert request.node.nodeid.endswith("@book"), f"xdist_group lost: {request.node.nodeid} (tests/conftest.py)"
    assert smoke_book.returncode == 0, smoke_book.log
    print(f"smoke book built in {smoke_book.seconds:.0f} s")
    html = smoke_book.html
    for lesson in course.lesson_sources():
        page = html / "lessons" / f"{lesson.stem}.html"
        assert page.is_file(), f"{lesson.name} is missing from the book (add it to book/_toc.yml)"
        text = page.read_text()
        assert "Traceback" not in text, f"{page.name} shows an error"
    toc = (ROOT / "book" / "_toc.yml").read_text()
    assert all(f"lessons/{p.stem}" in toc for p in (ROOT / "lessons").glob("[0-9]*.py"))


def test_toc_lists_every_lesson_in_order():
    """The committed toc is the generated one: a new lesson cannot be left out of the book."""
    lessons = course.read_lessons()
    committed = (ROOT / "book" / "_toc.yml").read_text()
    assert committed == course.toc_yaml(lessons), "book/_toc.yml is stale: run `python book/course.py pages`"
    files = [c["file"] for part in yaml.safe_load(committed)["parts"] for c in part["chapters"]]
    assert files[: len(lessons)] == [ls.docname for ls in lessons]
    for page in files[len(lessons):]:
        assert (ROOT / "book" / f"{page}.md").is_file(), f"book/{page}.md is missing"


def test_every_lesson_states_its_run_times_and_cites_the_reading_list():
    refs = yaml.safe_load((ROOT / "book" / "references.yml").read_text())["papers"]
    for ls in course.read_lessons():
        assert set(ls.run_time) == {"cpu", "gpu", "smoke"}, f"{ls.path.name}: run time line not understood: {ls.run_time}"
        cited = [course.match_paper(item, refs) for item in ls.references]
        assert any(cited), f"{ls.path.name} cites no paper of the reading list (book/references.yml) by title"


def test_run_time_and_reference_parsing():
    header = ("# # 07 · Solvers\n\n**Run time** (measured): CPU standard ≈ 3 min (cold) · GPU standard:\n"
              "not measured yet · smoke ≈ RUNTIME_SMOKE. The last cell prints it.\n\n**Loads:** nothing.")
    assert course.parse_run_time(header) == {"cpu": "3 min (cold)", "gpu": "not measured yet",
                                             "smoke": "not measured yet"}
    references = ("## References\n- *Flow Straight and Fast* (Liu et al.): reflow,\n  continued.\n"
                  "- Energy distance: Székely, *Energy statistics*.\n")
    cells = ["## Summary\n- a", references]
    items = course.parse_references(cells)
    assert items == ["*Flow Straight and Fast* (Liu et al.): reflow, continued.",
                     "Energy distance: Székely, *Energy statistics*."]
    papers = [{"title": "Flow Straight and Fast: Learning to Generate and Transfer Data with Rectified Flow"},
              {"title": "Flow Matching for Generative Modeling"}]
    assert course.match_paper(items[0], papers) is papers[0]
    assert course.match_paper(items[1], papers) is None
    assert course.match_paper("*Flow Matching*", papers) is None  # a prefix alone is not a match


def test_importing_tutorlib_plotting_leaves_plotly_global_state_alone():
    import subprocess

    code = ("import plotly.io as pio; before = pio.renderers.default; import tutorlib.plotting, tutorlib.widgets; "
            "assert pio.renderers.default == before, (before, pio.renderers.default); "
            "assert 'tutorlib_book' not in pio.renderers")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_book_renderer_leaves_plotly_js_and_cdns_out():
    """The book's figures load plotly.js from the site (book/_ext/course_book.py), not inline or from a CDN."""
    import plotly.graph_objects as go
    import plotly.io as pio

    import runpy

    from tutorlib import plotting

    default = pio.renderers.default
    try:
        startup = runpy.run_path(str(course.kernel_ipython_dir() / "profile_default" / "startup" / "00-course-book.py"))
        assert pio.renderers.default == startup["BOOK_RENDERER"] == "tutorlib_book"
    finally:
        pio.renderers.default = default
    fig = plotting.time_slider({0.0: torch.zeros(3, 2), 1.0: torch.ones(3, 2)})
    bundle = pio.renderers["tutorlib_book"].to_mimebundle(fig.to_dict())
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html and "addFrames" in html
    assert "http" not in html.replace("http://www.w3.org", ""), "the figure refers to another host"
    assert len(html) < 50_000, "plotly.js is embedded in the figure"
    assert isinstance(fig, go.Figure)


def test_execution_failures_reads_py_pages_from_the_cache(tmp_path, monkeypatch):
    """A failed .py page is named, on the build that ran it and on a later one that finds it in the cache.

    MyST-NB records .py pages with the default (ipynb) reader; the check must read them with jupytext,
    as the CI build found when it crashed reading the cache instead of naming the failed page.
    """
    import jupytext
    import nbformat
    from jupyter_cache import get_cache

    book = tmp_path / "book"
    (book / "lessons").mkdir(parents=True)
    good, bad = book / "lessons" / "good.py", book / "lessons" / "bad.py"
    good.write_text("# %%\nx = 1\n")
    bad.write_text("# %%\nraise ValueError('boom')\n")
    page = book / "results.md"  # a MyST notebook page, recorded with MyST-NB's reader
    page.write_text("---\njupytext:\n  text_representation:\n    format_name: myst\nkernelspec:\n  name: python3\n"
                    "  display_name: Python 3\n---\n# Results\n\n```{code-cell} python\ny = 2\n```\n")
    out = tmp_path / "out"
    cache = get_cache(str(out / "_build" / ".jupyter_cache"))
    for lesson in (good, bad):
        cache.add_nb_to_project(str(lesson))  # as MyST-NB does for a custom format: no read_data
    cache.add_nb_to_project(str(page), read_data={"name": "myst_nb_md", "type": "plugin"})
    for source in (good, page):
        executed = jupytext.read(source)
        executed.cells[-1].outputs = []
        executed.cells[-1].execution_count = 1
        path = tmp_path / f"{source.stem}_executed.ipynb"
        nbformat.write(executed, path)
        cache.cache_notebook_file(str(path), check_validity=False)
    from jupyter_cache.base import NbProjectRecord  # the traceback MyST-NB stores for a failed page
    NbProjectRecord.set_traceback(str(bad), "ValueError: boom", cache.db)
    monkeypatch.setattr(course, "BOOK", book)
    assert course.execution_failures(out) == [("lessons/bad.py", "ValueError: boom")]


def test_readme_lists_the_lessons_that_exist_and_no_others():
    """The README's lesson list is generated from lessons/: it names as available exactly what exists."""
    lessons = course.read_lessons()
    outline = course._load_yaml(course.BOOK / "course_outline.yml")
    block = course.readme_lessons(lessons, outline)
    readme = (course.ROOT / "README.md").read_text(encoding="utf-8")
    assert block in readme, "README.md's lesson list is stale: run python book/course.py pages"
    available = {line.split("|")[1].strip() for line in block.splitlines() if line.endswith("| available |")}
    assert available == {lesson.uid for lesson in lessons}
    for lesson in lessons:
        assert f"(lessons/{lesson.path.name})" in block


def test_results_page_links_the_lessons_that_exist_and_marks_the_others_planned():
    """Every "lesson NN" on the Results page is a link to that lesson, or says the lesson is planned."""
    import re

    text = (course.BOOK / "results.md").read_text(encoding="utf-8")
    have = {lesson.uid: lesson for lesson in course.read_lessons()}
    for m in re.finditer(r"(\{doc\}`)?([Ll]esson) (\d\d)", text):
        uid = m.group(3)
        before = text[max(0, m.start() - 12):m.start()]
        if m.group(1):
            target = text[m.end():text.index("`", m.end())]
            assert uid in have and target == f" <lessons/{have[uid].path.stem}>", (
                f"results.md links lesson {uid} to {target!r}: link only lessons that exist, as {{doc}}`lesson {uid} <lessons/...>`")
        elif "planned" in before:
            assert uid not in have, f"results.md calls lesson {uid} planned, but it exists: link it ({{doc}}`lesson {uid} <lessons/{have[uid].path.stem}>`)"
        else:
            raise AssertionError(f"results.md names lesson {uid} without a link: link it if it exists, else say 'the planned lesson {uid}'")
