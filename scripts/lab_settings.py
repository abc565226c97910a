"""Make the course's JupyterLab open the py:percent lessons as notebooks on a double click.

Writes JupyterLab's ``overrides.json`` into the environment the lab runs from
(``<sys.prefix>/share/jupyter/lab/settings/overrides.json``), setting the default viewer of Python
files to jupytext's "Jupytext Notebook": the lessons are ``.py`` sources, and without this the lab
opens them in its text editor. The learner's own settings (``~/.jupyter``) are left alone; a key
already in the file is kept. ``make install`` runs it.

    python scripts/lab_settings.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PLUGIN = "@jupyterlab/docmanager-extension:plugin"
VIEWERS = {"python": "Jupytext Notebook"}


def overrides_path(prefix: str | Path = sys.prefix) -> Path:
    return Path(prefix) / "share" / "jupyter" / "lab" / "settings" / "overrides.json"


def write_overrides(prefix: str | Path = sys.prefix) -> Path:
    path = overrides_path(prefix)
    data = json.loads(path.read_text()) if path.is_file() else {}
    viewers = data.setdefault(PLUGIN, {}).setdefault("defaultViewers", {})
    for kind, viewer in VIEWERS.items():
        viewers.setdefault(kind, viewer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


if __name__ == "__main__":
    print(f"JupyterLab opens .py lessons as notebooks: {write_overrides()}")
