"""The package as a user gets it: a built wheel installed into a fresh virtualenv, used from elsewhere.

No network: the wheel is built with the setuptools already installed (no build isolation), installed
with ``--no-deps``, and the fresh environment borrows this one's dependencies through a ``.pth`` line
(torch is never resolved or downloaded). Sources are copied out first, so a stale ``build/`` in the
checkout can never leak into the wheel, and the test leaves nothing behind in the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
import zipfile
from pathlib import Path
from typing import Any

import pytest

from sketchmind.models.default import DEFAULT_POLICY

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "sketchmind", "policies")
QUESTION = "Find a safe path to the goal."


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project: dict[str, Any] = tomllib.load(handle)["project"]
        return project


def test_torch_has_a_lower_bound_not_an_exact_pin() -> None:
    """A user's own torch build must satisfy the wheel; exact pins live in constraints.txt and the Makefile."""
    deps = {d.split(">")[0].split("=")[0].split("<")[0].strip(): d for d in _pyproject()["dependencies"]}
    for name in ("torch", "torchvision"):
        assert "==" not in deps[name] and ">=" in deps[name], deps[name]
    assert "torch==" in (ROOT / "Makefile").read_text() and "\ntorch==" in (ROOT / "constraints.txt").read_text()


def test_extras_are_named_by_what_they_serve() -> None:
    extras = _pyproject()["optional-dependencies"]
    assert {"train", "demo", "mcp", "dev", "docs"} <= set(extras)
    assert not any(d.startswith("mcp") for d in extras["demo"])  # the MCP server is not the demo
    assert any(d.startswith("mcp") for d in extras["mcp"])


def _pip(*args: str) -> None:
    """This environment's pip with no package index: nothing is downloaded, torch least of all."""
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    done = subprocess.run([sys.executable, "-m", "pip", *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sketchmind wheel, built offline from a copy of the sources."""
    base = tmp_path_factory.mktemp("wheel")
    source = base / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    wheels = base / "wheels"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(source))
    (built,) = wheels.glob("sketchmind-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` folder of a fresh virtualenv holding only the built sketchmind wheel."""
    env = tmp_path_factory.mktemp("venv") / "env"
    venv.create(env, with_pip=False)  # pip comes from this environment (``--python``): no ensurepip wait
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # Dependencies come from this environment, appended after the new one's own site-packages, so the
    # installed wheel (not the editable checkout, whose finder .pth is never processed) is what imports.
    Path(purelib, "zz_borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _pip("--python", str(python), "install", "--no-deps", "-q", str(wheel))
    return env / "bin"


def test_the_wheel_carries_the_shipped_policy_and_the_vsp_examples(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for variant in ("draw", "latent"):
        assert f"sketchmind/policies/{DEFAULT_POLICY}/{variant}/model.safetensors" in names
        assert f"sketchmind/policies/{DEFAULT_POLICY}/{variant}/tokenizer.json" in names
    assert f"sketchmind/policies/{DEFAULT_POLICY}/README.md" in names and "sketchmind/policies/micro.yaml" in names
    assert any(n.startswith("sketchmind/tasks/assets/frozenlake/") and n.endswith(".png") for n in names)
    vsp = "sketchmind/tasks/assets/vsp-maze-examples/"
    assert f"{vsp}LICENSE" in names and f"{vsp}maps/level8/table/7.txt" in names


def _run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_import_is_torch_free_and_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    code = "import sys, sketchmind; print(sketchmind.__file__); print('torch' in sys.modules)"
    done = _run(installed, tmp_path, "python", "-c", code)
    assert done.returncode == 0, done.stderr
    where, torch_loaded = done.stdout.split()
    assert Path(where).is_relative_to(installed.parent) and torch_loaded == "False"


def test_tools_and_solve_from_another_directory(installed: Path, tmp_path: Path) -> None:
    tools = _run(installed, tmp_path, "sketchmind", "tools")
    assert tools.returncode == 0, tools.stderr
    assert {"box", "line"} <= {spec["function"]["name"] for spec in json.loads(tools.stdout)}

    locate = "from sketchmind.tasks.vsp import bundled_vsp; print(bundled_vsp())"
    bundled = Path(_run(installed, tmp_path, "python", "-c", locate).stdout.strip())
    assert bundled.is_relative_to(installed.parent) and (bundled / "LICENSE").is_file()
    image = bundled / "maps" / "level3" / "img" / "0.png"
    solved = _run(installed, tmp_path, "sketchmind", "solve", str(image), QUESTION, "--model", "expert", "--save", "t")
    assert solved.returncode == 0, solved.stderr
    assert solved.stdout.strip().splitlines()[-1].startswith("Action plan:")
    assert (tmp_path / "t" / "trace.json").is_file() and list((tmp_path / "t" / "views").glob("*.png"))


def test_bench_vsp_finds_the_bundled_examples(installed: Path, tmp_path: Path) -> None:
    args = ("sketchmind", "bench", "vsp", "--model", "expert", "--levels", "3", "--n", "1", "--out", "b")
    done = _run(installed, tmp_path, *args)
    assert done.returncode == 0, done.stderr
    assert "1 solved now" in done.stdout
