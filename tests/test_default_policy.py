"""The shipped default policy: found without --model, intact, small, and packaged into wheels."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from sketchmind.latent.tokens import is_latent_checkpoint
from sketchmind.models.default import DEFAULT_POLICY, NOTICE, shipped_policy
from sketchmind.models.hf import HFPolicy
from sketchmind.models.latent import LatentPolicy
from sketchmind.models.loading import load_policy
from sketchmind.train.ship import MAX_MEGABYTES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "policies" / DEFAULT_POLICY
VSP_IMAGE = ROOT / "data" / "vsp-maze-examples" / "maps" / "level3" / "img" / "0.png"


def test_the_shipped_policies_are_found_per_mode_and_load() -> None:
    draw, latent = shipped_policy("draw"), shipped_policy("latent")
    assert draw == SHIPPED / "draw" and shipped_policy("text") == draw
    assert latent == SHIPPED / "latent" and shipped_policy("auto") == latent and is_latent_checkpoint(latent)
    assert type(load_policy(str(draw))) is HFPolicy and isinstance(load_policy(str(latent)), LatentPolicy)


def test_the_shipped_files_match_their_manifest_and_the_size_limit() -> None:
    manifest = json.loads((SHIPPED / "manifest.json").read_text())
    total = 0
    for variant, entry in manifest["policies"].items():
        folder = SHIPPED / variant
        assert sorted(entry["sha256"]) == sorted(p.name for p in folder.iterdir())
        for name, digest in entry["sha256"].items():
            data = (folder / name).read_bytes()
            total += len(data)
            assert hashlib.sha256(data).hexdigest() == digest, f"{variant}/{name} differs from the manifest"
    assert total / 1e6 <= MAX_MEGABYTES
    card = (SHIPPED / "README.md").read_text()
    assert "<!-- results:sketchmind-tiny -->" in card and "| Puzzles | Mode |" in card  # results filled in


def test_solve_without_a_model_uses_the_shipped_policy_and_says_so(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "sketchmind.cli", "solve", str(VSP_IMAGE), "Find a safe path."]
    command += ["--max-turns", "2", "--max-new-tokens", "64", "--save", str(tmp_path / "run"), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode in (0, 1), done.stderr[-2000:]  # answered, or not: never a crash
    assert NOTICE in done.stderr and "Traceback" not in done.stderr
    trace = json.loads((tmp_path / "run" / "trace.json").read_text())
    assert trace["model"] == DEFAULT_POLICY and trace["steps"]
