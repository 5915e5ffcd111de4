"""Count a checkpoint's parameters from its safetensors headers, without loading the model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def parameter_count(model_dir: Path) -> int:
    """Parameters stored in a checkpoint's safetensors files (no model load)."""
    from safetensors import safe_open

    total = 0
    for path in Path(model_dir).glob("*.safetensors"):
        with safe_open(str(path), "np") as file:
            for key in file.keys():  # noqa: SIM118 - safe_open is not a mapping
                total += _numel(file.get_slice(key).get_shape())
    return total


def _numel(shape: Sequence[int]) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count
