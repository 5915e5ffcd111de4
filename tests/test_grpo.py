"""Stage-3 GRPO: the drawing environment, the rewards, tool-capable templates and TRL runs on tiny models."""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sketchmind.protocols import get_protocol
from sketchmind.protocols.sketchmind import format_call
from sketchmind.tools import specs
from sketchmind.train.environment import DrawingEnvironment, is_error
from sketchmind.train.grpo import grpo_dataset, run_grpo
from sketchmind.train.rewards import accuracy_reward, final_answer, format_ok, format_reward, reward_functions

pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
        reason="the train extra is not installed",
    ),
    pytest.mark.filterwarnings("ignore:You are using 'environment_factory'"),  # TRL marks it experimental
]
TOOLS = ["answer", "box", "crop", "grid", "line", "path", "point", "text", "zoom"]  # the protocol's tools
PIXELS = 112 * 112  # maze level 1 is 312x312; 112x112 is 16 Qwen2.5-VL image tokens


@pytest.fixture(scope="module")
def row() -> dict[str, Any]:
    """The one maze puzzle of level 1 the run tests train on, as its dataset row."""
    return dict(grpo_dataset(["maze"], 1, [1], max_pixels=PIXELS)[0])


@pytest.fixture(scope="module")
def qwen25(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen2.5-vl")


@pytest.fixture(scope="module")
def qwen25_stock(qwen25: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2.5-VL with the real checkpoints' chat template, which cannot render tool calls."""
    from trl.chat_template_utils import qwen2_5_vl_chat_template

    out = tmp_path_factory.mktemp("qwen25-stock") / "model"
    shutil.copytree(qwen25, out)
    (out / "chat_template.jinja").write_text(qwen2_5_vl_chat_template)
    return out


@pytest.fixture(scope="module")
def qwen3(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen3-vl")


def processor(path: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


# --------------------------------------------------------------------------------------------- dataset


def test_dataset_rows_are_trl_conversational_vlm_prompts(row: dict[str, Any]) -> None:
    system, user = row["prompt"]
    assert system["role"] == "system" and "<answer>" in system["content"][0]["text"]
    assert [p["type"] for p in user["content"]] == ["image", "text"]
    assert user["content"][1]["text"] == row["question"]
    (image,) = row["images"]
    assert isinstance(image, Image.Image) and image.width * image.height <= PIXELS
    assert system["content"][0]["text"] == get_protocol("sketchmind").system_prompt(specs(), image.size)  # the agent's
    assert (row["family"], row["level"], row["index"], row["seed"]) == ("maze", 1, 0, 0)
    assert json.loads(row["truth"])["kind"] in ("moves", "turns")


# ----------------------------------------------------------------------------------------- environment


def test_reset_loads_the_rows_image_or_regenerates_the_puzzle(row: dict[str, Any]) -> None:
    env = DrawingEnvironment(max_pixels=PIXELS)
    assert env.reset(**row) is None  # the prompt already holds the image and the question
    shown = np.asarray(row["images"][0])
    assert np.array_equal(env.canvas.source.image, shown) and env.puzzle_id == row["id"]
    env.reset(**{k: v for k, v in row.items() if k != "images"})
    assert np.array_equal(env.canvas.source.image, shown)  # same puzzle, same downscale
    env.reset()
    assert env.canvas.source.size == (1024, 1024)  # nothing to load: a whiteboard


def test_tools_are_the_public_methods_with_json_schemas() -> None:
    from transformers.utils import get_json_schema

    env = DrawingEnvironment()
    public = [n for n, _ in inspect.getmembers(DrawingEnvironment, inspect.isfunction) if not n.startswith("_")]
    assert sorted(set(public) - {"reset"}) == TOOLS  # what TRL exposes as tools
    for name in TOOLS:
        schema = get_json_schema(getattr(env, name))["function"]
        assert schema["name"] == name and "return" not in schema and schema["description"]


def _shape(schema: dict[str, Any]) -> dict[str, Any]:
    """The parts of an argument's JSON schema that both builders express: its type, its items' types
    (recursively) and its enum. Bounds (minItems, maximum, ...) are beyond what type hints can say."""
    shape = {k: schema[k] for k in ("type", "enum") if k in schema}
    if "items" in schema:
        shape["items"] = _shape(schema["items"])
    return shape


@pytest.mark.parametrize("name", TOOLS)
def test_each_tool_schema_trl_builds_is_the_one_specs_gives(name: str) -> None:
    from transformers.utils import get_json_schema

    built = get_json_schema(getattr(DrawingEnvironment(), name))["function"]
    (spec,) = (s["function"] for s in specs([name]))
    assert (built["name"], built["description"]) == (spec["name"], spec["description"])
    built_args, spec_args = built["parameters"], spec["parameters"]
    assert sorted(built_args.get("required", [])) == sorted(spec_args["required"])
    assert set(built_args["properties"]) == set(spec_args["properties"])
    for argument, schema in spec_args["properties"].items():
        built_argument = built_args["properties"][argument]
        assert _shape(built_argument) == _shape(schema), f"{name}.{argument}"
        assert built_argument["description"] == schema["description"], f"{name}.{argument}"


@pytest.mark.parametrize(
    ("tool", "arguments"),
    [
        ("box", {"bbox": [10, 10, 60, 60], "label": "G"}),
        ("line", {"start": [5, 5], "end": [100, 90], "arrow": True}),
        ("point", {"point": [50, 50], "label": "S"}),
        ("path", {"points": [[10, 10], [10, 90], [90, 90]]}),
        ("grid", {"rows": 3, "cols": 3}),
        ("text", {"point": [20, 20], "text": "start"}),
        ("crop", {"bbox": [0, 0, 56, 56]}),
        ("zoom", {"factor": 2, "bbox": [0, 0, 56, 56], "resample": "nearest"}),
    ],
)
def test_a_call_returns_its_observation_and_the_new_view(
    row: dict[str, Any], tool: str, arguments: dict[str, Any]
) -> None:
    env = DrawingEnvironment()
    env.reset(**row)
    text, image = getattr(env, tool)(**arguments)  # the sketchmind protocol's order: the line, then the view
    assert text == {"type": "text", "text": f"<observation>{env.canvas.latest.describe()}</observation>"}
    assert text["text"].startswith("<observation>view 2: ")
    assert image["type"] == "image" and image["image"].size == env.canvas.latest.size
    assert len(env.canvas) == 2 and env.calls[0].view == 2 and not env.errors


def test_model_mistakes_come_back_as_error_observations(row: dict[str, Any]) -> None:
    env = DrawingEnvironment()
    env.reset(**row)
    outputs = [
        env.box(bbox=[0, 0, 500, 50]),  # off the view
        env.box(xy=[1, 2]),  # an argument the tool does not have
        env.point(),  # a missing argument
        env.zoom(factor="huge"),  # a wrong type
        env.crop(bbox=[10, 10, 20, 20], view=7),  # a view that does not exist
    ]
    assert all(is_error(o) and len(o) == 1 for o in outputs)
    texts = [o[0]["text"] for o in outputs]
    assert all(t.startswith("<observation>error: ") and t.endswith("</observation>") for t in texts)
    assert "outside view 1" in texts[0] and "unexpected argument 'xy'" in texts[1]
    assert len(env.errors) == 5 and len(env.canvas) == 1  # no view was made


def test_image_budget_counts_the_puzzle_and_refuses_as_the_agent_does(row: dict[str, Any]) -> None:
    env = DrawingEnvironment(max_images=2, max_pixels=32 * 32)
    env.reset(**row)
    assert env.images_shown == 1  # the puzzle image in the prompt
    _, image = env.grid(rows=2, cols=2)
    assert image["image"].width * image["image"].height <= 32 * 32
    second = env.point(point=[5, 5])
    expected = "<observation>error: image budget spent (2 images): answer now</observation>"
    assert second == [{"type": "text", "text": expected}] and is_error(second)
    assert env.images_shown == 2 and len(env.canvas) == 2 and len(env.errors) == 1  # nothing drawn


# --------------------------------------------------------------------------------------------- rewards


def rollout(answer: str, *, think: str = "<think>the goal is below</think>") -> list[dict[str, Any]]:
    """A completion as TRL hands it to the rewards: a call, its tool message, the final turn."""
    call = {"type": "function", "function": {"name": "box", "arguments": {"bbox": [1, 1, 9, 9]}}}
    view = [
        {"type": "text", "text": "<observation>view 2: box on view 1 (8x8)</observation>"},
        {"type": "image", "image": Image.new("RGB", (8, 8))},
    ]
    return [
        {"role": "assistant", "content": think, "tool_calls": [call]},
        {"role": "tool", "name": "box", "content": view},
        {"role": "assistant", "content": f"{think}<answer>{answer}</answer>"},
    ]


def scores(completions: list[Any], row: dict[str, Any], **kwargs: Any) -> tuple[list[float], list[float]]:
    columns = {"family": [row["family"]] * len(completions), "truth": [row["truth"]] * len(completions), **kwargs}
    prompts = [row["prompt"]] * len(completions)
    return accuracy_reward(prompts, completions, **columns), format_reward(prompts, completions, **columns)


def test_right_and_well_formed_earns_both(row: dict[str, Any]) -> None:
    assert scores([rollout(row["reference"])], row) == ([1.0], [1.0])
    assert final_answer(rollout(row["reference"])) == row["reference"]


def test_gating_zeroes_the_format_of_a_wrong_answer(row: dict[str, Any]) -> None:
    wrong = rollout("999")
    assert scores([wrong], row) == ([0.0], [1.0])
    prompts, columns = [row["prompt"]], {"family": [row["family"]], "truth": [row["truth"]]}
    assert format_reward(prompts, [wrong], gated=True, **columns) == [0.0]
    _, gated = reward_functions(gated=True)
    assert gated(prompts=prompts, completions=[wrong], **columns) == [0.0]
    assert gated(prompts=prompts, completions=[rollout(row["reference"])], **columns) == [1.0]


def test_malformed_rollouts_fail_the_format(row: dict[str, Any]) -> None:
    ref = row["reference"]
    no_think = rollout(ref, think="")
    unparsed = [{"role": "assistant", "content": '<think>x</think><tool_call>{"name": "box", "argu'}]
    failed = rollout(ref)
    error = "<observation>error: box bbox: x=500 is outside view 1 (8x8)</observation>"
    failed[1] = {"role": "tool", "name": "box", "content": [{"type": "text", "text": error}]}
    trl_failed = rollout(ref)
    trl_failed[1] = {"role": "tool", "name": "boxx", "content": "{'error': 'Tool boxx not found.'}"}
    trailing = [{"role": "assistant", "content": f"<think>x</think><answer>{ref}</answer> and more"}]
    still_calling = rollout(ref)[:2]
    for completion in (no_think, unparsed, failed, trl_failed, trailing, still_calling, []):
        assert not format_ok(completion), completion
    assert format_ok(f"<think>plain text</think><answer>{ref}</answer>")  # a non-conversational completion
    env = DrawingEnvironment()
    env.reset(**row)
    env.box(bbox=[0, 0, 999, 1])
    assert not format_ok(rollout(ref), env)  # an error only the environment saw
    assert scores([no_think, rollout(ref)], row, environments=[None, env]) == ([1.0, 1.0], [0.0, 0.0])


def test_reward_functions_are_named_as_trl_logs_them() -> None:
    from trl.trainer.utils import get_callable_name

    assert [get_callable_name(f) for f in reward_functions(gated=False)] == ["accuracy_reward", "format_reward"]


# ------------------------------------------------------------------------------------------- templates


def test_shipped_template_makes_stock_qwen25_vl_tool_capable(qwen25_stock: Path) -> None:
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling

    from sketchmind.train.templates import QWEN2_5_VL_TOOL_TEMPLATE, prepare_processor

    proc = processor(qwen25_stock)
    stock = proc.chat_template
    assert not supports_tool_calling(proc)
    prepare_processor(proc, "qwen2.5-vl")
    assert proc.chat_template == QWEN2_5_VL_TOOL_TEMPLATE and supports_tool_calling(proc)
    assert is_chat_template_prefix_preserving(proc)
    # Without tools the text is the stock template's, byte for byte: what the checkpoint was trained on.
    for system in ([{"role": "system", "content": [{"type": "text", "text": "Draw."}]}], []):
        messages = [
            *system,
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is G?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "<answer>R</answer>"}]},
        ]
        ours = proc.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
        assert ours == proc.apply_chat_template(messages, chat_template=stock, tokenize=False)


def test_tool_calls_round_trip_through_trl_parsing(qwen25_stock: Path) -> None:
    from trl.chat_template_utils import parse_response

    from sketchmind.train.templates import prepare_processor

    proc = prepare_processor(processor(qwen25_stock), "qwen2.5-vl")
    env = DrawingEnvironment()
    tools = [getattr(env, name) for name in TOOLS]
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is G?"}]}]
    text = proc.apply_chat_template(prompt, tools=tools, tokenize=False, add_generation_prompt=True)
    assert "<tools>" in text and '"name": "zoom"' in text and "<tool_call>" in text
    call = {"type": "function", "function": {"name": "box", "arguments": {"bbox": [1, 2, 30, 40], "label": "G"}}}
    turn = {"role": "assistant", "content": "<think>box the goal</think>", "tool_calls": [call]}
    rendered = proc.apply_chat_template([*prompt, turn], tools=tools, tokenize=False)
    tokenizer = proc.tokenizer
    prefix = tokenizer(text, add_special_tokens=False)["input_ids"]
    # What the template writes and what our protocol writes (no newlines) parse to the same call.
    for generated in (rendered[len(text) :].rstrip("\n"), "<think>box the goal</think>" + format_call("box", {})):
        ids = tokenizer(generated, add_special_tokens=False)["input_ids"]
        parsed = parse_response(tokenizer, ids, prefix=prefix, tools=tools)
        assert parsed["content"] == "<think>box the goal</think>"
        assert parsed["tool_calls"][0]["function"]["name"] == "box"
    assert parsed["tool_calls"][0]["function"]["arguments"] == {}
    answer = tokenizer("<think>done</think><answer>R,D</answer><|im_end|>", add_special_tokens=False)["input_ids"]
    assert parse_response(tokenizer, answer, prefix=prefix, tools=tools) == {
        "role": "assistant",
        "content": "<think>done</think><answer>R,D</answer>",
    }


def test_tiny_templates_are_already_tool_capable(qwen25: Path) -> None:
    from sketchmind.models.tiny import chat_template
    from sketchmind.train.templates import RESPONSE_TEMPLATES, prepare_processor

    proc = prepare_processor(processor(qwen25), "qwen2.5-vl")
    assert proc.chat_template == chat_template("qwen2.5-vl")  # left alone
    assert proc.tokenizer.response_template == RESPONSE_TEMPLATES["qwen2.5-vl"]


# ----------------------------------------------------------------------------------------- TRL runs


def test_run_grpo_logs_rewards_resumes_and_saves(qwen25: Path, tmp_path: Path) -> None:
    """A random tiny model rarely calls a tool; this checks the pipeline: steps, rewards, resume, final model."""
    from transformers import AutoModelForImageTextToText

    from sketchmind.train.templates import supports_tools

    common: dict[str, Any] = {
        "families": ["maze"],
        "n": 2,
        "levels": [1],
        "num_generations": 2,
        "max_completion_length": 32,
        "learning_rate": 1e-5,
        "max_pixels": PIXELS,
        "save_steps": 1,
    }
    first = run_grpo(qwen25, tmp_path, max_steps=1, **common)
    assert first["global_step"] == 1 and first["resumed_from"] is None
    second = run_grpo(qwen25, tmp_path, max_steps=2, **common)
    assert second["global_step"] == 2 and second["resumed_from"].endswith("checkpoint-1")
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history] == [1, 2]
    for h in history:
        for key in ("reward", "reward_std", "rewards/accuracy_reward/mean", "rewards/format_reward/mean", "loss"):
            assert np.isfinite(h[key]), key
        assert 0.0 <= h["reward"] <= 2.0 and h["completions/mean_length"] <= 32
    model = AutoModelForImageTextToText.from_pretrained(second["final"])
    assert model.config.model_type == "qwen2_5_vl" and supports_tools(processor(Path(second["final"])))


@pytest.mark.parametrize("model", ["qwen25_stock", "qwen3"])
def test_a_tool_call_mid_rollout_shows_the_model_its_drawing(
    model: str, row: dict[str, Any], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Scripted generations (a box call, then a right and a wrong answer) through TRL's real tool loop."""
    import trl

    path: Path = request.getfixturevalue(model)
    tokenizer = processor(path).tokenizer

    def ids(text: str) -> list[int]:
        return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]

    call = ids("<think>mark the goal</think>" + format_call("box", {"bbox": [70, 70, 100, 100]}))
    answers = [
        ids(f"<think>count</think><answer>{row['reference']}</answer>"),
        ids("<think>x</think><answer>99</answer>"),
    ]
    turns: list[dict[str, Any]] = []

    def generate(
        self: Any, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any, num_generations: int, **kwargs: Any
    ) -> tuple[list[list[int]], None]:
        turns.append({"images": [list(i or []) for i in images or []], "tool_images": kwargs.get("has_tool_images")})
        return ([list(call) for _ in prompt_ids] if len(turns) == 1 else answers[: len(prompt_ids)]), None

    monkeypatch.setattr(trl.GRPOTrainer, "_generate_single_turn", generate)
    result = run_grpo(
        path,
        tmp_path,
        families=["maze"],
        n=1,
        levels=[1],
        max_steps=1,
        num_generations=2,
        max_completion_length=256,
        learning_rate=1e-5,
        max_pixels=PIXELS,
    )
    first, second = turns
    assert not first["tool_images"] and [len(i) for i in first["images"]] == [1, 1]
    assert second["tool_images"] and [len(i) for i in second["images"]] == [2, 2]
    puzzle, drawn = second["images"][0]
    assert drawn.size == puzzle.size and not np.array_equal(np.asarray(drawn), np.asarray(puzzle))
    (step,) = result["history"]
    assert step["tools/call_frequency"] == 1.0 and step["tools/failure_frequency"] == 0.0
    assert step["rewards/accuracy_reward/mean"] == 0.5 and step["rewards/format_reward/mean"] == 0.5
    assert step["reward"] == 1.0 and step["grad_norm"] > 0  # a right and a wrong rollout: a real policy gradient
