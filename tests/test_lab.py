"""`make lab`: JupyterLab on the lessons opens the py:percent sources as notebooks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import lab_settings  # noqa: E402


def test_make_install_writes_the_lab_settings():
    makefile = (ROOT / "Makefile").read_text()
    assert "scripts/lab_settings.py" in makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    assert "--allow-root" in makefile


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.slow
def test_the_lab_serves_a_lesson_as_a_notebook_and_opens_it_as_one(tmp_path):
    pytest.importorskip("jupyterlab")
    lab_settings.write_overrides()  # what `make install` does, idempotent
    port, token = _free_port(), "course-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"))
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.token={token}", "--ServerApp.open_browser=False", f"--ServerApp.root_dir={ROOT}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    lab = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> dict:
        req = urllib.request.Request(base + path, headers={"Authorization": f"token {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    try:
        for _ in range(120):
            try:
                get("/api/status")
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"the lab did not start: {lab.stderr.read() if lab.poll() is not None else 'no answer'}")
        settings = get("/lab/api/settings/@jupyterlab/docmanager-extension:plugin")
        # overrides.json becomes the schema's default; a user's own setting would take precedence
        viewers = {**settings["schema"]["properties"]["defaultViewers"]["default"],
                   **settings["settings"].get("defaultViewers", {})}
        assert viewers.get("python") == "Jupytext Notebook", viewers
        model = get("/api/contents/lessons/03_flow_matching.py?type=notebook&content=1")
        assert model["type"] == "notebook"
        cells = model["content"]["cells"]
        assert any(c["cell_type"] == "markdown" and "Flow matching" in "".join(c["source"]) for c in cells)
        assert any(c["cell_type"] == "code" for c in cells)
    finally:
        lab.terminate()
        try:
            lab.wait(10)
        except subprocess.TimeoutExpired:
            lab.kill()
