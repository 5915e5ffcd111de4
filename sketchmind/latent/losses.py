"""The two latent stages' losses for one sequence; each returns ``(loss, ce, mean cos)``.

- Stage 1 (grounded): the pads' inputs are the targets, rescaled to the token embeddings' RMS (the
  targets come out of the vision merger at whatever norm it has; the language model expects token-scale
  inputs). Loss = gamma * CE + mean over slots of (1 - cos(P(h_prev_j), t_j)), h_prev_j being the final
  hidden state at the position before slot j (``<|latent_start|>`` for the first).
  The cosine is taken after P (DESIGN.md writes cos(h_prev, t)): at P's initialisation (a uniform rescale)
  the two are equal, but only this way does P get a training signal in stage 1, and P(h_prev) is exactly
  what replaces t_j as the slot input in stage 2 and at decoding.
- Stage 2 (free): the pads' inputs are the P(h_prev) chain; loss = CE only. The cosine to the targets is
  still reported (without gradient) to watch the latents drift.

CE covers the assistant's text tokens: the collator's labels minus the pad positions (a pad is an input,
never a prediction). ``<|latent_start|>`` stays a target (the model decides when to imagine), and so does
``<|latent_end|>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sketchmind.latent.forward import Inputs, chain_forward, teacher_forward

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100


def masked_labels(labels: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """``labels`` ``(1, L)`` with the pad positions set to -100."""
    out = labels.clone()
    out[0, slots] = IGNORE_INDEX
    return out


def text_ce(model: Any, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the labelled positions."""
    import torch.nn.functional as F

    logits = model.lm_head(hidden[:, :-1]).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def to_scale(vectors: torch.Tensor, rms: float) -> torch.Tensor:
    """Each row of ``vectors`` rescaled to root-mean-square ``rms`` (direction kept)."""
    return vectors * (rms / vectors.pow(2).mean(dim=-1, keepdim=True).sqrt().clamp_min(1e-6))


def _cos(projection: Any, hidden: torch.Tensor, slots: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    predicted = projection(hidden[0, slots - 1].float())
    return F.cosine_similarity(predicted, targets.to(predicted.device), dim=-1)


def stage1_loss(
    model: Any,
    projection: Any,
    inputs: Inputs,
    labels: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float,
    rms: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grounded stage: targets in the slots, gamma * CE + mean(1 - cos)."""
    hidden = teacher_forward(model, inputs, to_scale(targets, rms))
    ce = text_ce(model, hidden, masked_labels(labels, inputs.slots))
    cos = _cos(projection, hidden, inputs.slots, targets).mean()
    return gamma * ce + (1 - cos), ce, cos


def stage2_loss(
    model: Any, projection: Any, inputs: Inputs, labels: torch.Tensor, targets: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Free stage: the P(h_prev) chain in the slots, CE only (cos reported without gradient)."""
    import torch
    import torch.nn.functional as F

    hidden, slot_inputs = chain_forward(model, inputs, projection)
    ce = text_ce(model, hidden, masked_labels(labels, inputs.slots))
    with torch.no_grad():
        cos = (
            F.cosine_similarity(slot_inputs.float(), targets.to(slot_inputs.device), dim=-1).mean()
            if targets is not None and len(targets)
            else torch.tensor(float("nan"))
        )
    return ce, ce, cos
