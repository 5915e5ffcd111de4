"""Forward passes with latent slots: teacher-forced (stage 1) and the P(h_prev) chain (stage 2, decoding).

Both bypass the VLM wrapper and drive its parts directly, so the slot inputs are ours to set:
``base_inputs`` embeds the tokens and scatters the input images' features in (what the wrapper does),
and computes the 3-D rotary positions once for the whole sequence; the language model then runs on
``inputs_embeds`` with those explicit positions, and ``model.lm_head`` turns hidden states into logits.
The hidden states returned are the language model's last ones, after its final norm.

Supported: Qwen2.5-VL (tested). Qwen3-VL also feeds "deepstack" visual features into early layers,
which this path would drop, so it is refused rather than silently degraded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sketchmind.latent.tokens import LatentSpec
from sketchmind.transformers_compat import cache_keyword

if TYPE_CHECKING:
    import torch

SUPPORTED = ("qwen2_5_vl",)


@dataclass
class Inputs:
    """One sequence ready for the language model: embeddings ``(1, L, H)``, positions ``(3, 1, L)``, slots."""

    embeds: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor  # (n_blocks * K,) positions of the latent pads, ascending


def check_supported(model: Any) -> None:
    """``NotImplementedError`` unless the model is a family whose forward we reproduce exactly."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in SUPPORTED:
        raise NotImplementedError(f"latent forward supports {', '.join(SUPPORTED)}, not {model_type!r}")


def slot_positions(input_ids: torch.Tensor, spec: LatentSpec) -> torch.Tensor:
    """The pad positions of a ``(L,)`` id row; ``ValueError`` unless they form start + K pads + end blocks."""
    import torch

    ids = input_ids.tolist()
    slots = [i for i, token in enumerate(ids) if token == spec.pad_id]
    starts = [i for i, token in enumerate(ids) if token == spec.start_id]
    expected = [s + 1 + j for s in starts for j in range(spec.k)]
    if slots != expected or any(ids[s + spec.k + 1] != spec.end_id for s in starts if s + spec.k + 1 < len(ids)):
        raise ValueError(f"latent tokens do not form start + {spec.k} pads + end blocks")
    return torch.tensor(slots, dtype=torch.long)


def base_inputs(model: Any, batch: dict[str, torch.Tensor], spec: LatentSpec) -> Inputs:
    """Token embeddings with the images' features in place, the rotary positions, the slots (batch of one)."""
    import torch

    check_supported(model)
    inner = model.model
    ids = batch["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError("latent forward takes one sequence at a time")
    embeds = inner.get_input_embeddings()(ids)
    grid = batch.get("image_grid_thw")
    if batch.get("pixel_values") is not None:
        with torch.no_grad():  # the vision tower is frozen in latent training
            feats = inner.get_image_features(batch["pixel_values"], grid, return_dict=True).pooler_output
        feats = torch.cat(feats).to(embeds.dtype)
        mask, _ = inner.get_placeholder_mask(ids, inputs_embeds=embeds, image_features=feats)
        embeds = embeds.masked_scatter(mask, feats)
    mm_types = batch.get("mm_token_type_ids")
    if grid is not None and mm_types is not None:
        positions, _ = inner.get_rope_index(
            ids, mm_token_type_ids=mm_types, image_grid_thw=grid, attention_mask=batch.get("attention_mask")
        )
    else:
        positions = torch.arange(ids.shape[1], device=ids.device).view(1, 1, -1).expand(3, 1, -1)
    return Inputs(embeds=embeds, positions=positions, slots=slot_positions(ids[0], spec).to(ids.device))


def _language_model(model: Any, embeds: torch.Tensor, positions: torch.Tensor, cache: Any = None) -> torch.Tensor:
    language_model = model.model.language_model
    out = language_model(
        inputs_embeds=embeds,
        position_ids=positions,
        use_cache=cache is not None,
        **{cache_keyword(language_model.forward): cache},
    )
    hidden: torch.Tensor = out.last_hidden_state
    return hidden


def teacher_forward(model: Any, inputs: Inputs, slot_inputs: torch.Tensor) -> torch.Tensor:
    """Final hidden states ``(1, L, H)`` with ``slot_inputs`` ``(n_slots, H)`` as the pads' input embeddings."""
    embeds = inputs.embeds.clone()
    embeds[0, inputs.slots] = slot_inputs.to(embeds.dtype)
    return _language_model(model, embeds, inputs.positions)


def chain_forward(model: Any, inputs: Inputs, projection: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Final hidden states ``(1, L, H)`` where each pad's input is P(hidden state of the position before it).

    Slot j depends on slot j-1's output, so the sequence runs segment by segment with a KV cache: up to
    the position before the next slot, then that slot alone with input P(h). Gradients flow through the
    whole chain (the cache keeps the graph). Also returns the slot inputs used ``(n_slots, H)``, so a
    teacher-forced pass with them reproduces the same hidden states.
    """
    import torch
    from transformers import DynamicCache

    cache = DynamicCache(config=model.model.language_model.config)
    pieces: list[torch.Tensor] = []
    used: list[torch.Tensor] = []
    pending: torch.Tensor | None = None  # the input of the slot at ``cursor``
    cursor = 0
    ends = [*inputs.slots.tolist(), inputs.embeds.shape[1]]
    for end in ends:
        segment = inputs.embeds[:, cursor:end]
        if pending is not None:
            segment = torch.cat([pending.to(segment.dtype), segment[:, 1:]], dim=1)
        hidden = _language_model(model, segment, inputs.positions[:, :, cursor:end], cache)
        pieces.append(hidden)
        if end < inputs.embeds.shape[1]:
            pending = projection(hidden[:, -1:].float())
            used.append(pending[0, 0])
        cursor = end
    slot_inputs = torch.stack(used) if used else inputs.embeds.new_zeros(0, inputs.embeds.shape[-1])
    return torch.cat(pieces, dim=1), slot_inputs
