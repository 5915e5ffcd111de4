"""GRPO for a policy that speaks the ``search`` protocol: no system prompt, no tools, the plan line as the answer.

The prompt is the agent's opening for such a policy (the image and the question, nothing before them), TRL
feeds it with no tool list, a rollout is one turn with no environment, and the rewards read its ``Action plan:``
line with the protocol's own parser.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_grpo import PIXELS, processor
from test_search_protocol import FAMILY, WrittenSearch

from sketchmind.agent import Agent, Budgets
from sketchmind.models.chat import template_messages
from sketchmind.tasks import Puzzle, make_dataset
from sketchmind.tasks.frozenlake import Lake
from sketchmind.train.grpo import grpo_dataset, puzzle_row, run_grpo, system_prompt
from sketchmind.train.rewards import accuracy_reward, final_answer, format_ok, format_reward, reward_functions
from sketchmind.train.search_rows import search_text

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("transformers", "trl", "peft", "datasets")),
    reason="the train extra is not installed",
)
LEVEL = 3  # a 3x3 lake: the smallest, its image 234x234 before the downscale to PIXELS


@pytest.fixture(scope="module")
def puzzle() -> Puzzle:
    (found,) = make_dataset(FAMILY, [LEVEL], 1, 0)
    return found


@pytest.fixture(scope="module")
def row(puzzle: Puzzle) -> dict[str, Any]:
    """The puzzle as its GRPO dataset row for a policy that speaks ``search``."""
    found = dict(grpo_dataset([FAMILY.name], 1, [LEVEL], max_pixels=PIXELS, protocol="search")[0])
    assert found["id"] == puzzle.id
    return found


@pytest.fixture(scope="module")
def plans(puzzle: Puzzle) -> tuple[str, str]:
    """A right turn (the expert's search and plan) and a wrong one (the same search, the plan's last move cut)."""
    right = search_text(Lake.from_truth(puzzle.truth))
    search, plan = right.rsplit("\n", 1)
    moves = plan.removeprefix("Action plan: ").split(",")
    assert len(moves) >= 2  # so the cut plan stops short of the goal
    wrong = f"{search}\nAction plan: {','.join(moves[:-1])}"
    assert FAMILY.verify(puzzle, plan) and not FAMILY.verify(puzzle, wrong.rsplit("\n", 1)[1])
    return right, wrong


def agent_opening(row: dict[str, Any], puzzle: Puzzle) -> WrittenSearch:
    """The agent's first turn for the row's image and question, run by a policy that speaks ``search``."""
    policy = WrittenSearch(Lake.from_truth(puzzle.truth))
    trace = Agent(policy, budgets=Budgets(max_turns=1, timeout=None)).solve(
        np.asarray(row["images"][0]), row["question"], puzzle=puzzle
    )
    assert trace.protocol == "search" and trace.status == "answered" and len(policy.seen) == 1
    return policy


# --------------------------------------------------------------------------------------------- dataset


def test_a_search_row_is_the_agents_opening_with_no_system_message(row: dict[str, Any], puzzle: Puzzle) -> None:
    assert system_prompt(protocol="search") == "" and system_prompt() != ""
    (user,) = row["prompt"]  # no system message: the policy was trained without one
    assert user["role"] == "user" and [p["type"] for p in user["content"]] == ["image", "text"]
    assert user["content"][1]["text"] == row["question"] == puzzle.question
    (image,) = row["images"]
    assert image.width * image.height <= PIXELS
    prompt, _ = template_messages(agent_opening(row, puzzle).seen[0].messages)  # as HFPolicy converts it
    # (the Dataset gives every content part every key, ``"text": None`` on the image: compare the row as built)
    assert puzzle_row(puzzle, seed=0, max_pixels=PIXELS, protocol="search")["prompt"] == prompt
    # The same puzzle for a sketchmind policy still opens with the system prompt that lists the tools.
    sketchmind = grpo_dataset([FAMILY.name], 1, [LEVEL], max_pixels=PIXELS)[0]
    assert [m["role"] for m in sketchmind["prompt"]] == ["system", "user"]
    assert sketchmind["prompt"][1] == user and sketchmind["truth"] == row["truth"]


# --------------------------------------------------------------------------------------------- rewards


def test_rewards_read_the_action_plan_line(row: dict[str, Any], plans: tuple[str, str]) -> None:
    right, wrong = plans
    cut = "\n".join(right.splitlines()[:-1])  # the search with no plan line
    completions = [[{"role": "assistant", "content": text}] for text in (right, wrong, cut)]
    columns = {"family": [row["family"]] * 3, "truth": [row["truth"]] * 3}
    prompts = [row["prompt"]] * 3
    assert final_answer(completions[0], "search") == row["reference"]  # "Action plan: ..."
    assert final_answer(completions[2], "search") is None
    assert accuracy_reward(prompts, completions, protocol="search", **columns) == [1.0, 0.0, 0.0]
    assert format_reward(prompts, completions, protocol="search", **columns) == [1.0, 1.0, 0.0]
    assert format_reward(prompts, completions, gated=True, protocol="search", **columns) == [1.0, 0.0, 0.0]
    accuracy, gated = reward_functions(gated=True, protocol="search")
    assert accuracy(prompts=prompts, completions=completions, **columns) == [1.0, 0.0, 0.0]
    assert gated(prompts=prompts, completions=completions, **columns) == [1.0, 0.0, 0.0]
    # read as sketchmind, the right plan has no <answer>: the protocol decides what the answer is
    assert final_answer(completions[0]) is None and accuracy_reward(prompts, completions, **columns) == [0.0] * 3
    # a plain-text (non-conversational) completion is one turn too; it has no <think>, so sketchmind rejects it
    assert format_ok(right, protocol="search") and not format_ok(right)
    # a call or a tool message is malformed in a protocol without tools
    call = {"type": "function", "function": {"name": "box", "arguments": {}}}
    assert not format_ok([{**completions[0][0], "tool_calls": [call]}], protocol="search")
    assert not format_ok([*completions[0], {"role": "tool", "name": "box", "content": "x"}], protocol="search")
    assert not format_ok([], protocol="search")


def test_grpo_refuses_a_drawing_protocol_other_than_sketchmind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="GRPO cannot train a policy speaking 'vilasr'"):
        reward_functions(protocol="vilasr")
    with pytest.raises(ValueError, match="GRPO cannot train a policy speaking 'openai-tools'"):
        run_grpo(tmp_path / "no-model", tmp_path / "out", families=[FAMILY.name], n=1, protocol="openai-tools")
    assert not (tmp_path / "out").exists()  # refused before anything was made or loaded
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        reward_functions(protocol="nope")


# ----------------------------------------------------------------------------------------- TRL run


def test_trl_grpo_feeds_the_agents_first_turn_and_scores_the_plans(
    tiny_checkpoint: Callable[[str], Path],
    row: dict[str, Any],
    puzzle: Puzzle,
    plans: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """One real GRPO step on a tiny Qwen2.5-VL, generation scripted: a right plan and a wrong one.

    TRL's prompt ids must be those HFPolicy feeds for the agent's first turn (no tool list rendered), the
    rollout one turn with no tool loop, and the rewards tell the two plans apart: a real policy gradient.
    """
    from trl.trainer.grpo_trainer import GRPOTrainer

    from sketchmind.models.hf import HFPolicy

    model = tiny_checkpoint("qwen2.5-vl")
    hf = HFPolicy(model, max_pixels=PIXELS)
    (conversation,) = agent_opening(row, puzzle).seen
    text, arrays = hf._render(conversation)
    assert "<tools>" not in text and "<|im_start|>system" not in text  # nothing before the image and the question
    shown = [hf._pil(a) for a in arrays]
    expected = hf._processor(text=[text], images=shown, return_tensors="pt", add_special_tokens=False)
    tokenizer = processor(model).tokenizer
    fed: list[tuple[list[list[int]], list[list[Any]]]] = []

    def generate(
        self: Any, prompt_ids: list[list[int]], images: Any, multimodal_fields: Any, num_generations: int, **_: Any
    ) -> tuple[list[list[int]], None]:
        fed.append(([list(p) for p in prompt_ids], [list(i or []) for i in images or []]))
        turns = [[*tokenizer(t, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id] for t in plans]
        return turns[: len(prompt_ids)], None

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", generate)
    result = run_grpo(
        model,
        tmp_path,
        families=[FAMILY.name],
        n=1,
        levels=[LEVEL],
        max_steps=1,
        num_generations=2,
        max_completion_length=256,
        learning_rate=1e-5,
        max_pixels=PIXELS,
        protocol="search",
    )
    ((ids, images),) = fed  # one turn: no tool loop asked for a second
    assert ids == [expected["input_ids"][0].tolist()] * 2  # both rollouts of the group, token for token
    for rollout in images:
        assert [np.asarray(i.convert("RGB")).tobytes() for i in rollout] == [np.asarray(i).tobytes() for i in shown]
    (step,) = result["history"]
    assert step["rewards/accuracy_reward/mean"] == 0.5 and step["rewards/format_reward/mean"] == 0.5  # gated
    assert step["reward"] == 1.0 and step["grad_norm"] > 0 and np.isfinite(step["loss"])
    assert not any(key.startswith("tools/") for key in step)  # no environment, no tools
    assert Path(result["final"], "config.json").is_file()


def test_run_grpo_samples_a_tiny_search_policy(
    tiny_checkpoint: Callable[[str], Path], tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """Real sampling (a random tiny model writes no plan): the run trains, logs and saves with no environment."""
    result = run_grpo(
        tiny_checkpoint("qwen2.5-vl"),
        tmp_path,
        families=[FAMILY.name],
        n=1,
        levels=[LEVEL],
        max_steps=1,
        num_generations=2,
        max_completion_length=16,
        learning_rate=1e-5,
        max_pixels=PIXELS,
        protocol="search",
    )
    (step,) = result["history"]
    assert result["global_step"] == 1 and step["completions/mean_length"] <= 16
    for key in ("reward", "rewards/accuracy_reward/mean", "rewards/format_reward/mean", "loss"):
        assert np.isfinite(step[key]), key
    assert not any("environment_factory" in str(w.message) for w in recwarn)  # TRL was given none
    assert json.loads(Path(result["final"], "config.json").read_text())["model_type"] == "qwen2_5_vl"
