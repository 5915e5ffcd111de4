"""Run a model on a benchmark, batched and resumable, and score every answer with the family's verifier.

A run lives in one directory: ``run.json`` (what was run), ``results.jsonl`` (one line per solved
puzzle, appended and synced after every batch) and, at the end, ``report.md`` and ``accuracy.png``.
Re-running the same command skips the puzzles already in ``results.jsonl``, so a killed run loses at
most one batch. Puzzles that hit a backend error are not recorded, so a re-run retries them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from sketchmind.bench.report import plot, read_results, summarise
from sketchmind.files import append_jsonl, drop_cut_line, write_json_atomic, write_text_atomic
from sketchmind.models.base import Policy, Sampling
from sketchmind.tasks import Puzzle, TaskFamily, get_family, make_dataset
from sketchmind.trace import Trace

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "run.json"
# Changing any of these changes what the numbers mean, so a run directory refuses them.
_IDENTITY = ("target", "model", "mode", "protocol", "seed", "samples", "data", "max_turns", "max_new_tokens")


@dataclass(frozen=True)
class BenchConfig:
    """What to run: a family name or ``vsp``, the model spec, and the dataset size and seed."""

    target: str
    model: str
    mode: str = "draw"
    protocol: str | None = None  # None: the one the policy was trained to speak, else sketchmind
    levels: tuple[int, ...] | None = None  # None: every level the family (or the VSP folder) has
    n: int | None = 20  # puzzles per level; None for VSP means every example
    seed: int = 0
    samples: int = 1
    data: str | None = None  # VSP folder (the one holding maps/)
    max_turns: int = 10
    max_new_tokens: int = 512  # per model turn
    batch_size: int = 8
    base_url: str | None = None


@dataclass
class BenchRun:
    """The outcome of one ``run_bench`` call."""

    directory: Path
    records: list[dict[str, Any]]  # every record in results.jsonl, old and new
    solved_now: int = 0
    failed: list[str] = field(default_factory=list)  # backend errors, retried by the next run


def load_puzzles(config: BenchConfig) -> tuple[TaskFamily, list[Puzzle]]:
    """The benchmark's puzzles, deterministic from the config."""
    if config.target == "vsp":
        from sketchmind.tasks.vsp import bundled_vsp, load_vsp

        puzzles = load_vsp(config.data or bundled_vsp(), levels=config.levels)
        if config.n is not None:
            puzzles = [p for p in puzzles if p.index < config.n]
        return get_family("frozenlake"), puzzles
    family = get_family(config.target)
    levels = config.levels or family.levels
    return family, make_dataset(family, levels, config.n if config.n is not None else 20, config.seed)


def _check_directory(directory: Path, config: BenchConfig) -> None:
    """Refuse to mix two different runs in one directory; remember this run's config.

    A config with no protocol (the policy's own) is checked again once the agent knows which it is
    (``run_bench`` calls this a second time with it), so the folder records the protocol actually spoken.
    """
    path = directory / CONFIG_FILE
    mine = {k: v for k, v in asdict(config).items() if k in _IDENTITY}
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        unknown = mine["protocol"] is None or theirs.get("protocol") is None  # not resolved yet on one side
        compared = [k for k in _IDENTITY if not (k == "protocol" and unknown)]
        changed = [k for k in compared if theirs.get(k) != mine.get(k)]
        mine["protocol"] = mine["protocol"] or theirs.get("protocol")
        if changed:
            detail = ", ".join(f"{k}={theirs.get(k)!r}" for k in changed)
            raise ValueError(f"{directory} holds another run ({detail}): use another --out or delete it")
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, mine)


def record(puzzle: Puzzle, trace: Trace, correct: bool, seconds: float) -> dict[str, Any]:
    """One results.jsonl line: the verdict and what the solve cost."""
    counted = [s for s in trace.steps if s.tokens_in is not None or s.tokens_out is not None]
    tokens = sum((s.tokens_in or 0) + (s.tokens_out or 0) for s in counted) if counted else None
    # The largest context the model held (usually the last turn's prompt plus its output).
    contexts = [s.context for s in trace.steps if s.context is not None]
    context = max(contexts) if contexts else None
    return {
        "id": puzzle.id,
        "family": puzzle.family,
        "level": puzzle.level,
        "index": puzzle.index,
        "correct": correct,
        "answer": trace.answer,
        "reference": puzzle.answer,
        "status": trace.status,
        "error": trace.error,
        "turns": len(trace.steps),
        "images": (puzzle.image is not None) + sum(len(s.view_ids) for s in trace.steps),
        "tokens": tokens,
        "context": context,
        "seconds": round(seconds, 4),
    }


def _make_policy(config: BenchConfig) -> Policy:
    if config.model == "expert":
        from sketchmind.models.expert import ExpertPolicy
        from sketchmind.protocols import DEFAULT_PROTOCOL

        if config.samples > 1:
            raise ValueError("the expert is deterministic: --samples needs a sampling model")
        return ExpertPolicy(config.protocol or DEFAULT_PROTOCOL, mode="text" if config.mode == "text" else "draw")
    from sketchmind.models.loading import load_policy

    return load_policy(config.model, base_url=config.base_url, mode=config.mode)


def run_bench(
    config: BenchConfig,
    directory: str | Path,
    *,
    policy: Policy | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> BenchRun:
    """Solve every puzzle not yet in ``directory/results.jsonl``, append the results, write the report.

    ``on_batch(done, total)`` is called after each batch (the CLI's progress bar).
    """
    from sketchmind.agent import Agent, Budgets

    out = Path(directory)
    family, puzzles = load_puzzles(config)  # first: a bad --data must not leave a run.json claiming the folder
    _check_directory(out, config)
    results = out / RESULTS_FILE
    drop_cut_line(results)
    done = {r["id"] for r in read_results(results)}
    todo = [p for p in puzzles if p.id not in done]
    policy = policy or _make_policy(config)
    budgets, sampling = Budgets(max_turns=config.max_turns), Sampling(max_new_tokens=config.max_new_tokens)
    agent = Agent(policy, config.protocol, budgets, mode=config.mode, sampling=sampling)  # type: ignore[arg-type]
    if config.protocol is None:  # now known: the folder records (and is checked for) the protocol spoken
        _check_directory(out, replace(config, protocol=agent.protocol.name))
    run = BenchRun(out, [])
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        started = time.perf_counter()
        if config.samples > 1:
            traces = [agent.solve(p.image, p.question, samples=config.samples, puzzle=p) for p in batch]
        else:
            items = [(p.image, p.question) for p in batch]
            traces = agent.solve_batch(items, run_ids=[p.id for p in batch], puzzles=batch)
        per_solve = (time.perf_counter() - started) / len(batch)  # batched: the amortised wall time
        fresh = []
        for puzzle, trace in zip(batch, traces, strict=True):
            if trace.status == "error":
                run.failed.append(f"{puzzle.id}: {trace.error}")
                continue
            fresh.append(record(puzzle, trace, family.verify(puzzle, trace.answer), per_solve))
        append_jsonl(results, fresh)  # a batch is either on disk or redone
        run.solved_now += len(fresh)
        if on_batch is not None:
            on_batch(min(start + len(batch), len(todo)), len(todo))
    wanted = {p.id for p in puzzles}
    run.records = [r for r in read_results(results) if r["id"] in wanted]
    write_report(out, run.records, title=f"{config.target} · {config.model} · {config.mode}")
    return run


def write_report(directory: Path, records: Sequence[dict[str, Any]], title: str) -> None:
    """``report.md`` (the table) and ``accuracy.png`` (the plot) for a run's records."""
    from sketchmind.bench.report import markdown_table

    if not records:
        return
    summaries = summarise(records)
    write_text_atomic(directory / "report.md", f"# {title}\n\n{markdown_table(summaries)}\n")
    plot({title: summaries}, directory / "accuracy.png", title=title)
