"""``sketchmind train RECIPE --plan`` (issue 20): parameters and memory per GPU, sized on the meta device.

The tiny recipe's count is checked three ways (a hand count of the Qwen2.5-VL architecture, a real model built
offline by ``models/tiny.py``, and the shipped policy's manifest); the memory model against the formulas in
``train/plan.py`` for a hand-computed case; every shipped recipe must plan; the CLI prints the verdict, and bad
input is one line and exit 2.
"""

from __future__ import annotations

import importlib.util
import json
from io import StringIO
from pathlib import Path

import pytest

from sketchmind.cli import main
from sketchmind.train.plan import (
    GB,
    RUNTIME_BYTES,
    Distributed,
    ModelShape,
    StagePlan,
    estimate,
    lora_parameters,
    make_plan,
    model_shape,
    parse_gpu_memory,
    print_plan,
    read_accelerate_config,
)
from sketchmind.train.recipe import load_recipe

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("torch", "transformers")),
    reason="the train extra is not installed",
)
ROOT = Path(__file__).resolve().parents[1]
POLICIES = ROOT / "policies"
TINY = POLICIES / "sketchmind-tiny.yaml"
QWEN25_7B = POLICIES / "qwen2.5-vl-7b.yaml"


def qwen25_vl_tiny_hand_count(vocab: int, hidden: int, layers: int) -> int:
    """Parameters of models/tiny.py's Qwen2.5-VL, counted by hand from the architecture.

    Text: embedding (tied LM head), per layer q/k/v with biases (4 heads, 2 KV heads: K and V are hidden/2
    wide), o_proj, gate/up/down (intermediate 4 x hidden) and two RMSNorms; a final norm. Vision (half as
    wide, 2 blocks, MLP 4x): a bias-free 3 x 2 x 14 x 14 patch conv, per block two norms, qkv and proj with
    biases and a gated MLP with biases; the merger's norm and its two linears over 2 x 2 merged patches.
    """
    h, kv, inter = hidden, hidden // 2, 4 * hidden
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    text = vocab * h + layers * layer + h
    vh, vi = hidden // 2, 2 * hidden
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
    merger = vh + (4 * vh * 4 * vh + 4 * vh) + (4 * vh * h + h)
    return text + 3 * 2 * 14 * 14 * vh + 2 * block + merger


def test_the_tiny_recipe_counts_what_models_tiny_builds(tmp_path: Path) -> None:
    from transformers import AutoModelForImageTextToText

    from sketchmind.models.tiny import build_tiny

    recipe = load_recipe(TINY)
    tiny = recipe.model.tiny
    assert tiny is not None
    built = build_tiny(
        tiny.family,
        tmp_path / "tiny",
        vocab_size=tiny.vocab_size,
        hidden_size=tiny.hidden_size,
        layers=tiny.layers,
        max_pixels=tiny.max_pixels,
        init_std=tiny.init_std,
        rope_theta=tiny.rope_theta,
    )
    meta = json.loads((built / "sketchmind_tiny.json").read_text())
    real = AutoModelForImageTextToText.from_pretrained(built)
    real_count = sum(p.numel() for p in real.parameters())
    # The tokenizer trained on the corpus may stop short of vocab_size: the plan takes the trained size.
    shape = model_shape(recipe, vocab_size=meta["vocab_size"])
    assert shape.parameters == real_count == meta["parameters"]
    assert shape.parameters == qwen25_vl_tiny_hand_count(meta["vocab_size"], tiny.hidden_size, tiny.layers)
    assert (shape.layers, shape.hidden, shape.kv_dim, shape.intermediate) == (4, 256, 128, 1024)


def test_the_shipped_tiny_policy_has_the_planned_count() -> None:
    manifest = json.loads((POLICIES / "sketchmind-tiny" / "manifest.json").read_text())
    config = json.loads((POLICIES / "sketchmind-tiny" / "draw" / "config.json").read_text())
    vocab = config["text_config"]["vocab_size"]
    shape = model_shape(load_recipe(TINY), vocab_size=vocab)
    assert shape.parameters == manifest["policies"]["draw"]["parameters"] == qwen25_vl_tiny_hand_count(vocab, 256, 4)


# A model with round numbers: 1 B parameters, 10 layers of hidden 1000 (K/V 200 wide, MLP 4000), vocab 10000.
SHAPE = ModelShape(
    name="hand",
    source="by hand",
    architecture="Hand",
    parameters=10**9,
    vision_parameters=0,
    layers=10,
    hidden=1000,
    kv_dim=200,
    intermediate=4000,
    vocab=10_000,
    largest_unit=50_000_000,
    linears=(("model.language_model.layers.0.self_attn.q_proj", 1000, 1000), ("lm_head", 1000, 10_000)),
)
SFT = StagePlan("sft", batch=2, tokens=1000, logit_tokens=1000, checkpointing=True)
ZERO3 = Distributed("deepspeed", processes=8, shard=3, mixed_precision="bf16")


def test_zero3_memory_follows_the_formulas() -> None:
    m = estimate(SHAPE, ZERO3, SFT, weight_bytes=2)
    assert m.weights == 10**9 * 2 // 8  # bf16 weights, sharded 8 ways
    assert m.gradients == 10**9 * 2 // 8  # bf16 gradients, sharded
    assert m.optimizer == 10**9 * 12 // 8  # fp32 master (4) + AdamW's two fp32 moments (8), sharded
    assert m.gathered == 2 * 50_000_000 * 2  # the layer computed and the one prefetched, in bf16
    # checkpointing: each layer's input (h per token) + one layer recomputed (6h + 2 kv + 4 I), bf16
    per_token_layer = 6 * 1000 + 2 * 200 + 4 * 4000
    layers = 2 * 1000 * (10 * 1000 + per_token_layer) * 2
    logits = 2 * 1000 * 10_000 * (2 + 4 + 4)  # bf16 logits, their fp32 upcast and its fp32 gradient
    assert m.activations == layers + logits == 129_600_000 + 200_000_000
    assert m.runtime == RUNTIME_BYTES
    assert m.total() == 250_000_000 * 2 + 1_500_000_000 + 200_000_000 + 329_600_000 + RUNTIME_BYTES

    no_checkpointing = estimate(SHAPE, ZERO3, StagePlan("sft", 2, 1000, 1000, checkpointing=False), 2)
    assert no_checkpointing.activations == 2 * 1000 * 10 * per_token_layer * 2 + logits


def test_other_shardings_and_lora_follow_the_formulas() -> None:
    fsdp = Distributed("fsdp", processes=4, shard=3, mixed_precision="bf16")
    m = estimate(SHAPE, fsdp, SFT, weight_bytes=2)  # accelerate upcasts trainable weights to fp32 under FSDP
    assert (m.weights, m.gradients, m.optimizer) == (10**9 * 4 // 4, 10**9 * 4 // 4, 10**9 * 8 // 4)

    single = Distributed("single", processes=1, shard=0, mixed_precision="no")
    m = estimate(SHAPE, single, SFT, weight_bytes=4)  # float32, torch AdamW: moments in the weights' dtype
    assert (m.weights, m.gradients, m.optimizer, m.gathered) == (4 * 10**9, 4 * 10**9, 8 * 10**9, 0)

    zero2 = Distributed("deepspeed", processes=8, shard=2, mixed_precision="bf16")
    m = estimate(SHAPE, zero2, SFT, weight_bytes=2)
    assert (m.weights, m.gradients, m.optimizer, m.gathered) == (2 * 10**9, 2 * 10**9 // 8, 12 * 10**9 // 8, 0)

    lora = {"r": 8, "target_modules": ["q_proj"]}
    assert lora_parameters(SHAPE, lora) == 8 * (1000 + 1000)
    m = estimate(SHAPE, ZERO3, StagePlan("sft", 2, 1000, 1000, lora=lora), weight_bytes=2)
    assert m.trainable == 16_000
    assert m.weights == -(-(10**9 + 16_000) * 2 // 8)
    assert (m.gradients, m.optimizer) == (16_000 * 2 // 8, 16_000 * 12 // 8)

    grpo = StagePlan("grpo", 8, 2048, 1024, vllm_fraction=0.3)
    m = estimate(SHAPE, ZERO3, grpo, weight_bytes=2)
    assert m.total(80 * GB) == m.total() + 24 * GB


@pytest.mark.parametrize("recipe", sorted(POLICIES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_plans(recipe: Path) -> None:
    plan = make_plan(load_recipe(recipe))
    assert plan.shape.parameters > 0 and plan.stages
    assert all(m.total() > RUNTIME_BYTES for m in plan.memory.values())
    console_out = StringIO()
    from rich.console import Console

    print_plan(plan, Console(file=console_out, width=200), gpu_memory=80 * GB)
    text = console_out.getvalue()
    assert f"{plan.shape.parameters:,}" in text and "optimizer state" in text
    assert "fits" in text.splitlines()[-1]


def test_the_7b_and_8b_recipes_have_their_published_sizes() -> None:
    qwen25 = make_plan(load_recipe(QWEN25_7B))
    assert qwen25.shape.parameters == 8_292_166_656  # Qwen2.5-VL-7B-Instruct: "8.29B params"
    assert (qwen25.shape.layers, qwen25.shape.hidden, qwen25.shape.vocab) == (28, 3584, 152064)
    assert (qwen25.dist.kind, qwen25.dist.processes, qwen25.dist.shard) == ("deepspeed", 8, 3)
    qwen3 = make_plan(load_recipe(POLICIES / "qwen3-vl-8b.yaml"))
    assert qwen3.shape.parameters == 8_767_123_696  # Qwen3-VL-8B-Instruct: "8.77B params"
    assert (qwen3.shape.layers, qwen3.shape.hidden, qwen3.shape.kv_dim) == (36, 4096, 1024)


def test_accelerate_configs_are_read() -> None:
    zero3 = read_accelerate_config(ROOT / "configs" / "accelerate" / "zero3.yaml")
    assert (zero3.kind, zero3.processes, zero3.shard, zero3.mixed_precision) == ("deepspeed", 8, 3, "bf16")
    fsdp = read_accelerate_config(ROOT / "configs" / "accelerate" / "fsdp.yaml")
    assert (fsdp.kind, fsdp.processes, fsdp.shard) == ("fsdp", 8, 3)


def test_grpo_defaults_are_trls() -> None:
    pytest.importorskip("trl")
    import dataclasses

    from trl import GRPOConfig

    from sketchmind.train.plan import GRPO_DEFAULTS

    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert {k: defaults[k] for k in GRPO_DEFAULTS} == GRPO_DEFAULTS


def test_gpu_memory_sizes() -> None:
    assert parse_gpu_memory("80GB") == 80 * GB
    assert parse_gpu_memory("141 gb") == 141 * GB
    assert parse_gpu_memory("80GiB") == 80 * 2**30
    assert parse_gpu_memory("24") == 24 * GB


def test_the_cli_prints_the_plan_and_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", str(QWEN25_7B), "--plan", "--gpu-memory", "80GB"]) == 0
    text = capsys.readouterr().out
    assert "8,292,166,656" in text and "DeepSpeed ZeRO-3, 8 GPUs" in text
    assert text.strip().splitlines()[-1].startswith("fits: every stage fits in 80 GB per GPU")

    assert main(["train", str(QWEN25_7B), "--plan", "--gpu-memory", "40GB"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("does not fit: sft needs") and "fits on" in last


def test_fsdp_and_a_tiny_recipe_plan_from_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    fsdp = str(ROOT / "configs" / "accelerate" / "fsdp.yaml")
    assert main(["train", str(TINY), "--plan", "--accelerate-config", fsdp, "--gpu-memory", "24GB"]) == 0
    text = capsys.readouterr().out
    assert "FSDP full shard, 8 GPUs" in text and "search" in text and "fits:" in text


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["train", "policies/nope.yaml", "--plan"], "no such recipe file"),
        (["train", str(QWEN25_7B), "--plan", "--gpu-memory", "eighty"], "not a memory size"),
        (["train", str(QWEN25_7B), "--plan", "--gpu-memory", "0GB"], "not a memory size"),
        (["train", str(QWEN25_7B), "--plan", "--accelerate-config", "nope.yaml"], "no such file"),
        (["train", str(QWEN25_7B), "--gpu-memory", "80GB"], "use them with --plan"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in captured.err


def test_an_unknown_hub_model_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\noutput: runs/r\nmodel: {base: someone/Unknown-VL-3B}\n")
    assert main(["train", str(recipe), "--plan"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "not a known architecture" in lines[0]
