"""How a training stage loads its model: in the recipe's ``model.dtype``, honoured or refused, never dropped.

Every stage that trains weights (perceive, sft, sft2, grpo, the baselines, latent1 and latent2) loads
through ``load_for_training``, so a 7B recipe's ``dtype: bfloat16`` halves its weights' (and AdamW's)
memory in each of them. Without a dtype (or with ``auto``) the weights load in float32: master weights
that CUDA runs trains in bf16 autocast (``trl_config.runner_defaults``), as before the dtype was honoured.
float16 weights are refused: training them needs a loss scaler the stages do not run, so gradients would
silently underflow. bfloat16 works on CPU too (slowly: few CPUs have fast bf16 kernels).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# The names a recipe's model.dtype may use (HFPolicy's), and what each means for training.
TRAINING_DTYPES: dict[str, str] = {
    "auto": "float32",
    "float32": "float32",
    "fp32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}
HALF_NAMES: tuple[str, ...] = ("float16", "fp16", "half")
DTYPE_NAMES: tuple[str, ...] = (*TRAINING_DTYPES, *HALF_NAMES)


def check_training_dtype(name: str | None) -> str:
    """The torch dtype name weights train in for ``name``; ``ValueError`` (one line) if it cannot train."""
    if name is None:
        return "float32"
    key = name.lower()
    if key in HALF_NAMES:
        raise ValueError(f"dtype {name!r} cannot train: float16 weights need loss scaling; use bfloat16 or float32")
    if key not in TRAINING_DTYPES:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPE_NAMES)}")
    return TRAINING_DTYPES[key]


def training_dtype(name: str | None) -> torch.dtype:
    """``check_training_dtype`` as a ``torch.dtype``."""
    import torch

    resolved: torch.dtype = getattr(torch, check_training_dtype(name))
    return resolved


def load_for_training(path: str | Path, dtype: str | None = None, **kwargs: Any) -> Any:
    """The image-text model at ``path`` (safetensors only), its weights in ``training_dtype(dtype)``.

    ``kwargs`` go to ``from_pretrained`` (e.g. ``attn_implementation``).
    """
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(
        str(path), dtype=training_dtype(dtype), use_safetensors=True, **kwargs
    )
