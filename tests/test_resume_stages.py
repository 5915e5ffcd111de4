"""SIGKILL each training stage of a micro recipe mid-run, resume it, and compare with an uninterrupted run.

One reference run trains every stage in process. Then, per stage, a copy of the reference with that
stage removed is trained by the real ``sketchmind train --stage STAGE`` in a subprocess, killed with
SIGKILL once the stage has a complete checkpoint (or, for rejection sampling, which keeps nothing
partial, once it has started), and run again. The resumed stage must have seen the same data in the
same order as the reference (per-step batch fingerprints, or latent row indices), logged every step
once, and ended with the same weights (within float tolerance); its ``done.json`` counts both runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

pytest.importorskip("trl")
from safetensors.numpy import load_file

from sketchmind.train.pipeline import DONE_FILE, Pipeline
from sketchmind.train.recipe import load_recipe
from sketchmind.train.stage_clock import CLOCK_FILE
from sketchmind.train.synth_storage import load_dataset

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "policies" / "micro.yaml"
ORDER = ("synth", "base", "perceive", "sft", "rejection", "sft2", "dpo", "grpo", "latent1", "latent2")


def _recipe(output: Path) -> dict[str, object]:
    """The micro recipe with enough steps after the first checkpoint that a kill lands mid-stage."""
    raw: dict[str, object] = yaml.safe_load(MICRO.read_text())
    raw["output"] = str(output)
    stages = raw["stages"]
    assert isinstance(stages, dict)
    # Reading: the second size joins at the first check (step 2), so a run resumed from a later checkpoint must
    # come back with both sizes open to see the same maps.
    open_at_once = {"cell": 0.0, "exact": 0.0}
    stages["perceive"].update(levels=[3, 4], max_steps=12, save_steps=2, eval_every=2, widen=open_at_once)
    stages["sft"] = {"max_steps": 24, "learning_rate": 3.0e-3, "save_steps": 2}
    stages["rejection"]["sft"] = {"max_steps": 16, "learning_rate": 1.0e-3, "save_steps": 2}
    # The micro policy keeps almost no sample (too weak to solve and reflect), but answers some wrongly: the
    # expert's trajectory for such a puzzle is its chosen side, so the pairs do not hang on a lucky sample.
    stages["dpo"] = {"max_steps": 6, "learning_rate": 1.0e-3, "save_steps": 2, "expert_chosen": True}
    stages["grpo"].update(max_steps=4, extra={"save_steps": 1})  # GRPOConfig's own save_steps
    stages["latent"]["stage1"] = {"max_steps": 16, "learning_rate": 3.0e-3, "save_steps": 2}
    stages["latent"]["stage2"] = {"max_steps": 12, "learning_rate": 1.0e-3, "save_steps": 2}
    stages.pop("baselines", None)
    raw.pop("eval")  # benches resume per batch: tests/test_faults.py kills one
    return raw


def _write_recipe(folder: Path) -> Path:
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(_recipe(folder / "run")))
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stage trained once, without interruption."""
    folder = tmp_path_factory.mktemp("reference")
    Pipeline(load_recipe(_write_recipe(folder)), report=lambda _line: None).run()
    return folder / "run"


def _metrics(stage_dir: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _complete_checkpoint(stage_dir: Path) -> bool:
    markers = ("trainer_state.json", "train_state.pt")
    return any((c / m).is_file() for c in stage_dir.glob("checkpoint-*") for m in markers)


def _started(stage_dir: Path) -> bool:
    return (stage_dir / CLOCK_FILE).is_file()


def _weights(model_dir: Path) -> dict[str, object]:
    tensors: dict[str, object] = {}
    for path in sorted(model_dir.glob("*.safetensors")):
        tensors.update({f"{path.name}:{k}": v for k, v in load_file(str(path)).items()})
    return tensors


def _order(stage: str, stage_dir: Path) -> list[object]:
    """What proves the data order: latent rows per step, else the trainer's batch fingerprints per step."""
    rows = [m for m in _metrics(stage_dir) if "loss" in m or "reward" in m]
    key = "row" if stage.startswith("latent") else "batches"
    return [(m["step"], m[key]) for m in rows]


KILL_WHEN: dict[str, Callable[[Path], bool]] = {
    "perceive": lambda stage_dir: (stage_dir / "checkpoint-4" / "trainer_state.json").is_file(),
    "sft": _complete_checkpoint,
    "rejection": _started,
    "sft2": _complete_checkpoint,
    "dpo": _complete_checkpoint,
    "grpo": _complete_checkpoint,
    "latent1": _complete_checkpoint,
    "latent2": _complete_checkpoint,
}


@pytest.mark.parametrize("stage", list(KILL_WHEN))
def test_a_stage_killed_with_sigkill_resumes_with_the_same_data_order(
    stage: str, reference: Path, tmp_path: Path
) -> None:
    # The finished stages before this one, copied; this stage and the later ones are not there.
    run = tmp_path / "run"
    for earlier in ORDER[: ORDER.index(stage)]:
        shutil.copytree(reference / earlier, run / earlier, symlinks=True)
    recipe = _write_recipe(tmp_path)
    command = [sys.executable, "-m", "sketchmind.cli", "train", str(recipe), "--stage", stage]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SKETCHMIND_DEBUG": "1"}
    folder = run / stage
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not KILL_WHEN[stage](folder) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if stage == "rejection":
        time.sleep(1.0)  # well into the sampling, which keeps nothing partial
    process.send_signal(signal.SIGKILL)
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, f"the stage ended before the kill: {stderr[-2000:]}"
    assert not (folder / DONE_FILE).exists(), "the run was not killed mid-stage"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    done = json.loads((folder / DONE_FILE).read_text())
    expected = json.loads((reference / stage / DONE_FILE).read_text())
    assert done["segments"] == 2 and expected["segments"] == 1 and not (folder / CLOCK_FILE).exists()
    assert done["seconds"] > 0

    if stage == "rejection":  # restarted from scratch: the same samples, kept and rejected alike
        for part in ("kept", "rejected"):
            mine, theirs = load_dataset(folder / part), load_dataset(reference / stage / part)
            assert mine["messages"] == theirs["messages"], part
        assert (done["kept"], done["rejected"]) == (expected["kept"], expected["rejected"])
        return

    if stage in ("perceive", "sft", "sft2", "dpo", "grpo"):
        assert str(done["resumed_from"]).startswith(str(folder / "checkpoint-")), done
    order, reference_order = _order(stage, folder), _order(stage, reference / stage)
    steps = [step for step, _ in order]
    assert steps == list(range(1, len(reference_order) + 1)), "every step logged exactly once"
    assert order == reference_order, "the resumed run saw other data, or in another order"

    mine, theirs = _weights(folder / "final"), _weights(reference / stage / "final")
    assert mine.keys() == theirs.keys() and mine
    import numpy as np

    worst = max(float(np.max(np.abs(mine[k] - theirs[k]))) if mine[k].size else 0.0 for k in mine)  # type: ignore[operator, attr-defined]
    assert worst < 1e-3, f"final weights differ from the uninterrupted run's by {worst}"
