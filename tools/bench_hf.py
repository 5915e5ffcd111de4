"""HF backend benchmarks: cross-turn KV-cache reuse and batched lockstep decoding, on tiny random models.

Run with ``.venv/bin/python tools/bench_hf.py`` (offline: the checkpoint is built in a temporary
directory with ``sketchmind.models.tiny.build_tiny``). It prints a rich table, then the same results as
Markdown, and with ``--json PATH`` writes them as JSON. The exit code is 0 unless ``--strict`` is given
and a target fails.

The model is a somewhat larger tiny checkpoint than the tests use (hidden 256, 4 layers, 224x224 views),
so prefill does real work; the weights are random, so every turn decodes until ``--new-tokens``
(48 by default: a short ``<think>`` plus one tool call in our protocol's tokens).

**(a) KV reuse vs full re-prefill**, on an 8-turn trajectory that adds a new view every turn, with our
protocol's real system prompt. At each turn the same conversation is answered twice by one ``HFPolicy``:
once incrementally (the conversation keeps its cache) and once from scratch (a twin conversation that is
released first). Both see the same messages (the incremental run's outputs), and the two are interleaved
so background load hits both alike. Per-turn wall times are medians over ``--repeats`` trajectories.
"First token" replays each turn with ``max_new_tokens=1``: the prefill alone (for the incremental side
this replay also prefills the assistant's previous text, which a real trajectory has cached).
Target: the turn-8 wall time is at least 3x lower with reuse.

**(b) Batched lockstep vs one by one**, on 32 conversations with different questions and view sizes,
over two turns (the second reuses each conversation's cache in both modes). Throughput is sampled tokens
per second of wall time; the two-turn run is repeated (``--batch-repeats``) and each phase keeps its
fastest run. Target: the batch is at least 4x faster over both turns. Greedy outputs are compared row
by row.

Ratios come from one run on one machine: trust them more than the absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from machine import usable_cpus
from rich.console import Console
from rich.table import Table

from sketchmind import tools
from sketchmind.models.base import Conversation, Generation, Sampling
from sketchmind.models.hf import HFPolicy
from sketchmind.models.tiny import build_tiny
from sketchmind.protocols import get_protocol

REUSE_TARGET = 3.0
BATCH_TARGET = 4.0
QUESTIONS = (
    "Find a safe path from the start to the goal.",
    "Where is the goal?",
    "Count the boxes in each row and column, then answer.",
    "Which object is closer to the door, the red box or the blue circle?",
    "Zoom into the region with the small text and read it.",
    "Draw a box around every hole in the maze.",
)


# ------------------------------------------------------------------------------------------- input


def view(width: int, height: int, seed: int) -> np.ndarray:
    """A deterministic photo-like RGB view: smooth shading, a few flat boxes, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 180 + 40, y / height * 160 + 50, (x + y) / (width + height) * 200], axis=2)
    for _ in range(4):
        x0, y0 = rng.integers(0, width - 16), rng.integers(0, height - 16)
        image[y0 : y0 + rng.integers(8, 48), x0 : x0 + rng.integers(8, 48)] = rng.integers(0, 256, 3)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def system_prompt(size: int) -> str:
    return get_protocol("sketchmind").system_prompt(tools.specs(), (size, size))


def opening(cid: str, question: str, views: dict[int, np.ndarray], system: str) -> Conversation:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": system}]},
        {"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": question}]},
    ]
    return Conversation(id=cid, messages=messages, images=views)


def extend(conversation: Conversation, text: str, new_view: int) -> None:
    """The assistant's turn, then the tool result that shows the new view."""
    height, width = conversation.images[new_view].shape[:2]
    conversation.messages += [
        {"role": "assistant", "content": [{"type": "text", "text": text}]},
        {
            "role": "tool",
            "content": [
                {"type": "text", "text": f"view {new_view} ({width}x{height}): box 'goal' drawn"},
                {"type": "image", "view": new_view},
            ],
        },
    ]


def timed(policy: HFPolicy, conversation: Conversation, sampling: Sampling) -> tuple[Generation, float]:
    started = time.perf_counter()
    out = policy.generate(conversation, sampling)
    return out, time.perf_counter() - started


# ----------------------------------------------------------------------------------------- results


@dataclass
class Turn:
    turn: int
    tokens_reuse: int  # prompt tokens prefilled with reuse
    tokens_full: int
    reuse_s: float
    full_s: float
    first_reuse_s: float
    first_full_s: float
    cumulative_reuse_s: float = 0.0
    cumulative_full_s: float = 0.0

    @property
    def ratio(self) -> float:
        return self.full_s / self.reuse_s

    @property
    def cumulative_ratio(self) -> float:
        return self.cumulative_full_s / self.cumulative_reuse_s


@dataclass
class BatchResult:
    turn: str
    rows: int
    tokens: int
    single_s: float
    batch_s: float
    identical: int
    compared: int

    @property
    def ratio(self) -> float:
        return self.single_s / self.batch_s


# ---------------------------------------------------------------------------------------- benchmarks


def bench_reuse(policy: HFPolicy, turns: int, new_tokens: int, repeats: int, size: int) -> list[Turn]:
    """(a) The same trajectory answered incrementally and from scratch, turn by turn."""
    system = system_prompt(size)
    views = {i: view(size, size, seed=i) for i in range(1, turns + 2)}
    sampling, first = Sampling(max_new_tokens=new_tokens), Sampling(max_new_tokens=1)
    warm = opening("warm-up", QUESTIONS[0], views, system)
    policy.generate(warm, Sampling(max_new_tokens=4))
    policy.release(warm.id)
    samples: list[list[tuple[int, int, float, float, float, float]]] = [[] for _ in range(turns)]
    for r in range(repeats):
        reuse, full, replay = (opening(f"{kind}{r}", QUESTIONS[0], views, system) for kind in ("reuse", "full", "ttft"))
        for t in range(turns):
            got, reuse_s = timed(policy, reuse, sampling)
            policy.release(full.id)
            want, full_s = timed(policy, full, sampling)
            _, first_reuse_s = timed(policy, replay, first)
            policy.release(full.id)
            _, first_full_s = timed(policy, full, first)
            samples[t].append((got.tokens_in or 0, want.tokens_in or 0, reuse_s, full_s, first_reuse_s, first_full_s))
            for conversation in (reuse, full, replay):
                extend(conversation, got.text, new_view=t + 2)
        for conversation in (reuse, full, replay):
            policy.release(conversation.id)
    results: list[Turn] = []
    cumulative = [0.0, 0.0]
    for t, rows in enumerate(samples, start=1):
        medians = [statistics.median(column) for column in zip(*rows, strict=True)]
        turn = Turn(t, int(medians[0]), int(medians[1]), *medians[2:])
        cumulative[0] += turn.reuse_s
        cumulative[1] += turn.full_s
        turn.cumulative_reuse_s, turn.cumulative_full_s = cumulative
        results.append(turn)
    return results


def bench_batch(policy: HFPolicy, rows: int, new_tokens: int, repeats: int) -> list[BatchResult]:
    """(b) Two turns of ``rows`` conversations, one by one and as one lockstep batch.

    The whole two-turn run is repeated and each phase keeps its fastest repeat: a phase lasts seconds,
    and a busy neighbour on a small machine slows whichever phase it overlaps.
    """
    system = system_prompt(224)
    sizes = [(160 + 32 * (i % 5), 160 + 32 * (i % 3)) for i in range(rows)]
    views = [{1: view(w, h, seed=100 + i), 2: view(h, w, seed=200 + i)} for i, (w, h) in enumerate(sizes)]
    sampling = Sampling(max_new_tokens=new_tokens)
    best: dict[tuple[int, str], float] = {}
    results = []
    for r in range(repeats):
        single = [opening(f"one{r}-{i}", QUESTIONS[i % len(QUESTIONS)], views[i], system) for i in range(rows)]
        batch = [opening(f"all{r}-{i}", QUESTIONS[i % len(QUESTIONS)], views[i], system) for i in range(rows)]
        for turn in (1, 2):
            started = time.perf_counter()
            alone = [policy.generate(conversation, sampling) for conversation in single]
            single_s = time.perf_counter() - started
            started = time.perf_counter()
            together = policy.generate_batch(batch, sampling)
            batch_s = time.perf_counter() - started
            best[turn, "single"] = min(best.get((turn, "single"), single_s), single_s)
            best[turn, "batch"] = min(best.get((turn, "batch"), batch_s), batch_s)
            if r == repeats - 1:
                identical = sum(a.text == b.text for a, b in zip(alone, together, strict=True))
                tokens = sum(g.tokens_out or 0 for g in together)
                label = "1 (fresh prompts)" if turn == 1 else "2 (cached history)"
                results.append(
                    BatchResult(label, rows, tokens, best[turn, "single"], best[turn, "batch"], identical, rows)
                )
            for conversation, out in [*zip(single, alone, strict=True), *zip(batch, together, strict=True)]:
                extend(conversation, out.text, new_view=2)
        for conversation in single + batch:
            policy.release(conversation.id)
    total = BatchResult(
        "both turns",
        rows,
        sum(r.tokens for r in results),
        sum(r.single_s for r in results),
        sum(r.batch_s for r in results),
        sum(r.identical for r in results),
        sum(r.compared for r in results),
    )
    return [*results, total]


# ------------------------------------------------------------------------------------------ output

REUSE_COLUMNS = [
    "Turn",
    "Prefilled (reuse / full)",
    "First token reuse",
    "First token full",
    "Turn reuse",
    "Turn full",
    "Turn ratio",
    "Cumulative reuse",
    "Cumulative full",
    "Cumulative ratio",
]
BATCH_COLUMNS = [
    "Turn",
    "Rows",
    "Tokens",
    "One by one",
    "Batched",
    "Tok/s one by one",
    "Tok/s batched",
    "Speed-up",
    "Same text as one by one",
]


def _s(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def reuse_cells(turn: Turn) -> list[str]:
    return [
        str(turn.turn),
        f"{turn.tokens_reuse} / {turn.tokens_full}",
        _s(turn.first_reuse_s),
        _s(turn.first_full_s),
        _s(turn.reuse_s),
        _s(turn.full_s),
        f"{turn.ratio:.1f}x",
        _s(turn.cumulative_reuse_s),
        _s(turn.cumulative_full_s),
        f"{turn.cumulative_ratio:.1f}x",
    ]


def batch_cells(result: BatchResult) -> list[str]:
    return [
        result.turn,
        str(result.rows),
        str(result.tokens),
        _s(result.single_s),
        _s(result.batch_s),
        f"{result.tokens / result.single_s:.0f}",
        f"{result.tokens / result.batch_s:.0f}",
        f"{result.ratio:.1f}x",
        f"{result.identical}/{result.compared}",
    ]


def verdicts(turns: Sequence[Turn], batches: Sequence[BatchResult]) -> list[tuple[str, str, bool]]:
    last = turns[-1]
    total = batches[-1]
    return [
        (
            f"KV reuse: turn {last.turn} wall time {last.ratio:.1f}x lower than a full re-prefill",
            f">= {REUSE_TARGET:g}x",
            last.ratio >= REUSE_TARGET,
        ),
        (
            f"Batched lockstep: {total.ratio:.1f}x the one-by-one throughput over {total.rows} conversations",
            f">= {BATCH_TARGET:g}x",
            total.ratio >= BATCH_TARGET,
        ),
    ]


def rich_tables(turns: Sequence[Turn], batches: Sequence[BatchResult], title: str) -> list[Table]:
    reuse = Table(title=f"(a) KV-cache reuse vs full re-prefill - {title}")
    for name in REUSE_COLUMNS:
        reuse.add_column(name, justify="right")
    for turn in turns:
        reuse.add_row(*reuse_cells(turn))
    batch = Table(title=f"(b) batched lockstep vs one by one - {title}")
    for name in BATCH_COLUMNS:
        batch.add_column(name, justify="left" if name == "Turn" else "right")
    for result in batches:
        batch.add_row(*batch_cells(result))
    return [reuse, batch]


def markdown(columns: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 0) -> str:
    aligns = ["---" if i < text_columns else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join(aligns) + " |"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def machine() -> dict[str, Any]:
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": usable_cpus(),
        "platform": platform.platform(),
    }


# -------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the HF backend: KV reuse across turns, batching.")
    parser.add_argument("--family", default="qwen2.5-vl", choices=("qwen2.5-vl", "qwen3-vl", "idefics3"))
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48, help="tokens decoded per turn")
    parser.add_argument("--repeats", type=int, default=3, help="trajectories per mode in (a) (medians)")
    parser.add_argument("--batch-repeats", type=int, default=2, help="runs of (b) (fastest kept)")
    parser.add_argument("--size", type=int, default=224, help="view side in pixels (448: ViLaSR-sized views)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    options = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub: never wait on it

    console = Console()
    if console.width < 150:
        console = Console(width=150)
    size = options.size
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sketchmind-bench-hf-") as root:
        with console.status("building the tiny checkpoint..."):
            path = build_tiny(
                options.family, Path(root) / "model", hidden_size=options.hidden, layers=options.layers, image_size=size
            )
            policy = HFPolicy(path, device=options.device)
        with console.status("(a) KV reuse vs full re-prefill..."):
            part_a = time.perf_counter()
            turns = bench_reuse(policy, options.turns, options.new_tokens, options.repeats, size)
            part_a = time.perf_counter() - part_a
        with console.status("(b) batched vs one by one..."):
            part_b = time.perf_counter()
            batches = bench_batch(policy, options.rows, options.new_tokens, options.batch_repeats)
            part_b = time.perf_counter() - part_b
    seconds = time.perf_counter() - started

    m = machine()
    title = (
        f"{options.family}, hidden {options.hidden}, {options.layers} layers, {size}x{size} views, "
        f"{options.new_tokens} new tokens a turn, {policy.device.type} {str(policy.dtype).removeprefix('torch.')}"
    )
    summary = (
        f"{m['cpus']} CPUs ({m['torch_threads']} torch threads), torch {m['torch']}, transformers "
        f"{m['transformers']}, Python {m['python']}; (a) {part_a:.0f} s, (b) {part_b:.0f} s, {seconds:.0f} s in all."
    )
    results = verdicts(turns, batches)
    for table in rich_tables(turns, batches, title):
        console.print(table)
    for text, target, passed in results:
        console.print(f"{'[green]PASS[/]' if passed else '[bold red]FAIL[/]'}  {text} (target {target})")
    console.print(summary)

    print()
    print(f"**{title}**\n")
    print(markdown(REUSE_COLUMNS, [reuse_cells(t) for t in turns]))
    print()
    print(markdown(BATCH_COLUMNS, [batch_cells(b) for b in batches], text_columns=1))
    print()
    for text, target, passed in results:
        print(f"- {'PASS' if passed else 'FAIL'}: {text} (target {target})")
    print(f"\n{summary}")
    if options.json:
        payload = {
            "machine": m,
            "title": title,
            "seconds": round(seconds, 1),
            "reuse": [{**asdict(t), "ratio": t.ratio, "cumulative_ratio": t.cumulative_ratio} for t in turns],
            "batch": [{**asdict(b), "ratio": b.ratio} for b in batches],
            "targets": [{"what": text, "target": target, "passed": passed} for text, target, passed in results],
        }
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 1 if options.strict and not all(passed for _, _, passed in results) else 0


if __name__ == "__main__":
    sys.exit(main())
