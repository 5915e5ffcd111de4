"""Tiny, randomly initialised vision-language checkpoints, built fully offline.

``build_tiny(family, out_dir)`` writes a real ``AutoModelForImageTextToText`` + ``AutoProcessor``
checkpoint (safetensors, processor, tokenizer, chat template, generation config) for Qwen2.5-VL,
Qwen3-VL or Idefics3, with a byte-level BPE tokenizer trained here on a small corpus. Nothing is
downloaded: the architectures come from transformers' config classes, the weights from the seed.

They serve as fast CPU fixtures for the model backends (KV-cache reuse, batched generation) and as
the starting point of our own tiny policy, so every protocol tag (``<tool_call>``, ``<answer>``,
``<think>`` ...) is one token and every chat template renders tools, tool results and images.

torch and transformers are imported inside the functions: ``import sketchmind`` must stay light.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sketchmind.files import write_json_atomic

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

FAMILIES = ("qwen2.5-vl", "qwen3-vl", "idefics3")

# Our protocols' tags. Added as *non-special* tokens (as Qwen does for <tool_call>/<think>), so that
# ``decode(..., skip_special_tokens=True)`` keeps them and the parsers still see the tags.
PROTOCOL_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<answer>", "</answer>")

_QWEN_SPECIALS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# Idefics3Processor looks up <fake_token_around_image>, <image>, <end_of_utterance>, <global-img> and the
# 6x6 <row_i_col_j> tile tags by name; the tile tags only appear with do_image_splitting=True, but having
# them lets a later policy turn splitting on without resizing the vocabulary.
_IDEFICS3_SPECIALS = (
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<pad>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)

SPECIAL_TOKENS: dict[str, tuple[str, ...]] = {
    "qwen2.5-vl": _QWEN_SPECIALS + PROTOCOL_TOKENS,
    "qwen3-vl": _QWEN_SPECIALS + PROTOCOL_TOKENS,
    "idefics3": _IDEFICS3_SPECIALS + PROTOCOL_TOKENS,
}
"""Every token each family's tokenizer keeps whole: the family's own specials, then ``PROTOCOL_TOKENS``."""

# Qwen2's pre-tokenizer split (digits one by one, words with their leading space). Using it for every
# family keeps numbers and JSON punctuation tokenized the same way whichever tokenizer class loads it.
_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}|"""
    r""" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Named special tokens per family: (bos, eos, pad). eos is the end of a turn, what generation stops on
# (as in the real instruct tokenizers); Qwen prompts carry no bos.
_NAMED = {
    "qwen2.5-vl": (None, "<|im_end|>", "<|endoftext|>"),
    "qwen3-vl": (None, "<|im_end|>", "<|endoftext|>"),
    "idefics3": ("<|begin_of_text|>", "<end_of_utterance>", "<pad>"),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")


def _extra_specials(family: str) -> list[str]:
    """The family's special tokens that are not bos/eos/pad (the tokenizer's ``extra_special_tokens``)."""
    return [t for t in SPECIAL_TOKENS[family] if t not in PROTOCOL_TOKENS and t not in _NAMED[family]]


# --------------------------------------------------------------------------------------------- corpus


_TOOLS = ("box", "line", "point", "path", "grid", "text", "crop", "zoom")
_LABELS = ("goal", "start", "hole", "wall", "agent", "exit", "path", "key", "door", "target")
_WORDS = (
    "the maze has a start and a goal; find a safe path around every hole and wall. "
    "draw a box around the goal, then a line from the start along the corridor. "
    "move right, down, left or up one cell at a time and never step onto ice holes. "
    "the agent is in the top left corner of the grid and the exit is at the bottom right. "
    "count the boxes in each row and column, compare their sizes and colors, and answer. "
    "zoom into the region to read the small text, crop the view, then point at the key. "
    "this path is blocked by a wall so go back and try another route through the open cells. "
    "which object is closer to the door, the red box or the blue circle in view two? "
).split()


def _builtin_corpus(seed: int = 0) -> Iterator[str]:
    """A few hundred lines covering our tags, JSON tool calls, digits and maze vocabulary."""
    rng = random.Random(seed)

    def num() -> int:
        return rng.randint(0, 1000)

    def call() -> str:
        name = rng.choice(_TOOLS)
        args: dict[str, Any] = {"view": rng.randint(1, 9)}
        if name in ("box", "crop", "zoom", "text"):
            args["bbox"] = sorted([num(), num()]) + sorted([num(), num()])
        if name in ("line", "path"):
            args["points"] = [[num(), num()] for _ in range(rng.randint(2, 4))]
        if name == "point":
            args["xy"] = [num(), num()]
        if name == "grid":
            args["rows"], args["cols"] = rng.randint(2, 9), rng.randint(2, 9)
        if name == "zoom":
            args["factor"] = rng.choice([2, 3, 4])
        args["label"] = rng.choice(_LABELS)
        return json.dumps({"name": name, "arguments": args})

    for _ in range(160):
        yield f"<tool_call>{call()}</tool_call>"
    for _ in range(60):
        thought = " ".join(rng.choices(_WORDS, k=rng.randint(8, 20)))
        yield f"<think>{thought}</think>\n<tool_call>\n{call()}\n</tool_call>"
    for _ in range(60):
        plan = ",".join(rng.choices("RDLU", k=rng.randint(2, 12)))
        yield f"<think>{' '.join(rng.choices(_WORDS, k=10))}</think><answer>Action plan: {plan}</answer>"
    for start in range(0, 1001, 50):
        yield " ".join(str(i) for i in range(start, min(start + 50, 1001)))
    for _ in range(100):
        words = rng.choices(_WORDS, k=rng.randint(6, 24))
        yield " ".join(words).capitalize()
    for _ in range(20):
        yield f'{{"error": "box bbox: x={num()} is outside view {rng.randint(1, 9)} ({num()}x{num()})"}}'


def message_corpus(rows: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """Every message text of chat rows (``messages`` as ``synth`` writes them): a corpus for ``build_tiny``.

    The pipeline's ``base`` stage trains the tiny tokenizer on its synth rows this way, so every tool call,
    tag and word of the training data has tokens of its own.
    """
    for row in rows:
        for message in row["messages"]:
            for part in message["content"]:
                if part.get("text"):
                    yield part["text"]


# ------------------------------------------------------------------------------------------ tokenizer


def train_tokenizer(corpus: Iterable[str], family: str, vocab_size: int = 2000) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on ``corpus`` with ``family``'s special tokens.

    The vocabulary is at most ``vocab_size`` tokens (fewer if the corpus runs out of merges): the
    family specials first (ids 0..), then the 256 bytes and merges, then ``PROTOCOL_TOKENS``. Any
    Unicode text encodes (byte fallback is built into byte-level BPE), so no unknown token is needed.
    """
    _check_family(family)
    if vocab_size < 256 + len(SPECIAL_TOKENS[family]):
        raise ValueError(f"vocab_size must hold the 256 bytes and {len(SPECIAL_TOKENS[family])} special tokens")
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    family_specials = [t for t in SPECIAL_TOKENS[family] if t not in PROTOCOL_TOKENS]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(PROTOCOL_TOKENS),
        min_frequency=2,
        special_tokens=family_specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Protocol tags after training (the trainer would make them special): normalized=False keeps them
    # whole even inside words, special=False keeps them through skip_special_tokens decoding.
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in PROTOCOL_TOKENS])

    bos, eos, pad = _NAMED[family]
    named = {"bos_token": bos, "eos_token": eos, "pad_token": pad}
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tok,
        **{k: v for k, v in named.items() if v is not None},
        extra_special_tokens=_extra_specials(family),
        model_max_length=32768,
        clean_up_tokenization_spaces=False,
    )


# -------------------------------------------------------------------------------------- chat template

# One template, specialised per family by plain string substitution of @NAME@ markers. It renders
# system/user/assistant/tool roles, string or list content, image/video parts as the family's placeholder,
# and wraps assistant turns in {% generation %} so ``return_assistant_tokens_mask=True`` works for training.
# Tool calling is rendered in our ``sketchmind`` protocol's own text, so that TRL's GRPO tool loop (which
# passes ``tools``, structured ``tool_calls`` and one ``tool`` message per call) reads byte for byte like the
# agent's conversations the policy is fine-tuned on:
# - ``tool_calls`` become ``<tool_call>{"name": ..., "arguments": ...}</tool_call>`` right after the content,
#   exactly as ``protocols.sketchmind.format_call`` writes them;
# - consecutive ``tool`` messages become ONE user turn holding their contents back to back, no wrapper (the
#   agent puts all of a turn's ``<observation>`` parts in one user message);
# - a ``tools`` list is rendered (Hermes style, as Qwen2.5's tool template) only when there is no system
#   message: a system prompt of ours already lists the tools in the protocol's words.
_TEMPLATE = """\
{%- macro render(content) -%}
{%- if content is string -%}{{- content -}}
{%- elif content is iterable -%}{%- for part in content -%}
{%- if part is string -%}{{- part -}}
{%- elif part.type in ('image', 'image_url') or 'image' in part -%}{{- '@IMAGE@' -}}
{%- elif part.type == 'video' or 'video' in part -%}{{- '@VIDEO@' -}}
{%- elif part.text is defined -%}{{- part.text -}}
{%- endif -%}{%- endfor -%}{%- endif -%}
{%- endmacro -%}
{%- macro start(role) -%}@START@{%- endmacro -%}
{{- '@BOS@' -}}
{%- set has_system = messages and messages[0].role == 'system' -%}
{%- if tools and not has_system -%}
{{- start('system') -}}
{{- '# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n'
    + 'You are provided with function signatures within <tools></tools> XML tags:\\n<tools>' -}}
{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}
{{- '\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments '
    + 'within <tool_call></tool_call> XML tags:\\n'
    + '<tool_call>{"name": <function-name>, "arguments": <args-json-object>}</tool_call>@END@\\n' -}}
{%- endif -%}
{%- for message in messages -%}
{%- if message.role == 'tool' -%}
{%- if loop.first or loop.previtem.role != 'tool' -%}{{- start('user') -}}{%- endif -%}
{{- render(message.content) -}}
{%- if loop.last or loop.nextitem.role != 'tool' -%}{{- '@END@\\n' -}}{%- endif -%}
{%- elif message.role == 'assistant' -%}
{{- start('assistant') -}}
{%- generation -%}
{{- render(message.content) -}}
{%- for call in message.tool_calls or [] -%}
{%- set fn = call.function if call.function is defined else call -%}
{{- '<tool_call>{"name": ' + (fn.name | tojson) + ', "arguments": ' -}}
{%- if fn.arguments is string -%}{{- fn.arguments -}}{%- else -%}{{- fn.arguments | tojson -}}{%- endif -%}
{{- '}</tool_call>' -}}
{%- endfor -%}
{{- '@END@' -}}
{%- endgeneration -%}
{{- '\\n' -}}
{%- else -%}
{{- start(message.role) + render(message.content) + '@END@\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- start('assistant') -}}{%- endif -%}
"""

_TEMPLATE_PARTS = {
    "qwen2.5-vl": {
        "@BOS@": "",
        "@START@": "{{- '<|im_start|>' + role + '\\n' -}}",
        "@END@": "<|im_end|>",
        "@IMAGE@": "<|vision_start|><|image_pad|><|vision_end|>",
        "@VIDEO@": "<|vision_start|><|video_pad|><|vision_end|>",
    },
    "idefics3": {
        "@BOS@": "<|begin_of_text|>",
        # Idefics3's own layout: "User:<image>text<end_of_utterance>\nAssistant:".
        "@START@": "{{- role | capitalize + ':' -}}",
        "@END@": "<end_of_utterance>",
        "@IMAGE@": "<image>",
        "@VIDEO@": "",
    },
}
_TEMPLATE_PARTS["qwen3-vl"] = _TEMPLATE_PARTS["qwen2.5-vl"]


def chat_template(family: str) -> str:
    """The Jinja chat template for ``family`` (tool-capable, interleaved images, generation prompt)."""
    _check_family(family)
    template = _TEMPLATE
    for marker, text in _TEMPLATE_PARTS[family].items():
        template = template.replace(marker, text)
    return template


# ---------------------------------------------------------------------------------------------- model


def _mrope_section(family: str, head_dim: int) -> list[int]:
    """(t, h, w) rotary frequency split, in the real checkpoints' proportions, summing to head_dim/2."""
    half = head_dim // 2
    if family == "qwen2.5-vl":  # Qwen2.5-VL: [16, 24, 24] of 64
        t = half // 4
        h = (half - t) // 2
        return [t, h, half - t - h]
    # Qwen3-VL: [24, 20, 20] of 64, interleaved; h and w take every third frequency, so 3*h <= half.
    h = half * 5 // 16
    return [half - 2 * h, h, h]


def _configs(
    family: str,
    token_ids: dict[str, int],
    vocab: int,
    hidden: int,
    layers: int,
    image_size: int,
    init_std: float,
    rope_theta: float | None = None,
) -> Any:
    """The tiny ``PreTrainedConfig`` for ``family``. Token ids go in both the top level and text_config."""
    from transformers import AutoConfig

    heads, kv_heads = 4, 2
    vision_hidden = max(hidden // 2, 16)
    text: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 4 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,  # as the small real checkpoints do; halves the (vocab x hidden) weights
        "bos_token_id": token_ids["bos"],
        "eos_token_id": token_ids["eos"],
        "pad_token_id": token_ids["pad"],
        "dtype": "float32",
        "initializer_range": init_std,
    }
    vision: dict[str, Any] = {
        "hidden_size": vision_hidden,
        "intermediate_size": 4 * vision_hidden,
        "num_heads": 2,
        "depth": 2,
        "initializer_range": init_std,
    }
    top: dict[str, Any] = {"tie_word_embeddings": True, "dtype": "float32", "initializer_range": init_std}
    if family in ("qwen2.5-vl", "qwen3-vl"):
        top |= {
            "image_token_id": token_ids["<|image_pad|>"],
            "video_token_id": token_ids["<|video_pad|>"],
            "vision_start_token_id": token_ids["<|vision_start|>"],
            "vision_end_token_id": token_ids["<|vision_end|>"],
        }
        vision |= {"out_hidden_size": hidden, "spatial_merge_size": 2, "temporal_patch_size": 2}
    if family == "qwen2.5-vl":
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": rope_theta or 1_000_000.0,
            "mrope_section": _mrope_section(family, hidden // heads),
        }
        # window_size is in pixels: 112 / 14 / 2 = 4x4 merged tokens per window; the last block attends fully.
        vision |= {"patch_size": 14, "window_size": 112, "fullatt_block_indexes": [vision["depth"] - 1]}
        return AutoConfig.for_model("qwen2_5_vl", text_config=text, vision_config=vision, **top)
    if family == "qwen3-vl":
        text |= {
            "head_dim": hidden // heads,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": rope_theta or 5_000_000.0,
                "mrope_section": _mrope_section(family, hidden // heads),
                "mrope_interleaved": True,
            },
        }
        # Learned position embeddings are interpolated to any grid; 32x32 covers the default max_pixels.
        # deepstack_visual_indexes must be < depth: vision layer 0 is fed into the first LLM layer.
        vision |= {
            "patch_size": 16,
            "num_position_embeddings": 32 * 32,
            "deepstack_visual_indexes": [0],
            "hidden_act": "gelu_pytorch_tanh",
        }
        return AutoConfig.for_model("qwen3_vl", text_config=text, vision_config=vision, **top)
    # Idefics3: a Llama text model and a SigLIP-like vision tower at one fixed square resolution.
    vision = {
        "hidden_size": vision_hidden,
        "intermediate_size": 4 * vision_hidden,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": image_size,
        "patch_size": _IDEFICS3_PATCH,
        "initializer_range": init_std,
    }
    text = {"model_type": "llama", **text, "rms_norm_eps": 1e-5}
    return AutoConfig.for_model(
        "idefics3",
        text_config=text,
        vision_config=vision,
        image_token_id=token_ids["<image>"],
        scale_factor=_IDEFICS3_SCALE,
        pad_token_id=token_ids["pad"],
        **top,
    )


_IDEFICS3_PATCH = 8
_IDEFICS3_SCALE = 2


def tiny_config(
    family: str,
    *,
    vocab_size: int,
    hidden_size: int = 64,
    layers: int = 2,
    image_size: int = 64,
    init_std: float = 0.1,
    rope_theta: float | None = None,
) -> Any:
    """The config ``build_tiny`` builds its model from, for a vocabulary of ``vocab_size`` tokens.

    No tokenizer is trained: the special tokens get placeholder ids, which name tokens but size nothing, so a
    model built from it has ``build_tiny``'s parameters exactly (``train/plan.py`` sizes recipes with it).
    """
    _check_family(family)
    ids = {token: i for i, token in enumerate(SPECIAL_TOKENS[family])} | {"bos": 0, "eos": 1, "pad": 2}
    return _configs(family, ids, vocab_size, hidden_size, layers, image_size, init_std, rope_theta)


def _qwen_token_side(family: str) -> int:
    """The pixels a merged image token covers a side: 2 patches of 14 (Qwen2.5-VL) or 16 (Qwen3-VL)."""
    return 2 * (14 if family == "qwen2.5-vl" else 16)


def _qwen_min_pixels(family: str) -> int:
    """Four merged tokens: a merged token covers a (2 * patch)^2 pixel block (patch 14, or 16 for Qwen3-VL)."""
    factor = _qwen_token_side(family)
    return 4 * factor * factor


def fixed_side_bounds(side: int, factor: int = 28) -> tuple[int, int]:
    """(min_pixels, max_pixels) that resize every square image to ``side`` x ``side`` (a multiple of ``factor``).

    The processor rounds a side to ``factor`` with ``ceil`` when it scales up and ``floor`` when it scales down,
    after a float division, so bounds of exactly ``side**2`` can land one token row off; bounds half a row
    inside the neighbouring sides cannot.
    """
    if side % factor:
        raise ValueError(f"fixed_side must be a multiple of {factor}, got {side}")
    half = factor // 2
    return max(side - half, half) ** 2 + 1, (side + half) ** 2 - 1


def _processor(family: str, tokenizer: Any, max_pixels: int, image_size: int, min_pixels: int | None = None) -> Any:
    """The family's processor, sized for small images so CPU tests stay fast."""
    template = chat_template(family)
    if family == "idefics3":
        from transformers import Idefics3ImageProcessor, Idefics3Processor

        # No tiling: every image is resized to one image_size x image_size square (the vision tower's size).
        image_processor = Idefics3ImageProcessor(
            do_image_splitting=False,
            size={"longest_edge": image_size},
            max_image_size={"longest_edge": image_size},
        )
        # image_seq_len = (image_size / patch)^2 / scale^2: the <image> tokens one image becomes.
        seq_len = (image_size // _IDEFICS3_PATCH) ** 2 // _IDEFICS3_SCALE**2
        return Idefics3Processor(image_processor, tokenizer, image_seq_len=seq_len, chat_template=template)

    from transformers import Qwen2VLImageProcessor

    patch = 14 if family == "qwen2.5-vl" else 16
    # Qwen3-VL's real processors use 0.5 mean/std; Qwen2.5-VL keeps the CLIP defaults.
    norm = {} if family == "qwen2.5-vl" else {"image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    sizes = {"size": {"shortest_edge": min_pixels or _qwen_min_pixels(family), "longest_edge": max_pixels}}
    common: dict[str, Any] = {"patch_size": patch, "temporal_patch_size": 2, "merge_size": 2, **norm, **sizes}
    images = Qwen2VLImageProcessor(**common)
    # cap_pixels_per_frame=True: the qwen-vl-utils behaviour, and no "default will change" warning.
    if family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLVideoProcessor

        videos_25 = Qwen2VLVideoProcessor(**common, cap_pixels_per_frame=True)
        return Qwen2_5_VLProcessor(images, tokenizer, videos_25, chat_template=template)  # type: ignore[no-untyped-call]
    from transformers import Qwen3VLProcessor, Qwen3VLVideoProcessor

    videos_3 = Qwen3VLVideoProcessor(**common, cap_pixels_per_frame=True)
    return Qwen3VLProcessor(images, tokenizer, videos_3, chat_template=template)  # type: ignore[no-untyped-call]


def build_tiny(
    family: str,
    out_dir: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 2000,
    hidden_size: int = 64,
    layers: int = 2,
    seed: int = 0,
    max_pixels: int = 256 * 28 * 28,
    image_size: int = 64,
    init_std: float = 0.1,
    rope_theta: float | None = None,
    fixed_side: int | None = None,
) -> Path:
    """Build a tiny random ``family`` checkpoint in ``out_dir`` and return the directory.

    The directory loads with ``AutoModelForImageTextToText.from_pretrained`` and
    ``AutoProcessor.from_pretrained``, fully offline. ``corpus`` trains the tokenizer (default: a small
    built-in corpus of tool calls, numbers and maze words); ``vocab_size`` caps its size. The text model
    has ``hidden_size`` (a multiple of 16: 4 heads, 2 KV heads) and ``layers``; the vision tower is half as
    wide with 2 layers. ``max_pixels`` bounds a Qwen image's pixels; ``fixed_side`` (a multiple of 28, or 32
    for Qwen3-VL) instead resizes every square image to that side, so all get one token grid;
    ``image_size`` is Idefics3's square input side (a multiple of 16). ``init_std`` is the normal init's
    std: the usual 0.02 makes a model this
    narrow echo its last input token forever (tied embeddings dominate the logits), while 0.1 (about
    1/sqrt(hidden)) gives greedy outputs that depend on the text and the images, so fixture tests that
    compare generations (cache reuse, batching) can tell right from wrong. The same arguments give
    bit-identical weights.
    """
    _check_family(family)
    if hidden_size % 16:
        raise ValueError(f"hidden_size must be a multiple of 16 (4 heads, even rotary halves), got {hidden_size}")
    if family == "idefics3" and image_size % (_IDEFICS3_PATCH * _IDEFICS3_SCALE):
        raise ValueError(f"image_size must be a multiple of {_IDEFICS3_PATCH * _IDEFICS3_SCALE}, got {image_size}")
    if family != "idefics3" and max_pixels < _qwen_min_pixels(family):
        raise ValueError(
            f"max_pixels must be at least {_qwen_min_pixels(family)} (2x2 merged tokens), got {max_pixels}"
        )
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(_builtin_corpus() if corpus is None else corpus, family, vocab_size)
    tokenizer.chat_template = chat_template(family)
    bos, eos, pad = _NAMED[family]
    ids: dict[str, int] = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS[family]}  # type: ignore[misc]
    # Qwen has no BOS in its prompts, but its configs name <|endoftext|> as bos; keep that convention.
    ids |= {"bos": ids[bos or "<|endoftext|>"], "eos": ids[eos], "pad": ids[pad]}
    # The end-of-text token stops generation too, as in the real generation configs.
    stop = [ids["eos"], ids["<|endoftext|>" if family != "idefics3" else "<|end_of_text|>"]]

    config = _configs(family, ids, len(tokenizer), hidden_size, layers, image_size, init_std, rope_theta)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    model.generation_config = GenerationConfig(  # type: ignore[no-untyped-call]
        bos_token_id=ids["bos"], eos_token_id=stop, pad_token_id=ids["pad"]
    )
    model.save_pretrained(out)

    min_pixels = None
    if fixed_side is not None and family != "idefics3":
        min_pixels, max_pixels = fixed_side_bounds(fixed_side, _qwen_token_side(family))
    processor = _processor(family, tokenizer, max_pixels, image_size, min_pixels)
    # Idefics3Processor.__init__ replaces the tokenizer's extra special tokens with its own three; put the full
    # list back so tokenizer_config.json names them all (decoding skips them either way).
    tokenizer.add_special_tokens({"extra_special_tokens": _extra_specials(family)})
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    meta = {
        "family": family,
        "vocab_size": len(tokenizer),
        "vocab_size_requested": vocab_size,
        "hidden_size": hidden_size,
        "layers": layers,
        "seed": seed,
        "init_std": init_std,
        "max_pixels": max_pixels if family != "idefics3" else None,
        "fixed_side": fixed_side if family != "idefics3" else None,
        "image_size": image_size if family == "idefics3" else None,
        "builtin_corpus": corpus is None,
        "parameters": n_params,
    }
    write_json_atomic(out / "sketchmind_tiny.json", meta)
    return out
