"""Replace a generated block of the README in place, between ``<!-- NAME -->`` and ``<!-- /NAME -->``.

The benchmark tools write their tables this way, so the prose around a table stays hand-written.
"""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, name: str, body: str) -> None:
    """Put ``body`` between the ``name`` markers of ``path``; exits with one line if they are missing."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{path}: no {start} ... {end} block to replace")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    path.write_text(f"{head}{start}\n{body.strip()}\n{end}{tail}", encoding="utf-8")
