"""Plan a training run before renting GPUs: ``sketchmind train RECIPE --plan [--gpu-memory 80GB]``.

The recipe's model is built on the meta device (no weights are read or allocated) from transformers' own
config class, so its parameters are counted exactly: a ``tiny:`` spec through the same config builder
``models/tiny.py`` uses, a local checkpoint through its ``config.json``, and a hub id of a known
architecture (``KNOWN_MODELS``: Qwen2.5-VL-7B, Qwen3-VL-8B) through its published sizes, since a plan must
not download anything. From the count, the accelerate config (DeepSpeed ZeRO stage or FSDP sharding, GPUs,
mixed precision) and each trainer stage's settings (batch, sequence length, LoRA, activation checkpointing,
GRPO's colocated vLLM), ``estimate`` gives the memory per GPU of weights, gradients, optimizer state and
activations; ``print_plan`` prints them as a table and, given a card's memory, whether the run fits.

The numbers are estimates of the steady-state peak, not measurements: every formula and assumption is in
``estimate``'s docstring, and the printed plan repeats the assumptions that matter for the recipe.
torch and transformers are imported inside the functions: ``import sketchmind`` must stay light.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rich.console import Console

    from sketchmind.train.recipe import Recipe

GB = 10**9  # decimal gigabytes: an "80GB" card holds 80 GiB (~85.9 GB), so sizing in GB errs on the safe side
GIB = 2**30

# Sequence lengths for sections that do not state one (an SFT section without max_length; a GRPO prompt):
# the collator then keeps whole conversations, so the real length is the data's; say so in the plan.
DEFAULT_SFT_LENGTH = 4096
DEFAULT_PROMPT_LENGTH = 1024  # GRPO's opening: system prompt with the tool specs, the question and one image
# CUDA context, NCCL buffers and the caching allocator's fragmentation: about 1-3 GB on a training rank.
RUNTIME_BYTES = 2 * GB
# TRL's GRPOConfig defaults the plan assumes when a recipe leaves them unset (checked against TRL in the tests).
GRPO_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 8,
    "vllm_mode": "colocate",
    "vllm_gpu_memory_utilization": 0.3,
    "beta": 0.0,
}
SFT_DEFAULT_BATCH = 1  # SFTSpec.batch_size's default (the recipe's own, not TRL's 8)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ACCELERATE = REPO_ROOT / "configs" / "accelerate" / "zero3.yaml"


class PlanError(ValueError):
    """Input a plan cannot be made from (unknown model, unreadable accelerate config); the message is one line."""


# ------------------------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class KnownModel:
    """A hub checkpoint's architecture: transformers' config arguments with the sizes its config.json publishes."""

    model_type: str
    text: dict[str, Any]
    vision: dict[str, Any]
    top: dict[str, Any] = field(default_factory=dict)


_QWEN_VISION_TOKENS = {
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
}

# Published sizes (the checkpoints' config.json), keyed by the hub name without "-Instruct"/"-Thinking".
KNOWN_MODELS: dict[str, KnownModel] = {
    "qwen/qwen2.5-vl-7b": KnownModel(
        "qwen2_5_vl",
        text={
            "vocab_size": 152064,
            "hidden_size": 3584,
            "intermediate_size": 18944,
            "num_hidden_layers": 28,
            "num_attention_heads": 28,
            "num_key_value_heads": 4,
            "max_position_embeddings": 128000,
            "tie_word_embeddings": False,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
        },
        vision={
            "depth": 32,
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
        },
        top={"tie_word_embeddings": False, **_QWEN_VISION_TOKENS},
    ),
    "qwen/qwen3-vl-8b": KnownModel(
        "qwen3_vl",
        text={
            "vocab_size": 151936,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "tie_word_embeddings": False,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        vision={
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "num_position_embeddings": 2304,
            "deepstack_visual_indexes": [8, 16, 24],
            "hidden_act": "gelu_pytorch_tanh",
        },
        top={"tie_word_embeddings": False, **_QWEN_VISION_TOKENS},
    ),
}


def known_model(hub_id: str) -> KnownModel | None:
    """The ``KNOWN_MODELS`` entry for ``hub_id`` (any case, with or without ``-Instruct`` / ``-Thinking``)."""
    key = re.sub(r"-(instruct|thinking)$", "", hub_id.strip().lower())
    return KNOWN_MODELS.get(key)


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs of a model, read off the meta-device build.

    ``parameters`` counts each tensor once (tied embeddings once); ``largest_unit`` is the biggest block a
    sharded run gathers at once (a decoder layer, a vision block, the embedding or the LM head);
    ``linears`` are the ``nn.Linear`` modules as (name, in, out), which LoRA's trainable count comes from.
    """

    name: str
    source: str  # how the architecture was found, said in the plan
    architecture: str
    parameters: int
    vision_parameters: int
    layers: int
    hidden: int
    kv_dim: int  # key/value heads x head dim (grouped-query attention keeps K and V this wide)
    intermediate: int
    vocab: int
    largest_unit: int
    linears: tuple[tuple[str, int, int], ...] = ()


def model_config(recipe: Recipe, vocab_size: int | None = None) -> tuple[Any, str]:
    """The recipe's transformers config and a phrase saying where its sizes come from.

    ``vocab_size`` overrides a tiny model's vocabulary: its tokenizer is trained on the recipe's own data and
    may stop short of ``tiny.vocab_size``, so a plan uses the built base model's when the run has one.
    """
    spec = recipe.model
    if spec.tiny is not None:
        from sketchmind.models.tiny import tiny_config

        tiny = spec.tiny
        built = Path(recipe.output) / "base" / "model" / "config.json"
        source = f"tiny {tiny.family} spec, built from models/tiny.py's config"
        vocab = vocab_size
        if vocab is None and built.is_file():
            vocab = _built_vocab(built)
            source += f"; vocabulary {vocab} from the trained tokenizer ({built.parent})"
        if vocab is None:
            vocab = tiny.vocab_size
            source += f"; vocabulary at most {vocab} (the tokenizer trained on the recipe's data may be smaller)"
        config = tiny_config(
            tiny.family,
            vocab_size=vocab,
            hidden_size=tiny.hidden_size,
            layers=tiny.layers,
            image_size=tiny.image_size,
            init_std=tiny.init_std,
            rope_theta=tiny.rope_theta,
        )
        return config, source
    base = str(spec.base)
    local = Path(base).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise PlanError(f"model.base {base}: a folder without config.json")
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(str(local), local_files_only=True), f"{local / 'config.json'}"
        except (OSError, ValueError, KeyError) as error:
            raise PlanError(f"model.base {base}: cannot read its config.json ({_one_line(str(error))})") from None
    known = known_model(base)
    if known is not None:
        from transformers import AutoConfig

        config = AutoConfig.for_model(known.model_type, text_config=known.text, vision_config=known.vision, **known.top)
        return config, (
            f"transformers' {type(config).__name__} with {base}'s published sizes (KNOWN_MODELS; nothing downloaded)"
        )
    cached = _cached_config(base)
    if cached is not None:
        return cached, f"{base}'s config.json in the local Hugging Face cache"
    names = ", ".join(sorted(KNOWN_MODELS))
    raise PlanError(
        f"model.base {base}: not a local checkpoint, not in the Hugging Face cache, and not a known architecture "
        f"({names}); plan from a folder holding its config.json"
    )


def _built_vocab(config_json: Path) -> int | None:
    try:
        data = json.loads(config_json.read_text())
    except (OSError, ValueError):
        return None
    vocab = (data.get("text_config") or {}).get("vocab_size", data.get("vocab_size"))
    return vocab if isinstance(vocab, int) and vocab > 0 else None


def _cached_config(hub_id: str) -> Any:
    """``hub_id``'s config from the local Hugging Face cache, or None; never touches the network."""
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", hub_id):
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(hub_id, local_files_only=True)
    except Exception:  # not cached, or not a config transformers knows: the caller says so in one line
        return None


def build_on_meta(config: Any) -> Any:
    """``AutoModelForImageTextToText`` for ``config`` with every parameter on the meta device: shapes, no memory."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        return AutoModelForImageTextToText.from_config(config)  # type: ignore[no-untyped-call]


def model_shape(recipe: Recipe, vocab_size: int | None = None) -> ModelShape:
    """Build the recipe's model on the meta device and read off what ``estimate`` needs (see ``ModelShape``)."""
    from torch import nn

    config, source = model_config(recipe, vocab_size)
    model = build_on_meta(config)
    params = list(model.named_parameters())  # each tensor once: a tied LM head is the embedding
    total = sum(p.numel() for _, p in params)
    vision = sum(p.numel() for name, p in params if "visual" in name or "vision" in name)
    units = [
        sum(p.numel() for p in block.parameters())
        for mod in model.modules()
        if isinstance(mod, nn.ModuleList)
        for block in mod
    ]
    units += [m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)]
    head = model.get_output_embeddings()
    if head is not None:
        units.append(head.weight.numel())
    linears = tuple(
        (name, m.in_features, m.out_features) for name, m in model.named_modules() if isinstance(m, nn.Linear)
    )
    text = config.get_text_config()
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    name = recipe.model.base or f"tiny:{recipe.model.tiny.family if recipe.model.tiny else ''}"
    return ModelShape(
        name=name,
        source=source,
        architecture=type(model).__name__,
        parameters=total,
        vision_parameters=vision,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        kv_dim=kv_heads * head_dim,
        intermediate=text.intermediate_size,
        vocab=text.vocab_size,
        largest_unit=max(units, default=0),
        linears=linears,
    )


def lora_parameters(shape: ModelShape, lora: Mapping[str, Any]) -> int:
    """LoRA's trainable parameters: ``r x (in + out)`` per targeted ``nn.Linear`` (A is r x in, B is out x r).

    Targets are matched as peft does: a string is a regex the module's full name must match; a list names
    module-name suffixes; ``all-linear`` is every Linear but the LM head. The default is ``sft.DEFAULT_LORA_TARGETS``.
    """
    from sketchmind.train.sft import DEFAULT_LORA_TARGETS

    r = int(lora.get("r", 16))
    targets = lora.get("target_modules", DEFAULT_LORA_TARGETS)
    total = 0
    for name, n_in, n_out in shape.linears:
        if targets == "all-linear":
            hit = not name.endswith("lm_head")
        elif isinstance(targets, str):
            hit = re.fullmatch(targets, name) is not None
        else:
            hit = any(name == t or name.endswith("." + t) for t in targets)
        if hit:
            total += r * (n_in + n_out)
    return total


# -------------------------------------------------------------------------------------- distribution


@dataclass(frozen=True)
class Distributed:
    """How accelerate runs the trainer stages: ``kind``, ``processes`` (GPUs) and what is sharded.

    ``shard`` is the ZeRO stage, or FSDP's equivalent: 3 = weights, gradients and optimizer state sharded
    across the GPUs (ZeRO-3, FSDP FULL_SHARD / reshard_after_forward), 2 = gradients and optimizer state
    (ZeRO-2, FSDP SHARD_GRAD_OP), 1 = optimizer state (ZeRO-1), 0 = nothing (DDP, one GPU, NO_SHARD).
    """

    kind: Literal["deepspeed", "fsdp", "ddp", "single"]
    processes: int = 1
    shard: int = 0
    mixed_precision: str = "bf16"
    offload_params: bool = False
    offload_optimizer: bool = False
    source: str = "one process, no accelerate config"

    def describe(self) -> str:
        kind = {
            "deepspeed": f"DeepSpeed ZeRO-{self.shard}",
            "fsdp": {3: "FSDP full shard", 2: "FSDP shard-grad-op", 0: "FSDP no shard"}.get(self.shard, "FSDP"),
            "ddp": "DDP (nothing sharded)",
            "single": "one process",
        }[self.kind]
        gpus = f"{self.processes} GPU{'s' if self.processes != 1 else ''}"
        offload = [w for w, on in (("params", self.offload_params), ("optimizer", self.offload_optimizer)) if on]
        extra = f", {' and '.join(offload)} offloaded to CPU" if offload else ""
        precision = "no mixed precision" if self.mixed_precision == "no" else f"{self.mixed_precision} mixed precision"
        return f"{kind}, {gpus}, {precision}{extra}"


_FSDP_STRATEGIES = {
    "FULL_SHARD": 3,
    "HYBRID_SHARD": 3,  # full shard within a node, which is what one GPU's memory sees
    "SHARD_GRAD_OP": 2,
    "_HYBRID_SHARD_ZERO2": 2,
    "NO_SHARD": 0,
    "1": 3,
    "2": 2,
    "3": 0,
    "4": 3,
    "5": 2,
}


def read_accelerate_config(path: str | Path) -> Distributed:
    """An accelerate config file (``accelerate config``'s YAML) as a ``Distributed``; ``PlanError`` if unusable.

    DeepSpeed: ``deepspeed_config.zero_stage`` (or the ``zero_optimization.stage`` of its
    ``deepspeed_config_file``) and the offload devices. FSDP: ``fsdp_sharding_strategy``, or for FSDP2
    ``fsdp_reshard_after_forward`` (true: full shard; false: weights stay gathered from forward to backward,
    as SHARD_GRAD_OP), and ``fsdp_offload_params``. ``num_processes`` GPUs, ``mixed_precision``.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise PlanError(f"--accelerate-config {path}: no such file")
    try:
        data = yaml.safe_load(file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise PlanError(
            f"--accelerate-config {path}: not a readable YAML file ({_one_line(str(error), 100)})"
        ) from None
    if not isinstance(data, dict):
        raise PlanError(f"--accelerate-config {path}: not an accelerate config (want a mapping)")
    try:
        processes = int(data.get("num_processes") or 1)
    except (TypeError, ValueError):
        raise PlanError(f"--accelerate-config {path}: num_processes is not a number") from None
    if processes < 1:
        raise PlanError(f"--accelerate-config {path}: num_processes must be at least 1")
    precision = str(data.get("mixed_precision") or "no").lower()
    kind = str(data.get("distributed_type") or "NO").upper()
    if kind == "DEEPSPEED":
        ds = data.get("deepspeed_config") or {}
        stage, offload_p, offload_o = (
            ds.get("zero_stage"),
            ds.get("offload_param_device"),
            ds.get("offload_optimizer_device"),
        )
        if ds.get("deepspeed_config_file"):
            stage, offload_p, offload_o, precision = _deepspeed_json(
                file.parent, ds["deepspeed_config_file"], precision
            )
        try:
            shard = int(stage if stage is not None else 0)
        except (TypeError, ValueError):
            raise PlanError(f"--accelerate-config {path}: zero_stage {stage!r} is not 0-3") from None
        if shard not in (0, 1, 2, 3):
            raise PlanError(f"--accelerate-config {path}: zero_stage {shard} is not 0-3")
        return Distributed(
            "deepspeed",
            processes,
            shard,
            precision,
            offload_params=str(offload_p or "none").lower() not in ("none", ""),
            offload_optimizer=str(offload_o or "none").lower() not in ("none", ""),
            source=str(path),
        )
    if kind == "FSDP":
        fsdp = data.get("fsdp_config") or {}
        strategy = fsdp.get("fsdp_sharding_strategy")
        if strategy is not None:
            known = _FSDP_STRATEGIES.get(str(strategy).upper())
            if known is None:
                raise PlanError(f"--accelerate-config {path}: unknown fsdp_sharding_strategy {strategy!r}")
            shard = known
        else:
            shard = 3 if fsdp.get("fsdp_reshard_after_forward", True) else 2
        offload = bool(fsdp.get("fsdp_offload_params", False))
        return Distributed("fsdp", processes, shard, precision, offload, offload, source=str(path))
    if kind in ("MULTI_GPU", "NO"):
        return Distributed("ddp" if processes > 1 else "single", processes, 0, precision, source=str(path))
    raise PlanError(
        f"--accelerate-config {path}: distributed_type {kind} is not planned (DEEPSPEED, FSDP, MULTI_GPU, NO)"
    )


def _deepspeed_json(folder: Path, name: str, precision: str) -> tuple[Any, Any, Any, str]:
    file = Path(name) if Path(name).is_absolute() else folder / name
    try:
        ds = json.loads(file.read_text())
    except (OSError, ValueError):
        raise PlanError(f"deepspeed_config_file {name}: not a readable JSON file") from None
    zero = ds.get("zero_optimization") or {}
    offload_p = (zero.get("offload_param") or {}).get("device")
    offload_o = (zero.get("offload_optimizer") or {}).get("device")
    if (ds.get("bf16") or {}).get("enabled") in (True, "auto"):
        precision = "bf16" if precision == "no" else precision
    return zero.get("stage", 0), offload_p, offload_o, precision


def default_distribution(recipe: Recipe) -> Distributed:
    """A hub model's recipe runs under ``configs/accelerate/zero3.yaml`` (docs/training.md); a tiny one in
    one process, as ``make policy`` trains it (bf16 autocast on a GPU)."""
    if recipe.model.tiny is None:
        if DEFAULT_ACCELERATE.is_file():
            return read_accelerate_config(DEFAULT_ACCELERATE)
        return Distributed("deepspeed", 8, 3, "bf16", source="ZeRO-3 on 8 GPUs (configs/accelerate/zero3.yaml's)")
    return Distributed(
        "single", 1, 0, "bf16", source="no accelerate config: a tiny recipe trains as `make policy` runs it"
    )


# ------------------------------------------------------------------------------------------ the stages


@dataclass(frozen=True)
class StagePlan:
    """One trainer stage as the memory model sees it: per-GPU ``batch`` x ``tokens``, loss on ``logit_tokens``
    of each sequence, LoRA, activation checkpointing, GRPO's colocated vLLM share and DPO's or GRPO's reference
    model."""

    name: str
    batch: int
    tokens: int
    logit_tokens: int
    checkpointing: bool = True
    lora: Mapping[str, Any] | None = None
    vllm_fraction: float = 0.0  # of the card's memory, held by a colocated vLLM engine
    reference: bool = False  # DPO, and GRPO with beta > 0, keep a frozen reference model (none with LoRA)
    notes: tuple[str, ...] = ()


def _checkpointing(trl: Mapping[str, Any]) -> bool:
    """Trainer stages turn activation checkpointing on on CUDA (``trl_config.runner_defaults``) unless
    the section's ``trl:`` turns it off under either of its names."""
    for key in ("activation_checkpointing", "gradient_checkpointing"):
        if key in trl and trl[key] is not None:
            return bool(trl[key])
    return True


def stage_plans(recipe: Recipe) -> list[StagePlan]:
    """The recipe's trainer stages (perceive, search, sft, sft2, dpo, grpo) with the settings that size their memory.

    The baselines train with sft's settings (the same column applies); the latent stages are a
    single-process loop of one row per step, not planned here.
    """
    stages = recipe.stages
    plans: list[StagePlan] = []
    fresh_maps = (
        ("perceive", stages.perceive, "a map transcription is shorter"),
        ("search", stages.search, "an 8x8 search in words is about 600"),
    )
    for name, spec, shorter in fresh_maps:
        if spec is not None:
            batch = int(spec.trl.get("per_device_train_batch_size", spec.batch_size))
            note = f"{name}: {DEFAULT_SFT_LENGTH} tokens assumed ({shorter})"
            tokens = DEFAULT_SFT_LENGTH
            plans.append(StagePlan(name, batch, tokens, tokens, _checkpointing(spec.trl), notes=(note,)))
    sfts = [("sft", stages.sft)] + ([("sft2", stages.rejection.sft)] if stages.rejection is not None else [])
    for name, sft in ((name, sft) for name, sft in sfts if sft is not None):
        batch = int(sft.trl.get("per_device_train_batch_size", sft.batch_size))
        tokens = sft.max_length or DEFAULT_SFT_LENGTH
        assumed = () if sft.max_length else (f"{name}: no max_length, {DEFAULT_SFT_LENGTH} tokens assumed",)
        plans.append(StagePlan(name, batch, tokens, tokens, _checkpointing(sft.trl), sft.lora, notes=assumed))
    if stages.dpo is not None:
        d = stages.dpo
        # Each pair is two sequences in one forward (its chosen and its rejected trajectory).
        batch = 2 * int(d.trl.get("per_device_train_batch_size", d.batch_size))
        tokens = d.max_length or DEFAULT_SFT_LENGTH
        notes = [
            "dpo: each pair is two sequences (chosen and rejected), so the batch counts both",
            "dpo: TRL's fused LM head scores the tokens in tiles, so no full logits are held (none counted)",
        ]
        if not d.max_length:
            notes.append(f"dpo: no max_length, {DEFAULT_SFT_LENGTH} tokens assumed")
        # Without LoRA the reference is a second copy of the weights; with it, the same weights with the adapter off.
        plans.append(
            StagePlan(
                "dpo",
                batch,
                tokens,
                0,
                _checkpointing(d.trl),
                d.lora,
                reference=d.lora is None,
                notes=tuple(notes),
            )
        )
    if stages.grpo is not None:
        g = stages.grpo
        args = GRPO_DEFAULTS | g.trl_args()
        prompt = int(args.get("max_prompt_length") or DEFAULT_PROMPT_LENGTH)
        notes = [] if args.get("max_prompt_length") else [f"grpo: prompts of {DEFAULT_PROMPT_LENGTH} tokens assumed"]
        vllm = 0.0
        if g.use_vllm and args["vllm_mode"] == "colocate":
            vllm = float(args["vllm_gpu_memory_utilization"])
            notes.append(f"grpo: colocated vLLM holds {vllm:.0%} of each card (vllm_gpu_memory_utilization)")
        plans.append(
            StagePlan(
                "grpo",
                int(args["per_device_train_batch_size"]),
                prompt + g.max_completion_length,
                g.max_completion_length,  # TRL computes logits for the completion only (logits_to_keep)
                _checkpointing(args),
                g.lora,
                vllm_fraction=vllm,
                reference=float(args.get("beta") or 0.0) > 0 and g.lora is None,
                notes=tuple(notes),
            )
        )
    return plans


# -------------------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU, by what holds them; ``vllm_fraction`` of the card is added once the card is known."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    gathered: int
    reference: int
    runtime: int
    trainable: int
    vllm_fraction: float = 0.0

    def total(self, card: int | None = None) -> int:
        parts = self.weights + self.gradients + self.optimizer + self.activations + self.gathered
        vllm = round(self.vllm_fraction * card) if card else 0
        return parts + self.reference + self.runtime + vllm


def bytes_per_parameter(dist: Distributed, weight_bytes: int) -> tuple[int, int, int, int]:
    """(frozen weight, trainable weight, gradient, optimizer state) bytes per parameter, before sharding.

    - DeepSpeed with bf16: the engine casts the module to bf16 whatever dtype it was loaded in (2 B weights,
      2 B gradients) and its optimizer keeps an fp32 master copy plus AdamW's two fp32 moments (4 + 8 = 12 B):
      ZeRO's 16 B per trainable parameter.
    - FSDP with mixed precision: accelerate upcasts trainable parameters to fp32 before sharding (so the
      optimizer steps fp32 weights, no separate master copy): 4 B weights, 4 B gradients, 8 B moments, the
      same 16 B; frozen parameters stay in the loaded dtype. Compute runs on bf16 copies of gathered layers.
    - Otherwise (one GPU, DDP, no mixed precision) torch's AdamW keeps its moments in the parameter's dtype:
      weights, gradients and each moment in the loaded dtype (``model.dtype``: 2 B for bfloat16, 4 B unset).
    """
    mixed = dist.mixed_precision in ("bf16", "fp16")
    if dist.kind == "deepspeed" and mixed:
        return 2, 2, 2, 4 + 8
    if dist.kind == "deepspeed":
        return weight_bytes, weight_bytes, weight_bytes, 8
    if dist.kind == "fsdp" and mixed:
        return weight_bytes, 4, 4, 8
    return weight_bytes, weight_bytes, weight_bytes, 2 * weight_bytes


def activation_bytes(shape: ModelShape, stage: StagePlan, compute_bytes: int) -> int:
    """Activations kept for the backward pass on one GPU, plus the logits' loss buffers.

    Per token, a decoder layer keeps (flash / SDPA attention: no seq x seq score matrix) its input and the
    post-attention residual (2h), the two RMSNorm outputs (2h), Q (h) and K, V (2 x kv_dim) for attention's
    backward, the attention output (h, o_proj's input) and the MLP's gate, up, SiLU(gate) and product
    (4 x intermediate): ``6h + 2 kv_dim + 4 I`` values in the compute dtype.
    With activation checkpointing a layer keeps only its input (h per token) and one layer at a time is
    recomputed in full during the backward pass: ``L x h + (6h + 2 kv_dim + 4 I)``; without it, L full layers.
    The loss keeps the logits in the compute dtype, their fp32 upcast (transformers' loss) and that
    upcast's fp32 gradient: ``vocab x (compute + 4 + 4)`` bytes per token the loss sees (GRPO: the completion).
    The vision tower's activations are left out: a few images' patches next to thousands of text tokens.
    """
    per_token_layer = 6 * shape.hidden + 2 * shape.kv_dim + 4 * shape.intermediate
    tokens = stage.batch * stage.tokens
    if stage.checkpointing:
        layers = tokens * (shape.layers * shape.hidden + per_token_layer)
    else:
        layers = tokens * shape.layers * per_token_layer
    return layers * compute_bytes + logits_bytes(shape, stage, compute_bytes)


def logits_bytes(shape: ModelShape, stage: StagePlan, compute_bytes: int) -> int:
    """The loss's share of ``activation_bytes``: logits, their fp32 upcast and its gradient, per token scored."""
    return stage.batch * stage.logit_tokens * shape.vocab * (compute_bytes + 4 + 4)


def estimate(shape: ModelShape, dist: Distributed, stage: StagePlan, weight_bytes: int) -> Memory:
    """Memory per GPU of ``stage`` under ``dist``, for weights loaded ``weight_bytes`` per parameter.

    With P parameters of which T train (all of them, or LoRA's adapters: the frozen base gets no gradients
    nor optimizer state), N GPUs and ``bytes_per_parameter``'s (frozen w, trainable w, g, o):

    - weights     = (T x w_trainable + (P - T) x w_frozen) / (N if ZeRO-3 / full shard else 1); 0 when offloaded
    - gradients   = T x g / (N if ZeRO-2 or more else 1)
    - optimizer   = T x o / (N if ZeRO-1 or more else 1); 0 when the optimizer is offloaded
    - gathered    = 2 x the largest layer (or embedding) x compute bytes under ZeRO-3 / full shard: the layer
      being computed plus the one prefetched, all-gathered from every GPU's shard
    - activations = ``activation_bytes`` (compute bytes: 2 under bf16, else the weights')
    - reference   = P x compute bytes, sharded like the weights (GRPO with beta > 0 and no LoRA)
    - runtime     = ``RUNTIME_BYTES`` (CUDA context, NCCL, allocator slack)
    - vLLM        = vllm_gpu_memory_utilization x the card (GRPO colocate), added once the card is known
    """
    lora = lora_parameters(shape, stage.lora) if stage.lora is not None else 0
    params = shape.parameters + lora
    trainable = lora if stage.lora is not None else shape.parameters
    frozen_w, train_w, grad_b, opt_b = bytes_per_parameter(dist, weight_bytes)
    n = dist.processes
    compute = 2 if dist.mixed_precision in ("bf16", "fp16") or weight_bytes == 2 else weight_bytes

    def sharded(total: int, level: int) -> int:
        return -(-total // n) if dist.shard >= level else total  # ceil: each rank holds a whole shard

    weights = 0 if dist.offload_params else sharded(trainable * train_w + (params - trainable) * frozen_w, 3)
    gradients = 0 if dist.kind == "fsdp" and dist.offload_params else sharded(trainable * grad_b, 2)
    optimizer = 0 if dist.offload_optimizer else sharded(trainable * opt_b, 1)
    gathered = 2 * shape.largest_unit * compute if dist.shard >= 3 and dist.kind in ("deepspeed", "fsdp") else 0
    reference = sharded(params * compute, 3) if stage.reference else 0
    return Memory(
        weights=weights,
        gradients=gradients,
        optimizer=optimizer,
        activations=activation_bytes(shape, stage, compute),
        gathered=gathered,
        reference=reference,
        runtime=RUNTIME_BYTES,
        trainable=trainable,
        vllm_fraction=stage.vllm_fraction,
    )


# ------------------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Plan:
    recipe: str
    shape: ModelShape
    dist: Distributed
    dtype: str
    recipe_dtype: bool  # model.dtype was set (else the float32 default)
    stages: list[StagePlan]
    memory: dict[str, Memory]
    notes: list[str]

    def peak(self, card: int | None = None) -> tuple[str, int]:
        """The stage needing the most memory per GPU, and how much."""
        name = max(self.memory, key=lambda s: self.memory[s].total(card))
        return name, self.memory[name].total(card)


def make_plan(
    recipe: Recipe,
    *,
    accelerate_config: str | Path | None = None,
    dist: Distributed | None = None,
    vocab_size: int | None = None,
) -> Plan:
    """The recipe's plan: its model's shape, the distribution, and each trainer stage's memory per GPU."""
    from sketchmind.train.weights import check_training_dtype

    if dist is None:
        dist = read_accelerate_config(accelerate_config) if accelerate_config else default_distribution(recipe)
    shape = model_shape(recipe, vocab_size)
    dtype = check_training_dtype(recipe.model.dtype)
    weight_bytes = 2 if dtype == "bfloat16" else 4
    stages = stage_plans(recipe)
    memory = {s.name: estimate(shape, dist, s, weight_bytes) for s in stages}
    notes = [note for s in stages for note in s.notes]
    compute = 2 if dist.mixed_precision in ("bf16", "fp16") or weight_bytes == 2 else weight_bytes
    for s in stages:  # a big vocabulary over long sequences: say where most of the activations go
        logits = logits_bytes(shape, s, compute)
        if logits * 2 > memory[s.name].activations:
            notes.append(
                f"{s.name}: {gb(logits)} of the activations are the loss's logits ({shape.vocab:,} x "
                f"{s.batch * s.logit_tokens:,} tokens); a fused loss (trl: {{use_liger_kernel: true}}) "
                "would avoid most (not counted here)"
            )
    if recipe.stages.baselines:
        notes.append(f"baselines ({', '.join(recipe.stages.baselines)}): as sft")
    if recipe.stages.latent is not None:
        notes.append("latent1/latent2: a one-row-per-step loop, not planned")
    return Plan(recipe.name, shape, dist, dtype, recipe.model.dtype is not None, stages, memory, notes)


def fewest_gpus(plan: Plan, card: int, most: int = 64) -> int | None:
    """The fewest GPUs (same kind of sharding) on which every stage fits ``card`` bytes, or None up to ``most``."""
    if plan.dist.shard == 0:
        return None  # nothing is sharded: more GPUs do not lower the memory per GPU
    weight_bytes = 2 if plan.dtype == "bfloat16" else 4
    for n in range(1, most + 1):
        dist = replace(plan.dist, processes=n)
        if all(estimate(plan.shape, dist, s, weight_bytes).total(card) <= card for s in plan.stages):
            return n
    return None


def verdict(plan: Plan, card: int) -> str:
    """One line: does the run fit a ``card``-byte GPU, at which peak, and if not, on how many GPUs it would."""
    stage, need = plan.peak(card)
    size = card_size(card)
    if need <= card:
        return f"fits: every stage fits in {size} per GPU (peak {gb(need)} in {stage}, {gb(card - need)} to spare)"
    fix = ""
    if (n := fewest_gpus(plan, card)) is not None and n > plan.dist.processes:
        fix = f"; fits on {n} GPUs with the same sharding"
    elif plan.dist.shard == 0 and plan.dist.kind != "deepspeed":
        fix = "; shard it (--accelerate-config configs/accelerate/zero3.yaml or fsdp.yaml)"
    return f"does not fit: {stage} needs {gb(need)} per GPU, over {size} by {gb(need - card)}{fix}"


def gb(value: float) -> str:
    """Bytes for the table: GB (10^9) to one decimal, MiB below a tenth of a GB, "-" for none."""
    if value == 0:
        return "-"
    return f"{value / GB:.1f} GB" if value >= GB / 10 else f"{value / 2**20:.1f} MiB"


def card_size(card: int) -> str:
    """A card's memory as the user gave it: 80 GB, 141 GB, 85.9 GB."""
    return f"{card / GB:.1f}".removesuffix(".0") + " GB"


def _count(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} B"
    if n >= 10**6:
        return f"{n / 1e6:.2f} M"
    return f"{n:,}"


def parse_gpu_memory(text: str) -> int:
    """``80GB``, ``80 GB``, ``141GB``, ``80GiB``, ``81920MiB`` or a bare number of GB, in bytes.

    GB are 10^9 bytes and GiB 2^30: a card sold as "80GB" has 80 GiB, so ``80GB`` leaves some margin.
    Raises ``argparse.ArgumentTypeError`` (one line) for anything else, so argparse reports it as usage.
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(gb|gib|g|mb|mib|tb|tib)?\s*", text, re.IGNORECASE)
    units = {"gb": GB, "g": GB, "gib": GIB, "mb": 10**6, "mib": 2**20, "tb": 10**12, "tib": 2**40, None: GB}
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size (e.g. 80GB, 141GB, 80GiB)")
    value = float(match.group(1)) * units[match.group(2).lower() if match.group(2) else None]
    if not 0 < value < 2**50:
        raise argparse.ArgumentTypeError(f"{text!r} is not a memory size a GPU has")
    return int(value)


def print_plan(plan: Plan, console: Console, gpu_memory: int | None = None) -> None:
    """The plan as a few lines, a table (one column per trainer stage), the assumptions and the verdict."""
    from rich.markup import escape
    from rich.table import Table

    shape, dist = plan.shape, plan.dist

    def print_line(text: str) -> None:
        console.print(escape(text), soft_wrap=True, highlight=False)

    print_line(f"{plan.recipe}: {shape.name} ({shape.architecture}, built on the meta device: no weights read)")
    print_line(f"  sizes: {shape.source}")
    print_line(
        f"  parameters: {shape.parameters:,} ({_count(shape.parameters)}; "
        f"vision tower {_count(shape.vision_parameters)}; "
        f"language model {shape.layers} layers, hidden {shape.hidden}, vocab {shape.vocab:,})"
    )
    print_line(f"  weights: {plan.dtype} ({'model.dtype' if plan.recipe_dtype else 'model.dtype unset'})")
    print_line(f"  accelerate: {dist.describe()} ({_relative(dist.source)})")

    table = Table(title="memory per GPU", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("")
    for s in plan.stages:
        table.add_column(s.name, justify="right")
    mem = [plan.memory[s.name] for s in plan.stages]
    table.add_row("batch x tokens", *[f"{s.batch} x {s.tokens:,}" for s in plan.stages])
    table.add_row(
        "trainable",
        *[_count(m.trainable) + (" (LoRA)" if s.lora else "") for s, m in zip(plan.stages, mem, strict=True)],
    )
    table.add_row("checkpointing", *["on" if s.checkpointing else "off" for s in plan.stages])
    table.add_row("weights", *[gb(m.weights) for m in mem])
    table.add_row("gradients", *[gb(m.gradients) for m in mem])
    table.add_row("optimizer state", *[gb(m.optimizer) for m in mem])
    table.add_row("activations", *[gb(m.activations) for m in mem])
    table.add_row("gathered layers", *[gb(m.gathered) for m in mem])
    if any(m.reference for m in mem):
        table.add_row("reference model", *[gb(m.reference) for m in mem])
    table.add_row("runtime", *[gb(m.runtime) for m in mem])
    if any(m.vllm_fraction for m in mem):
        cells = [
            (gb(m.vllm_fraction * gpu_memory) if gpu_memory else f"{m.vllm_fraction:.0%} of card")
            if m.vllm_fraction
            else "-"
            for m in mem
        ]
        table.add_row("vLLM (colocate)", *cells)
    table.add_row("total", *[gb(m.total(gpu_memory)) for m in mem], style="bold")
    console.print(table)
    for note in plan.notes:
        print_line(f"  note: {note}")
    print_line(
        "  assumes: AdamW; ZeRO/FSDP mixed precision keep fp32 master weights and moments (16 B per trained "
        "parameter); flash/SDPA attention; estimates, not measurements (train/plan.py)"
    )
    if gpu_memory is not None:
        if (
            any(m.vllm_fraction for m in mem)
            and plan.shape.parameters * 2 > max(m.vllm_fraction for m in mem) * gpu_memory
        ):
            print_line("  warning: the colocated vLLM share is smaller than the bf16 weights it must hold")
        console.print(escape(verdict(plan, gpu_memory)), style="bold", soft_wrap=True, highlight=False)


def plan_command(
    recipe_path: str,
    console: Console,
    *,
    gpu_memory: int | None = None,
    accelerate_config: str | None = None,
) -> int:
    """``sketchmind train RECIPE --plan``: load, plan and print; ``PlanError`` / ``RecipeError`` are one line."""
    from sketchmind.train.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    plan = make_plan(recipe, accelerate_config=accelerate_config)
    print_plan(plan, console, gpu_memory)
    return 0


def _relative(source: str) -> str:
    """A config path relative to the working directory when it is under it (as the user would type it)."""
    try:
        return str(Path(source).resolve().relative_to(Path.cwd()))
    except (OSError, ValueError):
        return source


def _one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit]


__all__: Sequence[str] = (
    "KNOWN_MODELS",
    "Distributed",
    "Memory",
    "ModelShape",
    "Plan",
    "PlanError",
    "StagePlan",
    "estimate",
    "make_plan",
    "parse_gpu_memory",
    "print_plan",
    "read_accelerate_config",
)
