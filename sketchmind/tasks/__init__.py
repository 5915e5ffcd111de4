"""Puzzle families that generate unlimited verifiable problems, each with an expert that draws.

Families are imported on first use, so ``sketchmind solve`` never pays for the puzzle renderers.
"""

from __future__ import annotations

import importlib

from sketchmind.tasks.base import ExpertTurn, Puzzle, TaskFamily, make_dataset, puzzle_rng

# name -> "module:Class"
_FAMILIES = {
    "frozenlake": "sketchmind.tasks.frozenlake:FrozenLake",
    "frozenlake-classic": "sketchmind.tasks.frozenlake:ClassicFrozenLake",
    "maze": "sketchmind.tasks.maze:Maze",
    "pathtrace": "sketchmind.tasks.pathtrace:PathTrace",
    "needle": "sketchmind.tasks.needle:Needle",
}
FAMILY_NAMES: tuple[str, ...] = tuple(_FAMILIES)


def get_family(name: str) -> TaskFamily:
    """The task family called ``name``; a one-line ``ValueError`` for an unknown name."""
    if name not in _FAMILIES:
        raise ValueError(f"unknown task family {name!r}; use one of {', '.join(FAMILY_NAMES)}")
    module, _, cls = _FAMILIES[name].partition(":")
    family: TaskFamily = getattr(importlib.import_module(module), cls)()
    return family


__all__ = ["FAMILY_NAMES", "ExpertTurn", "Puzzle", "TaskFamily", "get_family", "make_dataset", "puzzle_rng"]
