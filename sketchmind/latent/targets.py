"""Stage-1 targets: a rendered view through the model's own vision encoder, pooled into K vectors.

The view goes through the image processor (downscaled to ``max_pixels`` first, as every model input is)
and the vision tower including its merger, so each visual token already lives in the language model's
hidden size H. The tokens (in the merger's raster order) are cut into K contiguous chunks and each chunk
is mean-pooled: K vectors of size H per view, the coarse "top to bottom" summary Mirage uses.
Computed without gradients: the vision tower is frozen during latent training, so targets never move.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image


def visual_tokens(
    model: Any, processor: Any, images: Sequence[Image.Image], *, max_pixels: int | None = None
) -> list[torch.Tensor]:
    """Each image's merged visual tokens, ``(n_tokens_i, H)`` float32 (Qwen2.5-VL / Qwen3-VL)."""
    import torch

    from sketchmind.images import fit_pixels

    if not images:
        return []
    inner = model.model
    if not hasattr(inner, "get_image_features"):
        raise NotImplementedError(f"{type(model).__name__} has no get_image_features; latent targets need Qwen-VL")
    encoded = processor.image_processor(images=[fit_pixels(image, max_pixels) for image in images], return_tensors="pt")
    device = next(model.parameters()).device
    with torch.no_grad():
        out = inner.get_image_features(
            encoded["pixel_values"].to(device), encoded["image_grid_thw"].to(device), return_dict=True
        )
    # pooler_output: the merger's output, already split per image (transformers >= 5).
    return [t.float() for t in out.pooler_output]


def pool_chunks(tokens: torch.Tensor, k: int) -> torch.Tensor:
    """``(n, H)`` tokens to ``(k, H)``: k contiguous chunks (sizes differ by at most one), each mean-pooled."""
    import torch

    if tokens.shape[0] < k:
        raise ValueError(f"an image with {tokens.shape[0]} visual tokens cannot fill {k} latent slots")
    return torch.stack([chunk.mean(dim=0) for chunk in torch.tensor_split(tokens, k, dim=0)])


def view_targets(
    model: Any, processor: Any, images: Sequence[Image.Image], k: int, *, max_pixels: int | None = None
) -> torch.Tensor:
    """The targets of ``images``: ``(len(images), k, H)`` float32, no gradient."""
    import torch

    tokens = visual_tokens(model, processor, images, max_pixels=max_pixels)
    if not tokens:
        hidden = int(model.get_input_embeddings().weight.shape[1])
        return torch.zeros(0, k, hidden)
    return torch.stack([pool_chunks(t, k) for t in tokens])
