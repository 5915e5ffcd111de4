"""Files that survive a crash or a full disk, and names that stay inside their directory.

- ``write_atomic`` / ``write_text_atomic`` / ``write_json_atomic``: a whole file written to a temporary
  name in the same directory, synced, then renamed over the target, so ``path`` is always either the
  old file or the whole new one. A failed write (disk full, file size limit) removes the temporary
  file and raises ``SaveError`` with one line naming the path and the reason.
- ``append_jsonl`` / ``read_jsonl``: append-only JSON lines, synced after each append; a reader drops a
  last line left unfinished by a killed writer (``drop_cut_line`` truncates it before appending more).
- ``replace_marked_block``: regenerate the part of a hand-written page (the docs' tables) between
  ``<!-- NAME -->`` and ``<!-- /NAME -->``, atomically.
- ``safe_child(root, name)``: the path of ``name`` inside ``root``; ``..``, absolute paths, NUL bytes and
  symlinks that lead out of ``root`` are refused with ``UnsafePathError``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any


class SaveError(OSError):
    """A file could not be written (disk full, size limit, permissions); the message is one line."""

    def __init__(self, message: str, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno  # OSError(message) alone would print "[Errno N]" in front of it otherwise


class UnsafePathError(ValueError):
    """A name that would place a file outside its directory; the message is one line."""


def _reason(error: OSError) -> str:
    return (error.strerror or str(error) or type(error).__name__).lower()


def write_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` so that ``path`` is always either the old file or the whole new one.

    Raises ``SaveError`` (one line) when the write fails; no temporary file is left behind then.
    """
    target = Path(path)
    tmp: str | None = None
    try:
        # The temporary file must be in the same directory: os.replace is atomic only within one filesystem.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as error:
        raise SaveError(f"cannot write {target} ({_reason(error)})", error.errno) from None
    finally:
        if tmp is not None:  # failed or interrupted (KeyboardInterrupt too): leave no partial file
            Path(tmp).unlink(missing_ok=True)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """``write_atomic`` for UTF-8 text."""
    return write_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike[str], value: Any, *, indent: int | None = 2) -> Path:
    """``value`` as JSON (UTF-8, a final newline), written atomically."""
    return write_text_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Whole JSON-lines file (one object per line), written atomically."""
    return write_text_atomic(path, "".join(json.dumps(dict(row)) + "\n" for row in rows))


def drop_cut_line(path: str | os.PathLike[str]) -> None:
    """Remove a last line left unfinished by a killed writer, so new lines start on a line of their own."""
    target = Path(path)
    if not target.is_file():
        return
    with target.open("rb+") as file:
        data = file.read()
        if data and not data.endswith(b"\n"):
            file.truncate(data.rfind(b"\n") + 1)
            file.flush()
            os.fsync(file.fileno())


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """Append rows as JSON lines and sync, so they are on disk (or absent) before the caller goes on."""
    target = Path(path)
    drop_cut_line(target)
    try:
        with target.open("a", encoding="utf-8") as file:
            for row in rows:
                file.write(json.dumps(dict(row)) + "\n")
            file.flush()
            os.fsync(file.fileno())
    except OSError as error:
        raise SaveError(f"cannot append to {target} ({_reason(error)})", error.errno) from None


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of a JSON-lines file, oldest first; a last line cut by a killed writer is ignored."""
    target = Path(path)
    if not target.is_file():
        return []
    text = target.read_text(encoding="utf-8")
    lines = text.split("\n")
    complete, tail = lines[:-1], lines[-1]  # tail is "" when the file ends with a newline
    rows = [json.loads(line) for line in complete if line.strip()]
    if tail.strip():
        with contextlib.suppress(json.JSONDecodeError):  # the writer died mid-line: never committed
            rows.append(json.loads(tail))
    return rows


def replace_marked_block(path: str | os.PathLike[str], name: str, text: str) -> bool:
    """Put ``text`` between ``<!-- name -->`` and ``<!-- /name -->`` in ``path``; False (unchanged) if absent."""
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    source = Path(path).read_text(encoding="utf-8")
    head, found, rest = source.partition(start)
    if not found or end not in rest:
        return False
    tail = rest.split(end, 1)[1]
    write_text_atomic(path, f"{head}{start}\n{text.rstrip()}\n{end}{tail}")
    return True


def safe_child(root: str | os.PathLike[str], name: str) -> Path:
    """``root / name``, refusing any name that could put the file outside ``root``.

    Refused (``UnsafePathError``): an empty name, a NUL byte, an absolute path, a ``..`` component, and a
    path that resolves outside ``root`` through a symlink (an existing link, or a link among its parents).
    Subfolders (``a/b.png``) are allowed. The check is made now: create the file right away.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(f"empty file name {name!r}")
    if "\x00" in name:
        raise UnsafePathError(f"file name {name!r} holds a NUL byte")
    candidate = Path(name)
    if candidate.is_absolute() or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafePathError(f"file name {name!r} is an absolute path")
    if any(part == ".." for part in name.replace("\\", "/").split("/")):
        raise UnsafePathError(f"file name {name!r} climbs out of its folder (..)")
    base = Path(root).resolve()
    child = base / candidate
    if not child.resolve().is_relative_to(base):  # a symlink on the way leads elsewhere
        raise UnsafePathError(f"file name {name!r} leads outside {base} (symlink)")
    return child
