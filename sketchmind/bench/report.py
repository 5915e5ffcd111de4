"""Benchmark reports: accuracy per level with Wilson intervals, cost per solve, a table and a plot."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson(successes: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) when there is no data.

    Unlike the normal approximation it stays inside [0, 1] and is honest at 0% and 100%, which is
    where small benchmark runs usually are.
    """
    if total <= 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if successes == 0 else max(0.0, centre - half)  # exact ends, free of rounding
    high = 1.0 if successes == total else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class LevelSummary:
    """Accuracy and mean cost of the solves at one level (or all levels, ``level=None``)."""

    level: int | None
    n: int
    correct: int
    low: float
    high: float
    turns: float
    images: float
    tokens: float | None  # prompt + generated tokens per solve, summed over turns, when the backend counts them
    seconds: float
    context: float | None = None  # the largest context of a solve (last prompt + its output), mean per solve

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The records of a results.jsonl file; a line cut short by a killed run is skipped."""
    records = []
    file = Path(path)
    if not file.is_file():
        return []
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line of a run killed mid-write
        if isinstance(record, dict) and "id" in record:
            records.append(record)
    return records


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return sum(items) / len(items) if items else 0.0


def _summary(level: int | None, records: Sequence[Mapping[str, Any]]) -> LevelSummary:
    correct = sum(1 for r in records if r.get("correct"))
    low, high = wilson(correct, len(records))
    tokens = [r["tokens"] for r in records if r.get("tokens") is not None]
    contexts = [r["context"] for r in records if r.get("context") is not None]
    return LevelSummary(
        level=level,
        n=len(records),
        correct=correct,
        low=low,
        high=high,
        turns=_mean(r.get("turns", 0) for r in records),
        images=_mean(r.get("images", 0) for r in records),
        tokens=_mean(tokens) if tokens else None,
        seconds=_mean(r.get("seconds", 0.0) for r in records),
        context=_mean(contexts) if contexts else None,
    )


def summarise(records: Sequence[Mapping[str, Any]]) -> list[LevelSummary]:
    """One summary per level, in level order, then the overall summary."""
    levels = sorted({int(r["level"]) for r in records})
    rows = [_summary(level, [r for r in records if int(r["level"]) == level]) for level in levels]
    return [*rows, _summary(None, records)]


def markdown_table(summaries: Sequence[LevelSummary]) -> str:
    """The summaries as a Markdown table."""
    lines = [
        "| level | n | accuracy | 95% CI | turns | images | tokens | context | s/solve |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        level = "all" if s.level is None else str(s.level)
        tokens = "-" if s.tokens is None else f"{s.tokens:.0f}"
        context = "-" if s.context is None else f"{s.context:.0f}"
        lines.append(
            f"| {level} | {s.n} | {s.accuracy:.1%} | {s.low:.1%}-{s.high:.1%} | {s.turns:.1f} | {s.images:.1f} "
            f"| {tokens} | {context} | {s.seconds:.2f} |"
        )
    return "\n".join(lines)


def plot(runs: Mapping[str, Sequence[LevelSummary]], path: str | Path, title: str = "") -> Path:
    """Accuracy per level with 95% error bars, one line per run; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")  # headless: no display on servers or in CI
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name, summaries in runs.items():
        rows = [s for s in summaries if s.level is not None]
        x = [int(s.level or 0) for s in rows]
        y = [s.accuracy for s in rows]
        errors = [[s.accuracy - s.low for s in rows], [s.high - s.accuracy for s in rows]]
        axes.errorbar(x, y, yerr=errors, marker="o", capsize=3, label=name)
    axes.set_xlabel("level")
    axes.set_ylabel("accuracy")
    axes.set_ylim(-0.02, 1.02)
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title)
    axes.legend(fontsize=8)
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out)
    plt.close(figure)
    return out


def compare_runs(directories: Sequence[str | Path], out: str | Path) -> str:
    """Put several runs on one plot (``out``) and return their overall rows as a Markdown table."""
    runs: dict[str, list[LevelSummary]] = {}
    for directory in directories:
        records = read_results(Path(directory) / "results.jsonl")
        if not records:
            raise ValueError(f"{directory}: no results.jsonl with results")
        runs[Path(directory).name] = summarise(records)
    plot(runs, out, title="accuracy per level")
    lines = ["| run | n | accuracy | 95% CI | turns | images | s/solve |", "|---|---:|---:|---|---:|---:|---:|"]
    for name, summaries in runs.items():
        s = summaries[-1]
        lines.append(
            f"| {name} | {s.n} | {s.accuracy:.1%} | {s.low:.1%}-{s.high:.1%} | {s.turns:.1f} | {s.images:.1f} "
            f"| {s.seconds:.2f} |"
        )
    return "\n".join(lines)
