"""The README as the first page, and the docs site's sources (the site itself: ``make docs``, strict, in CI)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_short_and_keeps_the_test_command() -> None:
    assert len(README.splitlines()) <= 250
    assert "make test" in README and "\ntest: " in (ROOT / "Makefile").read_text(encoding="utf-8")
    assert not re.search(r"\bissues? #?\d+|(?<![\w/])#\d+\b", README, re.IGNORECASE)  # no issue numbers


def test_the_readme_links_lead_to_files_that_exist() -> None:
    targets = [t for t in LINK.findall(README) if "://" not in t]
    assert targets and [t for t in targets if not (ROOT / t).exists()] == []


def test_every_docs_page_is_in_the_nav_and_every_reference_names_a_module() -> None:
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    assert [p for p in pages if p not in nav] == []
    missing = []
    for page in (ROOT / "docs" / "reference").glob("*.md"):
        for module in re.findall(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.MULTILINE):
            path = ROOT / module.replace(".", "/")
            if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                missing.append(module)
    assert missing == []
