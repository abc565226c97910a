"""The library's layers (CONTRIBUTING.md, "Layers"): imports only go down, and a module loads only
what its concept needs."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tutorlib"

LAYERS = {
    1: ["utils", "device", "files", "data", "mnist", "checkpoints", "claims"],
    2: ["schedulers", "paths", "couplings", "models"],
    3: ["losses", "solvers", "likelihood", "discrete", "guidance", "ddpm", "interpolants", "reflow", "fewstep",
        "simplex", "manifolds", "coupling_flows"],
    4: ["train", "metrics", "judge", "recipes", "distributed", "text", "methods", "latent"],
    5: ["plotting", "widgets", "exercises"],
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def _modules() -> dict[str, Path]:
    mods = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    for p in (PACKAGE / "exercises").glob("*.py"):
        mods[f"exercises.{p.stem}" if p.stem != "__init__" else "exercises"] = p
    return mods


def _tutorlib_imports(path: Path) -> set[str]:
    """The tutorlib modules a file imports, anywhere in it (top level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tutorlib"):
            parts = node.module.split(".")
            if len(parts) == 1:  # from tutorlib import x
                out.update(a.name for a in node.names)
            else:
                out.add(parts[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split(".")[1] for a in node.names if a.name.startswith("tutorlib."))
    return out


def test_every_module_has_a_layer():
    top = {m.split(".")[0] for m in _modules()}
    assert top <= set(LAYER_OF), f"modules without a layer (add them to CONTRIBUTING.md and here): {top - set(LAYER_OF)}"
    text = (ROOT / "CONTRIBUTING.md").read_text()
    for name in LAYER_OF:
        assert f"`{name}`" in text, f"CONTRIBUTING.md's layer table does not name `{name}`"


@pytest.mark.parametrize("module", sorted(_modules()))
def test_imports_only_go_down(module):
    path = _modules()[module]
    mine = LAYER_OF[module.split(".")[0]]
    for other in _tutorlib_imports(path) - {module.split(".")[0]}:
        assert LAYER_OF[other] <= mine, (f"tutorlib.{module} (layer {mine}) imports tutorlib.{other} "
                                         f"(layer {LAYER_OF[other]}): imports must go down")


def _loaded_by(module: str) -> set[str]:
    code = (f"import sys, json; import tutorlib.{module}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tutorlib') or m in "
            "('plotly', 'ipywidgets', 'jupyter_client'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("module, must_not_load", [
    ("metrics", {"tutorlib.judge", "tutorlib.mnist", "tutorlib.checkpoints", "tutorlib.models"}),
    ("data", {"tutorlib.mnist"}),
    ("paths", {"tutorlib.mnist", "tutorlib.models"}),
    ("checkpoints", {"tutorlib.mnist"}),
    ("guidance", {"tutorlib.mnist", "tutorlib.metrics", "tutorlib.models"}),
    ("solvers", {"tutorlib.mnist", "tutorlib.models", "plotly"}),
    ("train", {"tutorlib.mnist", "tutorlib.models", "plotly"}),
    ("exercises", {"plotly", "tutorlib.mnist"}),
    ("manifolds", {"tutorlib.mnist", "tutorlib.metrics", "tutorlib.train", "plotly"}),
    ("coupling_flows", {"tutorlib.mnist", "tutorlib.models", "tutorlib.train", "plotly"}),
])
def test_a_module_loads_only_what_its_concept_needs(module, must_not_load):
    loaded = _loaded_by(module)
    assert not loaded & must_not_load, f"importing tutorlib.{module} loads {sorted(loaded & must_not_load)}"


def test_the_package_holds_no_tooling():
    names = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert not names & {"bench", "course", "book", "verify"}, names & {"bench", "course", "book", "verify"}
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert "subprocess" not in text, f"{path.relative_to(ROOT)} runs subprocesses: tooling belongs beside the package"
