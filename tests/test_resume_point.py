"""``train.resume``: the one place SFT, DPO and GRPO decide where a stage resumes and which weights it loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sketchmind.train.resume import ResumePoint, last_checkpoint, resume_point, resuming


def checkpoint(out: Path, step: int, *, complete: bool = True) -> Path:
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def test_the_highest_complete_checkpoint_is_where_a_stage_resumes(tmp_path: Path) -> None:
    assert last_checkpoint(tmp_path / "missing") is None
    checkpoint(tmp_path, 2)
    ten = checkpoint(tmp_path, 10)
    checkpoint(tmp_path, 12, complete=False)  # killed while saving: not a checkpoint yet
    assert last_checkpoint(tmp_path) == ten
    full = resume_point(tmp_path, "base", resume=True, lora=False)
    assert full == ResumePoint(ten, 10, ten) and full.weights_loaded  # a full fine-tune loads the checkpoint
    lora = resume_point(tmp_path, "base", resume=True, lora=True)
    assert lora == ResumePoint(ten, 10, "base") and not lora.weights_loaded  # the Trainer loads the adapter
    fresh = resume_point(tmp_path, "base", resume=False, lora=False)
    assert fresh == ResumePoint(None, 0, "base") and not fresh.weights_loaded


def test_the_trainer_reloads_a_checkpoint_only_when_its_weights_are_not_loaded(tmp_path: Path) -> None:
    class Trainer:
        def __init__(self) -> None:
            self.loaded: list[str] = []

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            self.loaded.append(resume_from_checkpoint)

    ten = checkpoint(tmp_path, 10)
    full = resuming(Trainer, resume_point(tmp_path, "base", resume=True, lora=False))()
    full._load_from_checkpoint(str(ten))
    lora = resuming(Trainer, resume_point(tmp_path, "base", resume=True, lora=True))()
    lora._load_from_checkpoint(str(ten))
    assert full.loaded == [] and lora.loaded == [str(ten)]
    assert isinstance(full, Trainer) and type(full).__name__ == "ResumingTrainer"
