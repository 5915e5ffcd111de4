"""The micro recipe on 2 CPU processes (gloo) under the real ``torchrun``, as docs/multi-gpu.md launches it on GPUs.

The Trainer sees both processes; SFT on 2 processes ends with the weights of SFT on 1 process with gradient
accumulation 2 (the same global batch, the same data order); and the main process alone writes: an audit
hook in every rank records each file it opens for writing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "policies" / "micro.yaml"
TORCHRUN = Path(sys.executable).parent / "torchrun"

# Imported by every Python process of the launch (as sitecustomize, through PYTHONPATH): each rank appends the
# paths it opens for writing, or renames a file to, to writes-RANK.txt. The launcher itself has no RANK.
AUDIT = """
import os, sys

if os.environ.get("RANK") is not None:
    _log = open(os.path.join(os.environ["SKETCHMIND_AUDIT"], "writes-" + os.environ["RANK"] + ".txt"), "a", 1)

    def _hook(event, args):
        if event == "open":
            path, mode, flags = args
            writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & (os.O_WRONLY | os.O_RDWR))
        elif event in ("os.rename", "os.replace"):
            path, writes = args[1], True
        else:
            return
        if writes and isinstance(path, (str, bytes, os.PathLike)):
            _log.write(os.fsdecode(path) + "\\n")

    sys.addaudithook(_hook)
"""


def _recipe(folder: Path, **sft: int) -> Path:
    """The micro recipe through SFT (4 steps, a checkpoint every 2) and GRPO, writing into ``folder/run``."""
    raw = yaml.safe_load(MICRO.read_text())
    raw["output"] = str(folder / "run")
    raw["stages"] = {
        "sft": {"max_steps": 4, "learning_rate": 3.0e-3, "save_steps": 2, **sft},
        "grpo": raw["stages"]["grpo"],
    }
    raw.pop("eval")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _written(audit: Path, rank: int, run: Path) -> set[str]:
    """The files under ``run`` that ``rank`` wrote, relative to it."""
    log = audit / f"writes-{rank}.txt"
    lines = log.read_text().splitlines() if log.is_file() else []
    return {str(Path(line).relative_to(run)) for line in lines if Path(line).is_relative_to(run)}


def test_two_processes_train_as_one_with_gradient_accumulation(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path / "two")
    audit = tmp_path / "audit"
    audit.mkdir()
    (audit / "sitecustomize.py").write_text(AUDIT)
    path = os.pathsep.join(p for p in (str(audit), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "SKETCHMIND_AUDIT": str(audit)}
    command = [str(TORCHRUN), "--nproc_per_node", "2", "-m", "sketchmind.cli", "train", str(recipe)]
    launch = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert launch.returncode == 0, launch.stdout[-3000:] + launch.stderr[-3000:]
    assert launch.stdout.count("synth: running") == 1  # one voice: the main process reports

    two = tmp_path / "two" / "run"
    done = {stage: json.loads((two / stage / "done.json").read_text()) for stage in ("sft", "grpo")}
    assert done["sft"]["world_size"] == done["grpo"]["world_size"] == 2  # the Trainer sees both processes
    grpo = [json.loads(line) for line in (two / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in grpo] == [1, 2]

    # No rank writes what another writes: rank 1 writes nothing of the run (torch.save's RNG state of its
    # checkpoints bypasses Python's open), rank 0 writes the bookkeeping.
    main, other = _written(audit, 0, two), _written(audit, 1, two)
    assert other == set(), f"rank 1 wrote {sorted(other)}"
    assert {"sft/done.json", "sft/metrics.jsonl", "sft/final/config.json", "grpo/done.json"} <= main

    # The same synth rows and base model, 1 process, gradient accumulation 2: the same global batch of 2 rows.
    one = tmp_path / "one" / "run"
    for stage in ("synth", "base"):
        shutil.copytree(two / stage, one / stage)
    summary = Pipeline(load_recipe(_recipe(tmp_path / "one", grad_accum=2)), report=lambda line: None).run(["sft"])
    assert summary["sft"]["world_size"] == 1

    trained, expected = (load_file(run / "sft" / "final" / "model.safetensors") for run in (two, one))
    start = load_file(two / "base" / "model" / "model.safetensors")
    assert trained.keys() == expected.keys()
    assert any(not torch.equal(trained[k], start[k]) for k in trained if k in start)  # SFT moved the weights
    for key, weight in trained.items():
        torch.testing.assert_close(weight, expected[key], rtol=0, atol=1e-6, msg=key)

    # Same data order: the main process trains on the first micro-batch of each accumulated step.
    rows = {name: [json.loads(line) for line in (run / "sft" / "metrics.jsonl").read_text().splitlines()]
            for name, run in (("two", two), ("one", one))}  # fmt: skip
    assert [m["batches"] for m in rows["two"]] == [m["batches"][:1] for m in rows["one"]]
    assert [round(m["loss"], 5) for m in rows["two"]] == [round(m["loss"], 5) for m in rows["one"]]
