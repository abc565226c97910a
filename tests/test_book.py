"""The book builds strictly (warnings are errors) in the smoke profile, with every lesson in it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_book_builds_strictly_in_smoke_profile():
    env = dict(os.environ, TUTORLIB_PROFILE="smoke")
    proc = subprocess.run(
        [sys.executable, "-m", "tutorlib.course", "build-book", "--strict"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    html = ROOT / "build" / "book-smoke" / "_build" / "html"
    for lesson in sorted((ROOT / "lessons").glob("[0-9]*.py")):
        page = html / "lessons" / f"{lesson.stem}.html"
        assert page.is_file(), f"{lesson.name} is missing from the book (add it to book/_toc.yml)"
        text = page.read_text()
        assert "Traceback" not in text, f"{page.name} shows an error"
    toc = (ROOT / "book" / "_toc.yml").read_text()
    assert all(f"lessons/{p.stem}" in toc for p in (ROOT / "lessons").glob("[0-9]*.py"))
