"""A tiny random latent checkpoint for tests and smoke runs: ``build_tiny`` plus the latent tokens and a projection.

torch is imported inside functions: importing this module stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sketchmind.latent.tokens import LATENT_TOKENS, PROJECTION_FILE, LatentSpec, write_spec
from sketchmind.models.latent import Projection


def _save_projection(directory: str | Path, projection: Projection) -> None:
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous().cpu() for k, v in projection.state_dict().items()}, str(Path(directory) / PROJECTION_FILE)
    )


def build_tiny_latent(family: str, out_dir: str | Path, *, k: int = 4, seed: int = 0, **tiny: Any) -> Path:
    """A tiny random latent checkpoint: ``build_tiny`` plus the three latent tokens and a random projection.

    The tokens are added as special tokens and the embeddings resized (new rows random, not the mean,
    so the tokens are distinguishable); ``tiny`` goes to ``build_tiny``. For tests and smoke runs.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from sketchmind.models.tiny import build_tiny

    out = build_tiny(family, out_dir, seed=seed, **tiny)
    processor: Any = AutoProcessor.from_pretrained(out)  # type: ignore[no-untyped-call]
    tokenizer = getattr(processor, "tokenizer", processor)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in LATENT_TOKENS], special_tokens=True)
    processor.save_pretrained(out)
    model: Any = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32, use_safetensors=True)
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    generator = torch.Generator().manual_seed(seed + 1)
    embed = model.get_input_embeddings().weight
    with torch.no_grad():
        std = float(embed[:old].std())
        embed[old:] = torch.randn(embed.shape[0] - old, embed.shape[1], generator=generator) * std
    model.save_pretrained(out)
    h = int(embed.shape[1])
    ids = [int(tokenizer.convert_tokens_to_ids(t)) for t in LATENT_TOKENS]
    spec = LatentSpec(k=k, start_id=ids[0], pad_id=ids[1], end_id=ids[2], hidden_size=h)
    write_spec(spec, out)
    projection = Projection(
        norm_weight=1 + 0.1 * torch.randn(h, generator=generator),
        weight=torch.randn(h, h, generator=generator) / h**0.5,
        bias=0.02 * torch.randn(h, generator=generator),
    )
    _save_projection(out, projection)
    return out
