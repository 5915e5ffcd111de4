"""Stage-3 GRPO: multi-turn rollouts that draw, on TRL's ``GRPOTrainer`` with an ``environment_factory``.

``run_grpo(model_path, output_dir, families=..., n=...)`` samples ``num_generations`` rollouts per puzzle.
In a rollout the model thinks, calls drawing tools as ``<tool_call>{json}</tool_call>`` (TRL parses them
with our response template), sees each call's ``<observation>`` and new view in a ``tool`` message
(``DrawingEnvironment``), and ends with ``<answer>``. Rewards are ``accuracy_reward`` plus ``format_reward``,
the format gated on a right answer by default (ViLaSR). A policy that speaks a protocol without tools
(``protocol="search"``) is trained too: see the last section. The run leaves, as ``run_sft`` does:

- ``output_dir/checkpoint-N/``: checkpoints every ``save_steps``; a rerun resumes from the latest;
- ``output_dir/metrics.jsonl``: one line per step (``step``, ``loss``, ``reward``, ``reward_std``,
  ``rewards/accuracy_reward/mean``, ``rewards/format_reward/mean``, ``completions/mean_length``,
  ``tools/call_frequency``, ``tools/failure_frequency`` (with tools only)...);
- ``output_dir/final/``: the model (LoRA merged in) and the processor, whose chat template is tool-capable.

Rollouts speak the protocol the policy was trained to speak (``protocol``: ``sketchmind`` by default, as the
SFT data and the agent do). Dataset rows (``grpo_dataset``) are TRL's conversational VLM format: a ``prompt``
that is the agent's opening (the protocol's system prompt, which in ``sketchmind`` lists the tools, and none
where that prompt is empty; then the puzzle image and the question), the image in ``images``, and the
columns the rewards and the environment read (``family``, ``level``, ``index``, ``seed``, ``truth`` as JSON).
With our tiny models' chat template (``models.tiny``) a rollout's tokens are those ``Agent`` + ``HFPolicy``
would feed for the same turns, except where TRL's loop itself decides:

- the agent adds ``FINAL_NOTE`` ("No more tool calls are allowed...") to the observation after turn
  ``max_turns - 1`` or once the image budget is spent; TRL cannot know a turn is the last, so rollouts never
  carry it. With the defaults (``Budgets.max_turns=10``, ``max_tool_calling_iterations=8``) the turn case never
  comes up: TRL's last tool results follow turn 8, the note would follow turn 9;
- a tool call that TRL's parser cannot read (malformed JSON) or dispatch (an unknown tool name, arguments
  that are not an object) gets no ``<observation>``: an unreadable call ends the rollout, an unknown name gets
  TRL's ``{'error': 'Tool x not found.'}``; the agent's tolerant parser would repair or word these itself.

Other chat templates (stock Qwen2.5/3-VL) render tools and tool results their own way (Hermes
``<tool_response>`` blocks), so there GRPO rollouts and SFT text differ in those places.

A protocol without tools (``protocol.draws`` False: ``search``, whose policy writes its search in words and
ends with an ``Action plan:`` line) gets no ``environment_factory``: TRL then passes no tools to the chat
template (which would otherwise render a tool list where the policy was trained with no system message at
all), runs no tool loop, and a rollout is one assistant turn, its prompt tokens those ``Agent`` + ``HFPolicy``
feed on the first turn. The rewards read that turn with the protocol's ``parse``. One difference from the
agent: a turn with no plan ends the rollout (scored 0), where the agent would say so and let the policy try
again. Other drawing protocols (``vilasr``, ``openai-tools``) are refused: ``DrawingEnvironment`` answers in
``sketchmind``'s words.

TRL, transformers, peft and datasets are imported inside the functions: ``import sketchmind.train`` stays light.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.canvas import WHITEBOARD_SIZE
from sketchmind.images import fit_pixels
from sketchmind.models.chat import template_messages
from sketchmind.protocols import get_protocol
from sketchmind.protocols.base import text_part
from sketchmind.tasks import Puzzle, get_family, make_dataset
from sketchmind.tools import specs
from sketchmind.train.environment import DrawingEnvironment
from sketchmind.train.resume import resume_point
from sketchmind.train.rewards import DRAWING_PROTOCOL, grpo_protocol, reward_functions
from sketchmind.train.sft import (
    FINAL_DIR,
    METRICS_FILE,
    train_stage,
)
from sketchmind.train.templates import family_of, prepare_processor
from sketchmind.train.trl_config import build_config
from sketchmind.train.weights import load_for_training

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]
    from transformers import TrainerCallback

PROTOCOL = DRAWING_PROTOCOL
"""The protocol GRPO rollouts speak by default: the SFT data's and the agent's default."""


def system_prompt(coords: str = "pixels", image_size: tuple[int, int] | None = None, protocol: str = PROTOCOL) -> str:
    """The system prompt of a GRPO prompt: ``protocol``'s, tool list included (as ``Agent``); "" for ``search``."""
    return get_protocol(protocol, coords).system_prompt(specs(), image_size)


def puzzle_row(
    puzzle: Puzzle,
    *,
    seed: int,
    max_pixels: int | None = None,
    coords: str = "pixels",
    protocol: str = PROTOCOL,
) -> dict[str, Any]:
    """One GRPO dataset row for ``puzzle``; its image is downscaled to ``max_pixels`` (view 1 of the rollout).

    The prompt is the agent's opening conversation for this image and question in ``protocol``
    (``Agent._start``: a system message only where the protocol's prompt is not empty), converted as
    ``HFPolicy`` converts it (``models.chat.template_messages``): TRL fills the image placeholder from ``images``.
    """
    image = fit_pixels(puzzle.image, max_pixels) if puzzle.image is not None else None
    size = WHITEBOARD_SIZE if image is None else image.size
    system = system_prompt(coords, size, protocol)
    opening = [{"role": "system", "content": [text_part(system)]}] if system else []
    opening.append(get_protocol(protocol, coords).first_message(puzzle.question, has_image=image is not None))
    prompt, _ = template_messages(opening)
    return {
        "id": puzzle.id,
        "family": puzzle.family,
        "level": puzzle.level,
        "index": puzzle.index,
        "seed": seed,
        "question": puzzle.question,
        "reference": puzzle.answer,
        "truth": json.dumps(dict(puzzle.truth)),
        "prompt": prompt,
        "images": [image] if image is not None else [],
    }


def grpo_dataset(
    families: Sequence[str],
    n: int,
    levels: Sequence[int] | None = None,
    seed: int = 0,
    *,
    max_pixels: int | None = None,
    coords: str = "pixels",
    protocol: str = PROTOCOL,
) -> Dataset:
    """``n`` puzzles per family and level (every level of each family if ``levels`` is None) as a Dataset,
    each prompt the agent's opening in ``protocol``."""
    from datasets import Dataset

    rows = []
    for name in families:
        family = get_family(name)
        for puzzle in make_dataset(family, levels if levels is not None else family.levels, n, seed):
            rows.append(puzzle_row(puzzle, seed=seed, max_pixels=max_pixels, coords=coords, protocol=protocol))
    return Dataset.from_list(rows)


def run_grpo(
    model_path: str | Path,
    output_dir: str | Path,
    *,
    families: Sequence[str],
    n: int,
    levels: Sequence[int] | None = None,
    seed: int = 0,
    max_steps: int = 100,
    num_generations: int = 8,
    max_completion_length: int = 2048,
    learning_rate: float = 1e-6,
    gated: bool = True,
    max_tool_calling_iterations: int = 8,
    max_images: int = 8,
    max_pixels: int | None = 512 * 512,
    coords: str = "pixels",
    prompts_per_step: int = 1,
    lora: Mapping[str, Any] | None = None,
    resume: bool = True,
    use_vllm: bool = False,
    save_steps: int = 50,
    save_total_limit: int | None = 2,
    callbacks: Sequence[TrainerCallback] | None = None,
    rich_progress: bool = False,
    extra_args: Mapping[str, Any] | None = None,
    trl: Mapping[str, Any] | None = None,
    dtype: str | None = None,
    protocol: str = PROTOCOL,
) -> dict[str, Any]:
    """Train ``model_path`` with GRPO on puzzles (drawn on in a ``DrawingEnvironment``); return the run's metrics.

    Each step samples ``num_generations`` rollouts for each of ``prompts_per_step`` puzzles (``n`` per
    family and level of ``grpo_dataset``). A rollout may call tools for ``max_tool_calling_iterations``
    turns and see ``max_images`` images, the puzzle's included (as ``Budgets.max_images``); all its turns,
    tool results (masked out of the loss) included, fit in ``max_completion_length`` tokens. Puzzle and tool
    images are downscaled to ``max_pixels``. ``coords`` is the convention the model draws in (``pixels``;
    ``norm1000`` suits Qwen3-VL's grounding). ``gated`` pays the format reward only with a right answer.
    ``lora`` is None (full fine-tuning) or ``{"r", "alpha", "dropout", "target_modules"}`` as in
    ``run_sft``. With ``resume`` and a checkpoint in ``output_dir``, training continues from it
    (``max_steps`` is the total).
    ``trl`` (or its older name ``extra_args``; ``trl`` wins) sets any ``GRPOConfig`` field over the arguments
    above (e.g. ``vllm_mode``, ``beta``, ``temperature``; ``trl_config.build_config``). The weights load in
    ``dtype`` (``weights.load_for_training``: float32 by default, ``"bfloat16"`` halves their memory). On
    CUDA the forward runs in bf16 mixed precision with gradient checkpointing; on CPU without either.
    ``protocol`` is the one the policy was trained to speak (``Policy.protocol_name``): ``sketchmind`` draws
    as above; ``search`` (no tools) rolls out one turn with no environment, the tool settings unused; any
    other drawing protocol raises ``ValueError`` before anything loads.

    Returns ``global_step``, ``train_loss``, ``resumed_from``, ``history`` (every line of ``metrics.jsonl``),
    ``final`` (the saved model directory), ``world_size`` and the Trainer's runtime metrics.
    """
    spoken = grpo_protocol(protocol)  # a protocol GRPO cannot train fails before an import, a directory or a weight
    from transformers import AutoConfig, AutoProcessor
    from trl.trainer.grpo_trainer import GRPOTrainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "gradient_accumulation_steps": 1,
        "num_generations": num_generations,
        "max_completion_length": max_completion_length,
        "max_tool_calling_iterations": max_tool_calling_iterations,
        "use_vllm": use_vllm,
        "save_steps": save_steps,
        "save_total_limit": save_total_limit,
        "seed": seed,
    }
    fields |= dict(extra_args or {}) | dict(trl or {})
    # Every rollout of a step's prompts in one batch (a trl num_generations counts, not the argument's).
    fields.setdefault("per_device_train_batch_size", fields["num_generations"] * prompts_per_step)
    # Built before any weights load: a wrong field fails in a second, not after a 7B checkpoint is read.
    config = build_config("GRPOConfig", out, fields, rich_progress=rich_progress)
    point = resume_point(out, model_path, resume=resume, lora=lora is not None)

    family = family_of(AutoConfig.from_pretrained(str(model_path)).model_type)
    processor = prepare_processor(AutoProcessor.from_pretrained(str(model_path)), family)  # type: ignore[no-untyped-call]
    model = load_for_training(point.weights, dtype)
    environment: dict[str, Any] = {}
    if spoken.draws:
        environment["environment_factory"] = functools.partial(
            DrawingEnvironment, max_images=max_images, max_pixels=max_pixels, coords=coords
        )
    # else no environment, so no tools: TRL renders the prompt with tools=None (as HFPolicy does; a tool list
    # would add a system message the policy never saw), skips its tool loop and reports no tools/* metrics.
    return train_stage(
        GRPOTrainer,
        point,
        out,
        processor,
        lora=lora,
        callbacks=callbacks,
        rich_progress=rich_progress,
        model=model,
        reward_funcs=reward_functions(gated, protocol),
        args=config,
        train_dataset=grpo_dataset(families, n, levels, seed, max_pixels=max_pixels, coords=coords, protocol=protocol),
        **environment,
    )


__all__ = ["FINAL_DIR", "METRICS_FILE", "grpo_dataset", "puzzle_row", "run_grpo", "system_prompt"]
