"""The TRL config a trainer stage runs with: the runner's defaults, then the recipe section's fields.

A recipe's TRL-trained sections (``stages.perceive``, ``stages.sft``, ``stages.rejection.sft``,
``stages.dpo``, ``stages.grpo``) keep friendly keys (``epochs``, ``learning_rate``, ``save_steps`` ...) and take
any other field of TRL's ``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig`` in a ``trl:`` mapping
(``recipe.TrlSection``). Here:

- ``check_fields`` refuses, in one line naming the field and the class, a name the class does not have or
  one the runner must set itself (the recipe checks its ``trl:`` mappings with it at load time);
- ``build_config`` is the one place a stage's config object is made: ``run_sft``, ``run_dpo`` and ``run_grpo``
  call it.

TRL is imported inside the functions: ``import sketchmind.train.recipe`` stays light.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

ConfigName = Literal["SFTConfig", "DPOConfig", "GRPOConfig"]

# Fields the runners set and the stages rely on: a recipe overriding one would break the stage mid-run.
OWNED: dict[str, dict[str, str]] = {
    "SFTConfig": {
        "output_dir": "it is the stage's folder",
        "remove_unused_columns": "the collator reads the raw rows",
        "dataset_kwargs": "the collator prepares the rows itself",
        "max_length": "use the section's max_length (the collator truncates)",
    },
    "DPOConfig": {
        "output_dir": "it is the stage's folder",
        "remove_unused_columns": "the collator reads the raw pairs (their completion images included)",
        "max_length": "use the section's max_length (the collator truncates)",
        "precompute_ref_log_probs": "the pairs carry images, for which TRL computes the reference on the fly",
    },
    "GRPOConfig": {
        "output_dir": "it is the stage's folder",
        "remove_unused_columns": "the rewards and the environment read the puzzle columns",
    },
}

# What each runner always sets, whatever the recipe says (see OWNED for why).
_RUNNER_FIELDS: dict[str, dict[str, Any]] = {
    "SFTConfig": {
        "remove_unused_columns": False,
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "max_length": None,
    },
    "DPOConfig": {"remove_unused_columns": False, "max_length": None},
    "GRPOConfig": {"remove_unused_columns": False},
}


def config_class(name: ConfigName) -> type[Any]:
    """TRL's config class called ``name``."""
    if name == "SFTConfig":
        from trl.trainer.sft_config import SFTConfig

        return SFTConfig
    if name == "DPOConfig":
        from trl.trainer.dpo_config import DPOConfig

        return DPOConfig
    if name == "GRPOConfig":
        from trl.trainer.grpo_config import GRPOConfig

        return GRPOConfig
    raise ValueError(f"no TRL config class {name!r}; expected SFTConfig, DPOConfig or GRPOConfig")


@functools.cache
def config_fields(name: ConfigName) -> frozenset[str]:
    """The keyword arguments ``name`` accepts (its dataclass fields), read off the installed TRL."""
    return frozenset(field.name for field in dataclasses.fields(config_class(name)) if field.init)


def check_fields(name: ConfigName, values: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` (one line) for the first key of ``values`` that ``name`` lacks or the runner owns."""
    fields = config_fields(name)
    for key in values:
        if key in OWNED[name]:
            raise ValueError(f"{key!r} of trl {name} cannot be set in a recipe: {OWNED[name][key]}")
        if key not in fields:
            close = difflib.get_close_matches(str(key), sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"{key!r} is not a field of trl {name}{hint}")


def runner_defaults(*, rich_progress: bool = False) -> dict[str, Any]:
    """The fields every trainer stage starts from (a recipe may override any): one log line per step,
    checkpoints by step, no external loggers, bf16 autocast and activation checkpointing on CUDA only."""
    import torch

    from sketchmind.train.ranks import no_accelerator

    cuda = torch.cuda.is_available()
    return {
        # Without a GPU, accelerate counts a torchrun / accelerate launch as distributed only when told it runs
        # on CPU: otherwise each process trains alone (and writes the stage's files) instead of sharing batches.
        "use_cpu": no_accelerator(),
        "logging_steps": 1,
        "save_strategy": "steps",
        "save_total_limit": 2,
        "report_to": [],
        "bf16": cuda and torch.cuda.is_bf16_supported(),
        "fp16": False,
        # transformers 5's name for gradient checkpointing (TRL's default of True for it would warn on CPU).
        "activation_checkpointing": cuda,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": cuda,
        "disable_tqdm": rich_progress,  # the rich bar replaces tqdm (train_and_save)
    }


def build_config(
    name: ConfigName, output_dir: str | Path, fields: Mapping[str, Any], *, rich_progress: bool = False
) -> Any:
    """TRL's ``name`` config for a stage writing into ``output_dir``: ``runner_defaults``, then ``fields``
    (the section's friendly keys under their TRL names, then its ``trl:`` mapping), then the runner's own
    fields. An unknown or runner-owned field is a one-line ``ValueError`` naming it and the class."""
    check_fields(name, fields)
    settings = runner_defaults(rich_progress=rich_progress) | dict(fields)
    return config_class(name)(output_dir=str(output_dir), **settings, **_RUNNER_FIELDS[name])
