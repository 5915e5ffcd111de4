"""Where a TRL trainer stage resumes: its last checkpoint, the step it reached, and the weights to load.

``run_sft``, ``run_dpo`` and ``run_grpo`` resume the same way. ``resume_point`` finds the highest complete
``checkpoint-N`` in the stage's folder and says which weights the model loads: a full fine-tune loads the
checkpoint itself (``from_pretrained`` maps Qwen2.5-VL's saved key names back), LoRA the start model (the
Trainer loads the adapter). ``resuming`` wraps the trainer class so that it leaves weights already loaded
alone (see its docstring).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"  # the Trainer writes it last: a checkpoint holding it is complete
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def last_checkpoint(output_dir: str | Path, marker: str = STATE_FILE) -> Path | None:
    """The highest-step complete checkpoint in ``output_dir`` (one holding ``marker``), if any."""
    out = Path(output_dir)
    if not out.is_dir():
        return None
    done = [
        (int(m.group(1)), path)
        for path in out.iterdir()
        if (m := _CHECKPOINT.match(path.name)) and (path / marker).is_file()
    ]
    return max(done)[1] if done else None


@dataclass(frozen=True)
class ResumePoint:
    """Where a stage's run starts: ``checkpoint`` (None: from the start), its ``step`` (0 without one), and the
    ``weights`` the model loads (the checkpoint for a full fine-tune that resumes, else the start model)."""

    checkpoint: Path | None
    step: int
    weights: str | Path

    @property
    def weights_loaded(self) -> bool:
        """Whether ``weights`` already hold the checkpoint's (the Trainer must not load them again)."""
        return self.checkpoint is not None and self.weights == self.checkpoint


def resume_point(output_dir: str | Path, model_path: str | Path, *, resume: bool, lora: bool) -> ResumePoint:
    """The stage's last checkpoint in ``output_dir`` (when ``resume``), its step, and the weights to load."""
    checkpoint = last_checkpoint(output_dir) if resume else None
    if checkpoint is None:
        return ResumePoint(None, 0, model_path)
    step = int(json.loads((checkpoint / STATE_FILE).read_text(encoding="utf-8"))["global_step"])
    # A full fine-tune resumes its weights through from_pretrained (see resuming); LoRA resumes its adapter.
    return ResumePoint(checkpoint, step, model_path if lora else checkpoint)


def resuming(trainer_class: type[Any], point: ResumePoint) -> type[Any]:
    """``trainer_class`` that skips reloading a full model's weights on resume when ``point`` loaded them already.

    ``Trainer`` reloads them with ``load_state_dict(strict=False)`` on the checkpoint's safetensors, but
    ``save_pretrained`` writes some models under other key names than their modules have (Qwen2.5-VL's
    ``model.layers.*`` / ``visual.*`` for ``model.language_model.layers.*`` / ``model.visual.*``), so with
    transformers 5 nothing matches and training would silently go on from the base weights
    (huggingface/transformers#43701). ``from_pretrained(checkpoint)`` maps the names back. PEFT adapters
    load as usual.
    """
    weights_loaded = point.weights_loaded

    class Resuming(trainer_class):  # type: ignore[misc]
        def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
            if not weights_loaded:
                super()._load_from_checkpoint(resume_from_checkpoint, model)

    Resuming.__name__ = Resuming.__qualname__ = f"Resuming{trainer_class.__name__}"
    return Resuming
