"""Agent overhead: the share of a solve's wall time spent outside the model's forward passes.

Runs the real agent (LangGraph graph, parsing, rendering, observations, trace bookkeeping) with the
real HF backend on a tiny Qwen2.5-VL built offline, and compares wall time with the time the backend
reports for its own turns, in the same run. Target (issue 3): overhead <= 5% of wall time.

    .venv/bin/python tools/bench_agent.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Sampling
from sketchmind.models.hf import HFPolicy
from sketchmind.models.tiny import build_tiny

MAZE = Path(__file__).resolve().parents[1] / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"
TARGET = 0.05


def overhead_shares(policy: HFPolicy, runs: int = 3, turns: int = 8, new_tokens: int = 48) -> list[float]:
    """Per solve, the share of wall time spent outside the backend's own turns (after one warm-up solve)."""
    agent = Agent(policy, budgets=Budgets(max_turns=turns), sampling=Sampling(max_new_tokens=new_tokens))
    agent.solve(MAZE, "warm-up")
    shares = []
    for run in range(runs):
        started = time.perf_counter()
        trace = agent.solve(MAZE, f"Find a safe path to the goal. ({run})")
        wall = time.perf_counter() - started
        model = sum(step.seconds or 0.0 for step in trace.steps)
        shares.append((wall - model) / wall)
        print(f"run {run + 1}: {len(trace.steps)} turns, wall {wall:.2f} s, model {model:.2f} s, "
              f"overhead {(wall - model) * 1000:.0f} ms = {shares[-1]:.1%}")  # fmt: skip
    return shares


def main(runs: int = 3, turns: int = 8, new_tokens: int = 48) -> None:
    with tempfile.TemporaryDirectory() as directory:
        policy = HFPolicy(build_tiny("qwen2.5-vl", Path(directory) / "tiny", hidden_size=256, layers=4))
        shares = overhead_shares(policy, runs, turns, new_tokens)
    median = statistics.median(shares)
    verdict = "PASS" if median <= TARGET else "FAIL"
    print(f"{verdict}: agent overhead median {median:.1%} of wall time (target <= {TARGET:.0%})")


if __name__ == "__main__":
    main()
