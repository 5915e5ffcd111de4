"""Shared fixtures: deterministic images built in memory (no downloads, no hub)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

# No test may reach a model hub: every model is built offline (sketchmind.models.tiny).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Tests run as 2 xdist workers on 2 cores: one math thread each. Tiny-model steps are 10-100x slower when
# 4 threads spin against each other on 2 cores. (Benchmarks keep torch's default.)
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # pragma: no cover - only when a plugin imported torch first
    sys.modules["torch"].set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
MAZE = ROOT / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """A tiny offline checkpoint per family (``build_tiny`` defaults), built once per test process. Read-only."""
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            from sketchmind.models.tiny import build_tiny

            built[family] = build_tiny(family, tmp_path_factory.mktemp(family.replace(".", "")))
        return built[family]

    return get


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like RGB image: smooth gradients plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([xx / max(width, 1), yy / max(height, 1), (xx + yy) / max(width + height, 1)], axis=2) * 200
    noise = rng.normal(0, 12, size=(height, width, 3))
    return np.clip(base + noise + 20, 0, 255).astype(np.uint8)


@pytest.fixture
def image_640x480() -> np.ndarray:
    return photo(640, 480)
