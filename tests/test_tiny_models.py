"""Tiny offline VLM checkpoints: real transformers models and processors, built once per family."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from sketchmind.models.tiny import FAMILIES, PROTOCOL_TOKENS, SPECIAL_TOKENS, build_tiny, chat_template, message_corpus

needs_transformers = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed (the train extra)"
)
BOX = {"name": "box", "arguments": {"view": 1, "bbox": [12, 30, 64, 96], "label": "goal"}}
TAGS = f"<think>the goal is at the bottom</think><tool_call>{json.dumps(BOX)}</tool_call>"


@pytest.fixture(scope="module", params=FAMILIES)
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    family: str = request.param
    return family, build_tiny(family, tmp_path_factory.mktemp(family.replace(".", "")))


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)),  # 96 wide, 80 high
    ]


def two_turns() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "You reason by drawing."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the goal?"}]},
        {"role": "assistant", "content": TAGS},
        {"role": "tool", "content": [{"type": "text", "text": "view 2 (64x64)"}]},
        {"role": "user", "content": [{"type": "text", "text": "Rendered view 2:"}, {"type": "image"}]},
    ]


@needs_transformers
def test_loads_with_auto_classes_and_is_tiny(built: tuple[str, Path]) -> None:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, path = built
    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params < 5_000_000
    meta = json.loads((path / "sketchmind_tiny.json").read_text())
    assert meta["family"] == family and meta["parameters"] == n_params
    # Token ids agree between tokenizer, config and generation config.
    tok = processor.tokenizer
    text_config = model.config.get_text_config()
    assert text_config.vocab_size == len(tok)
    assert model.generation_config.eos_token_id[0] == tok.eos_token_id == text_config.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id == text_config.pad_token_id
    image_token = "<image>" if family == "idefics3" else "<|image_pad|>"
    assert model.config.image_token_id == tok.convert_tokens_to_ids(image_token)
    assert all(len(tok.encode(t, add_special_tokens=False)) == 1 for t in SPECIAL_TOKENS[family])


@needs_transformers
def test_chat_template_two_images_and_generate(built: tuple[str, Path]) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    family, path = built
    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    tok = processor.tokenizer
    for tag in ("<tool_call>", "<answer>", "<think>"):
        assert len(tok.encode(tag, add_special_tokens=False)) == 1, tag

    text = processor.apply_chat_template(two_turns(), add_generation_prompt=True)
    placeholder = "<image>" if family == "idefics3" else "<|vision_start|><|image_pad|><|vision_end|>"
    assert text.count(placeholder) == 2
    assert TAGS in text and "view 2 (64x64)" in text and "<tool_response>" not in text  # a tool result is a user turn
    assert text.endswith("Assistant:" if family == "idefics3" else "<|im_start|>assistant\n")

    inputs = processor(text=[text], images=images(), return_tensors="pt")
    n = inputs["input_ids"].shape[1]
    ids = inputs["input_ids"][0].tolist()
    # The tags stay single tokens inside the rendered conversation, too.
    assert ids.count(tok.convert_tokens_to_ids("<tool_call>")) == 1
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert out.shape[0] == 1 and n < out.shape[1] <= n + 5
    assert isinstance(processor.decode(out[0, n:], skip_special_tokens=True), str)


@needs_transformers
def test_same_seed_same_weights(built: tuple[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    family, path = built
    first = load_file(path / "model.safetensors")
    again = load_file(build_tiny(family, tmp_path / "again") / "model.safetensors")
    assert first.keys() == again.keys()
    assert all(first[k].equal(again[k]) for k in first)
    assert (path / "tokenizer.json").read_bytes() == (tmp_path / "again" / "tokenizer.json").read_bytes()
    other = load_file(build_tiny(family, tmp_path / "other", seed=1) / "model.safetensors")
    assert any(not first[k].equal(other[k]) for k in first)


@needs_transformers
def test_template_renders_tools_and_masks_assistant_turns(built: tuple[str, Path]) -> None:
    from transformers import AutoTokenizer

    family, path = built
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.chat_template == chat_template(family)
    tools = [{"type": "function", "function": {"name": "box", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "box", "arguments": {"bbox": [1, 2, 3, 4]}}}
    messages = [
        {"role": "user", "content": "Draw."},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_0", "content": "view 2"},
        {"role": "assistant", "content": [{"type": "text", "text": "<answer>R,D</answer>"}]},
    ]
    out = tok.apply_chat_template(messages, tools=tools, return_dict=True, return_assistant_tokens_mask=True)
    text = tok.decode(out["input_ids"])
    assert '<tools>\n{"type": "function", "function": {"name": "box"' in text
    # Calls in the sketchmind protocol's own text; tool results as the content of a user turn, no wrapper.
    assert '<tool_call>{"name": "box", "arguments": {"bbox": [1, 2, 3, 4]}}</tool_call>' in text
    as_user = [*messages[:2], {"role": "user", "content": "view 2"}, messages[3]]
    assert text == tok.apply_chat_template(as_user, tools=tools, tokenize=False)
    # A system prompt of ours lists the tools itself: the template adds no tool list beside it.
    with_system = tok.apply_chat_template([{"role": "system", "content": "S"}, *messages], tools=tools, tokenize=False)
    assert "<tools>" not in with_system
    assistant = tok.decode([i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m])
    assert assistant.startswith("<tool_call>") and "<answer>R,D</answer>" in assistant
    assert "Draw." not in assistant and "view 2" not in assistant
    # Protocol tags are not "special": decoding with skip_special_tokens keeps them for the parsers.
    assert all(t in tok.decode(tok.encode(t), skip_special_tokens=True) for t in PROTOCOL_TOKENS)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build_tiny("llava", tmp_path)


def test_imports_stay_light() -> None:
    code = (
        "import sys, sketchmind, sketchmind.models, sketchmind.models.tiny; "
        "heavy = [m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_fixed_side_gives_every_square_image_one_token_grid(tmp_path: Path) -> None:
    from transformers import AutoProcessor

    def grid(processor: Any, side: int) -> list[int]:
        out = processor.image_processor(images=[Image.new("RGB", (side, side))], return_tensors="pt")
        return [int(x) for x in out["image_grid_thw"][0]]  # (frames, patch rows, patch columns)

    path = build_tiny("qwen2.5-vl", tmp_path / "fixed", vocab_size=300, fixed_side=336)
    processor = AutoProcessor.from_pretrained(str(path))
    sides = (60, 168, 300, 322, 336, 350, 400, 448, 512, 1000)  # VSP's maps are 192-512 px
    assert all(grid(processor, side) == [1, 24, 24] for side in sides)  # 12x12 merged tokens, up or down
    free = build_tiny("qwen2.5-vl", tmp_path / "free", vocab_size=300, max_pixels=336 * 336)
    assert grid(AutoProcessor.from_pretrained(str(free)), 168) == [1, 12, 12]  # by default small images stay small
    with pytest.raises(ValueError, match="multiple of 28"):
        build_tiny("qwen2.5-vl", tmp_path / "bad", vocab_size=300, fixed_side=300)


def test_the_tokenizer_corpus_of_chat_rows_is_their_message_texts() -> None:
    text = [{"type": "text", "text": TAGS}]
    image = [{"type": "image", "text": None}, {"type": "text", "text": "Which way?"}]
    rows = [{"messages": [{"role": "user", "content": image}, {"role": "assistant", "content": text}]}]
    assert list(message_corpus(rows)) == ["Which way?", TAGS]  # image parts (text None, as stored) add nothing
