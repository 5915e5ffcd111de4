"""GRPO rollouts read byte for byte like the agent's conversations (the SFT format) on our tiny models.

One trajectory is played twice: (a) by ``Agent`` in the ``sketchmind`` protocol, each turn rendered by
``HFPolicy._render`` (the text and images the policy is fed at inference, and SFT rows are made of), and
(b) the way TRL's GRPO tool loop plays it: the ``grpo_dataset`` prompt, each generated turn parsed by our
response template into ``content`` + ``tool_calls``, each call answered by ``DrawingEnvironment`` in its
own ``tool`` message, all rendered by the same processor's chat template. Then the same trajectory goes
through TRL's real ``GRPOTrainer`` loop (generation scripted), whose token ids must be ``HFPolicy``'s.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Conversation, Generation, Policy, Sampling
from sketchmind.models.expert import ExpertPolicy
from sketchmind.models.replay import ReplayPolicy
from sketchmind.protocols.base import ToolCall, image_budget_error
from sketchmind.protocols.sketchmind import FINAL_NOTE, SketchMindProtocol
from sketchmind.tasks import Puzzle, get_family, make_dataset
from sketchmind.tools import specs
from sketchmind.train.environment import DrawingEnvironment, is_error
from sketchmind.train.grpo import grpo_dataset

if importlib.util.find_spec("transformers") is not None:
    from sketchmind.models.hf import HFPolicy

pytestmark = [
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
        reason="the train extra is not installed",
    ),
    pytest.mark.filterwarnings("ignore:You are using 'environment_factory'"),  # TRL marks it experimental
]
PIXELS = 112 * 112  # maze level 1 downscaled to 112x112, as in test_grpo
BUDGETS = Budgets(max_turns=10, max_images=45, timeout=None)
PROTOCOL = SketchMindProtocol()


def hand_written(reference: str) -> list[str]:
    """Two calls on view 1, then a turn with an off-view box, a wrong argument name and a line, then the answer."""
    return [
        PROTOCOL.format_turn(
            "Mark the goal and the start.",
            [
                ToolCall("box", {"bbox": [8, 8, 40, 40], "label": "goal"}),
                ToolCall("point", {"point": [60, 60], "label": "start", "view": 1}),
            ],
        ),
        PROTOCOL.format_turn(
            "Now the route.",
            [
                ToolCall("box", {"bbox": [0, 0, 500, 50]}),  # off the view: an error, no view
                ToolCall("box", {"xy": [1, 2]}),  # an argument the tool does not have
                ToolCall("line", {"start": [10, 10], "end": [100, 100], "arrow": True, "view": 2}),
            ],
        ),
        PROTOCOL.format_turn("The route avoids the holes.", answer=reference),
    ]


@pytest.fixture(scope="module", params=["qwen2.5-vl", "qwen3-vl"])
def tiny(request: pytest.FixtureRequest, tiny_checkpoint: Callable[[str], Path]) -> Path:
    family: str = request.param
    return tiny_checkpoint(family)


@pytest.fixture(scope="module")
def row() -> dict[str, Any]:
    """The maze level-1 puzzle as its GRPO dataset row (image downscaled to ``PIXELS``)."""
    return dict(grpo_dataset(["maze"], 1, [1], max_pixels=PIXELS)[0])


class Recording(Policy):
    """Plays ``inner`` and keeps the conversation of every turn (the agent never mutates a sent one)."""

    def __init__(self, inner: Policy) -> None:
        self.inner = inner
        self.conversations: list[Conversation] = []

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        self.conversations.append(conversation)
        return self.inner.generate(conversation, sampling)


Turns = list[tuple[str, list[Image.Image]]]


def agent_side(
    hf: HFPolicy, row: dict[str, Any], inner: Policy, run_id: str, puzzle: Puzzle | None = None
) -> tuple[list[str], Turns]:
    """(a) Agent + HFPolicy: the raw turns of the run, and each turn's prompt as HFPolicy renders it."""
    recording = Recording(inner)
    image = np.asarray(row["images"][0])
    trace = Agent(recording, "sketchmind", BUDGETS).solve(image, row["question"], run_id=run_id, puzzle=puzzle)
    assert trace.status == "answered", trace.error
    turns = []
    for conversation in recording.conversations:
        text, arrays = hf._render(conversation)
        turns.append((text, [hf._pil(a) for a in arrays]))
    return [step.raw for step in trace.steps], turns


def tool_names() -> list[str]:
    """The environment's tools, found as TRL finds them (public functions of the class but ``reset``)."""
    functions = inspect.getmembers(DrawingEnvironment, predicate=inspect.isfunction)
    return [name for name, _ in functions if not name.startswith("_") and name != "reset"]


def trl_side(processor: Any, row: dict[str, Any], raws: Sequence[str]) -> Turns:
    """(b) TRL's tool loop, message by message (``GRPOTrainer._tool_call_loop``), rendered by the chat template."""
    from trl.chat_template_utils import parse_response
    from trl.data_utils import prepare_multimodal_messages

    tokenizer = processor.tokenizer
    env = DrawingEnvironment(max_images=BUDGETS.max_images, max_pixels=PIXELS)
    env.reset(**copy.deepcopy(row))
    tools = {name: getattr(env, name) for name in tool_names()}
    messages = prepare_multimodal_messages(copy.deepcopy(row["prompt"]), images=list(row["images"]))
    turns = []
    for raw in raws:
        text = processor.apply_chat_template(
            messages, tools=list(tools.values()), tokenize=False, add_generation_prompt=True
        )
        shown = [p["image"] for m in messages for p in m["content"] if p["type"] == "image"]
        turns.append((text, shown))
        prefix = tokenizer(text, add_special_tokens=False)["input_ids"]
        generated = [*tokenizer(raw, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        assistant = parse_response(tokenizer, generated, prefix=prefix, tools=list(tools.values()))
        messages.append(prepare_multimodal_messages([assistant])[0])
        for call in assistant.get("tool_calls") or []:
            function = call["function"]
            content = tools[function["name"]](**function["arguments"])
            messages.append({"role": "tool", "name": function["name"], "content": content})
    return turns


def assert_same_turns(agent: Turns, trl: Turns) -> None:
    assert len(agent) == len(trl)
    for (agent_text, agent_images), (trl_text, trl_images) in zip(agent, trl, strict=True):
        assert trl_text == agent_text
        assert len(trl_images) == len(agent_images)
        for ours, theirs in zip(agent_images, trl_images, strict=True):
            assert np.array_equal(np.asarray(ours), np.asarray(theirs.convert("RGB")))


def test_hand_written_rollout_renders_as_the_agent_does(tiny: Path, row: dict[str, Any]) -> None:
    from sketchmind.train.templates import family_of, prepare_processor

    hf = HFPolicy(tiny, max_pixels=PIXELS)
    raws, turns = agent_side(hf, row, ReplayPolicy(hand_written(row["reference"])), "hand")
    processor = prepare_processor(copy.deepcopy(hf._processor), family_of(hf._model.config.model_type))
    assert_same_turns(turns, trl_side(processor, row, raws))

    first, second, last = (text for text, _ in turns)
    assert "- answer(answer): Give the final answer and stop." in first and "<tools>" not in first
    observations = second.split("<|im_start|>user\n")[-1]
    assert observations.startswith("<observation>view 2: box 'goal' on view 1 (112x112)</observation><|vision")
    assert "<observation>view 3: point 'start' on view 1 (112x112)</observation><|vision" in observations
    assert "<tool_response>" not in last and last.count("<observation>error: box") == 2
    assert last.count("<|im_start|>user\n") == 3  # the question, then ONE user turn per tool-calling turn
    assert len(turns[-1][1]) == 4  # the puzzle, views 2 and 3, view 4 (the line)


def test_expert_rollout_renders_as_the_agent_does(tiny: Path, row: dict[str, Any]) -> None:
    from sketchmind.train.templates import family_of, prepare_processor

    family = get_family("maze")
    (puzzle,) = make_dataset(family, [1], 1, 0)
    assert puzzle.id == row["id"]
    hf = HFPolicy(tiny, max_pixels=PIXELS)
    raws, turns = agent_side(hf, row, ExpertPolicy("sketchmind"), "expert", puzzle)
    assert len(raws) >= 3 and "<tool_call>" in raws[0]
    processor = prepare_processor(copy.deepcopy(hf._processor), family_of(hf._model.config.model_type))
    assert_same_turns(turns, trl_side(processor, row, raws))


def test_trl_grpo_loop_feeds_the_tokens_hfpolicy_feeds(
    tiny: Path, row: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TRL's real loop (prompt ids + generated ids + ``_get_tool_suffix_ids``) against HFPolicy's encoding."""
    from trl.trainer.grpo_trainer import GRPOTrainer

    from sketchmind.train.grpo import run_grpo

    hf = HFPolicy(tiny, max_pixels=PIXELS)
    raws, turns = agent_side(hf, row, ReplayPolicy(hand_written(row["reference"])), "loop")
    tokenizer = hf._tok
    fed: list[tuple[list[list[int]], list[list[Image.Image]]]] = []

    def generate(
        self: Any, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any, num_generations: int, **_: Any
    ) -> tuple[list[list[int]], None]:
        fed.append(([list(p) for p in prompt_ids], [list(i or []) for i in images or []]))
        turn = tokenizer(raws[len(fed) - 1], add_special_tokens=False)["input_ids"]
        return [[*turn, tokenizer.eos_token_id] for _ in prompt_ids], None

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", generate)
    result = run_grpo(
        tiny,
        tmp_path,
        families=["maze"],
        n=1,
        levels=[1],
        max_steps=1,
        num_generations=2,
        max_completion_length=1024,
        max_images=BUDGETS.max_images,
        max_pixels=PIXELS,
    )
    assert len(fed) == len(raws) == len(turns)
    for (ids, images), (text, shown) in zip(fed, turns, strict=True):
        ours = hf._processor(text=[text], images=shown, return_tensors="pt", add_special_tokens=False)
        expected = ours["input_ids"][0].tolist()
        assert ids == [expected, expected]  # both rollouts of the group, token for token
        for rollout in images:
            assert [np.asarray(i.convert("RGB")).tobytes() for i in rollout] == [np.asarray(i).tobytes() for i in shown]
    (step,) = result["history"]
    assert step["rewards/accuracy_reward/mean"] == 1.0 and step["rewards/format_reward/mean"] == 0.0  # two errors
    assert step["tools/call_frequency"] == 5.0 and step["tools/failure_frequency"] == 0.0  # our errors are answers


def test_image_budget_is_the_agents_and_final_note_the_one_difference(row: dict[str, Any]) -> None:
    """Past ``max_images`` a call is refused in the agent's words; the agent's FINAL_NOTE has no GRPO twin."""
    calls = [
        ToolCall("box", {"bbox": [8, 8, 40, 40], "label": "goal"}),
        ToolCall("grid", {"rows": 2, "cols": 2}),
        ToolCall("point", {"point": [5, 5]}),
    ]
    recording = Recording(
        ReplayPolicy([PROTOCOL.format_turn("Draw three.", calls), PROTOCOL.format_turn("Done.", answer="R")])
    )
    Agent(recording, "sketchmind", Budgets(max_turns=10, max_images=3, timeout=None)).solve(
        np.asarray(row["images"][0]), row["question"]
    )
    agent = recording.conversations[-1].messages[-1]["content"]
    env = DrawingEnvironment(max_images=3)
    env.reset(**row)
    grpo = [part for call in calls for part in getattr(env, call.name)(**call.arguments)]
    assert [p.get("text") for p in agent] == [*(p.get("text") for p in grpo), FINAL_NOTE]
    assert [p["type"] for p in agent] == [*(p["type"] for p in grpo), "text"]
    assert grpo[-1]["text"] == f"<observation>error: {image_budget_error(3)}</observation>"
    assert len(env.canvas) == 3 and env.errors == [image_budget_error(3)]  # the refused call drew nothing


def test_tool_errors_are_the_canvas_errors_as_observations(row: dict[str, Any]) -> None:
    env = DrawingEnvironment(max_pixels=PIXELS)
    env.reset(**row)
    outputs = [
        env.box(bbox=[0, 0, 500, 50]),  # off the view
        env.box(xy=[1, 2]),  # an argument the tool does not have
        env.point(),  # a missing argument
        env.zoom(factor="huge"),  # a wrong type
        env.crop(bbox=[1, 1, 9, 9], view=7),  # a view that does not exist
        env.answer(answer="R"),  # listed by the prompt, but it does not draw
    ]
    assert len(env.canvas) == 1 and len(env.errors) == len(outputs)  # nothing was drawn
    for output, call in zip(outputs, env.calls, strict=True):
        error = env.canvas.apply(call.name, call.arguments)  # what the agent's canvas says to the same call
        assert output == [{"type": "text", "text": f"<observation>error: {error}</observation>"}] and is_error(output)
    assert set(tool_names()) == {spec["function"]["name"] for spec in specs()}  # every tool the prompt lists
