"""The two install routes (pip: pyproject.toml, conda: environment.yml) stay in step."""

import re
from pathlib import Path

import yaml

try:
    import tomllib
except ImportError:  # Python 3.10: pytest brings tomli
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch"}  # pip name -> conda-forge name where they differ


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", req)
    assert m, req
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta["dependencies"])
    for extra in ("test", "book"):
        reqs += meta["optional-dependencies"][extra]
    return dict(_split(r) for r in reqs)


def _environment() -> tuple[dict[str, str], list]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip += dep.get("pip", [])
        else:
            name, spec = _split(dep)
            conda[name] = spec
    return conda, pip


def test_environment_yml_matches_pyproject():
    py = {CONDA_NAMES.get(k, k): v for k, v in _pyproject().items()}
    conda, pip = _environment()
    conda = {k: v for k, v in conda.items() if k not in ("python", "pip")}
    # Packages that conda-forge lacks are listed in the pip section instead.
    conda.update(_split(p) for p in pip if not p.startswith("-e "))
    only_py = sorted(set(py) - set(conda))
    only_conda = sorted(set(conda) - set(py))
    assert not only_py, f"in pyproject.toml but not environment.yml: {only_py}"
    assert not only_conda, f"in environment.yml but not pyproject.toml: {only_conda}"
    differ = {k: (py[k], conda[k]) for k in py if py[k] != conda[k]}
    assert not differ, f"version ranges differ (pyproject, environment.yml): {differ}"
    assert any(p.startswith("-e .") for p in pip), "environment.yml must pip-install the package itself"


def test_torch_requirement_is_a_range_not_a_pin():
    spec = _pyproject()["torch"]
    assert spec.startswith(">=") and "==" not in spec, spec


def test_python_floor_agrees():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda, _ = _environment()
    assert meta["requires-python"] == conda["python"] == ">=3.10"
