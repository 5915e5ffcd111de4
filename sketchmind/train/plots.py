"""Gather a run's per-stage metrics into ``metrics.jsonl`` and plot loss and reward into ``metrics.png``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sketchmind.files import write_jsonl_atomic


def gather_metrics(out: Path, stages: Sequence[str]) -> Path | None:
    """Concatenate the stages' ``metrics.jsonl`` (tagged with the stage) and plot loss and reward."""
    from sketchmind.train.sft import read_metrics

    lines = [{"stage": stage, **row} for stage in stages for row in read_metrics(out / stage)]
    if not lines:
        return None
    write_jsonl_atomic(out / "metrics.jsonl", lines)
    return plot_metrics(lines, out / "metrics.png")


def plot_metrics(lines: Sequence[dict[str, Any]], path: Path) -> Path:
    """Loss per SFT stage and reward per GRPO step, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, reward_axes) = plt.subplots(1, 2, figsize=(9, 3.5), dpi=110)
    for stage in dict.fromkeys(x["stage"] for x in lines):
        rows = [x for x in lines if x["stage"] == stage]
        losses = [(x["step"], x["loss"]) for x in rows if "loss" in x and "step" in x and "reward" not in x]
        rewards = [(x["step"], x["reward"]) for x in rows if "reward" in x and "step" in x]
        if losses:
            loss_axes.plot(*zip(*losses, strict=True), label=stage)
        if rewards:
            reward_axes.plot(*zip(*rewards, strict=True), label=stage)
    loss_axes.set(title="training loss", xlabel="step")
    reward_axes.set(title="GRPO reward", xlabel="step")
    for axes in (loss_axes, reward_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
