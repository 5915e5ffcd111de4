"""Where each written token should look, for rows that name map cells: the guidance of the planning rows.

The perceive stage guides every written symbol to its cell (``perception.reading_targets``). A planning row
writes cells by name instead (``4,4 L: 4,3 F``), so its targets come from the text itself:

- the characters of a cell's name (``4,3``) are predicted looking at that cell;
- a symbol written right after a name (``4,3 F``: what the search finds there) looks at that cell too;
- so does a symbol written right before one (``P 4,4``: where the player is found).

"Looking at a cell" means the image tokens over it, in the latest image before the token. A move (``L``)
is not guided: it is the decision the model has to make itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sketchmind.tasks.frozenlake import Cell, Lake
from sketchmind.train.perception import SYMBOLS, ReadingTargets, token_cells

if TYPE_CHECKING:
    import torch

SYMBOL_ORDER = tuple(SYMBOLS.values())  # the order of ``perception.cell_token_ids``: the token classes' order
_NAMED = re.compile(r"(?:(?<![A-Za-z])([PGHF]) )?(\d+),(\d+)(?: ([PGHF])(?![A-Za-z]))?")


def cell_characters(text: str) -> list[tuple[int, Cell]]:
    """(character index, cell) for every character of ``text`` that is predicted looking at a cell."""
    out: list[tuple[int, Cell]] = []
    for found in _NAMED.finditer(text):
        cell = (int(found[2]) - 1, int(found[3]) - 1)
        out += [(i, cell) for i in range(found.start(2), found.end(3))]
        for group in (1, 4):
            if found[group]:
                out.append((found.start(group), cell))
    return out


def _runs(labels: torch.Tensor) -> list[list[int]]:
    """The positions of each run of labelled tokens (one assistant turn each)."""
    positions = (labels != -100).nonzero().flatten().tolist()
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def map_classes(rows: Sequence[str], grid_thw: Any, order: Sequence[str] = SYMBOL_ORDER) -> torch.Tensor:
    """Each merged image token's cell symbol (``P G H F``), as an index into ``order``."""
    import torch

    lake = Lake.from_rows(list(rows))
    n = lake.rows
    symbols = torch.tensor([[order.index(lake.symbol((r, c))) for c in range(n)] for r in range(n)])
    cell_row, cell_col = token_cells(grid_thw, n)
    return symbols[cell_row][:, cell_col].flatten()


def cell_targets(
    batch: dict[str, Any],
    maps: Sequence[Sequence[str]],
    tokenizer: Any,
    image_token_id: int,
    order: Sequence[str] = SYMBOL_ORDER,
) -> ReadingTargets:
    """The guidance targets of a batch of planning rows; ``maps`` holds each row's map (``Lake.desc`` rows).

    A query is the position whose output predicts a guided character's token (the token before it). Rows
    whose text names no cell add no queries; every image adds its tokens' classes.
    """
    import torch

    labels, ids, grids = (batch[key].cpu() for key in ("labels", "input_ids", "image_grid_thw"))
    queries: list[tuple[int, int]] = []
    masks: list[torch.Tensor] = []
    classes: list[torch.Tensor] = []
    image = 0
    for b in range(len(ids)):
        n = len(maps[b])
        if any(len(row) != n for row in maps[b]):
            raise ValueError(f"row {b}: the guidance reads square maps, not {len(maps[b])} rows of {len(maps[b][0])}")
        is_image = (ids[b] == image_token_id).long()
        starts = (torch.diff(is_image, prepend=torch.zeros(1, dtype=torch.long)) == 1).nonzero().flatten().tolist()
        row_grids = grids[image : image + len(starts)]
        image += len(starts)
        classes += [map_classes(maps[b], grid, order) for grid in row_grids]
        for run in _runs(labels[b]):
            pieces = [tokenizer.decode([int(ids[b, p])]) for p in run]
            owner = [k for k, piece in enumerate(pieces) for _ in piece]  # the token of each character
            for char, cell in cell_characters("".join(pieces)):
                position = run[owner[char]]
                latest = max((k for k, start in enumerate(starts) if start < position), default=None)
                if latest is None:
                    continue
                rows, cols = token_cells(row_grids[latest], n)
                inside = ((rows == cell[0])[:, None] & (cols == cell[1])[None, :]).flatten().float()
                mask = torch.zeros(ids.shape[1])
                mask[starts[latest] : starts[latest] + inside.numel()] = inside
                queries.append((b, position - 1))
                masks.append(mask)
    if image != len(grids):
        raise ValueError(f"the batch holds {len(grids)} images but its rows show {image}")
    if not queries:
        return ReadingTargets(torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, ids.shape[1]), torch.cat(classes))
    # A token may hold several guided characters ("4,3" can be one token): one query each, the first.
    unique = {q: k for k, q in reversed(list(enumerate(queries)))}
    keep = sorted(unique.values())
    return ReadingTargets(
        torch.tensor([queries[k] for k in keep]), torch.stack([masks[k] for k in keep]), torch.cat(classes)
    )
