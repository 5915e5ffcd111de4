"""Draw the latent-path figure of docs/latent.md: one expert trajectory in draw mode and in latent mode.

Run with ``.venv/bin/python tools/figure_latent.py [--out docs/images/latent-path.png]``. The views are
the real ones the expert's calls render on a maze; the latent row shows where each of them is replaced
by K hidden-state slots (the figure is a schematic of the token stream, not of latent values).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from sketchmind.agent import Agent, Budgets
from sketchmind.models.expert import ExpertPolicy
from sketchmind.tasks import get_family, make_dataset

K = 4
TEXT = "#37474f"
DRAW = "#1565c0"
LATENT = "#8e24aa"


def expert_views(seed: int = 2) -> tuple[list[object], int]:
    """The views an expert trajectory renders on a level-2 maze, and its number of drawing turns."""
    family = get_family("maze")
    puzzle = make_dataset(family, (2,), 1, seed=seed)[0]
    agent = Agent(ExpertPolicy(), budgets=Budgets(max_turns=12, timeout=None))
    trace = agent.solve(puzzle.image, puzzle.question, run_id=puzzle.id, puzzle=puzzle)
    canvas = agent.canvas(puzzle.id)
    assert canvas is not None
    return [v.image for v in canvas.views], sum(1 for s in trace.steps if s.calls)


def _box(axes: plt.Axes, x: float, y: float, w: float, text: str, color: str) -> None:
    patch = FancyBboxPatch((x, y - 0.3), w, 0.6, boxstyle="round,pad=0.02,rounding_size=0.12", fc="white", ec=color)
    axes.add_patch(patch)
    axes.text(x + w / 2, y, text, ha="center", va="center", fontsize=8, color=color)


def draw_figure(out: Path) -> Path:
    views, turns = expert_views()
    turns = min(turns, 3)
    figure, axes = plt.subplots(figsize=(10, 3.0), dpi=130)
    axes.set_xlim(0, 18.6)
    axes.set_ylim(-0.2, 4.2)
    axes.axis("off")
    axes.text(
        0.1, 3.9, "draw mode: every call is rendered and the model reads the new view (hundreds of tokens)", fontsize=9
    )
    axes.text(0.1, 1.5, f"latent mode: the view is imagined as K={K} hidden-state slots, P(h) fed back", fontsize=9)
    x = 0.1
    axes.imshow(views[0], extent=(x, x + 1.4, 2.4, 3.6))
    axes.imshow(views[0], extent=(x, x + 1.4, 0.0, 1.2))
    x += 1.6
    for turn in range(turns):
        for y in (3.0, 0.6):
            _box(axes, x, y, 1.3, "<think>", TEXT)
            _box(axes, x + 1.4, y, 1.6, "<tool_call>", DRAW if y > 2 else LATENT)
        view = views[min(turn + 1, len(views) - 1)]
        axes.imshow(view, extent=(x + 3.2, x + 4.6, 2.4, 3.6))
        for j in range(K):
            axes.add_patch(FancyBboxPatch((x + 3.2 + j * 0.36, 0.35), 0.28, 0.5, boxstyle="round,pad=0.01", fc=LATENT))
        x += 4.9
    for y in (3.0, 0.6):
        _box(axes, x, y, 1.6, "<answer>", TEXT)
    axes.text(18.5, 0.05, "latent_start + K pads + latent_end", fontsize=7, ha="right", color=LATENT)
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images/latent-path.png"))
    print(draw_figure(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
