"""Context tokens per solve: drawing vs latent vs text, on the same expert trajectories and the same tokenizer.

Run with ``.venv/bin/python tools/bench_latent.py`` (offline: a tiny latent Qwen2.5-VL checkpoint is built
in a temporary directory with ``sketchmind.models.tiny_latent.build_tiny_latent``, so the three latent tokens
exist and the processor is a real Qwen2.5-VL one). It prints rich tables, then the same as Markdown; with
``--json PATH`` it also writes them as JSON. Exit code 0 unless ``--strict`` and a target fails.

The puzzles are the expert's kept trajectories (``synthesize``) at one mid-range level per family
(frozenlake 5, maze 3 by default). Each trajectory is counted in three formats:

- **draw**: the multi-turn conversation as trained and served: every assistant turn, every observation
  with its rendered view as image tokens;
- **latent**: ``latent_row``: system + question + input image, then ONE assistant turn in which each view
  is a block of ``<|latent_start|>`` + K pads + ``<|latent_end|>`` (K = 4), observations dropped;
- **text**: the text-CoT baseline's training row (``train.baselines.baseline_row``): text mode's system
  prompt + question + input image, then one assistant turn with the expert's thoughts and answer (no
  tools, no views).

All three keep the same question; draw and latent the same system prompt. Images go through ``fit_pixels``
at the processor's ``max_pixels`` (the tiny build's default, 256 x 28 x 28 = 200,704 pixels) and the
processor itself, so image tokens are what a Qwen2.5-VL model really sees (one token per 28 x 28 pixels).
Two definitions are reported:

(i) **final context**: the tokens of the last forward pass (the whole conversation, answer included);
(ii) **stateless prompt tokens**: the sum over assistant turns of that turn's prompt length, what an
    API-style backend without a KV cache prefills per solve (draw: one prompt per turn; latent and text: one).

Target (issue 6): latent uses >= 10x fewer context tokens per solve than draw. Both definitions get a
verdict; nothing is tuned. Token counts are exact, so there are no timings and no repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sketchmind.images import fit_pixels
from sketchmind.latent.data import latent_row
from sketchmind.latent.tokens import read_spec
from sketchmind.models.chat import template_messages
from sketchmind.models.tiny_latent import build_tiny_latent
from sketchmind.train.baselines import baseline_row
from sketchmind.train.synth import synthesize

TARGET = 10.0
MODES = ("draw", "latent", "text")
LEVELS = {"frozenlake": 5, "maze": 3}


# ------------------------------------------------------------------------------------------ formats


def formats(row: Mapping[str, Any], k: int) -> dict[str, Mapping[str, Any]]:
    """The same trajectory as a draw, a latent and a text row."""
    return {"draw": row, "latent": latent_row(row, k), "text": baseline_row(row, "text")}


# ------------------------------------------------------------------------------------------ counting


class Counter:
    """Token counts of chat rows through the real processor (template, image placeholders expanded)."""

    def __init__(self, processor: Any, max_pixels: int) -> None:
        self.processor = processor
        self.max_pixels = max_pixels
        self.image_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)

    def count(self, messages: Sequence[Mapping[str, Any]], images: Sequence[Any], *, prompt: bool) -> tuple[int, int]:
        """(tokens, image tokens) of ``messages`` rendered (with the generation prompt when ``prompt``)."""
        converted, counts = template_messages(messages)
        text = self.processor.apply_chat_template(converted, add_generation_prompt=prompt, tokenize=False)
        shown = [fit_pixels(image, self.max_pixels) for image in images[: sum(counts)]]
        encoded = self.processor(text=[text], images=shown or None, add_special_tokens=False)
        ids = list(encoded["input_ids"][0])
        return len(ids), ids.count(self.image_id)

    def solve(self, row: Mapping[str, Any]) -> tuple[int, int, int, int]:
        """(final context, of it image tokens, stateless prompt tokens summed over turns, assistant turns)."""
        messages, images = list(row["messages"]), list(row["images"])
        final, image_tokens = self.count(messages, images, prompt=False)
        turns = [i for i, m in enumerate(messages) if m.get("role") == "assistant"]
        prompts = sum(self.count(messages[:i], images, prompt=True)[0] for i in turns)
        return final, image_tokens, prompts, len(turns)


@dataclass
class Solve:
    """One puzzle in one format."""

    id: str
    family: str
    level: int
    mode: str
    views: int  # rendered views after the input image (= latent blocks)
    turns: int
    final: int
    image_tokens: int
    prompts: int


def measure(rows: Sequence[Mapping[str, Any]], counter: Counter, k: int) -> list[Solve]:
    out: list[Solve] = []
    for row in rows:
        views = len(latent_row(row, k)["latent_images"])
        for mode, shaped in formats(row, k).items():
            final, image_tokens, prompts, turns = counter.solve(shaped)
            out.append(Solve(row["id"], row["family"], row["level"], mode, views, turns, final, image_tokens, prompts))
    return out


# ------------------------------------------------------------------------------------------ report


@dataclass
class Group:
    """Means per solve of one group of puzzles, per mode, and the ratios."""

    name: str
    puzzles: int
    views: float
    final: dict[str, float]
    image_tokens: dict[str, float]
    prompts: dict[str, float]

    def ratio(self, definition: str, mode: str) -> float:
        values: dict[str, float] = getattr(self, definition)
        return values["draw"] / values[mode]


def group(name: str, solves: Sequence[Solve]) -> Group:
    def mean(field: str, mode: str) -> float:
        return statistics.fmean(getattr(s, field) for s in solves if s.mode == mode)

    draw = [s for s in solves if s.mode == "draw"]
    return Group(
        name=name,
        puzzles=len(draw),
        views=statistics.fmean(s.views for s in draw),
        final={m: mean("final", m) for m in MODES},
        image_tokens={m: mean("image_tokens", m) for m in MODES},
        prompts={m: mean("prompts", m) for m in MODES},
    )


@dataclass
class TokenCounts:
    """Every solve counted in every format, grouped per family and overall."""

    solves: list[Solve]
    groups: list[Group]  # one per family, then "all"
    overall: Group
    title: str


def count_tokens(n: int, seed: int) -> TokenCounts:
    """Count ``n`` expert trajectories per family (``LEVELS``) as draw, latent and text rows."""
    from transformers import AutoProcessor

    rows: list[dict[str, Any]] = []
    for family, level in LEVELS.items():
        kept, _ = synthesize([family], n, levels=[level], seed=seed)
        rows += kept[:n]
    with tempfile.TemporaryDirectory(prefix="sketchmind-bench-latent-") as root:
        path = build_tiny_latent("qwen2.5-vl", Path(root) / "model")
        k = read_spec(path).k
        processor: Any = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
    max_pixels = int(processor.image_processor.size["longest_edge"])  # the tiny build's default: 256 x 28 x 28
    solves = measure(rows, Counter(processor, max_pixels), k)
    groups = [group(f"{f} (level {lv})", [s for s in solves if s.family == f]) for f, lv in LEVELS.items()]
    overall = group("all", solves)
    sizes = sorted({f"{image.width}x{image.height}" for row in rows for image in row["images"]})
    title = (
        f"Same expert trajectories, tiny latent Qwen2.5-VL processor, K={k}, max_pixels={max_pixels:,} "
        f"(views {', '.join(sizes)}), seed {seed}"
    )
    return TokenCounts(solves, [*groups, overall], overall, title)


COLUMNS = ("Puzzles", "Views", "Draw", "Latent", "Text", "Draw / latent", "Draw / text")
DEFINITIONS = {
    "final": "(i) final context: tokens in the last forward pass, per solve",
    "prompts": "(ii) stateless prompt tokens: sum over turns of each turn's prompt, per solve",
}


def cells(g: Group, definition: str) -> list[str]:
    values: dict[str, float] = getattr(g, definition)
    counts = [f"{values[m]:,.0f}" for m in MODES]
    if definition == "final":  # how much of the draw context is image tokens
        counts[0] += f" ({g.image_tokens['draw']:,.0f} img)"
    return [
        g.name,
        str(g.puzzles),
        f"{g.views:.1f}",
        *counts,
        f"{g.ratio(definition, 'latent'):.1f}x",
        f"{g.ratio(definition, 'text'):.1f}x",
    ]


def verdicts(overall: Group) -> list[tuple[str, bool]]:
    return [
        (
            f"{DEFINITIONS[definition].split(':')[0]}: latent uses {overall.ratio(definition, 'latent'):.1f}x fewer "
            f"tokens per solve than draw",
            overall.ratio(definition, "latent") >= TARGET,
        )
        for definition in DEFINITIONS
    ]


def markdown(rows: Sequence[Sequence[str]]) -> str:
    columns = ("Family", *COLUMNS)
    lines = ["| " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(COLUMNS)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Context tokens per solve: draw vs latent vs text.")
    parser.add_argument("--n", type=int, default=8, help="puzzles per family (expert trajectories kept)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 puzzles per family (a smoke run)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true", help=f"exit 1 if a definition misses {TARGET:g}x")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    n = 2 if options.quick else options.n

    console = Console(width=max(Console().width, 150))
    started = time.perf_counter()
    tokens = count_tokens(n, options.seed)
    groups, overall, title, solves = tokens.groups, tokens.overall, tokens.title, tokens.solves
    results = verdicts(overall)

    for definition, label in DEFINITIONS.items():
        table = Table(title=f"{label} - {title}")
        table.add_column("Family")
        for name in COLUMNS:
            table.add_column(name, justify="right")
        for g in groups:
            table.add_row(*cells(g, definition))
        console.print(table)
    for text, passed in results:
        console.print(f"{'[green]PASS[/]' if passed else '[bold red]FAIL[/]'}  {text} (target >= {TARGET:g}x)")
    seconds = time.perf_counter() - started
    console.print(f"{len(solves) // len(MODES)} puzzles, {seconds:.1f} s.")

    print(f"\n**{title}**")
    for definition, label in DEFINITIONS.items():
        print(f"\n{label}\n")
        print(markdown([cells(g, definition) for g in groups]))
    print()
    for text, passed in results:
        print(f"- {'PASS' if passed else 'FAIL'}: {text} (target >= {TARGET:g}x)")
    if options.json:
        payload = {
            "title": title,
            "groups": [asdict(g) for g in groups],
            "solves": [asdict(s) for s in solves],
            "targets": [{"what": text, "passed": passed} for text, passed in results],
        }
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if options.strict and not all(passed for _, passed in results) else 0


if __name__ == "__main__":
    sys.exit(main())
