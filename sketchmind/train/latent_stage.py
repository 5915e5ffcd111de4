"""The two latent training stages as one plain torch loop (TRL's SFTTrainer cannot feed custom slot inputs).

``run_latent_stage(model_path, rows, output_dir, stage=1|2)`` trains on latent rows (synth rows are
converted with ``data.latent_rows``), one sequence per step, AdamW on the model and the projection P
(the vision tower is frozen, so the targets and the input image features stay fixed), and leaves:

- ``output_dir/checkpoint-N/``: a full latent checkpoint plus ``train_state.pt`` (step, optimizer), every
  ``save_steps``; a rerun resumes from the last one by default;
- ``output_dir/metrics.jsonl``: one line per step: ``step``, ``loss``, ``ce``, ``cos``, ``row``;
- ``output_dir/final/``: the latent checkpoint (model + processor + ``latent.json`` + projection).

Stage 1 starts from any Qwen2.5-VL checkpoint (the tokens and a fresh P are added) or from a latent one;
stage 2 normally starts from stage 1's ``final``. Rows are visited in order, cyclically, so a resumed run
sees the same rows at the same steps.

The loop is one process's: under ``torchrun`` / ``accelerate launch`` the pipeline runs both stages on the main
process while the others wait (``pipeline.PARALLEL_STAGES`` leaves them out; docs/multi-gpu.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sketchmind.files import append_jsonl, write_atomic, write_jsonl_atomic
from sketchmind.latent.data import latent_row
from sketchmind.latent.forward import base_inputs, check_supported
from sketchmind.latent.losses import GROUNDINGS, Grounding, center_targets, stage1_loss, stage2_loss
from sketchmind.latent.targets import view_targets
from sketchmind.latent.tokens import (
    LatentSpec,
    add_latent_tokens,
    embedding_rms,
    is_latent_checkpoint,
    load_projection,
    new_projection,
    read_spec,
    save_latent,
)
from sketchmind.train.collator import AssistantOnlyCollator
from sketchmind.train.resume import last_checkpoint as trainer_last_checkpoint
from sketchmind.train.sft import read_metrics
from sketchmind.train.weights import check_training_dtype, load_for_training

if TYPE_CHECKING:
    import torch

METRICS_FILE = "metrics.jsonl"
FINAL_DIR = "final"
STATE_FILE = "train_state.pt"


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-step complete checkpoint (one with ``train_state.pt``) in ``output_dir``, if any."""
    return trainer_last_checkpoint(output_dir, STATE_FILE)


def save_checkpoint(model: Any, processor: Any, spec: LatentSpec, projection: Any, out_dir: Path) -> Path:
    """A directory satisfying the latent contract: the HF model and processor, ``latent.json``, P."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    save_latent(spec, projection, out_dir)
    return out_dir


def load_latent_model(
    path: str | Path, k: int, device: str, dtype: str | None = None
) -> tuple[Any, Any, LatentSpec, Any]:
    """Model, processor, spec and P from ``path``; a plain checkpoint gets the tokens and a fresh P.

    The model's weights load in ``dtype`` (``weights.load_for_training``: float32 by default); P stays float32
    (it is small, and the forward casts its inputs and outputs).
    """
    from transformers import AutoProcessor

    model = load_for_training(path, dtype)
    model.to(device)
    processor = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]
    check_supported(model)
    if is_latent_checkpoint(path):
        spec = read_spec(path)
        if spec.k != k:
            raise ValueError(f"{path} was trained with k={spec.k}, not k={k}")
        return model, processor, spec, load_projection(path, device)
    spec = add_latent_tokens(processor, model, k)
    return model, processor, spec, new_projection(spec.hidden_size, embedding_rms(model)).to(device)


def _save_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` to a temporary name, then rename: ``train_state.pt`` marks a checkpoint complete, so it
    must never exist half-written (a kill mid-save would otherwise leave a "complete" broken checkpoint)."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomic(path, buffer.getvalue())


class Data:
    """Latent rows, collated one at a time; the targets of each row computed once (the vision tower is frozen)."""

    def __init__(
        self, rows: Sequence[Mapping[str, Any]], model: Any, processor: Any, spec: LatentSpec, max_pixels: int | None
    ):
        self.rows = [row if "latent_images" in row else latent_row(row, spec.k) for row in rows]
        if not self.rows:
            raise ValueError("no rows to train on")
        self.model, self.processor, self.spec, self.max_pixels = model, processor, spec, max_pixels
        self.collator = AssistantOnlyCollator(processor, max_pixels=max_pixels)
        self._targets: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def batch(self, i: int) -> dict[str, torch.Tensor]:
        device = next(self.model.parameters()).device
        return {key: value.to(device) for key, value in self.collator([self.rows[i]]).items()}

    def targets(self, i: int) -> torch.Tensor:
        """``(n_blocks * K, H)``: each block's K targets, blocks in order."""
        if i not in self._targets:
            views = self.rows[i]["latent_images"]
            t = view_targets(self.model, self.processor, views, self.spec.k, max_pixels=self.max_pixels)
            self._targets[i] = t.reshape(-1, t.shape[-1])
        return self._targets[i]

    def center(self) -> torch.Tensor:
        """``(K, H)``: the mean unit target of each slot index over every row (``losses.center_targets``)."""
        import torch

        return center_targets(torch.cat([self.targets(i) for i in range(len(self))]), self.spec.k)


def run_latent_stage(
    model_path: str | Path,
    rows: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    stage: Literal[1, 2],
    k: int = 4,
    gamma: float = 0.1,
    grounding: Grounding = "contrastive",
    stage2_grounding_weight: float = 0.0,
    max_steps: int = 100,
    lr: float = 1e-5,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    save_steps: int = 50,
    max_pixels: int | None = None,
    resume: bool = True,
    seed: int = 0,
    device: str | None = None,
    dtype: str | None = None,
) -> dict[str, Any]:
    """Train one latent stage; return a summary (first/last loss, ce, cos, steps, final_dir).

    ``grounding`` is stage 1's grounding term (``losses``): ``"contrastive"`` and ``"centered"`` also score
    the targets minus their mean per slot index over all ``rows`` (computed once, the targets are fixed).
    ``stage2_grounding_weight`` λ (stage 2 only, default 0: CE only) adds λ x that same term, scored on the
    chain's own slot inputs P(h_prev), to stage 2's loss. The model's weights train in ``dtype`` (the recipe's
    ``model.dtype``; float32 by default), P in float32.
    """
    import torch

    check_training_dtype(dtype)  # before any weights load: a dtype that cannot train fails at once

    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, not {stage!r}")
    if grounding not in GROUNDINGS:
        raise ValueError(f"grounding must be one of {GROUNDINGS}, not {grounding!r}")
    if stage2_grounding_weight < 0:
        raise ValueError(f"stage2_grounding_weight must be >= 0, not {stage2_grounding_weight}")
    if stage2_grounding_weight and stage != 2:
        raise ValueError("stage2_grounding_weight applies to stage 2 only")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    checkpoint = last_checkpoint(out) if resume else None
    model, processor, spec, projection = load_latent_model(checkpoint or model_path, k, device, dtype)
    model.model.visual.requires_grad_(False)
    model.train()
    # Stage 1 brings the targets to the token embeddings' scale as it was when this stage started; a
    # resumed run reads that scale from its checkpoint (the embeddings have trained since).
    rms = embedding_rms(model)
    data = Data(rows, model, processor, spec, max_pixels)
    grounded = stage == 1 or stage2_grounding_weight > 0
    center = data.center().to(device) if grounded and grounding != "cosine" else None
    params = [p for p in model.parameters() if p.requires_grad] + list(projection.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    start = 0
    if checkpoint is not None:
        state = torch.load(checkpoint / STATE_FILE, map_location=device, weights_only=True)
        optimizer.load_state_dict(state["optimizer"])
        start = int(state["step"])
        rms = float(state.get("rms", rms))
        if "rng" in state:  # the random stream goes on where it stopped, as if never killed
            torch.set_rng_state(state["rng"].cpu())
    # Steps logged after the checkpoint came from a run that died; the resumed run logs them again.
    logged = [row for row in read_metrics(out) if row["step"] <= start]
    metrics_path = out / METRICS_FILE
    write_jsonl_atomic(metrics_path, logged)

    for step in range(start + 1, max_steps + 1):
        i = (step - 1) % len(data)
        batch = data.batch(i)
        inputs = base_inputs(model, batch, spec)
        targets = data.targets(i).to(device)
        if len(targets) != len(inputs.slots):
            raise ValueError(f"row {i}: {len(inputs.slots)} latent slots but {len(targets)} targets (truncated?)")
        if stage == 1:
            loss, ce, cos = stage1_loss(
                model,
                projection,
                inputs,
                batch["labels"],
                targets,
                gamma=gamma,
                rms=rms,
                grounding=grounding,
                center=center,
            )
        else:
            loss, ce, cos = stage2_loss(
                model,
                projection,
                inputs,
                batch["labels"],
                targets,
                grounding_weight=stage2_grounding_weight,
                grounding=grounding,
                center=center,
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        row = {"step": step, "row": i, "loss": loss.item(), "ce": ce.item(), "cos": cos.item()}
        logged.append(row)
        append_jsonl(metrics_path, [row])
        if step % save_steps == 0 or step == max_steps:
            ckpt = save_checkpoint(model, processor, spec, projection, out / f"checkpoint-{step}")
            state = {"step": step, "optimizer": optimizer.state_dict(), "rms": rms, "rng": torch.get_rng_state()}
            _save_state(state, ckpt / STATE_FILE)

    final = save_checkpoint(model, processor, spec, projection, out / FINAL_DIR)
    first, last = (logged[0], logged[-1]) if logged else ({}, {})
    return {
        "stage": stage,
        "steps": len(logged),
        "final_dir": str(final),
        **{f"{key}_first": first.get(key) for key in ("loss", "ce", "cos")},
        **{f"{key}_last": last.get(key) for key in ("loss", "ce", "cos")},
    }
