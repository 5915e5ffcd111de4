"""Stage-1 SFT: a thin layer over TRL's ``SFTTrainer`` with our assistant-only collator.

``run_sft(model_path, dataset, output_dir)`` trains on whole trajectories (rows as ``synth`` writes them)
with the loss on the assistant turns only (``collator.AssistantOnlyCollator``; TRL's own
``assistant_only_loss`` does not cover vision datasets), full fine-tuning or LoRA, and leaves:

- ``output_dir/checkpoint-N/``: Trainer checkpoints every ``save_steps`` (weights, optimizer, scheduler,
  RNG), from which a rerun resumes by default, so a killed job loses at most ``save_steps`` steps;
- ``output_dir/metrics.jsonl``: one line per logged step (``step``, ``loss``, ``learning_rate``,
  ``epoch``, and TRL's ``grad_norm``, ``mean_token_accuracy`` ..., and ``batches``: a fingerprint of
  each micro-batch, so a resumed run can be checked to see the same data in the same order);
- ``output_dir/final/``: the model (LoRA merged in) and processor, loadable by ``HFPolicy``;
  with LoRA the adapter alone is also kept in ``output_dir/adapter/``.

TRL, transformers, peft and datasets are imported inside the functions: ``import sketchmind.train`` stays light.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.files import append_jsonl, read_jsonl, write_jsonl_atomic
from sketchmind.train.collator import AssistantOnlyCollator
from sketchmind.train.ranks import is_main
from sketchmind.train.resume import ResumePoint, resume_point, resuming
from sketchmind.train.trl_config import build_config
from sketchmind.train.weights import load_for_training

if TYPE_CHECKING:
    from datasets import Dataset  # type: ignore[import-untyped]
    from transformers import TrainerCallback

METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
ADAPTER_DIR = "adapter"
# LoRA on the language model's attention and MLP projections; the vision tower stays frozen. Matches
# Qwen2.5-VL / Qwen3-VL (``language_model``) and Idefics3 (``text_model``) module names.
DEFAULT_LORA_TARGETS = (
    r".*\.(language_model|text_model)\.layers\.\d+\.(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)"
)


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The logged steps of ``output_dir/metrics.jsonl``, oldest first (empty if there are none).

    A last line cut short by a killed run is ignored (it was never committed).
    """
    return read_jsonl(Path(output_dir) / METRICS_FILE)


def batch_digest(inputs: Any) -> str:
    """A short fingerprint of one training micro-batch: which rows it held, in which order.

    Collated batches (SFT) are fingerprinted by their token ids; lists of dataset rows (GRPO's raw
    generation batches) by their ``id`` fields. Equal digests at equal steps prove equal data order.
    """
    digest = hashlib.sha1()
    if isinstance(inputs, Mapping) and "input_ids" in inputs:
        ids = inputs["input_ids"]
        digest.update(repr(tuple(ids.shape)).encode())
        digest.update(ids.detach().cpu().numpy().tobytes())
    elif isinstance(inputs, Sequence):
        for row in inputs:
            key = row.get("id", row.get("prompt")) if isinstance(row, Mapping) else row
            digest.update(json.dumps(key, default=str, sort_keys=True).encode() + b"\n")
    else:
        digest.update(repr(type(inputs)).encode())
    return digest.hexdigest()[:12]


class SeenBatches:
    """The micro-batches trained on since the last log line (filled by the trainer, drained by the logger)."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def take(self) -> list[str]:
        taken, self.digests = self.digests, []
        return taken


def metrics_logger(path: Path, resumed_step: int, seen: SeenBatches | None = None) -> TrainerCallback:
    """A callback appending each training log with a loss to ``path`` as one JSON line.

    Lines after ``resumed_step`` come from a run that died after its last checkpoint; the resumed run
    logs those steps again, so they are dropped first. With ``seen``, each line also holds ``batches``:
    the ``batch_digest`` of every micro-batch of that step (the data order, checkable across a resume); on N
    processes, the main process's micro-batches (the others train on the ones after each of them).
    Only the main process writes the file.
    """
    from transformers import TrainerCallback

    if is_main():
        kept = [row for row in read_metrics(path.parent) if row.get("step", 0) <= resumed_step]
        write_jsonl_atomic(path, kept)

    class MetricsLogger(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any
        ) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return  # the end-of-training summary has train_loss, not loss
            row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, int | float)}}
            if seen is not None:
                row["batches"] = seen.take()
            append_jsonl(path, [row])

    return MetricsLogger()


def recording_batches(trainer_class: type[Any], seen: SeenBatches) -> type[Any]:
    """``trainer_class`` whose every training micro-batch is fingerprinted into ``seen``."""

    class _Recording(trainer_class):  # type: ignore[misc]
        def training_step(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            seen.digests.append(batch_digest(inputs))
            return super().training_step(model, inputs, *args, **kwargs)

    return _Recording


def _as_dataset(dataset: Dataset | Sequence[Mapping[str, Any]]) -> Dataset:
    from datasets import Dataset

    if isinstance(dataset, Dataset):
        return dataset
    return Dataset.from_list([dict(row) for row in dataset])


def lora_config(lora: Mapping[str, Any]) -> Any:
    """A peft ``LoraConfig``: any of its arguments, with ``alpha`` / ``dropout`` as short names and our defaults."""
    from peft import LoraConfig

    args = {{"alpha": "lora_alpha", "dropout": "lora_dropout"}.get(k, k): v for k, v in lora.items()}
    args.setdefault("r", 16)
    args.setdefault("lora_alpha", 2 * args["r"])
    args.setdefault("lora_dropout", 0.0)
    args.setdefault("target_modules", DEFAULT_LORA_TARGETS)
    args.setdefault("task_type", "CAUSAL_LM")
    return LoraConfig(**args)


def run_sft(
    model_path: str | Path,
    dataset: Dataset | Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    epochs: float = 1.0,
    max_steps: int = -1,
    lr: float = 1e-5,
    batch_size: int = 1,
    grad_accum: int = 1,
    lora: Mapping[str, Any] | None = None,
    resume: bool = True,
    callbacks: Sequence[TrainerCallback] | None = None,
    rich_progress: bool = False,
    max_length: int | None = None,
    save_steps: int = 50,
    save_total_limit: int | None = 2,
    warmup: float = 0.0,
    seed: int = 0,
    gradient_checkpointing: bool | None = None,
    dtype: str | None = None,
    trainer_extension: Callable[[type[Any]], type[Any]] | None = None,
    attn_implementation: str | None = None,
    trl: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model_path`` on trajectory rows; return the run's metrics.

    ``dataset`` is a ``datasets.Dataset`` or a list of rows (``messages`` + ``images``). ``max_steps``
    > 0 overrides ``epochs``. ``lora`` is ``None`` (full fine-tuning) or ``LoraConfig`` arguments: ``r`` (default 16),
    ``alpha`` or ``lora_alpha`` (default ``2r``), ``dropout`` or ``lora_dropout`` (default 0) and
    ``target_modules`` (default: the language model's attention and MLP projections).
    With ``resume`` and a checkpoint in ``output_dir``, training continues from the latest one (its
    step, optimizer and data position); ``max_steps`` is then the total, not the steps left.
    ``max_length`` drops the tail turns of longer rows. The weights load in ``dtype`` (``weights.load_for_training``:
    float32 master weights by default; ``"bfloat16"`` halves the memory of large models). On CUDA the forward
    runs in bf16 mixed precision with gradient checkpointing; on CPU without either. ``trl`` sets any other
    ``SFTConfig`` field, over the arguments above (``trl_config.build_config``). A run that does not
    resume starts ``metrics.jsonl`` afresh. ``rich_progress`` shows a rich bar with the latest logs
    instead of tqdm (the CLI's choice). ``trainer_extension`` wraps the trainer class (the perceive stage adds
    its guidance losses this way); ``attn_implementation`` picks the model's attention (``"eager"`` when
    a loss reads attention weights).

    Returns ``global_step``, ``train_loss`` (this run's mean), ``resumed_from`` (checkpoint path or
    None), ``history`` (every logged step in ``metrics.jsonl``, earlier runs included), ``final`` (the
    saved model directory), ``world_size`` (the processes that trained) and the Trainer's runtime metrics.
    """
    from transformers import AutoProcessor
    from trl.trainer.sft_trainer import SFTTrainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "num_train_epochs": epochs,
        "max_steps": max_steps,
        "learning_rate": lr,
        "warmup_steps": warmup,
        "per_device_train_batch_size": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "save_steps": save_steps,
        "save_total_limit": save_total_limit,
        "seed": seed,
    }
    if gradient_checkpointing is not None:
        fields["activation_checkpointing"] = gradient_checkpointing
    # Built before any weights load: a wrong field fails in a second, not after a 7B checkpoint is read.
    config = build_config("SFTConfig", out, fields | dict(trl or {}), rich_progress=rich_progress)
    point = resume_point(out, model_path, resume=resume, lora=lora is not None)

    processor: Any = AutoProcessor.from_pretrained(str(model_path))  # type: ignore[no-untyped-call]
    model = load_for_training(point.weights, dtype, attn_implementation=attn_implementation)
    return train_stage(
        SFTTrainer,
        point,
        out,
        processor,
        lora=lora,
        callbacks=callbacks,
        rich_progress=rich_progress,
        extension=trainer_extension,
        model=model,
        args=config,
        data_collator=AssistantOnlyCollator(processor, max_length=max_length),
        train_dataset=_as_dataset(dataset),
    )


def train_stage(
    trainer_class: type[Any],
    point: ResumePoint,
    out: Path,
    processor: Any,
    *,
    lora: Mapping[str, Any] | None,
    callbacks: Sequence[TrainerCallback] | None,
    rich_progress: bool,
    extension: Callable[[type[Any]], type[Any]] | None = None,
    **trainer_args: Any,
) -> dict[str, Any]:
    """Make and run a TRL trainer stage the one way SFT, DPO and GRPO all run; return ``train_and_save``'s metrics.

    ``trainer_class`` resumes from ``point`` (``resume.resuming``), is wrapped by ``extension`` if given, and
    records each micro-batch's fingerprint (``recording_batches``) into ``out/metrics.jsonl``, whose lines up to
    ``point.step`` it keeps (``metrics_logger``); ``lora`` becomes its ``peft_config``. ``trainer_args`` (the
    model, its config, the data ...) go to the class as they are.
    """
    seen = SeenBatches()
    resumed = resuming(trainer_class, point)
    if extension is not None:
        resumed = extension(resumed)
    trainer = recording_batches(resumed, seen)(
        processing_class=processor,
        peft_config=lora_config(lora) if lora is not None else None,
        callbacks=[metrics_logger(out / METRICS_FILE, point.step, seen), *(callbacks or [])],
        **trainer_args,
    )
    return train_and_save(trainer, processor, out, point.checkpoint, lora=lora is not None, rich_progress=rich_progress)


def train_and_save(
    trainer: Any, processor: Any, out: Path, checkpoint: Path | None, *, lora: bool, rich_progress: bool
) -> dict[str, Any]:
    """Train (resuming from ``checkpoint``), save ``out/final``, and return the run's metrics (SFT and GRPO).

    Every process of the launch calls it (the Trainer gathers sharded weights to save them); the main process
    writes, and each returns once ``out/final`` is complete.
    """
    if rich_progress:
        use_rich_progress(trainer)
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    final = save_final(trainer, processor, out, lora)
    trainer.accelerator.wait_for_everyone()  # the others read final/ next (the pipeline stamps its config)
    return {
        "global_step": result.global_step,
        "train_loss": result.training_loss,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "history": read_metrics(out),
        "final": str(final),
        "world_size": trainer.args.world_size,  # the launch's processes: the global batch is per-device x this
        **{k: v for k, v in result.metrics.items() if k != "train_loss"},
    }


def use_rich_progress(trainer: Any) -> None:
    """Show a rich progress bar with the latest logs instead of tqdm and printed dicts (main process only)."""
    from transformers.trainer_callback import PrinterCallback
    from trl.trainer.callbacks import RichProgressCallback

    trainer.remove_callback(PrinterCallback)  # disable_tqdm swaps the bar for raw dict printing
    trainer.add_callback(RichProgressCallback())  # type: ignore[no-untyped-call]


def save_final(trainer: Any, processor: Any, out: Path, lora: bool) -> Path:
    """Save a plain checkpoint ``HFPolicy`` loads: with LoRA, the adapter apart and the merged model.

    Called on every process: ``Trainer.save_model`` writes on the main one only (after gathering sharded
    weights); the rest is written by the main process alone.
    """
    final = out / FINAL_DIR
    main = trainer.accelerator.is_main_process
    if lora:
        trainer.model.save_pretrained(out / ADAPTER_DIR, is_main_process=main)
        trainer.model.merge_and_unload().save_pretrained(final, is_main_process=main)
    else:
        trainer.save_model(str(final))
    if main:
        processor.save_pretrained(final)
    return final
