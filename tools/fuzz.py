"""Fuzz every model-output parser and the image loader at scale, and print what held.

    .venv/bin/python tools/fuzz.py                       # ~102,000 model outputs (scale 30) + 1,000 images
    .venv/bin/python tools/fuzz.py --scale 1 --images 150  # what CI runs
    .venv/bin/python tools/fuzz.py --atheris 200000        # also a coverage-guided run over the parsers

Parsers: the hypothesis properties of ``tests/test_parser_fuzz.py`` (valid turns in every protocol's
format, then truncated, edited, nested, NaN'd...), run with ``SKETCHMIND_FUZZ_SCALE`` times CI's example
counts; every output goes through ``check_turn`` (parse, then ``Canvas.apply`` of every call), which is
what is counted. Images: ``tests/odd_images.py`` (bombs, 16-bit, CMYK, APNG, EXIF, truncations, byte
flips...), each of which must load as RGB uint8 and draw, or raise a one-line ``ImageInputError``.
``--atheris N`` adds N coverage-guided inputs (atheris/libFuzzer) through the same ``check_turn``.

Prints a rich table and the same as Markdown; exits 1 when anything raised.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from machine import usable_cpus

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
BLOCK = "bench:fuzz"  # the block --write rewrites
PAGE = "docs/reliability.md"  # the docs page that holds it (``make fuzz`` writes there)

# The hypothesis properties to run, by the name the table shows.
PARSER_TARGETS = {
    "sketchmind: clean turns": "test_sketchmind_clean_turns_round_trip",
    "sketchmind: corrupted turns": "test_sketchmind_survives_corrupted_turns",
    "vilasr: clean turns": "test_vilasr_clean_turns_round_trip",
    "vilasr: corrupted turns": "test_vilasr_survives_corrupted_turns",
    "openai-tools: clean messages": "test_openai_clean_messages_round_trip",
    "openai-tools: corrupted messages": "test_openai_survives_corrupted_messages",
    "every protocol: arbitrary text": "test_every_protocol_survives_arbitrary_text",
}


@dataclass
class Row:
    """One line of the report."""

    target: str
    tried: int
    failures: int
    seconds: float
    note: str = ""


def _first_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:160]}"


def fuzz_parsers(scale: float) -> list[Row]:
    """Run every parser property at ``scale`` times CI's example counts, counting the outputs checked."""
    os.environ["SKETCHMIND_FUZZ_SCALE"] = str(scale)  # read when the test module decorates its tests
    sys.path.insert(0, str(TESTS))
    import test_parser_fuzz as module

    original = module.check_turn
    count = 0

    def counting(protocol: Any, output: Any) -> Any:
        nonlocal count
        count += 1
        return original(protocol, output)

    module.check_turn = counting  # the tests look it up at call time
    rows = []
    for target, name in PARSER_TARGETS.items():
        count, started, failures, note = 0, time.perf_counter(), 0, ""
        try:
            getattr(module, name)()
        except BaseExceptionGroup as group:  # hypothesis found several distinct failures
            failures, note = len(group.exceptions), _first_line(group.exceptions[0])
        except Exception as error:
            failures, note = 1, _first_line(error)
        rows.append(Row(target, count, failures, time.perf_counter() - started, note))
        print(f"  {target}: {count} outputs, {failures} failures", file=sys.stderr, flush=True)
    module.check_turn = original
    return rows


def fuzz_images(n: int) -> list[Row]:
    """Load ``n`` odd images; each must become RGB uint8 that draws, or raise a one-line ImageInputError."""
    sys.path.insert(0, str(TESTS))
    from odd_images import exercise, odd_images

    started, tried, failures, notes = time.perf_counter(), 0, 0, []
    loaded = 0
    with tempfile.TemporaryDirectory() as scratch:
        for case in odd_images(n):
            tried += 1
            try:
                loaded += exercise(case, Path(scratch)) == "loaded"
            except Exception as error:
                failures += 1
                notes.append(f"{case.name}: {_first_line(error)}")
    note = "; ".join(notes[:3]) or f"{loaded} loaded, {tried - loaded} refused with one line"
    return [
        Row("images: load_image + Canvas + draw + fit_pixels", tried, failures, time.perf_counter() - started, note)
    ]


def _atheris_child(runs: int, corpus: Path) -> None:  # pragma: no cover - runs under libFuzzer
    """The libFuzzer process: never returns (atheris exits when done or on the first uncaught exception)."""
    import atheris

    sys.path.insert(0, str(TESTS))
    with atheris.instrument_imports():
        import sketchmind.protocols  # noqa: F401  (instrumented for coverage feedback)
    import test_parser_fuzz as module

    protocols = [module.SKETCHMIND, module.VILASR, module.OPENAI]

    def one_input(data: bytes) -> None:
        if not data:
            return
        text = atheris.FuzzedDataProvider(data[1:]).ConsumeUnicodeNoSurrogates(len(data))
        module.check_turn(protocols[data[0] % 3], text)

    atheris.Setup([sys.argv[0], f"-runs={runs}", "-seed=1", "-max_len=4096", str(corpus)], one_input)
    atheris.Fuzz()


def fuzz_atheris(runs: int) -> list[Row]:
    """``runs`` coverage-guided inputs through ``check_turn``, seeded with valid turns of each protocol."""
    with tempfile.TemporaryDirectory() as scratch:
        corpus = Path(scratch)
        seeds = [
            '<think>t</think> <tool_call>{"name": "box", "arguments": {"bbox": [1, 2, 30, 40]}}</tool_call>',
            "<think>t</think> <answer>B</answer>",
            'Action: Object Mapper\n```json\n[{"index": 1, "bbox_2d": [1, 2, 3, 4], "label": "a"}]\n```',
            '{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", '
            '"function": {"name": "line", "arguments": "{\\"start\\": [0, 0], \\"end\\": [5, 5]}"}}]}',
        ]
        for i, seed in enumerate(seeds):
            (corpus / f"seed{i}").write_bytes(bytes([i % 3]) + seed.encode())
        started = time.perf_counter()
        child = subprocess.run(
            [sys.executable, __file__, "--atheris-child", str(runs), str(corpus)], capture_output=True, text=True
        )
    seconds = time.perf_counter() - started
    done = re.search(r"Done (\d+) runs", child.stderr)
    tried = int(done.group(1)) if done else int(max(re.findall(r"#(\d+)", child.stderr) or ["0"], key=int))
    failed = child.returncode != 0
    note = "coverage-guided (libFuzzer), all 3 protocols"
    if failed:
        lines = [line for line in child.stderr.splitlines() if line.strip()]
        note = next((line for line in reversed(lines) if "Error" in line or "Exception" in line), lines[-1][:160])
    return [Row("atheris: every protocol's parse + canvas", tried, int(failed), seconds, note)]


def markdown(rows: list[Row]) -> str:
    """The report as a Markdown table."""
    lines = ["| target | inputs tried | uncaught exceptions | seconds |", "|---|---:|---:|---:|"]
    lines += [f"| {r.target} | {r.tried:,} | {r.failures} | {r.seconds:.1f} |" for r in rows]
    total = Row("total", sum(r.tried for r in rows), sum(r.failures for r in rows), sum(r.seconds for r in rows))
    lines.append(f"| **{total.target}** | **{total.tried:,}** | **{total.failures}** | **{total.seconds:.1f}** |")
    return "\n".join(lines)


def show(rows: list[Row]) -> None:
    """The report as a rich table (notes included), then as Markdown."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="fuzzing")
    table.add_column("target")
    for column in ("inputs tried", "uncaught", "seconds"):
        table.add_column(column, justify="right")
    table.add_column("note", overflow="fold")
    for r in rows:
        table.add_row(r.target, f"{r.tried:,}", str(r.failures), f"{r.seconds:.1f}", r.note)
    table.add_row("total", f"{sum(r.tried for r in rows):,}", str(sum(r.failures for r in rows)), "", "")
    Console().print(table)
    print()
    print(markdown(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=30.0, help="times CI's parser example counts (30: ~102k)")
    parser.add_argument("--images", type=int, default=1000, help="odd images to load (0: skip)")
    parser.add_argument("--atheris", type=int, default=0, metavar="N", help="also N coverage-guided inputs")
    parser.add_argument("--no-parsers", action="store_true", help="skip the hypothesis parser properties")
    parser.add_argument("--write", type=Path, metavar="PAGE", help="replace the fuzz table in this file")
    parser.add_argument("--atheris-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.atheris_child:
        _atheris_child(int(args.atheris_child[0]), Path(args.atheris_child[1]))
    steps: list[Callable[[], list[Row]]] = []
    if not args.no_parsers:
        steps.append(lambda: fuzz_parsers(args.scale))
    if args.images:
        steps.append(lambda: fuzz_images(args.images))
    if args.atheris:
        steps.append(lambda: fuzz_atheris(args.atheris))
    rows = [row for step in steps for row in step()]
    show(rows)
    if args.write:
        from sketchmind.files import replace_marked_block

        cores = usable_cpus()
        note = f"`tools/fuzz.py`, parser scale {args.scale:g}, {cores} CPU cores; {time.strftime('%Y-%m-%d')}."
        if not replace_marked_block(args.write, BLOCK, f"{markdown(rows)}\n\n{note}"):
            raise SystemExit(f"{args.write}: no <!-- {BLOCK} --> block to replace")
    return 1 if any(r.failures for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
