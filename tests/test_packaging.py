"""The two install routes (pip: pyproject.toml, conda: environment.yml) stay in step."""

import re
from pathlib import Path

import pytest
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
    for extra in ("lab", "test", "book"):
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


def test_every_subpackage_is_listed_for_the_wheel():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(meta["packages"])
    found = {"tutorlib"} | {f"tutorlib.{p.parent.name}" for p in (ROOT / "tutorlib").glob("*/__init__.py")}
    assert found <= listed, f"subpackages missing from [tool.setuptools] packages: {found - listed}"
    assert meta["package-dir"]["tutorlib.shipped"] == "data/checkpoints"


def test_core_dependencies_are_light():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_split(r)[0] for r in meta["dependencies"]}
    assert core == {"torch", "numpy", "scipy", "tqdm"}, core
    assert {"jupyterlab", "ipywidgets", "plotly"} <= {_split(r)[0] for r in meta["optional-dependencies"]["lab"]}


@pytest.mark.slow
def test_a_plain_wheel_install_works_outside_the_checkout(tmp_path, mnist_source):
    """pip install of the built wheel (not editable) into a fresh venv: the judge loads and scores real digits."""
    import os
    import site
    import subprocess
    import sys

    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
                    str(ROOT)], check=True, capture_output=True)
    (wheel,) = wheels.glob("tutorlib-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch, numpy, ...) from this environment; its editable tutorlib is not on that path
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q",
                    str(wheel)], check=True, capture_output=True)
    code = (
        "import tutorlib, pathlib; assert 'site-packages' in tutorlib.__file__, tutorlib.__file__\n"
        "from tutorlib.checkpoints import shipped_checkpoint_dir\n"
        "assert (shipped_checkpoint_dir() / 'judge_mnist.pt').is_file(), shipped_checkpoint_dir()\n"
        "from tutorlib.judge import judge_accuracy, load_judge\n"
        "from tutorlib.mnist import load_mnist\n"
        "x, y = load_mnist('test', limit=300, progress=False)\n"
        "acc = judge_accuracy(x, y, load_judge())\n"
        "print(acc); assert acc > 0.97, acc\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TUTORLIB_MNIST_MIRROR=str(mnist_source), TUTORLIB_DATA_DIR=str(tmp_path / "cache"))
    out = subprocess.run([str(py), "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_shipped_checkpoint_is_documented_with_its_sha256():
    folder = Path(__file__).resolve().parents[1] / "data" / "checkpoints"
    readme = (folder / "README.md").read_text(encoding="utf-8")
    for pt in sorted(folder.glob("*.pt")):
        side = pt.with_suffix(".sha256")
        assert side.is_file(), f"{pt.name} has no sidecar {side.name}"
        digest = side.read_text().split()[0]
        from tutorlib.files import file_sha256

        assert file_sha256(pt) == digest, f"{pt.name} does not match its sidecar"
        assert digest in readme, (f"data/checkpoints/README.md does not give {pt.name}'s sha256 {digest[:12]}...: "
                                  "add its entry (the command that made it, its training time and sha256)")
        assert pt.stem in readme, f"data/checkpoints/README.md does not name {pt.name}"
        assert pt.stat().st_size < 4_000_000, f"{pt.name} is {pt.stat().st_size / 1e6:.1f} MB: not a small checkpoint"
