"""Stage-1 SFT on tiny Qwen2.5-VL: the loss goes down, the result loads in HFPolicy, LoRA, resuming."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
    reason="the train extra is not installed",
)
ANSWER = '<think>the goal is at the bottom</think><tool_call>{"name": "box", "arguments": {"view": 1}}</tool_call>'


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen2.5-vl")


def rows(n: int = 6) -> list[dict[str, Any]]:
    """Short two-turn trajectories: question + image, a drawing turn, an observation image, the answer."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        question, view = (Image.fromarray(rng.integers(0, 256, (56, 56, 3), dtype=np.uint8)) for _ in range(2))
        out.append(
            {
                "id": f"row{i}",
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "You reason by drawing."}]},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Puzzle {i}?"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": ANSWER}]},
                    {"role": "user", "content": [{"type": "text", "text": "Rendered view 2:"}, {"type": "image"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "<answer>R,D</answer>"}]},
                ],
                "images": [question, view],
            }
        )
    return out


def generates(path: str) -> str:
    from sketchmind.models.base import Conversation, Sampling
    from sketchmind.models.hf import HFPolicy

    conversation = Conversation(
        id="c",
        messages=[{"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": "Puzzle 0?"}]}],
        images={1: np.zeros((56, 56, 3), dtype=np.uint8)},
    )
    generation = HFPolicy(path, device="cpu").generate(conversation, Sampling(max_new_tokens=4))
    assert generation.tokens_out  # at least one token came out
    return generation.text


def test_sft_lowers_the_loss_and_saves_a_loadable_model(tiny: Path, tmp_path: Path) -> None:
    from sketchmind.train.sft import run_sft

    metrics = run_sft(tiny, rows(), tmp_path / "run", max_steps=8, lr=3e-3, save_steps=100)
    losses = [row["loss"] for row in metrics["history"]]
    print("losses", [round(x, 3) for x in losses])
    assert metrics["global_step"] == 8 and metrics["resumed_from"] is None
    assert [row["step"] for row in metrics["history"]] == list(range(1, 9))
    assert np.mean(losses[-2:]) < 0.6 * np.mean(losses[:2]), losses
    lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert lines == metrics["history"]
    assert {"step", "loss", "learning_rate", "epoch"} <= lines[0].keys()
    assert isinstance(generates(metrics["final"]), str)


def test_lora_trains_the_language_model_only_and_merges(tiny: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from sketchmind.train.sft import run_sft

    metrics = run_sft(tiny, rows(2), tmp_path / "lora", max_steps=2, lr=1e-2, lora={"r": 4, "alpha": 8})
    assert metrics["global_step"] == 2 and len(metrics["history"]) == 2
    assert (tmp_path / "lora" / "adapter" / "adapter_config.json").is_file()
    base, tuned = load_file(tiny / "model.safetensors"), load_file(Path(metrics["final"]) / "model.safetensors")
    assert base.keys() == tuned.keys()  # merged: a plain checkpoint, no lora_ weights
    changed = {k for k in base if not base[k].equal(tuned[k])}
    # On disk Qwen2.5-VL keeps its legacy names: the language model is model.layers, the vision tower visual.
    assert changed and all(k.startswith("model.layers.") and k.endswith("proj.weight") for k in changed), changed
    assert len(changed) == 2 * 7  # two layers x (q, k, v, o, gate, up, down)
    assert isinstance(generates(metrics["final"]), str)


def steps_callback(stop_at: int | None = None) -> Any:
    """A callback recording the steps a run trains; with ``stop_at``, it ends the run there (a killed job)."""
    from transformers import TrainerCallback

    class Steps(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[int] = []

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.steps.append(state.global_step)
            if state.global_step == stop_at:
                control.should_training_stop = True

    return Steps()


def test_a_second_run_resumes_from_the_last_checkpoint(tiny: Path, tmp_path: Path) -> None:
    from sketchmind.train.sft import run_sft

    out = tmp_path / "resume"
    first = run_sft(tiny, rows(), out, max_steps=4, lr=1e-3, save_steps=2)
    assert first["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    steps = steps_callback()
    second = run_sft(tiny, rows(), out, max_steps=6, lr=1e-3, save_steps=2, callbacks=[steps])
    assert second["resumed_from"] == str(out / "checkpoint-4")
    assert steps.steps == [5, 6]  # continued, not started over
    assert second["global_step"] == 6 and (out / "checkpoint-6").is_dir()
    assert [row["step"] for row in second["history"]] == [1, 2, 3, 4, 5, 6]
    assert second["history"][:4] == first["history"]

    fresh = run_sft(tiny, rows(), out, max_steps=3, lr=1e-3, save_steps=100, resume=False)
    assert fresh["resumed_from"] is None and fresh["global_step"] == 3
    assert [row["step"] for row in fresh["history"]] == [1, 2, 3]


@pytest.mark.parametrize("lora", [None, {"r": 4, "lora_alpha": 8}], ids=["full", "lora"])
def test_a_killed_run_resumed_matches_an_uninterrupted_one(
    tiny: Path, tmp_path: Path, lora: dict[str, int] | None
) -> None:
    """Weights, optimizer, schedule and data order all come back: the losses and the final model agree."""
    from safetensors.torch import load_file

    from sketchmind.train.sft import run_sft

    kwargs: dict[str, Any] = {"max_steps": 6, "lr": 3e-3, "save_steps": 2, "lora": lora}
    straight = run_sft(tiny, rows(), tmp_path / "straight", **kwargs)
    killed = run_sft(tiny, rows(), tmp_path / "killed", callbacks=[steps_callback(stop_at=5)], **kwargs)
    assert killed["global_step"] == 5  # logged step 5, but its last checkpoint is step 4
    resumed = run_sft(tiny, rows(), tmp_path / "killed", **kwargs)
    assert resumed["resumed_from"] == str(tmp_path / "killed" / "checkpoint-4")
    assert [row["step"] for row in resumed["history"]] == list(range(1, 7))  # step 5 logged once
    losses = [row["loss"] for row in resumed["history"]]
    assert np.allclose(losses, [row["loss"] for row in straight["history"]], rtol=1e-4), losses
    a = load_file(Path(straight["final"]) / "model.safetensors")
    b = load_file(Path(resumed["final"]) / "model.safetensors")
    assert all(np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-5) for k in a)


def test_imports_stay_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sketchmind.train.collator, sketchmind.train.sft; "
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'datasets', 'peft') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
