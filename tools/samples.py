"""Write the sample images of docs/puzzles.md: each family's puzzle beside the expert's last drawn view.

Run with ``.venv/bin/python tools/samples.py [--out docs/images]``. Deterministic: the same seed
always writes the same files.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from sketchmind.agent import Agent, Budgets
from sketchmind.models.expert import ExpertPolicy
from sketchmind.tasks import FAMILY_NAMES, get_family, make_dataset

LEVELS = {"frozenlake": 5, "maze": 3, "pathtrace": 2, "needle": 2}
HEIGHT = 320  # each panel's height in the image


def _panel(image: np.ndarray) -> np.ndarray:
    scale = HEIGHT / image.shape[0]
    return cv2.resize(image, (round(image.shape[1] * scale), HEIGHT), interpolation=cv2.INTER_AREA)


def sample(name: str, seed: int) -> tuple[np.ndarray, str, str]:
    """(puzzle | expert's last view, question, answer) for one family."""
    family = get_family(name)
    puzzle = make_dataset(family, (LEVELS.get(name, family.levels[0]),), 1, seed=seed)[0]
    agent = Agent(ExpertPolicy(), budgets=Budgets(max_turns=12, timeout=None))
    trace = agent.solve(puzzle.image, puzzle.question, run_id=puzzle.id, puzzle=puzzle)
    canvas = agent.canvas(puzzle.id)
    if puzzle.image is None or canvas is None:
        raise RuntimeError(f"{puzzle.id}: no image to show")
    gap = np.full((HEIGHT, 12, 3), 255, np.uint8)
    strip = np.concatenate([_panel(puzzle.image), gap, _panel(canvas.latest.image)], axis=1)
    return strip, puzzle.question, trace.answer or ""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/images"))
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--families", default=",".join(FAMILY_NAMES))
    options = parser.parse_args(argv)
    options.out.mkdir(parents=True, exist_ok=True)
    for name in options.families.split(","):
        strip, question, answer = sample(name, options.seed)
        path = options.out / f"family-{name}.png"
        cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{path}: {question!r} -> {answer!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
