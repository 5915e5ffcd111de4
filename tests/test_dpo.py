"""The DPO stage: pairs from rejection sampling's rows, the assistant-only preference collator, and DPO on a tiny
Qwen2.5-VL whose preference margin grows, for text-mode pairs and for draw-mode pairs with views in their turns."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from sketchmind.models.chat import template_messages
from sketchmind.train.dpo import preference_pairs, puzzle_of, split_prompt, whole

needs_train = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
    reason="the train extra is not installed",
)
ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "policies" / "micro.yaml"
SYSTEM = {"role": "system", "content": [{"type": "text", "text": "You reason by drawing."}]}
DRAW = '<think>mark the goal</think><tool_call>{"name": "box", "arguments": {"view": 1}}</tool_call>'


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (56, 56, 3), dtype=np.uint8))


def sample(
    run_id: str, answer: str, *, correct: bool, draw: bool = False, image_seed: int | None = None
) -> dict[str, Any]:
    """A trajectory row as rejection sampling saves it: text mode (one answer turn) or draw mode (a drawing turn, the
    rendered view in the observation, then the answer)."""
    puzzle = run_id.split("#")[0]
    seed = image_seed if image_seed is not None else sum(map(ord, puzzle))
    question = {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": f"{puzzle}?"}]}
    said = {"role": "assistant", "content": [{"type": "text", "text": f"<think>go</think><answer>{answer}</answer>"}]}
    messages = [SYSTEM, question]
    images = [_image(seed)]
    if draw:
        view = {"role": "user", "content": [{"type": "text", "text": "View 2:"}, {"type": "image", "text": None}]}
        messages += [{"role": "assistant", "content": [{"type": "text", "text": DRAW}]}, view]
        images.append(_image(seed + len(answer)))  # each trajectory draws its own view
    return {"id": run_id, "correct": correct, "messages": [*messages, said], "images": images}


def test_pairs_prefer_a_kept_sample_to_a_wrong_one_of_the_same_puzzle() -> None:
    kept = [sample("p1#0", "R,D", correct=True), sample("p1#3", "R,D", correct=True), sample("p3#0", "L", correct=True)]
    rejected = [
        sample("p1#1", "U", correct=False),
        sample("p1#2", "R,D", correct=True),  # right but not reflective: not worse than a kept one
        sample("p1#4", "L", correct=False),
        sample("p1#5", "D", correct=False),
        sample("p2#0", "U", correct=False),  # nothing kept for p2
        sample("p4#0", "U", correct=False, image_seed=7),  # another image than p4's kept sample
    ]
    kept.append(sample("p4#1", "L", correct=True, image_seed=8))
    pairs, stats = preference_pairs(kept, rejected, per_puzzle=4)
    ids = [pair["id"] for pair in pairs]
    # Every wrong sample of p1 is used before a kept one is paired twice with the same wrong sample.
    assert ids == ["p1#0>p1#1", "p1#3>p1#4", "p1#0>p1#5", "p1#0>p1#4"]
    assert stats.to_dict() == {
        "puzzles": 4,
        "pairs": 4,
        "expert_pairs": 0,
        "no_chosen": 1,
        "no_rejected": 1,
        "other_prompt": 1,
    }
    first, messages = pairs[0], template_messages(kept[0]["messages"])[0]  # stored and in-memory rows alike
    assert first["prompt"] == messages[:2] and first["images"] == kept[0]["images"][:1]
    assert first["chosen"][-1]["content"][0]["text"].endswith("<answer>R,D</answer>")
    assert first["rejected"][-1]["content"][0]["text"].endswith("<answer>U</answer>")
    assert whole(first, "chosen") == {"messages": messages, "images": kept[0]["images"]}

    expert = sample("p2", "R", correct=True)  # the expert's trajectory for p2: its id is the puzzle's
    pairs, stats = preference_pairs(kept, rejected, [expert], per_puzzle=1)
    assert [pair["id"] for pair in pairs] == ["p1#0>p1#1", "p2>p2#0"] and stats.expert_pairs == 1
    assert stats.no_chosen == 0 and "1 with the expert's trajectory" in stats.line()
    assert preference_pairs([], [], per_puzzle=4)[1].pairs == 0


def test_a_draw_trajectory_splits_after_its_question() -> None:
    row = sample("p1#0", "R", correct=True, draw=True)
    prompt, completion, shown, drawn = split_prompt(row)
    assert [m["role"] for m in prompt] == ["system", "user"] and [m["role"] for m in completion] == [
        "assistant",
        "user",
        "assistant",
    ]
    assert shown == row["images"][:1] and drawn == row["images"][1:] and puzzle_of(row) == "p1"


@needs_train
def test_the_collator_masks_everything_but_the_assistant_turns_views_included(
    tiny_checkpoint: Callable[[str], Path],
) -> None:
    from transformers import AutoProcessor

    from sketchmind.train.collator import IGNORE_INDEX, AssistantOnlyCollator
    from sketchmind.train.dpo import PreferenceCollator

    processor = AutoProcessor.from_pretrained(str(tiny_checkpoint("qwen2.5-vl")))
    pairs, _ = preference_pairs(
        [sample("p1#0", "R,D", correct=True, draw=True), sample("p2#0", "L", correct=True, draw=True)],
        [sample("p1#1", "U", correct=False, draw=True), sample("p2#1", "D,D,R", correct=False, draw=True)],
    )
    batch = PreferenceCollator(processor)(pairs)
    rows = [whole(pair, "chosen") for pair in pairs] + [whole(pair, "rejected") for pair in pairs]
    sft = AssistantOnlyCollator(processor)(rows)
    assert batch["input_ids"].shape[0] == 4 and batch["input_ids"].equal(sft["input_ids"])
    assert batch["completion_mask"].equal((sft["labels"] != IGNORE_INDEX).long()) and "labels" not in batch
    # Two images per trajectory, the views inside the completions included, reach the model as pixels.
    assert batch["image_grid_thw"].shape[0] == 8
    image_token = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    ids, mask = batch["input_ids"], batch["completion_mask"]
    assert int(((ids == image_token) & (mask == 1)).sum()) == 0 and int(mask.sum()) > 0
    said = processor.tokenizer.decode(ids[2][mask[2] == 1])
    assert "<answer>U</answer>" in said and "View 2" not in said and "p1?" not in said


@needs_train
@pytest.mark.parametrize("draw", [False, True], ids=["text", "draw"])
def test_dpo_learns_the_preference(tiny_checkpoint: Callable[[str], Path], tmp_path: Path, draw: bool) -> None:
    from sketchmind.train.dpo import run_dpo

    kept = [sample(f"p{i}#0", "R,D", correct=True, draw=draw) for i in range(4)]
    rejected = [sample(f"p{i}#1", "U,L,L", correct=False, draw=draw) for i in range(4)]
    pairs, _ = preference_pairs(kept, rejected)
    trl = {"max_steps": 8, "learning_rate": 3e-3, "beta": 0.1, "save_steps": 100, "per_device_train_batch_size": 2}
    metrics = run_dpo(tiny_checkpoint("qwen2.5-vl"), pairs, tmp_path / "dpo", trl=trl)
    history = metrics["history"]
    print("loss", [round(m["loss"], 3) for m in history], "margin", [round(m["rewards/margins"], 3) for m in history])
    assert metrics["global_step"] == 8 and [m["step"] for m in history] == list(range(1, 9))
    assert history[0]["loss"] == pytest.approx(np.log(2), abs=1e-3)  # the policy starts as its own reference
    assert np.mean([m["loss"] for m in history[-2:]]) < 0.8 * np.log(2)
    assert history[-1]["rewards/margins"] > history[0]["rewards/margins"] + 0.1
    assert history[-1]["rewards/accuracies"] == 1.0
    assert all(len(m["batches"]) == 1 for m in history)  # each step's batch fingerprinted (the resume check)
    assert (Path(metrics["final"]) / "config.json").is_file()


def _recipe_with_dpo(tmp_path: Path, **dpo: Any) -> Path:
    raw = yaml.safe_load(MICRO.read_text())
    raw["output"] = str(tmp_path / "run")
    raw["stages"] = {"rejection": raw["stages"]["rejection"], "dpo": dpo, "grpo": raw["stages"]["grpo"]}
    raw["eval"]["modes"] = ["draw", "dpo"]  # GRPO's policy and DPO's, from one start
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_dpo_and_grpo_start_from_one_policy_unless_chained(tmp_path: Path) -> None:
    from sketchmind.train.pipeline import Pipeline
    from sketchmind.train.recipe import load_recipe

    pipeline = Pipeline(load_recipe(_recipe_with_dpo(tmp_path, max_steps=2)))
    assert pipeline.enabled() == ["synth", "base", "sft", "rejection", "sft2", "dpo", "grpo", "eval"]
    sft2 = str(tmp_path / "run" / "sft2" / "final")
    assert pipeline.model_after("dpo") == pipeline.dpo_model() == str(tmp_path / "run" / "dpo" / "final")
    assert pipeline.grpo_start() == sft2 and pipeline.model_after("grpo").endswith("grpo/final")

    # The eval's dpo mode benches DPO's policy (drawing) beside draw, GRPO's: one start, two arms.
    from sketchmind.train.eval_policies import eval_policy

    assert eval_policy(pipeline, "dpo") == (pipeline.dpo_model(), "draw")
    assert eval_policy(pipeline, "draw") == (pipeline.model_after("grpo"), "draw")

    raw = yaml.safe_load((tmp_path / "recipe.yaml").read_text())
    raw["stages"]["grpo"]["from_dpo"] = True
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(raw))
    assert Pipeline(load_recipe(tmp_path / "recipe.yaml")).grpo_start() == pipeline.dpo_model()


def test_dpo_recipe_errors_name_the_problem(tmp_path: Path) -> None:
    from sketchmind.train.recipe import RecipeError, load_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {dpo: {beta: 0.2}}\n")
    with pytest.raises(RecipeError, match=r"stages\.dpo needs a stages\.rejection section"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {rejection: {}, grpo: {from_dpo: true}}\n")
    with pytest.raises(RecipeError, match=r"grpo\.from_dpo needs a stages\.dpo section"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {rejection: {}, dpo: {trl: {max_length: 64}}}\n")
    with pytest.raises(RecipeError, match="'max_length' of trl DPOConfig cannot be set"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {rejection: {}, dpo: {trl: {bta: 0.2}}}\n")
    with pytest.raises(RecipeError, match="did you mean 'beta'"):
        load_recipe(bad)
    head = "name: x\noutput: y\nmodel: {base: m}\nstages: {rejection: {}, "
    bad.write_text(head + "dpo: {beta: 0.2, trl: {beta: 0.3}}}\n")
    with pytest.raises(RecipeError, match=r"beta and trl\.beta both set DPOConfig\.beta"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\neval: {modes: [draw, dpo]}\n")
    with pytest.raises(RecipeError, match="eval mode 'dpo' needs the DPO policy"):
        load_recipe(bad)
    good = bad.with_name("good.yaml")
    good.write_text(head + "dpo: {beta: 0.2, trl: {loss_type: [ipo]}}}\n")
    dpo = load_recipe(good).stages.dpo
    assert dpo is not None and dpo.trl_args()["beta"] == 0.2 and dpo.trl_args()["loss_type"] == ["ipo"]


@needs_train
def test_no_pairs_stops_the_stage_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sketchmind.cli import main
    from sketchmind.train.synth_storage import save_dataset

    recipe = _recipe_with_dpo(tmp_path, max_steps=2)
    for part in ("kept", "rejected"):  # rejection sampling that kept nothing and got nothing wrong
        save_dataset([], tmp_path / "run" / "rejection" / part)
    assert main(["train", str(recipe), "--stage", "dpo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "dpo: 0 preference pairs, fewer than dpo.min_pairs=1" in err and "expert_chosen" in err
    assert not (tmp_path / "run" / "dpo" / "done.json").exists()


def test_the_plan_sizes_dpo_with_its_reference_and_both_sequences(tmp_path: Path) -> None:
    from sketchmind.train.plan import stage_plans
    from sketchmind.train.recipe import load_recipe

    plans = {p.name: p for p in stage_plans(load_recipe(_recipe_with_dpo(tmp_path, batch_size=2, max_length=512)))}
    assert list(plans) == ["sft", "sft2", "dpo", "grpo"]
    dpo = plans["dpo"]
    assert (dpo.batch, dpo.tokens, dpo.reference) == (4, 512, True)
    assert dpo.logit_tokens == 0  # DPOTrainer's fused LM head never holds the full logits
    lora = {p.name: p for p in stage_plans(load_recipe(_recipe_with_dpo(tmp_path, lora={"r": 8})))}["dpo"]
    assert not lora.reference  # with LoRA the reference is the same weights, the adapter off
