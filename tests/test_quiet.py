"""A new user's first command prints what they read: no weight-loading bar, no library deprecation warnings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The image and question of `make run`.
VSP_IMAGE = ROOT / "data" / "vsp-maze-examples" / "maps" / "level4" / "img" / "0.png"
QUESTION = "This frozen-lake map has 4 rows and 4 columns. Find an action plan, e.g. 'Action plan: L,R'."
NOISE = ("Loading weights", "Writing model shards", "deprecated", "FutureWarning", "DeprecationWarning")


def test_solve_with_the_shipped_policy_prints_no_progress_bars_or_deprecations(tmp_path: Path) -> None:
    # Two turns of a few tokens: a prefill and decode steps on a fresh and on a reused cache, where the
    # deprecated cache argument used to warn.
    command = [sys.executable, "-m", "sketchmind", "solve", str(VSP_IMAGE), QUESTION]
    command += ["--max-turns", "2", "--max-new-tokens", "16", "--save", str(tmp_path / "run")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("PYTHONWARNINGS", None)  # the default filters, as a user has them
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr[-2000:]
    noisy = [line for line in done.stderr.splitlines() if any(word in line for word in NOISE)]
    assert not noisy, "\n".join(noisy)


def test_quiet_progress_bars_turns_off_the_transformers_bar() -> None:
    code = (
        "from sketchmind.quiet import quiet_progress_bars; quiet_progress_bars();"
        "from transformers.utils import logging; print(logging.is_progress_bar_enabled())"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
