"""Load VSP's FrozenLake maze benchmark (Wu et al., "Visual Spatial Planning") as ``frozenlake`` puzzles.

VSP's layout is ``maps/level{N}/{img,table,pure_text,answer}/{K}.*``: the PNG the model sees, a markdown
table with the ground truth (``@`` player, ``*`` goal, ``#`` hole, ``_`` safe), a text rendering and a
reference answer ending in ``Action plan: ...``. Truth comes from the table, so ``FrozenLake().verify``
and ``FrozenLake().expert`` work on these puzzles unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from sketchmind.images import ImageInputError, load_image
from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import FrozenLake, Lake, format_plan, parse_plan, question_text, solve

# VSP's maze examples (MIT, their LICENSE beside them) ship inside the package, so `sketchmind bench vsp`
# works from a wheel install; the repository's data/vsp-maze-examples is a link to this folder.
BUNDLED_VSP = Path(__file__).resolve().parent / "assets" / "vsp-maze-examples"
VSP_SOURCE = "https://github.com/UCSB-NLP-Chang/Visual-Spatial-Planning"

_LEVEL = re.compile(r"^level(\d+)$")
_ROW = re.compile(r"^\|\s*Row\s*\d+\s*\|", re.IGNORECASE)


def _maps_dir(root: Path) -> Path:
    """``root`` itself or its ``maps`` folder, whichever holds the ``levelN`` folders."""
    return root / "maps" if (root / "maps").is_dir() else root


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read ({exc.__class__.__name__})") from None


def read_table(path: Path) -> Lake:
    """The map in a VSP ``table/K.txt`` (markdown rows ``| Row i | @ | _ | # | * |``)."""
    rows = [line.strip() for line in _read(path).splitlines() if _ROW.match(line.strip())]
    try:
        cells = [[c.strip() for c in row.strip("|").split("|")[1:]] for row in rows]
        if any(len(c) != 1 for row in cells for c in row):
            raise ValueError("every cell must be one of @ * # _")
        return Lake.from_rows(["".join(row) for row in cells])
    except ValueError as exc:
        raise ValueError(f"{path}: not a VSP map table ({exc})") from None


def read_answer(path: Path) -> str:
    """The reference ``Action plan: ...`` of a VSP ``answer/K.txt``."""
    plan = parse_plan(_read(path))
    if plan is None:
        raise ValueError(f"{path}: no 'Action plan:' line")
    return format_plan(plan)


def load_puzzle(level_dir: Path, key: str) -> Puzzle:
    """Puzzle ``key`` of one ``levelN`` folder; ``ValueError`` naming the file for anything malformed."""
    match = _LEVEL.match(level_dir.name)
    if match is None:
        raise ValueError(f"{level_dir}: not a VSP levelN folder")
    level = int(match.group(1))
    table = level_dir / "table" / f"{key}.txt"
    lake = read_table(table)
    if (lake.rows, lake.cols) != (level, level):
        raise ValueError(f"{table}: a level{level} map is {level}x{level}, this one is {lake.rows}x{lake.cols}")
    image_path = level_dir / "img" / f"{key}.png"
    try:
        image = load_image(image_path)
    except ImageInputError as exc:
        message = str(exc) if str(image_path) in str(exc) else f"{image_path}: {exc}"
        raise ValueError(message) from None
    height, width = image.shape[:2]
    answer_path = level_dir / "answer" / f"{key}.txt"
    if answer_path.exists():
        answer = read_answer(answer_path)
    else:  # VSP always ships one; without it, our own shortest plan is the reference
        plan = solve(lake)
        if plan is None:
            raise ValueError(f"{table}: the goal cannot be reached")
        answer = format_plan(plan)
    meta = {
        "source": str(image_path),
        "style": "classic",
        "cell": [width / lake.cols, height / lake.rows],
        "origin": [0, 0],
        "size": [width, height],
    }
    return Puzzle(
        family=FrozenLake.name,
        level=level,
        index=int(key) if key.isdigit() else 0,
        question=question_text("classic", lake.rows, lake.cols),
        answer=answer,
        image=image,
        truth=lake.truth(),
        meta=meta,
    )


def _sort_key(path: Path) -> tuple[int, str]:
    return (int(path.stem), "") if path.stem.isdigit() else (1 << 30, path.stem)


def load_vsp(root: str | Path, levels: Iterable[int] | None = None) -> list[Puzzle]:
    """Every puzzle under ``root`` (VSP's ``maps`` folder or its parent), by level then number.

    ``levels`` keeps only those grid sizes (at least one must be there). Raises ``ValueError`` (one line
    naming the file) for a missing folder, none of ``levels``, a level without tables, or a malformed file.
    """
    maps = _maps_dir(Path(root))
    if not maps.is_dir():
        raise ValueError(f"{maps}: no such VSP folder")
    found = {int(m.group(1)): d for d in maps.iterdir() if d.is_dir() and (m := _LEVEL.match(d.name))}
    if not found:
        raise ValueError(f"{maps}: no levelN folders")
    wanted = sorted(found) if levels is None else [n for n in sorted(set(levels)) if n in found]
    if not wanted:  # asked only for levels it lacks: a benchmark of nothing would "pass" silently
        have = ", ".join(map(str, sorted(found)))
        raise ValueError(f"{maps}: no level{sorted(set(levels or ()))[0]} folder (it has levels {have})")
    puzzles = []
    for level in wanted:
        tables = sorted((found[level] / "table").glob("*.txt"), key=_sort_key)
        if not tables:
            raise ValueError(f"{found[level]}: no table/K.txt files (VSP's layout: levelN/{{table,img,answer}}/K.*)")
        puzzles += [load_puzzle(found[level], table.stem) for table in tables]
    return puzzles


def bundled_vsp() -> Path:
    """The VSP examples shipped with the package; ``ValueError`` saying where to get them if they are missing."""
    if not (BUNDLED_VSP / "maps").is_dir():
        raise ValueError(
            f"this install has no bundled VSP examples: pass --data, a copy of VSP's maps (from {VSP_SOURCE})"
        )
    return BUNDLED_VSP


def vsp_puzzle_for_image(path: str | Path) -> Puzzle | None:
    """The puzzle of an image inside VSP's layout (``.../levelN/img/K.png`` with its ``table/K.txt``).

    ``None`` for any other image; ``ValueError`` if it is in the layout but its files are malformed.
    """
    # abspath, not resolve: a puzzle found through a link (data/vsp-maze-examples) keeps the path it was given.
    image = Path(os.path.abspath(path))
    level_dir = image.parent.parent
    if image.suffix.lower() != ".png" or image.parent.name != "img" or not _LEVEL.match(level_dir.name):
        return None
    if not (level_dir / "table" / f"{image.stem}.txt").is_file():
        return None
    return load_puzzle(level_dir, image.stem)
