"""The two latent stages' losses for one sequence; each returns ``(loss, ce, mean cos)``.

- Stage 1 (grounded): the pads' inputs are the targets, rescaled to the token embeddings' RMS (the
  targets come out of the vision merger at whatever norm it has; the language model expects token-scale
  inputs). Loss = gamma * CE + a grounding term between p_j = P(h_prev_j) and t_j, h_prev_j being the
  final hidden state at the position before slot j (``<|latent_start|>`` for the first). The term is
  taken after P (Mirage compares h_prev with t directly): at P's initialisation (a uniform rescale) the two are
  equal, but only this way does P get a training signal in stage 1, and P(h_prev) is exactly what
  replaces t_j as the slot input in stage 2 and at decoding. ``grounding`` picks the term:

  - ``"cosine"``: mean(1 - cos(p_j, t_j)), Mirage's. The targets of all views share one dominant
    direction (the pooled features of a mostly unchanged board: cos ~0.97 between different views), so
    predicting that constant direction already scores ~0.97; at micro scale the latents collapse to it
    (one vector per slot index, no view information: CapImagine's critique of Mirage).
  - ``"centered"``: the plain term plus mean(1 - cos(u(p_j) - m_j, u(t_j) - m_j)), u = unit vector and
    m_j the mean unit target of slot index j over the training rows (``center_targets``). The shared
    direction is removed from both sides, so only what differs between views is scored: a constant
    prediction gets ~0 centered cosine on average, the view's own target 1. Unit vectors before
    centering keep P's output scale free (as with the plain cosine); the plain term keeps P(h) on the
    targets' manifold, since P(h) is what the slots are fed in stage 2 (without it the micro run drifted
    to plain cos ~0.45 and the chain left what stage 1 trained on).
  - ``"contrastive"`` (default): the centered loss plus an InfoNCE term across the latent blocks of the
    sequence: for slot j of block b, softmax over blocks b' of centered cos(p_bj, t_b'j) / ``TAU``,
    cross-entropy to b (sequences with one block add nothing). Centering alone still let the micro run
    settle on one vector per slot index; the contrastive term is what rewards telling this sequence's
    views apart (held-out retrieval above chance after stage 1, docs/latent.md).

- Stage 2 (free): the pads' inputs are the P(h_prev) chain; loss = CE only by default. The cosine to the
  targets is still reported (without gradient) to watch the latents drift. With ``grounding_weight`` λ > 0
  (an option, off by default) the loss is CE + λ × the stage-1 grounding term between the chain's own
  slot inputs P(h_prev_j) and the targets t_j, so the chain keeps predicting the view while the text
  learns to use it (CE alone washed the view information out at micro scale, docs/latent.md).

CE covers the assistant's text tokens: the collator's labels minus the pad positions (a pad is an input,
never a prediction). ``<|latent_start|>`` stays a target (the model decides when to imagine), and so does
``<|latent_end|>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from sketchmind.latent.forward import Inputs, chain_forward, teacher_forward

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
Grounding = Literal["centered", "contrastive", "cosine"]
GROUNDINGS: tuple[Grounding, ...] = ("centered", "contrastive", "cosine")
TAU = 0.1  # the contrastive term's temperature (on centered cosines, which span [-1, 1])


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


def center_targets(targets: torch.Tensor, k: int) -> torch.Tensor:
    """``(k, H)``: the mean unit target of each slot index over ``targets`` ``(n_blocks * k, H)``, blocks in order."""
    import torch.nn.functional as F

    if len(targets) == 0 or len(targets) % k:
        raise ValueError(f"{len(targets)} targets do not form blocks of {k}")
    mean: torch.Tensor = F.normalize(targets.float(), dim=-1).view(-1, k, targets.shape[-1]).mean(dim=0)
    return mean


def centered(vectors: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """``vectors`` ``(n_blocks * K, H)`` as unit vectors minus ``center`` ``(K, H)`` (slot index = row mod K)."""
    import torch.nn.functional as F

    k = center.shape[0]
    unit = F.normalize(vectors.float(), dim=-1).view(-1, k, vectors.shape[-1])
    out: torch.Tensor = (unit - center.to(unit.device)).view(-1, vectors.shape[-1])
    return out


def block_cosines(predicted: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """``(K, B, B)``: for slot index j, cos(predicted of block b, target of block b') at ``[j, b, b']``."""
    import torch.nn.functional as F

    p = F.normalize(predicted.float(), dim=-1).view(-1, k, predicted.shape[-1]).transpose(0, 1)
    t = F.normalize(targets.float(), dim=-1).view(-1, k, targets.shape[-1]).transpose(0, 1)
    return p @ t.transpose(1, 2)


def grounding_loss(
    predicted: torch.Tensor, targets: torch.Tensor, grounding: Grounding, center: torch.Tensor | None
) -> torch.Tensor:
    """The stage-1 grounding term between slot predictions and targets, both ``(n_blocks * K, H)``.

    ``center`` ``(K, H)`` (``center_targets`` of the training rows) is needed by all but ``"cosine"``.
    """
    import torch
    import torch.nn.functional as F

    if grounding == "cosine":
        return 1 - F.cosine_similarity(predicted.float(), targets.float(), dim=-1).mean()
    if grounding not in GROUNDINGS:
        raise ValueError(f"grounding must be one of {GROUNDINGS}, not {grounding!r}")
    if center is None:
        raise ValueError(f"grounding {grounding!r} needs the mean target per slot index (center)")
    p, t = centered(predicted, center), centered(targets, center)
    plain = 1 - F.cosine_similarity(predicted.float(), targets.float(), dim=-1).mean()
    loss = plain + 1 - F.cosine_similarity(p, t, dim=-1, eps=1e-6).mean()
    k = center.shape[0]
    if grounding == "contrastive" and len(targets) > k:
        logits = block_cosines(p, t, k) / TAU  # (K, B, B)
        own = torch.arange(logits.shape[1], device=logits.device).repeat(k)
        loss = loss + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), own)
    return loss


def stage1_loss(
    model: Any,
    projection: Any,
    inputs: Inputs,
    labels: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float,
    rms: float,
    grounding: Grounding = "cosine",
    center: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grounded stage: targets in the slots, gamma * CE + the grounding term; the cos returned is the plain one."""
    import torch
    import torch.nn.functional as F

    hidden = teacher_forward(model, inputs, to_scale(targets, rms))
    ce = text_ce(model, hidden, masked_labels(labels, inputs.slots))
    predicted = projection(hidden[0, inputs.slots - 1].float())
    targets = targets.to(predicted.device)
    with torch.no_grad():
        cos = F.cosine_similarity(predicted, targets, dim=-1).mean()
    return gamma * ce + grounding_loss(predicted, targets, grounding, center), ce, cos


def stage2_loss(
    model: Any,
    projection: Any,
    inputs: Inputs,
    labels: torch.Tensor,
    targets: torch.Tensor | None,
    *,
    grounding_weight: float = 0.0,
    grounding: Grounding = "contrastive",
    center: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Free stage: the P(h_prev) chain in the slots; loss = CE (+ ``grounding_weight`` x the grounding term).

    The grounding term (``grounding_loss``, ``center`` as there) scores the chain's own slot inputs against
    ``targets``; gradients reach P and, through the chain, the model. The cos returned is the plain one,
    without gradient.
    """
    import torch
    import torch.nn.functional as F

    if grounding_weight < 0:
        raise ValueError(f"grounding_weight must be >= 0, not {grounding_weight}")
    hidden, slot_inputs = chain_forward(model, inputs, projection)
    ce = text_ce(model, hidden, masked_labels(labels, inputs.slots))
    has_targets = targets is not None and len(targets) > 0
    with torch.no_grad():
        cos = (
            F.cosine_similarity(slot_inputs.float(), targets.to(slot_inputs.device), dim=-1).mean()
            if targets is not None and has_targets
            else torch.tensor(float("nan"))
        )
    if grounding_weight == 0:
        return ce, ce, cos
    if targets is None or not has_targets:
        raise ValueError("grounding_weight > 0 needs the targets of the slots")
    term = grounding_loss(slot_inputs.float(), targets.to(slot_inputs.device), grounding, center)
    return ce + grounding_weight * term, ce, cos
