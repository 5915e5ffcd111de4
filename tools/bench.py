"""The performance suite: every ratio SketchMind promises, measured in one run on this machine.

Run with ``make bench`` (``.venv/bin/python tools/bench.py``); ``--write docs/performance.md`` replaces that
page's summary table (between its ``<!-- bench:suite -->`` markers) with this run's, ``--json PATH`` saves it.
Each row is a ratio against its floor or its naive counterpart, both sides measured in this run
(interleaved where they are timings), with the target an earlier issue set:

- **render vs memcpy**: the slowest drawing action at 1024² against one kept copy of the image
  (``tools/bench_canvas.py``), the 4096² actions and the memory of 20 views;
- **KV reuse vs re-prefill** and **batched vs sequential**: the HF backend on a tiny Qwen2.5-VL
  (``tools/bench_hf.py``);
- **the agent's share of overhead**: the real agent loop around the same model (``tools/bench_agent.py``);
- **latent vs draw tokens**: exact context-token counts of the same expert trajectories
  (``tools/bench_latent.py``);
- **tokens per solve against the frontier range**: the shipped policy solving VSP mazes in draw mode,
  against the 1.7k-22.8k tokens frontier models spend per maze;
- **serve under load**: ``sketchmind serve`` with concurrent clients on loopback (``tools/load_serve.py``).

Each part's own tool prints its detailed tables; this one prints the verdicts. It exits 0 unless
``--strict`` is given and a target fails: these machines are noisy, so a ratio is evidence, not a gate.
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
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here needs the hub: never wait on it

from machine import usable_cpus
from rich.console import Console
from rich.table import Table

from sketchmind.files import replace_marked_block

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))  # the part benchmarks live beside this file

BLOCK = "bench:suite"  # the block this run rewrites
PAGE = "docs/performance.md"  # the docs page that holds it (``make bench`` writes there)
FRONTIER_TOKENS = (1_700, 22_800)  # per maze solve by frontier models that write the grid and a BFS in prose
TOKENS_PER_SOLVE_TARGET = 1_000  # issue 7


@dataclass
class Ratio:
    """One promised ratio: what was compared, both sides, the ratio and the verdict."""

    area: str
    what: str
    measured: str  # both sides, e.g. "0.62 vs 0.24 ms"
    ratio: str
    target: str
    passed: bool | None  # None: reported without a target

    def cells(self) -> list[str]:
        verdict = "" if self.passed is None else ("PASS" if self.passed else "FAIL")
        return [self.area, self.what, self.measured, self.ratio, self.target, verdict]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


# ------------------------------------------------------------------------------------------- parts


def canvas_part(quick: bool) -> list[Ratio]:
    """Drawing against the unavoidable copy, at 1024² and 4096², and the memory of 20 views."""
    import bench_canvas

    rows = bench_canvas.run(quick)
    small = [r for r in rows if r.group.endswith("reused memory") and r.passed is not None]
    floor = next(r for r in rows if r.group == small[0].group and r.case.startswith(bench_canvas.FLOOR))
    worst = max(small, key=lambda r: r.ratio or 0.0)
    large = [r for r in rows if r.group == f"{bench_canvas.LARGE}²" and r.passed is not None]
    slowest = max(large, key=lambda r: r.value)
    memory = next(r for r in rows if r.unit == "bytes" and r.passed is not None)
    return [
        Ratio(
            "canvas",
            f"render vs memcpy: worst of {len(small)} actions at 1024² ({worst.case})",
            f"{worst.value:.2f} vs {floor.value:.2f} ms",
            f"{worst.ratio or 0.0:.1f}x",
            worst.target,
            worst.passed,
        ),
        Ratio(
            "canvas",
            f"slowest action at 4096² ({slowest.case}) vs its memcpy",
            f"{slowest.value:.1f} ms",
            f"{slowest.ratio or 0.0:.1f}x",
            slowest.target,
            slowest.passed,
        ),
        Ratio("canvas", f"memory: {memory.case}", f"{memory.value / 1e6:.1f} MB", "", memory.target, memory.passed),
    ]


def backend_part(quick: bool) -> list[Ratio]:
    """KV reuse vs re-prefill, batched vs one by one, and the agent's overhead, on one tiny Qwen2.5-VL."""
    import bench_agent
    import bench_hf

    from sketchmind.models.hf import HFPolicy
    from sketchmind.models.tiny import build_tiny

    size, new_tokens = 224, 48
    with tempfile.TemporaryDirectory(prefix="sketchmind-bench-") as root:
        path = build_tiny("qwen2.5-vl", Path(root) / "model", hidden_size=256, layers=4, image_size=size)
        policy = HFPolicy(path)
        turns = bench_hf.bench_reuse(policy, 8, new_tokens, 1 if quick else 3, size)
        batches = bench_hf.bench_batch(policy, 8 if quick else 32, new_tokens, 1 if quick else 2)
        shares = bench_agent.overhead_shares(policy, 1 if quick else 3, 8, new_tokens)
    last, total = turns[-1], batches[-1]
    share = statistics.median(shares)
    return [
        Ratio(
            "backend",
            f"KV reuse vs full re-prefill: wall time of turn {last.turn}",
            f"{_ms(last.reuse_s)} vs {_ms(last.full_s)}",
            f"{last.ratio:.1f}x",
            f">= {bench_hf.REUSE_TARGET:g}x",
            last.ratio >= bench_hf.REUSE_TARGET,
        ),
        Ratio(
            "backend",
            f"… first token at turn {last.turn} ({last.tokens_reuse:,} vs {last.tokens_full:,} tokens prefilled)",
            f"{_ms(last.first_reuse_s)} vs {_ms(last.first_full_s)}",
            f"{last.first_full_s / last.first_reuse_s:.1f}x",
            "",
            None,
        ),
        Ratio(
            "backend",
            f"batched lockstep vs one by one: {total.rows} conversations, two turns",
            f"{total.tokens / total.batch_s:.0f} vs {total.tokens / total.single_s:.0f} tokens/s",
            f"{total.ratio:.1f}x",
            f">= {bench_hf.BATCH_TARGET:g}x",
            total.ratio >= bench_hf.BATCH_TARGET,
        ),
        Ratio(
            "agent",
            "share of a solve's wall time outside the model (graph, parsing, drawing, trace)",
            f"median of {len(shares)} solves",
            f"{share:.1%}",
            f"<= {bench_agent.TARGET:.0%}",
            share <= bench_agent.TARGET,
        ),
    ]


def latent_part(quick: bool) -> list[Ratio]:
    """Context tokens per solve of the same expert trajectories, drawn and imagined."""
    import bench_latent

    counts = bench_latent.count_tokens(2 if quick else 8, seed=0)
    overall, target = counts.overall, bench_latent.TARGET
    rows = []
    for definition, label in (("final", "final context"), ("prompts", "stateless prompt tokens (no KV cache)")):
        draw, latent = overall.__dict__[definition]["draw"], overall.__dict__[definition]["latent"]
        ratio = overall.ratio(definition, "latent")
        rows.append(
            Ratio(
                "latent",
                f"draw vs latent tokens per solve, {label} ({overall.puzzles} expert solves)",
                f"{draw:,.0f} vs {latent:,.0f}",
                f"{ratio:.1f}x",
                f">= {target:g}x",
                ratio >= target,
            )
        )
    return rows


def tokens_part(quick: bool) -> list[Ratio]:
    """The shipped policy's tokens per VSP maze solve (draw mode), against the frontier models' range."""
    from sketchmind.agent import Agent
    from sketchmind.models.default import shipped_policy
    from sketchmind.models.loading import load_policy
    from sketchmind.tasks.vsp import load_vsp

    checkpoint = shipped_policy("draw")
    if checkpoint is None:
        return [Ratio("tokens", "shipped policy tokens per solve", "no shipped policy (make policy)", "", "", None)]
    mazes = [p for p in load_vsp(ROOT / "data" / "vsp-maze-examples") if p.index < (1 if quick else 2)]
    traces = Agent(load_policy(str(checkpoint))).solve_batch([(p.image, p.question) for p in mazes])
    context = statistics.fmean(max(s.context or 0 for s in t.steps) for t in traces)
    written = statistics.fmean(sum(s.tokens_out or 0 for s in t.steps) for t in traces)
    low, high = FRONTIER_TOKENS
    return [
        Ratio(
            "tokens",
            f"largest context per VSP maze solve: shipped policy, draw mode, {len(traces)} mazes",
            f"{context:,.0f} vs frontier {low / 1000:.1f}k-{high / 1000:.1f}k",
            f"{low / context:.1f}-{high / context:.0f}x fewer",
            f"< {TOKENS_PER_SOLVE_TARGET:,} tokens",
            context < TOKENS_PER_SOLVE_TARGET,
        ),
        Ratio(
            "tokens",
            "… tokens the model wrote per solve",
            f"{written:,.0f} vs frontier {low / 1000:.1f}k-{high / 1000:.1f}k",
            f"{low / written:.0f}-{high / written:.0f}x fewer",
            "",
            None,
        ),
    ]


def load_part(quick: bool) -> list[Ratio]:
    """``sketchmind serve`` under concurrent clients on loopback: throughput, tail latency, errors, memory."""
    import load_serve

    clients, seconds = (2, 10.0) if quick else (4, 30.0)
    report = load_serve.run_load(clients, seconds)
    errors = report.error_count
    return [
        Ratio(
            "serve",
            f"{clients} clients for {seconds:.0f} s on loopback: {report.requests} requests, {errors} errors",
            f"p50 {report.latency_p50 * 1000:.0f} / p99 {report.latency_p99 * 1000:.0f} ms",
            f"{report.throughput:.1f} req/s",
            "0 errors",
            errors == 0,
        ),
        Ratio(
            "serve",
            "… server memory, first vs last quarter of the run after warm-up",
            f"{report.rss_first_quarter_mb:.0f} vs {report.rss_last_quarter_mb:.0f} MiB",
            f"{report.rss_growth_mb:+.1f} MiB",
            f"growth <= {report.rss_tolerance_mb:.0f} MiB",
            report.no_growth,
        ),
    ]


PARTS: dict[str, Callable[[bool], list[Ratio]]] = {
    "canvas": canvas_part,
    "backend": backend_part,
    "latent": latent_part,
    "tokens": tokens_part,
    "load": load_part,
}


# ------------------------------------------------------------------------------------------ output

COLUMNS = ("Area", "What is compared", "Measured (this run)", "x", "Target", "Result")


def markdown(rows: Sequence[Ratio]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | --- | ---: | ---: | --- | --- |"]
    return "\n".join(lines + ["| " + " | ".join(r.cells()) + " |" for r in rows])


def rich_table(rows: Sequence[Ratio]) -> Table:
    table = Table(title="SketchMind performance suite: every promised ratio, one run")
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in ("Measured (this run)", "x") else "left")
    for row in rows:
        cells = row.cells()
        cells[-1] = {"PASS": "[green]PASS[/]", "FAIL": "[bold red]FAIL[/]"}.get(cells[-1], "")
        table.add_row(*cells)
    return table


def machine_line(seconds: float) -> str:
    import torch

    cpus = usable_cpus()
    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpus} CPU cores, {device}, torch {torch.__version__}, Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}; {seconds / 60:.1f} min in all."
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Every ratio SketchMind promises, measured in one run.")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and puzzles (a smoke run)")
    parser.add_argument("--only", help=f"comma-separated parts to run (default all: {','.join(PARTS)})")
    parser.add_argument("--write", type=Path, metavar="PAGE", help="replace the suite table in this file")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target fails")
    options = parser.parse_args(argv)
    chosen = options.only.split(",") if options.only else list(PARTS)
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        parser.error(f"unknown part {', '.join(unknown)}; choose from {', '.join(PARTS)}")

    console = Console(width=max(Console().width, 160))
    started = time.perf_counter()
    rows: list[Ratio] = []
    for name in chosen:
        with console.status(f"{name}..."):
            part_started = time.perf_counter()
            rows += PARTS[name](options.quick)
        console.print(f"{name}: {time.perf_counter() - part_started:.0f} s")
    footer = machine_line(time.perf_counter() - started)
    console.print(rich_table(rows))
    console.print(footer)
    table = markdown(rows)
    print(f"\n{table}\n\n{footer}")
    if options.write and not replace_marked_block(options.write, BLOCK, f"{table}\n\n{footer}"):
        raise SystemExit(f"{options.write}: no <!-- {BLOCK} --> block to replace")
    if options.json:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps({"rows": [asdict(r) for r in rows], "machine": footer}, indent=2) + "\n")
    return 1 if options.strict and any(r.passed is False for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
