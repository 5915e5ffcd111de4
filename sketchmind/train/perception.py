"""Perception tasks: questions whose answers need only seeing the image, asked before any reasoning is taught.

A policy that cannot read where the player, the goal and the holes are cannot plan, however good its
reasoning data. These rows teach (and measure) reading alone: the model transcribes a frozen-lake map,
one line per row, one symbol per cell::

    Row 1: P F F H
    Row 2: F H F F
    Row 3: F F F G

``P`` is the player, ``G`` the goal, ``H`` a hole and ``F`` safe ice (frozen). Each cell is one token of the
tiny tokenizer (a space and a symbol), so per-cell accuracy can be read off the logits directly
(``score_batch``), teacher-forced, without generating. Images are free: every row can be a fresh map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import Lake

if TYPE_CHECKING:
    import torch

PERCEPTION_FAMILY = "frozenlake-classic"
SYMBOLS = {
    "player": "P",
    "goal": "G",
    "hole": "H",
    "safe": "F",
}  # letters: a space + letter is one token, never glued to "\n"
CELL_TOKENS = tuple(f" {s}" for s in SYMBOLS.values())

# The same request in several wordings, one of them without the map size: users will not phrase it our way.
_ASKS = (
    "Transcribe this {rows}x{cols} frozen-lake map, one line per row: P is the player, G the goal, H a hole, F safe ice.",
    "Read the map cell by cell. Write each row as 'Row k:' then its cells: P player, G goal, H hole, F ice.",
    "What is on each cell of this grid? Answer row by row with P (player), G (goal), H (hole) or F (safe).",
)


def transcription(lake: Lake) -> str:
    """The map as ``Row k: ...`` lines (see the module docstring)."""
    tiles = {lake.player: SYMBOLS["player"], lake.goal: SYMBOLS["goal"]} | dict.fromkeys(lake.holes, SYMBOLS["hole"])
    lines = []
    for r in range(lake.rows):
        cells = " ".join(tiles.get((r, c), SYMBOLS["safe"]) for c in range(lake.cols))
        lines.append(f"Row {r + 1}: {cells}")
    return "\n".join(lines)


def read_transcription(text: str) -> list[list[str]]:
    """The cell symbols of a transcription, row by row (lines that are not ``Row k:`` are ignored)."""
    grid = []
    for line in text.splitlines():
        head, _, cells = line.partition(":")
        if head.strip().lower().startswith("row"):
            grid.append(cells.split())
    return grid


def perception_question(puzzle: Puzzle, wording: int | None = None) -> str:
    """The transcription request for ``puzzle``, in one of the wordings (by default picked by its index)."""
    k = puzzle.index % len(_ASKS) if wording is None else wording
    return _ASKS[k].format(rows=puzzle.truth["rows"], cols=puzzle.truth["cols"])


def perception_row(puzzle: Puzzle, wording: int | None = None) -> dict[str, Any]:
    """One SFT row (``messages`` + ``images``, as ``train.synth`` writes them): the image, the ask, the map."""
    from PIL import Image

    assert puzzle.image is not None
    answer = transcription(Lake.from_truth(puzzle.truth))
    return {
        "id": f"read-{puzzle.id}",
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": perception_question(puzzle, wording)}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
        "images": [Image.fromarray(np.ascontiguousarray(puzzle.image))],
    }


def row_crop_row(puzzle: Puzzle, token_px: int = 28) -> dict[str, Any]:
    """The map read one row at a time: each row is shown cropped, right before its transcription.

    The view of row ``k`` comes back just before the model writes ``Row k: ...``, so each cell's image
    token sits at the same distance before the symbol that names it: a 2-D read-out becomes a fixed-offset
    1-D one, which a rotary attention head learns early.
    """
    from PIL import Image

    assert puzzle.image is not None
    lake = Lake.from_truth(puzzle.truth)
    lines = transcription(lake).splitlines()
    height = puzzle.image.shape[0]
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": perception_question(puzzle)}]}
    ]
    images = [Image.fromarray(np.ascontiguousarray(puzzle.image))]
    for r, line in enumerate(lines):
        top, bottom = round(r * height / lake.rows), round((r + 1) * height / lake.rows)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"Crop row {r + 1}."}]})
        messages.append({"role": "user", "content": [{"type": "image"}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": line}]})
        crop = Image.fromarray(np.ascontiguousarray(puzzle.image[top:bottom]))
        images.append(crop.resize((token_px * lake.cols, 2 * token_px), Image.Resampling.BILINEAR))
    return {"id": f"rows-{puzzle.id}", "messages": messages, "images": images}


def perception_corpus(n: int = 400, seed: int = 0) -> Iterator[str]:
    """Texts that cover the perception rows' vocabulary, for training a tiny tokenizer."""
    from sketchmind.tasks.frozenlake import random_lake

    rng = np.random.default_rng(seed)
    for k in range(n):
        lake = random_lake(rng, 3 + k % 6)
        yield transcription(lake)
        yield _ASKS[k % len(_ASKS)].format(rows=lake.rows, cols=lake.cols)


def cell_token_ids(tokenizer: Any) -> list[int]:
    """The token id of each cell symbol (with its leading space); each must be one token."""
    ids = []
    for token in CELL_TOKENS:
        encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise ValueError(f"cell symbol {token!r} is {len(encoded)} tokens in this tokenizer, not one")
        ids.append(encoded[0])
    return ids


def score_batch(logits: torch.Tensor, labels: torch.Tensor, cells: Sequence[int]) -> np.ndarray:
    """Teacher-forced reading: ``[cells right, cells, grids all right, grids]`` of one batch.

    A cell is a labelled position whose label is a cell symbol; the prediction for position ``t`` is the
    argmax of the logits at ``t - 1``.
    """
    import torch

    predicted = logits[:, :-1].argmax(-1)
    target = labels[:, 1:]
    is_cell = torch.isin(target, torch.tensor(list(cells), device=target.device))
    right = (predicted == target) & is_cell
    per_row_cells = is_cell.sum(1)
    per_row_right = right.sum(1)
    exact = (per_row_right == per_row_cells) & (per_row_cells > 0)
    return np.array([int(right.sum()), int(is_cell.sum()), int(exact.sum()), int((per_row_cells > 0).sum())], float)


def vsp_puzzles(root: Path) -> list[Puzzle]:
    """VSP's own maps (never trained on): a held-out perception test."""
    from sketchmind.tasks.vsp import load_vsp

    return load_vsp(root)


def guide_targets(
    batch: dict[str, torch.Tensor], sizes: Sequence[int], cells: Sequence[int], processor: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each cell symbol should look: ``(queries, mask)`` for an attention-guidance loss.

    ``queries`` is ``(m, 2)``: (row in batch, position) of the token that predicts each cell symbol (one
    before the symbol); ``mask`` is ``(m, sequence)``, 1 on the merged image tokens of the first image
    whose centres fall inside that cell. ``sizes`` is each row's map side; cells come in raster order.
    """
    import torch

    image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    merge = 2
    labels, ids = batch["labels"], batch["input_ids"]
    grids = batch["image_grid_thw"]
    images_per_row = (ids == image_id).any(1)  # every row has an image
    assert bool(images_per_row.all())
    queries, masks = [], []
    image_index = 0
    cell_ids = torch.tensor(list(cells))
    for b, n in enumerate(sizes):
        row_ids = ids[b]
        starts = (row_ids == image_id).nonzero().flatten()
        _, gh, gw = (int(v) for v in grids[image_index])
        gh, gw = gh // merge, gw // merge
        first = int(starts[0])
        # Count this row's images so the next row's first grid is found.
        boundaries = ((row_ids[1:] == image_id) & (row_ids[:-1] != image_id)).sum() + int(row_ids[0] == image_id)
        image_index += int(boundaries)
        positions = torch.isin(labels[b], cell_ids).nonzero().flatten()
        ys = (torch.arange(gh) + 0.5) * n / gh
        xs = (torch.arange(gw) + 0.5) * n / gw
        if len(positions) != n * n:
            raise ValueError(f"row {b}: {len(positions)} cell symbols for a {n}x{n} map")
        for k, position in enumerate(positions.tolist()):
            r, c = divmod(k, n)
            inside = ((ys >= r) & (ys < r + 1))[:, None] & ((xs >= c) & (xs < c + 1))[None, :]
            mask = torch.zeros(ids.shape[1])
            mask[first : first + gh * gw] = inside.flatten().float()
            queries.append((b, position - 1))
            masks.append(mask)
    return torch.tensor(queries), torch.stack(masks)


# --------------------------------------------------------------------------------------------- training data


def reading_dataset(family: str, levels: Sequence[int], n: int, seed: int) -> Any:
    """``n`` reading rows of fresh maps, each generated when the trainer asks for it.

    The stored rows are only ``(level, index)``: the map, its image and the row are made from them by a
    ``datasets`` transform, deterministically (row ``k`` is the same map in every run and after a resume),
    so a run of any length costs no disk and no generation up front.
    """
    from datasets import Dataset  # type: ignore[import-untyped]

    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import puzzle_rng

    task = get_family(family)
    specs = Dataset.from_dict({"level": [levels[k % len(levels)] for k in range(n)], "index": list(range(n))})

    def materialise(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = [
            perception_row(task.generate(puzzle_rng(f"read-{family}", seed, level, index), level, index))
            for level, index in zip(batch["level"], batch["index"], strict=True)
        ]
        return {key: [row[key] for row in rows] for key in ("id", "messages", "images")}

    specs.set_transform(materialise)
    return specs


# ------------------------------------------------------------------------------------------------ measuring


def teacher_forced(
    model: Any, collator: Any, rows: Sequence[dict[str, Any]], batch_size: int = 16
) -> list[dict[str, int]]:
    """Per row: cells read right (``right`` of ``cells``), and whether the player and the goal were.

    Teacher-forced: each cell is predicted from the image and the true symbols before it, in one forward
    pass per batch (the reading a model would produce greedily, up to errors that compound).
    """
    import torch

    tokenizer = collator.processor.tokenizer
    cells = cell_token_ids(tokenizer)
    player, goal = cells[0], cells[1]
    results = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for k in range(0, len(rows), batch_size):
            batch = collator(list(rows[k : k + batch_size]))
            predicted = model(**batch).logits[:, :-1].argmax(-1)
            target = batch["labels"][:, 1:]
            is_cell = torch.isin(target, torch.tensor(cells))
            right = (predicted == target) & is_cell
            for r in range(target.shape[0]):
                results.append(
                    {
                        "right": int(right[r].sum()),
                        "cells": int(is_cell[r].sum()),
                        "player": int(bool(right[r][target[r] == player].all())),
                        "goal": int(bool(right[r][target[r] == goal].all())),
                    }
                )
    model.train(was_training)
    return results


def summarise_reading(results: Sequence[dict[str, int]]) -> dict[str, float]:
    """Per-cell accuracy, exact maps, player and goal read right, over ``results`` (``teacher_forced``'s)."""
    n = max(len(results), 1)
    cells = sum(r["cells"] for r in results)
    return {
        "n": len(results),
        "cell": sum(r["right"] for r in results) / max(cells, 1),
        "exact": sum(r["right"] == r["cells"] for r in results) / n,
        "player": sum(r["player"] for r in results) / n,
        "goal": sum(r["goal"] for r in results) / n,
    }


def validation_puzzles(spec: Any) -> list[Puzzle]:
    """The gate's maps: ``spec.eval_n`` per level from seed ``spec.seed + 1`` (never trained on, never the eval seed)."""
    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset

    return make_dataset(get_family(spec.family), spec.levels, spec.eval_n, seed=spec.seed + 1)


def gate_callback(puzzles: Sequence[Puzzle], gate: Any, *, every: int, report: Any = print) -> Any:
    """A ``TrainerCallback`` that stops training once held-out reading passes ``gate``.

    Every ``every`` steps it reads ``puzzles`` teacher-forced; when per-cell accuracy and exact maps reach
    ``gate``'s thresholds, training stops and saves (``passed_at`` is that step). Each check is reported
    as one line and kept in ``history``.
    """
    from transformers import TrainerCallback

    from sketchmind.train.collator import AssistantOnlyCollator

    class ReadingGateCallback(TrainerCallback):
        def __init__(self) -> None:
            self.rows = [perception_row(p) for p in puzzles]
            self.passed_at: int | None = None
            self.history: list[dict[str, Any]] = []
            self._collator: AssistantOnlyCollator | None = None

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % every:
                return
            if self._collator is None:
                self._collator = AssistantOnlyCollator(kwargs["processing_class"])
            score = summarise_reading(teacher_forced(kwargs["model"], self._collator, self.rows))
            self.history.append({"step": state.global_step, **score})
            report(
                f"perceive step {state.global_step}: cells {score['cell']:.3f}, maps {score['exact']:.3f}, "
                f"player {score['player']:.3f}, goal {score['goal']:.3f}"
            )
            if score["cell"] >= gate.cell and score["exact"] >= gate.exact:
                self.passed_at = state.global_step
                control.should_training_stop = True
                control.should_save = True

    return ReadingGateCallback()


READING_FILE = "perception.json"
HELD_OUT_PER_LEVEL = 16


@dataclass(frozen=True)
class ReadingTable:
    """Reading accuracy per map set and level (``rows``), each a ``summarise_reading`` dict plus ``set`` and ``level``."""

    rows: list[dict[str, Any]]

    def markdown(self) -> str:
        """The perception table: per-cell accuracy, exact maps (Wilson 95%), player and goal read right."""
        from sketchmind.bench.report import wilson

        lines = [
            "| maps | level | n | per cell | exact maps (95% CI) | player | goal |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            low, high = wilson(round(row["exact"] * row["n"]), row["n"])
            lines.append(
                f"| {row['set']} | {row['level']} | {row['n']} | {row['cell']:.3f} | "
                f"{row['exact']:.2f} ({low:.2f}-{high:.2f}) | {row['player']:.2f} | {row['goal']:.2f} |"
            )
        return "\n".join(lines)

    def summary(self) -> dict[str, float]:
        """The overall rows as flat numbers (``generated_cell``, ``vsp_exact`` ...) for ``done.json``."""
        return {
            f"{row['set']}_{key}": round(row[key], 4)
            for row in self.rows
            if row["level"] == "all"
            for key in ("cell", "exact", "player", "goal")
        }

    def save(self, path: Path) -> None:
        from sketchmind.files import write_json_atomic

        write_json_atomic(path, {"rows": self.rows})

    @classmethod
    def load(cls, path: Path) -> ReadingTable:
        import json

        return cls(json.loads(path.read_text(encoding="utf-8"))["rows"])


def measure_reading(model_dir: str | Path, sets: dict[str, Sequence[Puzzle]]) -> ReadingTable:
    """Teacher-forced reading of every map set (name -> puzzles), per level and overall."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from sketchmind.train.collator import AssistantOnlyCollator

    processor = AutoProcessor.from_pretrained(str(model_dir))  # type: ignore[no-untyped-call]
    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), use_safetensors=True)
    collator = AssistantOnlyCollator(processor)
    rows: list[dict[str, Any]] = []
    for name, puzzles in sets.items():
        results = teacher_forced(model, collator, [perception_row(p) for p in puzzles])
        for level in sorted({p.level for p in puzzles}):
            mine = [r for r, p in zip(results, puzzles, strict=True) if p.level == level]
            rows.append({"set": name, "level": level, **summarise_reading(mine)})
        rows.append({"set": name, "level": "all", **summarise_reading(results)})
    return ReadingTable(rows)


def reading_table(model_dir: str | Path, recipe: Any, folder: Path) -> ReadingTable:
    """Measure a perceive stage's model on held-out maps (the eval seed) and VSP's maps; save ``perception.json``."""
    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset

    spec = recipe.stages.perceive
    seed = recipe.eval.seed if recipe.eval is not None else 99
    sets: dict[str, Sequence[Puzzle]] = {
        "generated": make_dataset(get_family(spec.family), spec.levels, HELD_OUT_PER_LEVEL, seed=seed)
    }
    if recipe.eval is not None and recipe.eval.vsp:
        sets["vsp"] = vsp_puzzles(Path(recipe.eval.vsp))
    table = measure_reading(model_dir, sets)
    table.save(folder / READING_FILE)
    return table
