"""Rewrite the golden PNGs after an intended rendering change (`make golden`); review the diff."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from scenes import SCENES  # noqa: E402

if __name__ == "__main__":
    for name, scene in SCENES.items():
        Image.fromarray(scene()).save(HERE / f"{name}.png")
        print(f"wrote {HERE / name}.png")
