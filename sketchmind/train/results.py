"""A trained recipe's results as Markdown tables, written into the docs pages and the model card.

``python -m sketchmind.train.results RECIPE --write docs/results.md docs/perception.md MODEL_CARD`` reads
every benchmark the recipe's ``eval`` stage ran (``RUN/eval/TARGET-MODE/results.jsonl``) and prints two
tables: per target and mode (accuracy with its Wilson 95% interval, context tokens and seconds per
solve), and accuracy per level. With ``--write``, each file's block between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` is replaced by the tables (NAME: the recipe's), and
the block ``<!-- perception:NAME -->`` by the perceive stage's reading table (``perceive/perception.json``).
A file may hold either block or both; one that holds neither is an error (exit 2), and a block whose
tables do not exist yet (no eval runs, or no perceive stage) is left as it is.
Nothing is re-run: ``sketchmind train RECIPE --stage eval`` makes the runs, resumably.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sketchmind.bench.report import LevelSummary, read_results, summarise
from sketchmind.files import replace_marked_block
from sketchmind.train.recipe import Recipe, RecipeError, load_recipe

MODE_NAMES = {
    "draw": "draw",
    "dpo": "draw, after DPO",
    "text": "text CoT",
    "direct": "direct answer",
    "latent": "latent",
    "latent-mean": "latent, mean-ablated",
    "latent-noise": "latent, noise-ablated",
    "auto": "auto",
}


def collect(recipe: Recipe) -> dict[tuple[str, str], list[LevelSummary]]:
    """(target, mode name) -> per-level summaries then the overall one, for every eval run on disk."""
    if recipe.eval is None:
        raise ValueError(f"recipe {recipe.name} has no eval section")
    targets = [*recipe.eval.families, *(["vsp"] if recipe.eval.vsp else [])]
    found: dict[tuple[str, str], list[LevelSummary]] = {}
    for target in targets:
        for mode in recipe.eval.modes:
            folder = Path(recipe.output) / "eval" / f"{target}-{mode}"
            records = read_results(folder / "results.jsonl")
            if records:
                found[target, mode_name(mode, folder)] = summarise(records)
    return found


def mode_name(mode: str, folder: Path) -> str:
    """How a row names its eval mode; a policy with no tools (the ``search`` protocol, as its bench folder's
    ``run.json`` records) runs text mode as what it is: its search in words, not a text CoT baseline."""
    config = folder / "run.json"
    protocol = json.loads(config.read_text(encoding="utf-8")).get("protocol") if config.is_file() else None
    if mode == "text" and protocol == "search":
        return "search in words"
    return MODE_NAMES.get(mode, mode)


def _cell(summary: LevelSummary) -> str:
    return f"{summary.accuracy:.0%} ({summary.low:.0%}-{summary.high:.0%})"


def _target_name(target: str) -> str:
    return "VSP maze examples" if target == "vsp" else target


def overall_table(found: Mapping[tuple[str, str], Sequence[LevelSummary]]) -> str:
    """One row per target and mode: n, accuracy (95% CI), context tokens and seconds per solve."""
    lines = [
        "| Puzzles | Mode | n | Accuracy (95% CI) | Context tokens / solve | Turns | s / solve |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    for (target, mode), summaries in found.items():
        s = summaries[-1]
        context = "-" if s.context is None else f"{s.context:.0f}"
        lines.append(
            f"| {_target_name(target)} | {mode} | {s.n} | {_cell(s)} | {context} | {s.turns:.1f} | {s.seconds:.2f} |"
        )
    return "\n".join(lines)


def level_table(found: Mapping[tuple[str, str], Sequence[LevelSummary]]) -> str:
    """Accuracy (95% CI) per target and level, one column per mode."""
    modes = list(dict.fromkeys(mode for _, mode in found))
    lines = [
        "| Puzzles | Level | n | " + " | ".join(modes) + " |",
        "|---|---:|---:|" + "---|" * len(modes),
    ]
    for target in dict.fromkeys(t for t, _ in found):
        levels = sorted({s.level for (t, _), ss in found.items() if t == target for s in ss if s.level is not None})
        for level in levels:
            cells, n = [], 0
            for mode in modes:
                match = [s for s in found.get((target, mode), []) if s.level == level]
                cells.append(_cell(match[0]) if match else "-")
                n = max(n, match[0].n if match else 0)
            lines.append(f"| {_target_name(target)} | {level} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compute_table(recipe: Recipe) -> str:
    """Wall time per finished stage (each stage's ``done.json``) and the total."""
    from sketchmind.train.pipeline import DONE_FILE, Pipeline

    lines = ["| Stage | Wall time | |", "|---|---:|---|"]
    total = 0.0
    for stage in Pipeline(recipe, report=lambda _: None).enabled():
        done = Path(recipe.output) / stage / DONE_FILE
        if not done.is_file():
            continue
        summary = json.loads(done.read_text(encoding="utf-8"))
        seconds = float(summary.get("seconds", 0.0))
        total += seconds
        lines.append(f"| {stage} | {seconds / 60:.1f} min | {_stage_note(summary)} |")
    lines.append(f"| **total** | **{total / 60:.0f} min** | |")
    return "\n".join(lines)


def _stage_note(summary: Mapping[str, object]) -> str:
    """The one number that says what a stage did (rows, steps, parameters, kept samples)."""
    for key, label in (("parameters", "parameters"), ("kept", "samples kept"), ("global_step", "steps")):
        if key in summary:
            value = summary[key]
            return f"{value:,} {label}" if isinstance(value, int) else f"{value} {label}"
    if "rows" in summary:
        return f"{summary['rows']} rows"
    return ""


def perception_block(recipe: Recipe) -> str | None:
    """The perceive stage's reading table (``perceive/perception.json``) with what it measured; None before it ran."""
    from sketchmind.train.perception import READING_FILE, ReadingTable

    path = Path(recipe.output) / "perceive" / READING_FILE
    if recipe.stages.perceive is None or not path.is_file():
        return None
    done = Path(recipe.output) / "perceive" / "done.json"
    passed = json.loads(done.read_text(encoding="utf-8")).get("gate_passed_at") if done.is_file() else None
    gate = recipe.stages.perceive.gate
    verdict = f"passed at step {passed}" if passed else "not passed within max_steps"
    if not done.is_file():  # measured on a checkpoint of a stage that was stopped (or is still running)
        steps = [int(c.name.split("-")[-1]) for c in path.parent.glob("checkpoint-*") if c.name[11:].isdigit()]
        last = f" (last checkpoint: step {max(steps)} of {recipe.stages.perceive.max_steps})" if steps else ""
        verdict = f"not reached: the stage has not finished{last}"
    seed = recipe.eval.seed if recipe.eval is not None else 99
    return (
        f"Reading after the perceive stage of `{recipe.name}`: the model transcribes each map, teacher-forced "
        f"(each cell predicted from the image and the true cells before it). Generated maps: held-out seed {seed}; "
        f"VSP: its own maps, never trained on. Gate (per cell >= {gate.cell}, exact maps >= {gate.exact} on "
        f"validation maps): {verdict}.\n\n{ReadingTable.load(path).markdown()}"
    )


def render(recipe: Recipe) -> str:
    """The results tables and the compute table, with a line saying what was measured."""
    found = collect(recipe)
    if not found:
        raise ValueError(f"no eval results under {recipe.output}/eval: run `sketchmind train RECIPE --stage eval`")
    assert recipe.eval is not None
    where = f"held-out seed {recipe.eval.seed}, {recipe.eval.n} puzzles per level"
    return (
        f"Recipe `{recipe.name}`, {where}; greedy decoding, at most {recipe.eval.max_turns} "
        f"turn{'' if recipe.eval.max_turns == 1 else 's'}. "
        "Context tokens: the largest context of a solve (prompt, images and output).\n\n"
        f"{overall_table(found)}\n\nAccuracy per level:\n\n{level_table(found)}\n\n"
        f"Compute (2 CPU cores, wall time per stage):\n\n{compute_table(recipe)}"
    )


def write_block(path: str | Path, name: str, text: str) -> bool:
    """Replace the ``<!-- results:name -->`` ... ``<!-- /results:name -->`` block of ``path``; False if absent."""
    return replace_marked_block(path, f"results:{name}", text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A trained recipe's eval results as Markdown tables.")
    parser.add_argument("recipe")
    parser.add_argument("--write", nargs="*", default=[], metavar="FILE", help="files whose results block to replace")
    options = parser.parse_args(argv)
    try:
        recipe = load_recipe(options.recipe)
    except RecipeError as error:
        print(f"results: {error}", file=sys.stderr)
        return 2
    reading = perception_block(recipe)  # the reading table exists as soon as the perceive stage has run
    try:
        text: str | None = render(recipe)
    except ValueError as error:
        if reading is None:
            print(f"results: {error}", file=sys.stderr)
            return 2
        text = None
    print("\n\n".join(block for block in (text, reading) if block))
    for path in options.write:  # every file is checked before any is written
        page = Path(path).read_text(encoding="utf-8") if Path(path).is_file() else ""
        if not any(f"<!-- {kind}:{recipe.name} -->" in page for kind in ("results", "perception")):
            print(f"results: {path} has no <!-- results:{recipe.name} --> or perception block", file=sys.stderr)
            return 2
    for path in options.write:
        if text is not None:
            write_block(path, recipe.name, text)
        if reading is not None:
            replace_marked_block(path, f"perception:{recipe.name}", reading)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
