"""Perception tasks: questions whose answers need only seeing the image, asked before any reasoning is taught.

A policy that cannot read where the player, the goal and the holes are cannot plan, however good its
reasoning data. These rows teach (and measure) reading alone: the model transcribes a frozen-lake map,
one line per row, one symbol per cell::

    Row 1: P F F H
    Row 2: F H F F
    Row 3: F F F G

``P`` is the player, ``G`` the goal, ``H`` a hole and ``F`` safe ice (frozen). Each cell is one token of the
tiny tokenizer (a space and a symbol), so per-cell accuracy can be read off the logits directly
(``teacher_forced``), teacher-forced, without generating. Images are free: every row can be a fresh map.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sketchmind.tasks.base import Puzzle
from sketchmind.tasks.frozenlake import READ_SYMBOLS, Lake, transcribe

if TYPE_CHECKING:
    import torch

PERCEPTION_FAMILY = "frozenlake-classic"
SYMBOLS = READ_SYMBOLS
CELL_TOKENS = tuple(f" {s}" for s in SYMBOLS.values())

# The same request in several wordings, one of them without the map size: users will not phrase it our way.
_ASKS = (
    "Transcribe this {rows}x{cols} frozen-lake map, one line per row: "
    "P is the player, G the goal, H a hole, F safe ice.",
    "Read the map cell by cell. Write each row as 'Row k:' then its cells: P player, G goal, H hole, F ice.",
    "What is on each cell of this grid? Answer row by row with P (player), G (goal), H (hole) or F (safe).",
)


def transcription(lake: Lake) -> str:
    """The map as ``Row k: ...`` lines (see the module docstring); the expert's first thought holds the same."""
    return transcribe(lake)


def read_transcription(text: str) -> list[list[str]]:
    """The cell symbols of a transcription, row by row (lines that are not ``Row k:`` are ignored)."""
    grid = []
    for line in text.splitlines():
        head, _, cells = line.partition(":")
        if head.strip().lower().startswith("row"):
            grid.append(cells.split())
    return grid


def default_wording(puzzle: Puzzle) -> int:
    """Which of the wordings ``puzzle`` is asked in: a hash of its level and index.

    Never ``index % 3``: the curriculum also picks levels by index (``Curriculum.level_for``), so with three
    sizes open every size came with one wording of its own, the model read the size off the wording, and
    held-out maps asked the other ways were misread (the "5x5 plateau", docs/perception.md).
    """
    return zlib.crc32(f"{puzzle.level}:{puzzle.index}".encode()) % len(_ASKS)


def perception_question(puzzle: Puzzle, wording: int | None = None) -> str:
    """The transcription request for ``puzzle``, in one of the wordings (by default ``default_wording``)."""
    k = default_wording(puzzle) if wording is None else wording
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


def vsp_puzzles(root: Path) -> list[Puzzle]:
    """VSP's own maps (never trained on): a held-out perception test."""
    from sketchmind.tasks.vsp import load_vsp

    return load_vsp(root)


@dataclass(frozen=True)
class Guidance:
    """Training-time help for reading; nothing of it ships (the model keeps its architecture and size).

    Two extra losses, both read off the batch itself (the labels hold every cell's symbol):

    - ``attention``: one attention head (``head`` of layer ``layer``) is told where to look. The token that
      predicts a cell's symbol should attend to that cell's image tokens; the loss is ``-log`` of the
      attention mass it puts there. Without it a tiny model takes thousands of maps to discover which
      image token belongs to which output position (a long plateau at the majority class).
    - ``tokens``: each merged image token is classified as its cell's symbol by the dot product with the
      symbols' own (tied) embeddings, so the vision tower learns features the language model can copy.
    """

    attention: float = 1.0
    tokens: float = 1.0
    layer: int = 1
    head: int = 0


@dataclass(frozen=True)
class ReadingTargets:
    """What ``Guidance`` compares against, for one collated batch of reading rows (one image each)."""

    queries: torch.Tensor  # (m, 2): (row, position) of the token that predicts each cell symbol
    mask: torch.Tensor  # (m, sequence): 1 on the image tokens inside that cell
    classes: torch.Tensor  # (image tokens,): each merged image token's cell symbol, as an index into ``cells``

    def to(self, device: Any) -> ReadingTargets:
        """The same targets on ``device`` (they are built on the CPU, from the batch's ids)."""
        return ReadingTargets(self.queries.to(device), self.mask.to(device), self.classes.to(device))


def token_cells(grid_thw: Sequence[int] | torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The map row and column that each merged image token's centre falls in, for an n x n map filling the image.

    ``grid_thw`` is one row of the processor's ``image_grid_thw`` (patches); Qwen merges 2x2 patches into one
    token, so the tokens form an (h/2, w/2) grid. A token's cell is then ``(rows[y], cols[x])``.
    """
    import torch

    merge = 2
    _, gh, gw = (int(v) // f for v, f in zip(grid_thw, (1, merge, merge), strict=True))
    return ((torch.arange(gh) + 0.5) * n / gh).long(), ((torch.arange(gw) + 0.5) * n / gw).long()


def reading_targets(batch: dict[str, torch.Tensor], cells: Sequence[int], image_token_id: int) -> ReadingTargets:
    """The guidance targets of a batch: the map side comes from the number of cell symbols in its labels."""
    import math

    import torch

    labels, ids, grids = (batch[key].cpu() for key in ("labels", "input_ids", "image_grid_thw"))
    if len(grids) != len(ids):
        raise ValueError(f"reading rows hold one image each; this batch has {len(grids)} for {len(ids)} rows")
    cell_ids = torch.tensor(list(cells))
    queries: list[tuple[int, int]] = []
    masks: list[torch.Tensor] = []
    classes: list[torch.Tensor] = []
    for b in range(len(ids)):
        positions = torch.isin(labels[b], cell_ids).nonzero().flatten()
        n = math.isqrt(len(positions))
        if n * n != len(positions) or n == 0:
            raise ValueError(f"row {b}: {len(positions)} cell symbols is not a square map")
        symbols = torch.tensor([list(cells).index(int(labels[b, p])) for p in positions]).view(n, n)
        first = int((ids[b] == image_token_id).nonzero()[0])
        cell_row, cell_col = token_cells(grids[b], n)
        classes.append(symbols[cell_row][:, cell_col].flatten())
        for k, position in enumerate(positions.tolist()):
            inside = (cell_row == k // n)[:, None] & (cell_col == k % n)[None, :]
            mask = torch.zeros(ids.shape[1])
            mask[first : first + inside.numel()] = inside.flatten().float()
            queries.append((b, position - 1))
            masks.append(mask)
    return ReadingTargets(torch.tensor(queries), torch.stack(masks), torch.cat(classes))


def _pooled(out: Any) -> torch.Tensor:
    """The merged image tokens of a Qwen vision tower's output (a model output, or its tuple form)."""
    pooled = getattr(out, "pooler_output", None)
    return pooled if pooled is not None else out[1]  # type: ignore[no-any-return]


def batch_reading_targets(inputs: dict[str, Any], processor: Any) -> ReadingTargets:
    """``reading_targets`` for a collated batch of reading rows."""
    tokenizer = processor.tokenizer
    return reading_targets(inputs, cell_token_ids(tokenizer), tokenizer.convert_tokens_to_ids(processor.image_token))


def guided_trainer(
    base: type[Any],
    guidance: Guidance,
    targets: Callable[..., ReadingTargets] = batch_reading_targets,
    row_keys: Sequence[str] = (),
) -> type[Any]:
    """``base`` (an ``SFTTrainer``) whose loss adds ``guidance``'s two terms; the model must use eager attention.

    ``targets(inputs, processor, **extra)`` says where each guided token looks; ``row_keys`` are row fields it
    reads besides the collated batch (the planning rows' ``map``): they ride along in the batch as lists and
    are taken out before the model's forward pass.
    """
    import torch
    import torch.nn.functional as F

    class GuidedReading(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if row_keys:
                collate = self.data_collator  # type: ignore[has-type]

                def with_row_keys(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
                    return {**collate(rows), **{key: [row[key] for row in rows] for key in row_keys}}

                self.data_collator = with_row_keys

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            extra = {key: inputs.pop(key) for key in row_keys}
            # Hooks, not return_outputs: TRL's fused loss would run a second forward pass to build the logits.
            seen: dict[str, torch.Tensor] = {}
            visual = model.model.visual  # Qwen2.5-VL / Qwen3-VL: the merged tokens are the tower's pooler output
            attention = model.model.language_model.layers[guidance.layer].self_attn  # eager: returns its weights

            def keep(name: str, pick: Callable[[Any], torch.Tensor]) -> Callable[..., None]:
                def hook(module: Any, args: Any, out: Any) -> None:  # returns None: the output is left as it is
                    seen.setdefault(name, pick(out))

                return hook

            hooks = [visual.register_forward_hook(keep("merged", _pooled))]
            if guidance.attention > 0:  # only then is the model in eager attention, which returns its weights
                hooks.append(attention.register_forward_hook(keep("weights", lambda out: out[1])))
            try:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                for hook in hooks:
                    hook.remove()
            loss = result[0] if return_outputs else result
            cells = cell_token_ids(self.processing_class.tokenizer)
            embeddings = model.get_input_embeddings().weight
            wanted = targets(inputs, self.processing_class, **extra).to(embeddings.device)
            symbols = embeddings[torch.tensor(cells, device=embeddings.device)]
            tokens = F.cross_entropy(seen["merged"] @ symbols.T, wanted.classes)
            loss = loss + guidance.tokens * tokens
            self._guidance_logs = {"token_ce": tokens.item()}
            if "weights" in seen and len(wanted.queries):
                weights = seen["weights"][:, guidance.head]
                mass = (weights[wanted.queries[:, 0], wanted.queries[:, 1]] * wanted.mask).sum(-1)
                look = -mass.clamp_min(1e-6).log().mean()
                loss = loss + guidance.attention * look
                self._guidance_logs["look"] = look.item()
            return (loss, result[1]) if return_outputs else loss

        def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
            super().log({**logs, **getattr(self, "_guidance_logs", {})}, *args, **kwargs)

    return GuidedReading


# --------------------------------------------------------------------------------------------- training data


@dataclass
class Curriculum:
    """Which levels the reading rows draw from now: the first ``unlocked`` of ``levels`` (small maps first).

    The dataset transform reads it when it makes a row, and the gate widens it, so the next level joins
    as soon as the ones so far are read well. Saved in each checkpoint's ``trainer_state.json`` (see
    ``gate_callback``), so a resumed run goes on with the levels it had.
    """

    levels: list[int]
    unlocked: int = 1

    def level_for(self, index: int) -> int:
        return self.levels[index % self.unlocked]

    def current(self) -> list[int]:
        return self.levels[: self.unlocked]

    def widen(self) -> bool:
        """Open the next level; False when every level is already open."""
        if self.unlocked >= len(self.levels):
            return False
        self.unlocked += 1
        return True


def reading_dataset(family: str, curriculum: Curriculum, n: int, seed: int) -> Any:
    """``n`` reading rows of fresh maps (``fresh_map_rows`` of ``perception_row``)."""
    return fresh_map_rows(family, curriculum, n, seed, perception_row, stream=f"read-{family}")


def fresh_map_rows(
    family: str,
    curriculum: Curriculum,
    n: int,
    seed: int,
    make_row: Callable[[Puzzle], dict[str, Any]],
    *,
    stream: str,
    keys: Sequence[str] = ("id", "messages", "images"),
) -> Any:
    """``n`` rows of fresh maps, each generated when the trainer asks for it.

    The stored rows are only indices: the map, its image and the row (``make_row``) are made by a ``datasets``
    transform, at the level ``curriculum`` gives that index now. Row ``k`` at level ``L`` is the same map
    in every run and after a resume (``stream`` and ``seed`` name the random stream), and a run of any length
    costs no disk and no generation up front.
    """
    from datasets import Dataset  # type: ignore[import-untyped]

    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import puzzle_rng

    task = get_family(family)
    specs = Dataset.from_dict({"index": list(range(n))})

    def materialise(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = []
        for index in batch["index"]:
            level = curriculum.level_for(index)
            rows.append(make_row(task.generate(puzzle_rng(stream, seed, level, index), level, index)))
        return {key: [row[key] for row in rows] for key in keys}

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
    for predicted, target in predictions(model, collator, rows, batch_size):
        is_cell = torch.isin(target, torch.tensor(cells, device=target.device))
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
    return results


def predictions(
    model: Any, collator: Any, rows: Sequence[dict[str, Any]], batch_size: int = 16
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Teacher-forced, per batch of ``rows``: (the model's top prediction for each next token, that token),
    both (rows, length - 1); labels of -100 are not the model's to write. The model is in eval mode, without
    gradients, while the batches are read, and as it was afterwards."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for k in range(0, len(rows), batch_size):
                batch = on_device(collator(list(rows[k : k + batch_size])), model.device)
                yield model(**batch).logits[:, :-1].argmax(-1), batch["labels"][:, 1:]
    finally:
        model.train(was_training)


def on_device(batch: dict[str, Any], device: Any) -> dict[str, Any]:
    """A collated batch with its tensors on ``device`` (the model's), for scoring outside the Trainer."""
    return {key: value.to(device) if hasattr(value, "to") else value for key, value in batch.items()}


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
    """The gate's maps: ``spec.eval_n`` per level, seed ``spec.seed + 1`` (never trained on, never the eval seed)."""
    from sketchmind.tasks import get_family
    from sketchmind.tasks.base import make_dataset

    return make_dataset(get_family(spec.family), spec.levels, spec.eval_n, seed=spec.seed + 1)


def curriculum_state(curriculum: Curriculum, every: int) -> type[Any]:
    """A ``TrainerCallback`` base for the fresh-map stages: it checks the model every ``every`` steps and keeps
    ``curriculum``'s open levels in each checkpoint, restored on resume.

    A subclass defines ``check(model, collator, levels, step, control)``, which scores the open ``levels``
    with a collator for the run's processor, widens the curriculum or stops training, and returns what it
    measured (kept in ``history``). The base is an ``ExportableState``: the Trainer writes ``state()`` into
    the checkpoint's trainer_state.json, the file that marks a checkpoint complete, so a kill can never leave
    a checkpoint without its curriculum. It is saved under the subclass's name.
    """
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    from sketchmind.train.collator import AssistantOnlyCollator

    class CurriculumState(TrainerCallback, ExportableState):
        def __init__(self) -> None:
            self.history: list[dict[str, Any]] = []
            self._collator: AssistantOnlyCollator | None = None

        def state(self) -> dict[str, Any]:
            return {"args": {}, "attributes": {"unlocked": curriculum.unlocked}}

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            saved = state.stateful_callbacks.get(type(self).__name__)
            if state.global_step and saved:  # a resumed run: the levels its checkpoint had
                curriculum.unlocked = int(saved["attributes"]["unlocked"])

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step % every:
                return
            if self._collator is None:
                self._collator = AssistantOnlyCollator(kwargs["processing_class"])
            levels = curriculum.current()
            measured = self.check(kwargs["model"], self._collator, levels, state.global_step, control)
            self.history.append({"step": state.global_step, "levels": levels, **measured})

        def check(self, model: Any, collator: Any, levels: list[int], step: int, control: Any) -> dict[str, Any]:
            raise NotImplementedError

    return CurriculumState


def gate_callback(
    puzzles: Sequence[Puzzle], gate: Any, widen: Any, curriculum: Curriculum, *, every: int, report: Any = print
) -> Any:
    """A ``TrainerCallback`` that widens the curriculum, then stops training, as held-out reading improves.

    Every ``every`` steps it reads the ``puzzles`` of the open levels teacher-forced. When per-cell accuracy
    and exact maps reach ``widen``'s thresholds, the next level opens; once every level is open and reading
    passes ``gate``'s, training stops and saves (``passed_at`` is that step). Each check is one reported
    line, kept in ``history``.
    """

    class ReadingGateCallback(curriculum_state(curriculum, every)):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.passed_at: int | None = None

        def check(self, model: Any, collator: Any, levels: list[int], step: int, control: Any) -> dict[str, Any]:
            rows = [perception_row(p) for p in puzzles if p.level in levels]
            score = summarise_reading(teacher_forced(model, collator, rows))
            report(
                f"perceive step {step}, levels {levels[0]}-{levels[-1]}: cells {score['cell']:.3f}, "
                f"maps {score['exact']:.3f}, player {score['player']:.3f}, goal {score['goal']:.3f}"
            )
            if len(levels) < len(curriculum.levels):
                if score["cell"] >= widen.cell and score["exact"] >= widen.exact and curriculum.widen():
                    report(f"perceive: level {curriculum.current()[-1]} joins")
            elif score["cell"] >= gate.cell and score["exact"] >= gate.exact:
                self.passed_at = step
                control.should_training_stop = True
                control.should_save = True
            return score

    return ReadingGateCallback()


READING_FILE = "perception.json"
HELD_OUT_PER_LEVEL = 16


@dataclass(frozen=True)
class ReadingTable:
    """Reading accuracy per map set and level: each row a ``summarise_reading`` dict plus ``set`` and ``level``."""

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
