"""``model.dtype`` reaches every stage that trains weights (issue 17): the micro recipe in bfloat16, end to end.

Before, SFT and GRPO always loaded float32 weights, so a 7B recipe's ``bfloat16`` silently needed twice the
GPU memory. Here each trainer stage's saved model must hold bfloat16 tensors (a float32 load would save
float32 ones), and a stage's ``trl:`` field must reach the trainer's saved args.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import yaml

from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import load_recipe
from sketchmind.train.sft import read_metrics

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
    reason="the train extra is not installed",
)
MICRO = Path(__file__).resolve().parents[1] / "policies" / "micro.yaml"
TRAINERS = ("perceive", "sft", "sft2", "grpo", "latent1", "latent2", "sft_text", "sft_direct")


def saved_dtypes(folder: Path) -> set[str]:
    """The dtypes of the model tensors a checkpoint saved (the latent projection P stays float32 by design)."""
    from safetensors import safe_open

    found = set()
    for path in folder.glob("model*.safetensors"):
        with safe_open(str(path), "pt") as file:
            found |= {str(file.get_slice(key).get_dtype()) for key in file.keys()}  # noqa: SIM118
    return found


def test_every_trainer_stage_trains_in_the_recipe_dtype(tmp_path: Path) -> None:
    import torch

    raw = yaml.safe_load(MICRO.read_text())
    raw["output"] = str(tmp_path / "run")
    raw["model"]["dtype"] = "bfloat16"
    stages = raw["stages"]
    stages["perceive"] |= {"max_steps": 2, "save_steps": 2}
    stages["sft"] = {"max_steps": 2, "save_steps": 2, "learning_rate": 3.0e-3, "trl": {"lr_scheduler_type": "cosine"}}
    stages["rejection"]["sft"] = {"max_steps": 1, "save_steps": 1}
    stages["grpo"] |= {"max_steps": 1, "trl": {"temperature": 0.7}}
    stages["latent"]["stage1"] = {"max_steps": 1, "save_steps": 1}
    stages["latent"]["stage2"] = {"max_steps": 1, "save_steps": 1}
    del raw["eval"]  # inference, not training: HFPolicy's own dtype handling is tested elsewhere
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    recipe = load_recipe(tmp_path / "recipe.yaml")

    Pipeline(recipe, report=lambda _line: None).run()

    run = tmp_path / "run"
    assert {stage: saved_dtypes(run / stage / "final") for stage in TRAINERS} == {s: {"BF16"} for s in TRAINERS}
    for stage in TRAINERS:  # and bf16 trained: every logged loss is a number
        losses = [row["loss"] for row in read_metrics(run / stage)]
        assert losses and all(math.isfinite(loss) for loss in losses), stage
    sft_args = torch.load(run / "sft" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert sft_args.lr_scheduler_type == "cosine" and sft_args.learning_rate == 3.0e-3
    grpo_args = torch.load(run / "grpo" / "checkpoint-1" / "training_args.bin", weights_only=False)
    assert grpo_args.temperature == 0.7 and grpo_args.num_generations == raw["stages"]["grpo"]["num_generations"]
