"""Pointers that must lead somewhere: no private helper nobody calls, no path to a file that is not there,
no citation of a design document the repository does not hold."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("sketchmind", "tools", "examples")
# Paths from the repository root, as docstrings and comments name them (``tools/bench.py``).
REPO_PATH = re.compile(
    r"\b((?:sketchmind|tools|tests|examples|policies|configs|data|docs)/[\w./-]*\.(?:py|yaml|md|json))\b"
)
PLACEHOLDER = re.compile(r"\b(?!README\b|LICENSE\b)[A-Z]{2,}\b")  # ``policies/NAME.yaml`` names no one file


def _sources() -> list[Path]:
    return sorted(p for d in SOURCE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def test_every_private_helper_is_called() -> None:
    unused = []
    for path in sorted((ROOT / "sketchmind").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for node in ast.parse(text).body:
            name = getattr(node, "name", "")
            private = name.startswith("_") and not name.startswith("__")
            if private and len(re.findall(rf"\b{re.escape(name)}\b", text)) < 2:  # its definition only
                unused.append(f"{path.relative_to(ROOT)}: {name}")
    assert unused == []


def test_paths_named_in_the_code_exist() -> None:
    missing = [
        f"{path.relative_to(ROOT)}: {match}"
        for path in _sources()
        for match in REPO_PATH.findall(path.read_text(encoding="utf-8"))
        if not (ROOT / match).exists() and not PLACEHOLDER.search(match)
    ]
    assert missing == []


def test_nothing_cites_a_design_document_or_a_folder_outside_the_repository() -> None:
    design, outside = "DESIGN" + ".md", "../" + "shared"  # spelled apart so this file does not match itself
    files = [
        *_sources(),
        *(ROOT / "tests").glob("*.py"),
        ROOT / "README.md",
        ROOT / "Makefile",
        ROOT / "pyproject.toml",
    ]
    assert [str(p.relative_to(ROOT)) for p in files if design in p.read_text(encoding="utf-8")] == []
    assert [p for p in files if outside in p.read_text(encoding="utf-8")] == []
