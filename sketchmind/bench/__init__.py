"""``sketchmind bench``: batched, resumable benchmark runs with honest intervals."""

from sketchmind.bench.report import compare_runs, summarise, wilson
from sketchmind.bench.runner import BenchConfig, BenchRun, load_puzzles, run_bench

__all__ = ["BenchConfig", "BenchRun", "compare_runs", "load_puzzles", "run_bench", "summarise", "wilson"]
