"""Do the latents carry information? Two held-out diagnostics of a latent checkpoint.

Both run the free chain (stage 2, decoding): each latent slot's input is P(h_prev), the projection of the
final hidden state before it. Rows should come from puzzles the checkpoint never trained on (synth rows of
another seed); synth rows are converted with ``data.latent_row``, latent rows are taken as they are.

- ``latent_cosine``: cosine between each slot input P(h_prev_j) and its vision target t_j (the view the
  expert actually rendered there, pooled as in training), with a shuffled baseline: the same slot inputs
  against the targets of another block (the next one in the held-out set, cyclically). Targets of
  different views share a large common component (cos ~0.97 between views), so only ``mean -
  shuffled_mean`` says the latents are specific to their view; the same two numbers are also given
  centered (unit vectors minus the held-out mean unit target of their slot index, ``losses.centered``),
  which removes that component. And the discrimination: ``retrieval``, the fraction of slots (in
  sequences with two blocks or more) whose latent is closer to its own block's target than to every
  other block's of the same sequence at the same slot index, centered and raw, against ``chance`` (the
  mean of 1 / blocks over those slots).
- ``latent_ablation``: the cross-entropy of the text that follows the latent blocks (every labelled
  token after the first pad, except the forced pads and ``<|latent_end|>``) with three kinds of slot
  inputs: ``model`` (the policy's own chain), ``mean`` (each slot index's mean over the held-out set: the
  block's position is kept, its content removed) and ``noise`` (Gaussian, each vector at the norm of the
  slot input it replaces). A CE increase over ``model`` is information the latents carried. At scale the
  same comparison can be made on answer accuracy; CE is what a tiny model can measure.

Batches, targets and the forward passes are the training code's own (``latent_stage.Data``, ``forward``,
``losses``), so the diagnostics see exactly what training saw.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.latent.forward import Inputs, base_inputs, chain_forward, teacher_forward
from sketchmind.latent.losses import IGNORE_INDEX, block_cosines, center_targets, centered
from sketchmind.latent.tokens import LatentSpec, read_spec
from sketchmind.train.latent_stage import Data, load_latent_model

if TYPE_CHECKING:
    import torch

MODES = ("model", "mean", "noise")


@dataclass(frozen=True)
class CosineStats:
    """Cosine between slot inputs P(h_prev_j) and vision targets t_j over every held-out slot."""

    mean: float
    min: float
    max: float
    shuffled_mean: float  # the same slot inputs against another block's targets (the chance level)
    n_slots: int
    n_rows: int
    centered_mean: float = float("nan")  # mean and shuffled_mean with the shared direction removed
    centered_shuffled_mean: float = float("nan")
    retrieval: float = float("nan")  # own block's target the closest (centered cosines), fraction of slots
    retrieval_raw: float = float("nan")  # the same with plain cosines
    chance: float = float("nan")  # the retrieval of a guess: mean of 1 / blocks over the slots counted
    n_retrieval_slots: int = 0  # slots in sequences with two blocks or more


def retrieval_counts(predicted: torch.Tensor, targets: torch.Tensor, k: int) -> tuple[int, int, float]:
    """One sequence's ``(correct, slots, chance sum)``: slot j of block b is correct when its cosine to
    target (b, j) is strictly above its cosine to every other block's target j. Both ``(n_blocks * k, H)``;
    center them first (``losses.centered``) for the centered metric. A single block counts nothing.
    """
    import torch

    blocks = len(targets) // k
    if blocks < 2:
        return 0, 0, 0.0
    cos = block_cosines(predicted, targets, k)  # (k, B, B)
    own = cos.diagonal(dim1=1, dim2=2)  # (k, B)
    others = cos.masked_fill(torch.eye(blocks, dtype=torch.bool, device=cos.device), float("-inf")).amax(dim=2)
    return int((own > others).sum()), blocks * k, float(k)  # k slots of chance 1 / blocks each per block


@dataclass
class _Held:
    """One held-out row, ready: the chain's inputs, labels, slot inputs P(h_prev) and targets ``(n_slots, H)``."""

    inputs: Inputs
    input_ids: torch.Tensor  # (1, L)
    labels: torch.Tensor  # (1, L), the collator's
    slot_inputs: torch.Tensor
    targets: torch.Tensor


def _load(model_dir: str | Path, device: str) -> tuple[Any, Any, LatentSpec, Any]:
    model, processor, spec, projection = load_latent_model(model_dir, read_spec(model_dir).k, device)
    model.eval()
    return model, processor, spec, projection


def _held_out(
    model_dir: str | Path, rows: Sequence[Mapping[str, Any]], max_pixels: int | None, device: str
) -> tuple[Any, LatentSpec, list[_Held]]:
    """The model, its spec and every row run through the free chain (no gradients)."""
    import torch

    model, processor, spec, projection = _load(model_dir, device)
    data = Data(rows, model, processor, spec, max_pixels)
    held: list[_Held] = []
    with torch.no_grad():
        for i in range(len(data)):
            batch = data.batch(i)
            inputs = base_inputs(model, batch, spec)
            targets = data.targets(i).to(device)
            if len(targets) != len(inputs.slots):
                raise ValueError(f"row {i}: {len(inputs.slots)} latent slots but {len(targets)} targets")
            _, slot_inputs = chain_forward(model, inputs, projection)
            held.append(_Held(inputs, batch["input_ids"], batch["labels"], slot_inputs.float(), targets.float()))
    return model, spec, held


def latent_cosine(
    model_dir: str | Path, rows: Sequence[Mapping[str, Any]], *, max_pixels: int | None = None, device: str = "cpu"
) -> CosineStats:
    """Mean / min / max cosine between P(h_prev_j) and t_j over the held-out ``rows``, and the shuffled baseline."""
    import torch
    import torch.nn.functional as F

    _, spec, held = _held_out(model_dir, rows, max_pixels, device)
    slots = torch.cat([h.slot_inputs for h in held])
    targets = torch.cat([h.targets for h in held])
    if not len(slots):
        raise ValueError("the rows hold no latent slot")
    cos = F.cosine_similarity(slots, targets, dim=-1)
    # Another block's targets, slot index kept: roll by one block (itself when there is only one).
    shuffled = F.cosine_similarity(slots, targets.roll(spec.k, dims=0), dim=-1)
    center = center_targets(targets, spec.k)
    c_slots, c_targets = centered(slots, center), centered(targets, center)
    c_cos = F.cosine_similarity(c_slots, c_targets, dim=-1, eps=1e-6)
    c_shuffled = F.cosine_similarity(c_slots, c_targets.roll(spec.k, dims=0), dim=-1, eps=1e-6)
    hits = [0, 0]
    counted, chance = 0, 0.0
    for h in held:
        for index, center_it in enumerate((True, False)):
            p, t = (
                (centered(h.slot_inputs, center), centered(h.targets, center))
                if center_it
                else (h.slot_inputs, h.targets)
            )
            correct, n, chance_sum = retrieval_counts(p, t, spec.k)
            hits[index] += correct
        counted += n
        chance += chance_sum
    return CosineStats(
        mean=float(cos.mean()),
        min=float(cos.min()),
        max=float(cos.max()),
        shuffled_mean=float(shuffled.mean()),
        n_slots=len(cos),
        n_rows=len(held),
        centered_mean=float(c_cos.mean()),
        centered_shuffled_mean=float(c_shuffled.mean()),
        retrieval=hits[0] / counted if counted else float("nan"),
        retrieval_raw=hits[1] / counted if counted else float("nan"),
        chance=chance / counted if counted else float("nan"),
        n_retrieval_slots=counted,
    )


def following_mask(input_ids: torch.Tensor, labels: torch.Tensor, spec: LatentSpec) -> torch.Tensor:
    """``(1, L)`` bool: labelled tokens after the first latent pad, minus the pads and ``<|latent_end|>``.

    These are the tokens whose prediction can depend on a latent (the text that follows the blocks);
    the pads are inputs and the end token is forced, so neither is a prediction.
    """
    import torch

    ids = input_ids.view(1, -1)
    pads = (ids[0] == spec.pad_id).nonzero().view(-1)
    mask = (labels != IGNORE_INDEX) & (ids != spec.pad_id) & (ids != spec.end_id)
    after = torch.zeros_like(mask)
    if len(pads):
        after[0, int(pads[0]) + 1 :] = True
    return mask & after


def following_ce_sum(model: Any, hidden: torch.Tensor, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Summed next-token CE over the ``mask`` positions (position p is predicted from hidden state p - 1)."""
    import torch.nn.functional as F

    logits = model.lm_head(hidden[:, :-1]).float()
    targets = input_ids.view(1, -1)[:, 1:].masked_fill(~mask[:, 1:], IGNORE_INDEX)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )


def latent_ablation(
    model_dir: str | Path,
    rows: Sequence[Mapping[str, Any]],
    *,
    modes: Sequence[str] = MODES,
    max_pixels: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Per mode: ``ce`` (token-weighted mean over the following text), ``increase`` (vs ``model``), ``tokens``.

    ``model`` is always computed (it is the reference and the source of ``mean`` and the noise norms).
    """
    import torch

    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown ablation modes {unknown}; expected some of {MODES}")
    model, spec, held = _held_out(model_dir, rows, max_pixels, device)
    # The mean of each slot index (0..K-1) over every held-out block.
    all_slots = torch.cat([h.slot_inputs for h in held])
    mean = all_slots.view(-1, spec.k, all_slots.shape[-1]).mean(dim=0) if len(all_slots) else None
    generator = torch.Generator().manual_seed(seed)

    def slot_inputs(h: _Held, mode: str) -> torch.Tensor:
        if mode == "model":
            return h.slot_inputs
        if mode == "mean":
            assert mean is not None
            return mean.repeat(len(h.slot_inputs) // spec.k, 1)
        noise = torch.randn(h.slot_inputs.shape, generator=generator).to(h.slot_inputs.device)
        scaled: torch.Tensor = noise * (h.slot_inputs.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True))
        return scaled

    totals = {mode: 0.0 for mode in ("model", *modes)}
    tokens = 0
    with torch.no_grad():
        for h in held:
            mask = following_mask(h.input_ids, h.labels, spec)
            tokens += int(mask[:, 1:].sum())
            for mode in totals:
                hidden = teacher_forward(model, h.inputs, slot_inputs(h, mode))
                totals[mode] += float(following_ce_sum(model, hidden, h.input_ids, mask))
    if tokens == 0:
        raise ValueError("no labelled text follows a latent block in these rows")
    reference = totals["model"] / tokens
    return {
        mode: {"ce": total / tokens, "increase": total / tokens - reference, "tokens": float(tokens)}
        for mode, total in totals.items()
    }
