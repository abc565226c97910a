"""The built book in a real browser: headless Chromium, driven over the DevTools protocol.

The smoke-profile site (built once per run by the ``smoke_book`` fixture) is served on
127.0.0.1 by a thread running ``http.server``. Every page is opened in headless Chromium, and:

* no JavaScript error is thrown or logged, and no request fails;
* no request goes to a host other than 127.0.0.1 (the site works offline);
* every plotly figure of a page is drawn (``.js-plotly-plot .main-svg``);
* math is typeset (MathJax's ``mjx-container`` elements) on pages with math;
* every widget output is drawn in its saved state (``_static/course-widgets.js``);
* solutions are folded behind a toggle that opens, and exercises are marked;
* on a lesson with an animated figure, a mouse click on the slider's rail moves it to another
  frame and the plot's data change.

Screenshots of two pages are kept in a temporary folder whose path is printed (CI artefacts).
Chromium comes from Debian (``apt-get install chromium``; .ci/run installs it); without it the
test is skipped, except in CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

# pytest-xdist: the browser checks run on the worker that builds the book (tests/test_book.py)
pytestmark = pytest.mark.xdist_group("book")

websocket = pytest.importorskip("websocket", reason="websocket-client is needed: pip install -e '.[test]'")

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
         "--disable-extensions", "--mute-audio", "--window-size=1280,1000", "--remote-allow-origins=*"]
LOCAL_SCHEMES = {"data", "blob", "about", "chrome-error"}  # requests that never leave the page
PAGE_TIMEOUT_S = 90


def _find_chromium() -> str | None:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


class Tab:
    """One page target of Chromium over a DevTools websocket: commands, and the events seen."""

    def __init__(self, ws_url: str):
        self.ws = websocket.create_connection(ws_url, timeout=PAGE_TIMEOUT_S, suppress_origin=True)
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, **params) -> dict:
        self.next_id += 1
        my_id = self.next_id
        self.ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == my_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if "method" in msg:
                self.events.append(msg)

    def pump(self, seconds: float) -> None:
        """Collect events for a while."""
        end = time.monotonic() + seconds
        self.ws.settimeout(0.05)
        try:
            while time.monotonic() < end:
                try:
                    msg = json.loads(self.ws.recv())
                except websocket.WebSocketTimeoutException:
                    continue
                if "method" in msg:
                    self.events.append(msg)
        finally:
            self.ws.settimeout(PAGE_TIMEOUT_S)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = PAGE_TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.evaluate(expression):
                return True
            self.pump(0.25)
        return False

    def open(self, url: str) -> None:
        self.events.clear()
        self.send("Page.navigate", url=url)
        end = time.monotonic() + PAGE_TIMEOUT_S
        while not any(e["method"] == "Page.loadEventFired" for e in self.events):
            assert time.monotonic() < end, f"{url} did not finish loading in {PAGE_TIMEOUT_S} s"
            self.pump(0.1)
        # a load event can come before the document has a body (a late event, a redirecting page)
        ready = "document.readyState === 'complete' && document.body !== null"
        while not self.evaluate(ready):
            assert time.monotonic() < end, f"{url} did not finish loading in {PAGE_TIMEOUT_S} s"
            self.pump(0.1)

    def click(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def screenshot(self, path: Path) -> None:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def problems(self, allowed_host: str) -> list[str]:
        """JavaScript errors, failed requests and requests to other hosts, since the last ``open``."""
        out = []
        for e in self.events:
            m, p = e["method"], e.get("params", {})
            if m == "Runtime.exceptionThrown":
                d = p["exceptionDetails"]
                out.append(f"JS exception: {d.get('exception', {}).get('description') or d.get('text')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
            elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
                out.append(f"browser log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent":
                url = urlparse(p["request"]["url"])
                if url.scheme not in LOCAL_SCHEMES and url.hostname != allowed_host:
                    out.append(f"request to another host: {p['request']['url']}")
            elif m == "Network.loadingFailed" and not p.get("canceled"):
                out.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
            elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
                out.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
        return out

    def close(self) -> None:
        self.ws.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the problems list reports failed requests
        pass


@pytest.fixture(scope="module")
def site(request):
    """The built site, served on 127.0.0.1 by a thread; yields its folder and base URL.

    The smoke build by default; ``TUTORLIB_BOOK_HTML=build/book-standard/_build/html`` checks
    another build instead (e.g. the standard book, after ``make course``).
    """
    other = os.environ.get("TUTORLIB_BOOK_HTML")
    html = Path(other).resolve() if other else request.getfixturevalue("smoke_book").require_ok()
    assert (html / "intro.html").is_file(), f"no built book in {html}"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def tab():
    """A headless Chromium page with the Page, Runtime, Network and Log domains enabled."""
    exe = _find_chromium()
    if exe is None:
        msg = "no Chromium found (apt-get install chromium, or set CHROMIUM=/path/to/chrome)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg + "; CI must install it (.ci/run)")
        pytest.skip(msg)
    profile = tempfile.mkdtemp(prefix="tutorlib-chromium-")
    proc = subprocess.Popen([exe, *FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        end = time.monotonic() + 60
        while not (port_file.is_file() and port_file.read_text().strip()):
            assert proc.poll() is None, f"{exe} exited with code {proc.returncode}"
            assert time.monotonic() < end, f"{exe} did not open its DevTools port in 60 s"
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        t = Tab(pages[0]["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network", "Log"):
            t.send(f"{domain}.enable")
        yield t
        t.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def shots() -> Path:
    """A temporary folder for the screenshots (kept after the run: CI artefacts)."""
    return Path(tempfile.mkdtemp(prefix="tutorlib-book-screenshots-"))


def _pages(html: Path) -> list[str]:
    """Every page of the site, relative to its root (the landing page first)."""
    pages = sorted(str(p.relative_to(html)) for p in html.rglob("*.html") if not p.relative_to(html).parts[0].startswith("_"))
    return sorted(pages, key=lambda p: (p != "intro.html", p))


def _count(html_text: str, pattern: str) -> int:
    return len(re.findall(pattern, html_text))


@pytest.mark.slow
def test_every_page_works_offline_with_plots_and_math(site, tab, shots, capsys):
    html, base = site
    start = time.perf_counter()
    report = {}
    for page in _pages(html):
        text = (html / page).read_text(encoding="utf-8")
        n_plots = _count(text, r'class="plotly-graph-div"')
        has_math = 'class="math' in text
        tab.open(base + page)
        if n_plots:
            drawn = f"document.querySelectorAll('.js-plotly-plot .main-svg').length > 0 && " \
                    f"document.querySelectorAll('.js-plotly-plot').length >= {n_plots}"
            assert tab.wait_for(drawn), f"{page}: only " + str(tab.evaluate(
                "document.querySelectorAll('.js-plotly-plot').length")) + f" of {n_plots} plotly figures were drawn"
        if has_math:
            assert tab.wait_for("document.querySelectorAll('mjx-container').length > 0"), f"{page}: math was not typeset"
        n_widgets = _count(text, r'type="application/vnd.jupyter.widget-view\+json"')
        if n_widgets:  # drawn from the embedded state by _static/course-widgets.js
            assert tab.wait_for(f"document.querySelectorAll('.course-widget').length >= {n_widgets}"), \
                f"{page}: {n_widgets} widget outputs were not drawn"
            assert tab.evaluate("document.querySelectorAll('.course-widget-missing').length") == 0, \
                f"{page}: a widget output could not be drawn from its saved state"
        n_solutions = _count(text, r'class="cell tag_solution')
        if n_solutions:  # folded behind a toggle, which opens; the exercise is marked
            folded = """[...document.querySelectorAll('.cell.tag_solution')].filter(c => {
                const d = c.querySelector('details'); const code = c.querySelector('.cell_input');
                return d && !d.open && !code.checkVisibility(); }).length"""
            assert tab.evaluate(folded) == n_solutions, f"{page}: not every solution is folded behind a toggle"
            opened = """(() => { const c = document.querySelector('.cell.tag_solution');
                c.querySelector('details > summary').click();
                return c.querySelector('.cell_input').checkVisibility(); })()"""
            assert tab.evaluate(opened), f"{page}: the solution toggle does not open"
            assert tab.evaluate("document.querySelectorAll('.course-exercise, .course-exercise-section, "
                                ".course-exercise-stub').length") >= n_solutions, f"{page}: exercises are not marked"
        tab.pump(0.5)  # late errors and requests
        problems = tab.problems("127.0.0.1")
        assert not problems, f"{page}:\n" + "\n".join(problems[:20])
        report[page] = (n_plots, has_math)
        if page in ("intro.html", "lessons/00_setup.html"):
            tab.screenshot(shots / page.replace("/", "_").replace(".html", ".png"))
    lessons = [p for p in report if p.startswith("lessons/")]
    assert lessons, "no lesson pages were found in the built site"
    assert any(report[p][0] for p in lessons), "no lesson page has a plotly figure"
    with capsys.disabled():
        print(f"\nbrowser: {len(report)} pages checked in {time.perf_counter() - start:.0f} s; "
              f"screenshots in {shots}")


SLIDER_PLOT = """(() => {
  const gds = [...document.querySelectorAll('.js-plotly-plot')];
  const i = gds.findIndex(g => g._fullLayout && (g._fullLayout.sliders || []).length &&
                               g._transitionData && g._transitionData._frames.length > 1);
  if (i >= 0) { gds[i].id = gds[i].id || 'course-slider-plot'; gds[i].scrollIntoView({block: 'center'}); }
  return i >= 0 ? gds[i].id : null;
})()"""


@pytest.mark.slow
def test_a_slider_moves_its_figure(site, tab, shots, capsys):
    html, base = site
    candidates = [p for p in _pages(html) if p.startswith("lessons/")
                  and '"sliders"' in (html / p).read_text(encoding="utf-8")]
    assert candidates, "no lesson page has a figure with a slider"
    page = candidates[0]
    tab.open(base + page)
    plot_id = None
    end = time.monotonic() + PAGE_TIMEOUT_S
    while plot_id is None and time.monotonic() < end:
        plot_id = tab.evaluate(SLIDER_PLOT)
        tab.pump(0.25)
    assert plot_id, f"{page}: no drawn figure with a slider and frames"
    gd = f"document.getElementById({json.dumps(plot_id)})"
    data = f"JSON.stringify({gd}.data.map(t => [t.x, t.y, t.z]))"
    before = tab.evaluate(data)
    assert tab.evaluate(f"{gd}._fullLayout.sliders[0].active") == 0
    tab.pump(0.5)
    rail = tab.evaluate(f"""(() => {{
        const r = {gd}.querySelector('.slider-container .slider-rail-touch-rect, .slider-container .slider-rail-rect')
                      .getBoundingClientRect();
        return [r.left, r.right, r.top, r.bottom];
    }})()""")
    _left, right, top, bottom = rail
    tab.click(right - 3, (top + bottom) / 2)  # the last step
    assert tab.wait_for(f"{gd}._fullLayout.sliders[0].active > 0", timeout=20), \
        f"{page}: clicking the slider did not move it"
    assert tab.wait_for(f"{data} !== {json.dumps(before)}", timeout=20), \
        f"{page}: the slider moved but the plot's data did not change"
    assert not tab.problems("127.0.0.1"), tab.problems("127.0.0.1")
    tab.screenshot(shots / (page.replace("/", "_").replace(".html", "") + "_slider.png"))
    with capsys.disabled():
        print(f"\nbrowser: the slider of {page} moved to step "
              f"{tab.evaluate(f'{gd}._fullLayout.sliders[0].active')}; screenshot in {shots}")


READ_CHECKS = r"""(() => {
  const out = {rawTex: [], wide: [], wideMath: [], titleUnderModebar: [], legendUnderModebar: [], emptyFigures: [], progress: []};
  const article = document.querySelector('article') || document.querySelector('main') || document.body;
  const column = article.getBoundingClientRect().width;
  // raw TeX: a $ or a \command left in the page's prose (not in math, code or cell output)
  const skip = 'mjx-container, script, style, pre, code, svg, .math, .MathJax, .cell_input, .cell_output, ' +
               '.highlight, .output, .course-widget, .plotly-graph-div, .headerlink, noscript';
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement && n.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  for (let n; (n = walker.nextNode());) {
    const t = n.textContent;
    const m = t.match(/\$|\\[a-zA-Z]{2,}/);
    if (m) out.rawTex.push(t.trim().slice(Math.max(0, m.index - 30), m.index + 40));
  }
  // figures and widgets that do not fit the text column
  for (const el of article.querySelectorAll('.js-plotly-plot, .course-widget, .cell_output img')) {
    const w = el.getBoundingClientRect().width;
    if (w > column + 2) out.wide.push(`${el.className.toString().split(' ')[0]} ${Math.round(w)} px > ${Math.round(column)} px`);
    // ... nor sit in a box of the column that scrolls sideways to show them (a scrollbar under the figure)
    for (let box = el.parentElement; box && box !== article; box = box.parentElement) {
      const ox = getComputedStyle(box).overflowX;
      if ((ox === 'auto' || ox === 'scroll') && box.scrollWidth > box.clientWidth + 2) {
        out.wide.push(`${el.className.toString().split(' ')[0]} ${Math.round(w)} px scrolls in a ` +
                      `${box.clientWidth} px box (${box.className.toString().split(' ')[0] || box.tagName})`);
        break;
      }
    }
  }
  // display equations wider than the column (MathJax gives them a sideways scrollbar: the end is hidden)
  for (const eq of article.querySelectorAll('mjx-container[display="true"]')) {
    if (eq.scrollWidth > eq.clientWidth + 2 || eq.getBoundingClientRect().width > column + 2)
      out.wideMath.push(`${eq.scrollWidth} px in ${eq.clientWidth} px: ` +
                        (eq.querySelector('mjx-assistive-mml, math') || eq).textContent.trim().slice(0, 50));
  }
  for (const gd of article.querySelectorAll('.js-plotly-plot')) {
    const title = gd.querySelector('.gtitle'), bar = gd.querySelector('.modebar');
    if (title && bar && title.textContent.trim()) {
      const a = title.getBoundingClientRect(), b = bar.getBoundingClientRect();
      const overlap = a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
      if (overlap && b.width > 0) out.titleUnderModebar.push(title.textContent.trim().slice(0, 60));
    }
    // the mode bar (shown on hover) must not cover a legend entry either: a reader hovers to read and click it
    if (bar) {
      const b = bar.getBoundingClientRect();
      for (const entry of gd.querySelectorAll('.legend .traces')) {
        const a = entry.getBoundingClientRect();
        if (b.width > 0 && a.width > 0 && a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom)
          out.legendUnderModebar.push(`${entry.textContent.trim().slice(0, 30) || '(entry)'} in ` +
              `${((gd.layout && gd.layout.title && gd.layout.title.text) || '(untitled)').slice(0, 50)}`);
      }
    }
    // plotly.py 6 sends arrays as {dtype, bdata} (base64); either form counts when it holds values
    const data = gd.data || [];
    const has = v => v && ((v.length > 0) || (typeof v.bdata === 'string' && v.bdata.length > 0));
    const filled = data.some(t => ['x', 'y', 'z', 'values', 'r'].some(k => has(t[k])));
    if (!filled) out.emptyFigures.push((gd.layout && gd.layout.title && gd.layout.title.text) || '(untitled)');
  }
  const text = article.innerText;
  const bar = text.match(/\d{1,3}%\s*\|?[^\n]{0,40}\d+\/\d+\s*\[\d+:\d+/);
  if (bar) out.progress.push(bar[0]);
  return out;
})()"""


TILE_PX = 8000  # the tallest viewport a page is captured in at once (Chromium draws at most about 16k px)


def _full_page_pngs(tab) -> list[bytes]:
    """The whole page, top to bottom, in tiles of at most ``TILE_PX`` pixels: the viewport made that tall (at the
    window's width), scrolled to each tile, captured, restored. (Capturing beyond the viewport with a clip drew
    long pages shifted by the current scroll offset, their left edge cut, and stopped at about 16k pixels.)"""
    tab.evaluate("window.scrollTo(0, 0)")
    metrics = tab.send("Page.getLayoutMetrics")
    width = int((metrics.get("cssLayoutViewport") or metrics["layoutViewport"])["clientWidth"])
    height = int((metrics.get("cssContentSize") or metrics["contentSize"])["height"])
    tile = min(max(height, 1), TILE_PX)
    tab.send("Emulation.setDeviceMetricsOverride", width=width, height=tile, deviceScaleFactor=1, mobile=False)
    shots = []
    try:
        tab.pump(0.3)
        for top in range(0, max(height, 1), tile):
            tab.evaluate(f"window.scrollTo(0, {top})")
            tab.pump(0.1)
            shots.append(base64.b64decode(tab.send("Page.captureScreenshot", format="png")["data"]))
    finally:
        tab.send("Emulation.clearDeviceMetricsOverride")
    return shots


def _screenshot_folder(html: Path) -> Path:
    """``build/screenshots/<build>/``: full-page screenshots to flip through (build/ is not committed)."""
    root = Path(__file__).resolve().parents[1] / "build" / "screenshots" / html.parents[1].name
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.mark.slow
def test_every_page_reads_as_it_should(site, tab, capsys):
    """What a reader needs, on every page: no raw TeX in the text, figures that fit the column, titles
    and legend entries clear of the mode bar, no frozen progress bars, no empty figures; a full-page screenshot of
    each."""
    html, base = site
    folder = _screenshot_folder(html)
    failures = []
    for page in _pages(html):
        tab.open(base + page)
        text = (html / page).read_text(encoding="utf-8")
        if 'class="plotly-graph-div"' in text:
            tab.wait_for("document.querySelectorAll('.js-plotly-plot .main-svg').length > 0")
        if 'class="math' in text:
            tab.wait_for("document.querySelectorAll('mjx-container').length > 0")
        tab.pump(0.5)
        found = tab.evaluate(READ_CHECKS)
        for kind, items in found.items():
            for item in items[:5]:
                failures.append(f"{page}: {kind}: {item}")
        stem = page.replace("/", "_").replace(".html", "")
        for k, png in enumerate(_full_page_pngs(tab)):
            (folder / (f"{stem}.png" if k == 0 else f"{stem}-{k + 1}.png")).write_bytes(png)
    with capsys.disabled():
        print(f"\nfull-page screenshots of {len(_pages(html))} pages: {folder}")
    assert not failures, "\n".join(failures)
