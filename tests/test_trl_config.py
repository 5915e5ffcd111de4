"""Recipes reach TRL directly (issue 17): a section's ``trl:`` fields are checked against TRL's config class
and reach the trainer's args; ``model.dtype`` is the dtype the weights train in, in SFT and GRPO runs."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sketchmind.train.recipe import RecipeError, load_recipe

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
    reason="the train extra is not installed",
)
HEAD = "name: x\noutput: y\nmodel: {base: m}\n"


def recipe_error(tmp_path: Path, text: str) -> str:
    """The one-line error ``load_recipe`` raises for a recipe holding ``text``."""
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ----------------------------------------------------------------------------------------- the recipe


def test_an_unknown_trl_field_is_one_line_naming_it_and_the_class(tmp_path: Path) -> None:
    sft = recipe_error(tmp_path, HEAD + "stages: {sft: {trl: {gradient_accumulation_stepz: 4}}}\n")
    assert "stages.sft.trl" in sft and "'gradient_accumulation_stepz' is not a field of trl SFTConfig" in sft
    assert "did you mean 'gradient_accumulation_steps'" in sft
    grpo = recipe_error(tmp_path, HEAD + "stages: {grpo: {trl: {num_generation: 4}}}\n")
    assert "stages.grpo.trl" in grpo and "'num_generation' is not a field of trl GRPOConfig" in grpo
    perceive = recipe_error(tmp_path, HEAD + "stages: {perceive: {trl: {bogus: 1}}}\n")
    assert "'bogus' is not a field of trl SFTConfig" in perceive
    nested = recipe_error(tmp_path, HEAD + "stages: {rejection: {sft: {trl: {beta: 0.1}}}}\n")
    assert "stages.rejection.sft.trl" in nested and "'beta' is not a field of trl SFTConfig" in nested
    extra = recipe_error(tmp_path, HEAD + "stages: {grpo: {extra: {vllm_mod: colocate}}}\n")
    assert "stages.grpo.extra" in extra and "did you mean 'vllm_mode'" in extra


def test_fields_the_runner_owns_and_double_settings_are_refused(tmp_path: Path) -> None:
    owned = recipe_error(tmp_path, HEAD + "stages: {sft: {trl: {output_dir: elsewhere}}}\n")
    assert "'output_dir' of trl SFTConfig cannot be set in a recipe" in owned
    assert "section's max_length" in recipe_error(tmp_path, HEAD + "stages: {sft: {trl: {max_length: 9}}}\n")
    both = recipe_error(tmp_path, HEAD + "stages: {sft: {grad_accum: 2, trl: {gradient_accumulation_steps: 4}}}\n")
    assert "grad_accum and trl.gradient_accumulation_steps both set" in both
    twice = recipe_error(tmp_path, HEAD + "stages: {grpo: {extra: {beta: 0.1}, trl: {beta: 0.2}}}\n")
    assert "extra.beta and trl.beta" in twice


def test_trl_fields_join_the_friendly_keys(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(
        HEAD
        + "stages:\n"
        + "  sft: {learning_rate: 3.0e-4, trl: {gradient_accumulation_steps: 4, lr_scheduler_type: cosine}}\n"
        + "  grpo: {num_generations: 2, extra: {beta: 0.1}, trl: {temperature: 0.7}}\n"
    )
    stages = load_recipe(path).stages
    sft = stages.sft.trl_args()
    assert sft["learning_rate"] == 3e-4 and sft["num_train_epochs"] == 1.0
    assert sft["gradient_accumulation_steps"] == 4 and sft["lr_scheduler_type"] == "cosine"  # trl wins over a default
    assert stages.grpo is not None
    grpo = stages.grpo.trl_args()
    assert grpo["num_generations"] == 2 and grpo["beta"] == 0.1 and grpo["temperature"] == 0.7


def test_float16_and_unknown_dtypes_are_refused_at_load_time(tmp_path: Path) -> None:
    half = recipe_error(tmp_path, "name: x\noutput: y\nmodel: {base: m, dtype: float16}\n")
    assert "model.dtype" in half and "cannot train" in half and "bfloat16" in half
    assert "unknown dtype 'bf17'" in recipe_error(tmp_path, "name: x\noutput: y\nmodel: {base: m, dtype: bf17}\n")


def test_the_big_recipes_train_their_weights_in_bfloat16() -> None:
    from sketchmind.train.weights import training_dtype

    root = Path(__file__).resolve().parents[1] / "policies"
    for name in ("qwen2.5-vl-7b.yaml", "qwen3-vl-8b.yaml"):
        assert str(training_dtype(load_recipe(root / name).model.dtype)) == "torch.bfloat16", name


def test_build_config_puts_the_fields_over_the_runner_defaults(tmp_path: Path) -> None:
    from sketchmind.train.trl_config import build_config

    config = build_config("SFTConfig", tmp_path, {"lr_scheduler_type": "cosine", "save_total_limit": 5})
    assert config.output_dir == str(tmp_path) and config.lr_scheduler_type == "cosine"
    assert config.save_total_limit == 5 and config.logging_steps == 1 and config.remove_unused_columns is False
    with pytest.raises(ValueError, match="'warmup' is not a field of trl GRPOConfig"):
        build_config("GRPOConfig", tmp_path, {"warmup": 3})


# ----------------------------------------------------------------------------------------- real runs


class Probe:
    """A trainer callback noting the dtypes of the model's parameters and the trainer's args at each step."""

    def __init__(self) -> None:
        from transformers import TrainerCallback

        self.dtypes: list[set[str]] = []
        self.args: Any = None
        probe = self

        class _Callback(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
                probe.args = args
                probe.dtypes.append({str(p.dtype) for p in model.parameters()})

        self.callback = _Callback()


def saved_dtypes(folder: str | Path) -> set[str]:
    """The dtypes of every tensor in a saved checkpoint's safetensors files."""
    from safetensors import safe_open

    found = set()
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(str(path), "pt") as file:
            found |= {str(file.get_slice(key).get_dtype()) for key in file.keys()}  # noqa: SIM118
    return found


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen2.5-vl")


def test_sft_trains_bfloat16_weights_with_the_trl_fields(tiny: Path, tmp_path: Path) -> None:
    from test_sft import rows

    from sketchmind.train.sft import run_sft

    probe = Probe()
    trl = {"lr_scheduler_type": "cosine", "gradient_accumulation_steps": 2, "weight_decay": 0.01}
    metrics = run_sft(
        tiny, rows(4), tmp_path, max_steps=2, lr=1e-3, dtype="bfloat16", trl=trl, callbacks=[probe.callback]
    )
    assert metrics["global_step"] == 2
    assert probe.dtypes == [{"torch.bfloat16"}] * 2  # trained in bf16, not float32
    assert probe.args.lr_scheduler_type == "cosine" and probe.args.gradient_accumulation_steps == 2
    assert probe.args.weight_decay == 0.01 and probe.args.learning_rate == 1e-3
    assert saved_dtypes(metrics["final"]) == {"BF16"}


def test_sft_keeps_float32_weights_without_a_dtype(tiny: Path, tmp_path: Path) -> None:
    from test_sft import rows

    from sketchmind.train.sft import run_sft

    probe = Probe()
    run_sft(tiny, rows(2), tmp_path, max_steps=1, lr=1e-3, callbacks=[probe.callback])
    assert probe.dtypes == [{"torch.float32"}]


def test_grpo_trains_bfloat16_weights_with_the_trl_fields(tiny: Path, tmp_path: Path) -> None:
    from sketchmind.train.grpo import run_grpo

    probe = Probe()
    metrics = run_grpo(
        tiny,
        tmp_path,
        families=["maze"],
        n=1,
        levels=[1],
        max_pixels=112 * 112,
        dtype="bfloat16",
        trl={"max_steps": 1, "num_generations": 2, "max_completion_length": 16, "temperature": 0.7, "beta": 0.0},
        callbacks=[probe.callback],
    )
    assert metrics["global_step"] == 1 and probe.dtypes == [{"torch.bfloat16"}]
    assert probe.args.temperature == 0.7 and probe.args.num_generations == 2
    assert probe.args.per_device_train_batch_size == 2  # one step's rollouts, from trl's num_generations
    assert saved_dtypes(metrics["final"]) == {"BF16"}
