"""The latent checkpoint contract: special tokens, ``latent.json`` and the projection P.

A latent checkpoint is a normal Hugging Face model directory (``HFPolicy`` loads it as any other) plus:

- ``latent.json``: ``{"k": K, "start_id": ..., "pad_id": ..., "end_id": ..., "hidden_size": H}``;
- ``latent_projection.safetensors``: P's weights (``norm.weight`` (H,), ``linear.weight`` (H, H),
  ``linear.bias`` (H,)).

P maps a final hidden state h (after the model's final norm) to the input embedding of the next latent
slot: ``P(h) = Linear(RMSNorm(h))``. Hidden states and token embeddings live at very different norms
(Coconut issue #29), so P starts as "rescale h to the token embeddings' RMS": the RMSNorm weight is that
RMS in every coordinate and the linear layer is the identity. Training then only has to learn a direction.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.files import write_json_atomic

if TYPE_CHECKING:
    import torch

LATENT_START = "<|latent_start|>"
LATENT_PAD = "<|latent_pad|>"
LATENT_END = "<|latent_end|>"
LATENT_TOKENS = (LATENT_START, LATENT_PAD, LATENT_END)
LATENT_FILE = "latent.json"
PROJECTION_FILE = "latent_projection.safetensors"


@dataclass(frozen=True)
class LatentSpec:
    """What ``latent.json`` holds: the slot count and the three token ids."""

    k: int
    start_id: int
    pad_id: int
    end_id: int
    hidden_size: int

    def block(self) -> str:
        """The text of one latent block: start, K pads, end."""
        return LATENT_START + LATENT_PAD * self.k + LATENT_END


def write_spec(spec: LatentSpec, out_dir: str | Path) -> Path:
    """Write ``latent.json`` into ``out_dir`` and return its path."""
    return write_json_atomic(Path(out_dir) / LATENT_FILE, asdict(spec))


def read_spec(model_dir: str | Path) -> LatentSpec:
    """Read ``model_dir/latent.json`` (``FileNotFoundError`` if the directory is no latent checkpoint)."""
    data = json.loads((Path(model_dir) / LATENT_FILE).read_text())
    return LatentSpec(**{key: int(data[key]) for key in ("k", "start_id", "pad_id", "end_id", "hidden_size")})


def is_latent_checkpoint(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` has both contract files."""
    return (Path(model_dir) / LATENT_FILE).is_file() and (Path(model_dir) / PROJECTION_FILE).is_file()


def add_latent_tokens(processor: Any, model: Any, k: int) -> LatentSpec:
    """Add the three tokens to ``processor``'s tokenizer (as extra special tokens) and fit ``model``'s vocabulary.

    Already present tokens are kept (so a second call changes nothing). The embedding matrix only grows:
    real Qwen checkpoints pad their vocabulary past the tokenizer, and the new ids then fit already.
    """
    tok = getattr(processor, "tokenizer", processor)
    vocab = tok.get_vocab()
    missing = [t for t in LATENT_TOKENS if t not in vocab]
    if missing:
        extra = list(getattr(tok, "extra_special_tokens", None) or [])
        tok.add_special_tokens({"extra_special_tokens": extra + missing})
    ids = tok.convert_tokens_to_ids(list(LATENT_TOKENS))
    rows = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:
        # mean_resizing: the new rows start at the mean embedding, not at random (the tiny models' 0.1
        # std would make them outliers).
        model.resize_token_embeddings(max(ids) + 1, mean_resizing=True)
    hidden = int(model.get_input_embeddings().weight.shape[1])
    return LatentSpec(k=k, start_id=ids[0], pad_id=ids[1], end_id=ids[2], hidden_size=hidden)


def embedding_rms(model: Any) -> float:
    """The mean per-row RMS of the token embeddings: the scale every latent input is brought to."""
    import torch

    with torch.no_grad():
        weight = model.get_input_embeddings().weight.float()
        return float(weight.pow(2).mean(dim=1).sqrt().mean())


def new_projection(hidden_size: int, scale: float) -> torch.nn.Module:
    """P = Linear(RMSNorm(h)), initialised to rescale h to RMS ``scale`` (see the module docstring)."""
    import torch

    norm = torch.nn.RMSNorm(hidden_size, eps=1e-6)
    linear = torch.nn.Linear(hidden_size, hidden_size)
    with torch.no_grad():
        norm.weight.fill_(scale)
        linear.weight.copy_(torch.eye(hidden_size))
        linear.bias.zero_()
    # Named children, so the saved keys are ``norm.weight``, ``linear.weight``, ``linear.bias``.
    return torch.nn.Sequential(OrderedDict(norm=norm, linear=linear))


def save_projection(projection: torch.nn.Module, out_dir: str | Path) -> Path:
    """Write P's weights to ``out_dir/latent_projection.safetensors``."""
    from safetensors.torch import save_file

    path = Path(out_dir) / PROJECTION_FILE
    save_file({name: t.detach().float().cpu().contiguous() for name, t in projection.state_dict().items()}, path)
    return path


def load_projection(model_dir: str | Path, device: str | torch.device = "cpu") -> torch.nn.Module:
    """P from a latent checkpoint, float32 on ``device`` (the hidden size comes from ``latent.json``)."""
    from safetensors.torch import load_file

    spec = read_spec(model_dir)
    projection = new_projection(spec.hidden_size, 1.0)
    projection.load_state_dict(load_file(Path(model_dir) / PROJECTION_FILE))
    return projection.to(device)


def save_latent(spec: LatentSpec, projection: torch.nn.Module, out_dir: str | Path) -> None:
    """Both contract files into ``out_dir`` (next to the model's own files)."""
    write_spec(spec, out_dir)
    save_projection(projection, out_dir)
