"""The preference stage: DPO on rejection sampling's right and wrong trajectories, on TRL's ``DPOTrainer``.

Rejection sampling (``train/rejection.py``) keeps its good samples (``kept``) and every other answered one
(``rejected``). ``preference_pairs`` pairs them per puzzle: a kept sample is *chosen*, a sample whose answer was
wrong is *rejected*, and both must open with the same prompt (system prompt, question and puzzle image), which
is checked. ``run_dpo(model_path, pairs, output_dir)`` then trains the policy to prefer the first of each pair,
relative to the start policy (the reference), and leaves what ``run_sft`` leaves: ``checkpoint-N/`` (a rerun
resumes from the latest), ``metrics.jsonl`` (``loss``, ``rewards/accuracies``, ``rewards/margins``,
``logps/chosen`` ... and each step's batch fingerprints) and ``final/``.

**Draw-mode pairs.** TRL's own vision collator (``DataCollatorForVisionPreference``) takes images in the prompt
only: it runs the processor on the chosen and rejected completions as text, so a completion holding images (the
views our tools render, in ``tool`` messages) would reach the model as image tokens without pixels; and its
completion mask covers every completion token, tool observations included. ``DPOTrainer``'s loss needs neither:
it reads ``input_ids``, ``attention_mask`` and ``completion_mask`` for the chosen rows then the rejected rows,
and hands every other key (``pixel_values``, ``image_grid_thw`` ...) to the model. So ``PreferenceCollator``
renders each whole trajectory, images anywhere, with the SFT collator (``AssistantOnlyCollator``) and makes its
assistant-token labels the completion mask: the loss covers the model's own turns only, as in SFT, and
draw-mode pairs train with every rendered view in place. Text-mode pairs are the same with one image.

TRL, transformers, peft and datasets are imported inside the functions: ``import sketchmind.train`` stays light.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.models.chat import template_messages
from sketchmind.train.collator import IGNORE_INDEX, AssistantOnlyCollator
from sketchmind.train.resume import resume_point
from sketchmind.train.sft import train_stage
from sketchmind.train.trl_config import build_config
from sketchmind.train.weights import load_for_training

if TYPE_CHECKING:
    import torch
    from datasets import Dataset, Features  # type: ignore[import-untyped]
    from transformers import TrainerCallback

Row = Mapping[str, Any]


@dataclass
class PairStats:
    """What ``preference_pairs`` found: puzzles sampled, pairs made, and why other puzzles made none."""

    puzzles: int = 0  # puzzles with at least one answered sample
    pairs: int = 0
    expert_pairs: int = 0  # pairs whose chosen side is the expert's trajectory
    no_chosen: int = 0  # puzzles answered wrongly, with nothing to prefer
    no_rejected: int = 0  # puzzles never answered wrongly
    other_prompt: int = 0  # candidate pairs dropped: their prompts (question, image) differ

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def line(self) -> str:
        """The stats as one line."""
        return (
            f"{self.pairs} pairs ({self.expert_pairs} with the expert's trajectory as chosen) from {self.puzzles} "
            f"puzzles; {self.no_chosen} answered wrongly with nothing to prefer, {self.no_rejected} never answered "
            f"wrongly, {self.other_prompt} candidate pairs with different prompts"
        )


def puzzle_of(row: Row) -> str:
    """The puzzle a sample belongs to: rejection sampling's run ids are ``PUZZLE#j``, the expert's ``PUZZLE``."""
    return str(row["id"]).split("#", 1)[0]


def split_prompt(row: Row) -> tuple[list[Any], list[Any], list[Any], list[Any]]:
    """``row``'s messages and images, cut after its first user message: (prompt, completion, their images).

    The messages come out as chat templates take them (``models.chat.template_messages``), so a row read back
    from storage (whose image parts carry ``"text": None``) and one made in memory compare equal.
    """
    messages, counts = template_messages(row["messages"])
    images = list(row.get("images") or [])
    head = next((i + 1 for i, m in enumerate(messages) if m.get("role") == "user"), 0)
    shown = sum(counts[:head])
    return messages[:head], messages[head:], images[:shown], images[shown:]


def _same_images(first: Sequence[Any], second: Sequence[Any]) -> bool:
    return len(first) == len(second) and all(
        a.size == b.size and a.convert("RGB").tobytes() == b.convert("RGB").tobytes()
        for a, b in zip(first, second, strict=True)
    )


def _spread(chosen: int, rejected: int, limit: int) -> list[tuple[int, int]]:
    """Up to ``limit`` (chosen, rejected) index pairs: first each sample of the larger side once, with the other
    side's in turn (so few pairs still cover many samples), then the remaining combinations in order."""
    first = [(k % chosen, k % rejected) for k in range(max(chosen, rejected))]
    rest = [ij for ij in itertools.product(range(chosen), range(rejected)) if ij not in first]
    return (first + rest)[:limit]


def preference_pairs(
    kept: Iterable[Row], rejected: Iterable[Row], experts: Iterable[Row] = (), *, per_puzzle: int = 4
) -> tuple[list[dict[str, Any]], PairStats]:
    """Chosen/rejected pairs, at most ``per_puzzle`` per puzzle, in puzzle then sample order (deterministic).

    ``kept`` and ``rejected`` are rejection sampling's rows; only rejected rows with a wrong answer are used
    (a right answer that was not reflective is not worse). ``experts`` are expert rows for the same puzzles
    (``id`` the puzzle's): a puzzle with no kept sample gets its expert's trajectory as the chosen one. A pair
    is ``prompt``, ``chosen`` and ``rejected`` messages (TRL's conversational preference format), the prompt's
    ``images``, and ``chosen_images`` / ``rejected_images``: the images inside each completion (draw mode's views).
    """
    good: dict[str, list[Row]] = {}
    bad: dict[str, list[Row]] = {}
    for row in kept:
        good.setdefault(puzzle_of(row), []).append(row)
    sampled = set(good)
    for row in rejected:
        sampled.add(puzzle_of(row))
        if not row["correct"]:
            bad.setdefault(puzzle_of(row), []).append(row)
    gold = {puzzle_of(row): row for row in experts}
    stats = PairStats(puzzles=len(sampled))
    pairs: list[dict[str, Any]] = []
    for puzzle in sorted(sampled):
        wrong = sorted(bad.get(puzzle, []), key=lambda r: str(r["id"]))
        right = sorted(good.get(puzzle, []), key=lambda r: str(r["id"]))
        if not right and puzzle in gold:
            right = [gold[puzzle]]
        if not wrong:
            stats.no_rejected += 1
            continue
        if not right:
            stats.no_chosen += 1
            continue
        for i, j in _spread(len(right), len(wrong), per_puzzle):
            pair = _pair(right[i], wrong[j])
            if pair is None:
                stats.other_prompt += 1
                continue
            pairs.append(pair)
            stats.pairs += 1
            stats.expert_pairs += "#" not in str(right[i]["id"])
    return pairs, stats


def _pair(chosen: Row, rejected: Row) -> dict[str, Any] | None:
    """One preference row, or None when the two do not open with the same prompt and images."""
    prompt, better, prompt_images, better_images = split_prompt(chosen)
    other_prompt, worse, other_images, worse_images = split_prompt(rejected)
    if prompt != other_prompt or not _same_images(prompt_images, other_images):
        return None
    return {
        "id": f"{chosen['id']}>{rejected['id']}",
        "prompt": prompt,
        "chosen": better,
        "rejected": worse,
        "images": prompt_images,
        "chosen_images": better_images,
        "rejected_images": worse_images,
    }


def pair_features() -> Features:
    """The preference dataset's schema: the synth schema's messages and images (``synth_storage.features``)."""
    from datasets import Features, Value

    from sketchmind.train.synth_storage import features

    stored = features()
    messages, images = stored["messages"], stored["images"]
    return Features(
        {
            "id": Value("string"),
            "prompt": messages,
            "chosen": messages,
            "rejected": messages,
            "images": images,
            "chosen_images": images,
            "rejected_images": images,
        }
    )


def pair_dataset(pairs: Sequence[Row]) -> Dataset:
    """``pairs`` as a ``datasets.Dataset``; its ``images`` column makes ``DPOTrainer`` treat it as a vision dataset
    (no tokenizing up front: ``PreferenceCollator`` does it per batch)."""
    from datasets import Dataset

    schema = pair_features()
    return Dataset.from_dict({k: [pair[k] for pair in pairs] for k in schema}, features=schema)


def _as_dataset(pairs: Dataset | Sequence[Row]) -> Dataset:
    from datasets import Dataset

    return pairs if isinstance(pairs, Dataset) else pair_dataset(pairs)


def whole(pair: Row, side: str) -> dict[str, Any]:
    """The ``side`` (``chosen`` or ``rejected``) trajectory of ``pair`` as one SFT row (``messages``, ``images``)."""
    return {
        "messages": list(pair["prompt"]) + list(pair[side]),
        "images": list(pair["images"]) + list(pair[f"{side}_images"]),
    }


class PreferenceCollator:
    """A DPO batch: every pair's chosen trajectory, then every rejected one, each rendered whole, images included.

    The rows are collated by ``AssistantOnlyCollator`` (the SFT collator, so the ids are those ``HFPolicy``
    feeds at inference), and its labels become ``completion_mask``: 1 on the assistant's tokens only, 0 on the
    prompt, tool observations, image tokens and padding. ``DPOTrainer`` sums the log-probabilities under that
    mask and passes the processor's other outputs (pixels, grids) to the model.
    """

    def __init__(self, processor: Any, max_length: int | None = None) -> None:
        self.inner = AssistantOnlyCollator(processor, max_length=max_length)

    def __call__(self, pairs: Sequence[Row]) -> dict[str, torch.Tensor]:
        rows = [whole(pair, "chosen") for pair in pairs] + [whole(pair, "rejected") for pair in pairs]
        batch = self.inner(rows)
        labels = batch.pop("labels")
        batch["completion_mask"] = (labels != IGNORE_INDEX).long()
        return batch


def run_dpo(
    model_path: str | Path,
    pairs: Dataset | Sequence[Row],
    output_dir: str | Path,
    *,
    seed: int = 0,
    lora: Mapping[str, Any] | None = None,
    max_length: int | None = None,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] | None = None,
    rich_progress: bool = False,
    dtype: str | None = None,
    trl: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train ``model_path`` with DPO on preference ``pairs`` (``preference_pairs`` rows); return the run's metrics.

    The reference is ``model_path`` itself, frozen: a second copy of the weights, or with ``lora`` (``run_sft``'s
    arguments) the same weights with the adapter off. ``trl`` sets any ``DPOConfig`` field (``beta``,
    ``max_steps``, ``learning_rate``, ``loss_type`` ...; ``trl_config.build_config``). With ``resume`` and a
    checkpoint in ``output_dir``, training continues from it (``max_steps`` is the total); the reference is
    still ``model_path``. ``max_length`` drops the tail turns of longer trajectories, as in ``run_sft``. The
    weights load in ``dtype`` (``weights.load_for_training``).

    Returns ``global_step``, ``train_loss``, ``resumed_from``, ``history`` (every line of ``metrics.jsonl``),
    ``final`` (the saved model directory) and the Trainer's runtime metrics.
    """
    from transformers import AutoProcessor
    from trl.trainer.dpo_trainer import DPOTrainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Built before any weights load: a wrong field fails in a second, not after a 7B checkpoint is read.
    config = build_config("DPOConfig", out, {"seed": seed} | dict(trl or {}), rich_progress=rich_progress)
    point = resume_point(out, model_path, resume=resume, lora=lora is not None)

    processor: Any = AutoProcessor.from_pretrained(str(model_path))  # type: ignore[no-untyped-call]
    model = load_for_training(point.weights, dtype)
    # Passed in rather than left to TRL, which would load it from the policy's own path: the checkpoint's on a resume.
    reference = load_for_training(model_path, dtype).eval() if lora is None else None
    return train_stage(
        DPOTrainer,
        point,
        out,
        processor,
        lora=lora,
        callbacks=callbacks,
        rich_progress=rich_progress,
        model=model,
        ref_model=reference,
        args=config,
        data_collator=PreferenceCollator(processor, max_length=max_length),
        train_dataset=_as_dataset(pairs),
    )


__all__ = [
    "PairStats",
    "PreferenceCollator",
    "pair_dataset",
    "preference_pairs",
    "puzzle_of",
    "run_dpo",
    "split_prompt",
    "whole",
]
