"""``reuse_freed_memory`` caps glibc's malloc arenas, so a server's threads do not each keep a heap."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sketchmind.memory import glibc

# 16 threads allocating inside OpenCV (the GIL released), then glibc's own per-arena report on stderr.
CHURN = """
import ctypes, sys, threading
import cv2, numpy as np
from sketchmind.memory import reuse_freed_memory
if sys.argv[1] == "capped":
    assert reuse_freed_memory()
cv2.setNumThreads(1)
image = np.zeros((64, 64, 3), np.uint8)
def churn():
    for _ in range(2000):
        cv2.resize(image, (96, 96))
threads = [threading.Thread(target=churn) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()
"""


def _arenas(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=120, check=True)
    return sum(line.startswith("Arena ") for line in done.stderr.splitlines())


@pytest.mark.skipif(glibc() is None, reason="malloc arenas are glibc's")
def test_threads_share_at_most_two_arenas() -> None:
    uncapped = _arenas("default")
    if uncapped <= 2:
        pytest.skip(f"glibc made only {uncapped} arenas here without the cap: nothing to compare")
    assert _arenas("capped") <= 2 < uncapped
