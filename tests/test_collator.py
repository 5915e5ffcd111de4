"""AssistantOnlyCollator: labels cover exactly the assistant turns, ids are exactly what HFPolicy feeds."""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from sketchmind.models.tiny import FAMILIES

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed (the train extra)"
)

SYSTEM = "You reason by drawing."
ANSWERS = [
    '<think>the goal is at the bottom</think><tool_call>{"name": "box", "arguments": {"view": 1}}</tool_call>',
    '<think>the path is blocked by a wall</think><tool_call>{"name": "line", "arguments": {"view": 2}}</tool_call>',
    "<think>the exit is at the bottom right</think><answer>Action plan: R,D</answer>",
]
END = {"qwen2.5-vl": "<|im_end|>", "qwen3-vl": "<|im_end|>", "idefics3": "<end_of_utterance>"}
IMAGE_TOKEN = {"qwen2.5-vl": "<|image_pad|>", "qwen3-vl": "<|image_pad|>", "idefics3": "<image>"}


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Callable[[str], Path]) -> Callable[[str], Path]:
    """Each family's tiny checkpoint, built on first use."""
    return tiny_checkpoint


def processor(path: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]


def picture(seed: int, size: tuple[int, int] = (56, 56)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def conversation(answers: list[str], *, observation_images: bool = True) -> tuple[list[dict[str, Any]], dict[int, Any]]:
    """Sketchmind messages (image parts reference views) for a trajectory with ``answers`` as its assistant turns."""
    views = {1: picture(1)}
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": "Where is the goal?"}]},
    ]
    for t, answer in enumerate(answers):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        if t < len(answers) - 1:
            parts: list[dict[str, Any]] = [{"type": "text", "text": f"Rendered view {t + 2}:"}]
            if observation_images:
                views[t + 2] = picture(t + 2, (64, 56))
                parts.append({"type": "image", "view": t + 2})
            messages.append({"role": "user", "content": parts})
    return messages, views


def row(messages: list[dict[str, Any]], views: dict[int, Any]) -> dict[str, Any]:
    """The dataset row of a conversation: bare image parts (with Arrow's ``text: None``), PIL images in order."""
    images: list[Image.Image] = []
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                images.append(Image.fromarray(views[part["view"]]))
                parts.append({"type": "image", "text": None})
            else:
                parts.append({"type": "text", "text": part["text"]})
        out.append({"role": message["role"], "content": parts})
    return {"messages": out, "images": images, "id": "row"}


def labelled_runs(labels: list[int]) -> list[list[int]]:
    """The maximal runs of labelled (not -100) tokens."""
    runs: list[list[int]] = []
    previous = False
    for token in labels:
        if token != -100:
            if not previous:
                runs.append([])
            runs[-1].append(token)
        previous = token != -100
    return runs


def run_starts(labels: list[int]) -> list[int]:
    return [i for i, token in enumerate(labels) if token != -100 and (i == 0 or labels[i - 1] == -100)]


# ------------------------------------------------------------------------------------------------ per family


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_are_exactly_the_assistant_turns(family: str, tiny: Callable[[str], Path]) -> None:
    from sketchmind.models.base import Conversation, Sampling
    from sketchmind.models.hf import HFPolicy
    from sketchmind.train.collator import AssistantOnlyCollator

    path = tiny(family)
    proc = processor(path)
    tok = proc.tokenizer
    messages, views = conversation(ANSWERS)
    example = row(messages, views)
    assert len(example["images"]) == 3
    batch = AssistantOnlyCollator(proc)([example])
    ids = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    assert batch["attention_mask"].all()

    # The ids are the processor's on the chat template's rendering of the whole conversation.
    text = proc.apply_chat_template(row(messages, views)["messages"], tokenize=False)
    expected = proc(text=[text], images=example["images"], return_tensors="pt", add_special_tokens=False)
    assert ids == expected["input_ids"][0].tolist()
    for key, value in expected.items():
        assert batch[key].equal(value), key

    # Token by token: the labelled runs are the assistant texts, each with its end-of-turn token, in order.
    assert all(label in (-100, token) for label, token in zip(labels, ids, strict=True))
    runs = labelled_runs(labels)
    assert [tok.decode(run) for run in runs] == [answer + END[family] for answer in ANSWERS]
    assert "".join(tok.decode(run) for run in runs) == "".join(a + END[family] for a in ANSWERS)
    assert all(run[-1] == tok.convert_tokens_to_ids(END[family]) for run in runs)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN[family])
    assert ids.count(image_id) > 3  # the placeholders were expanded
    assert all(label == -100 for label, token in zip(labels, ids, strict=True) if token == image_id)
    masked = tok.decode([token for token, label in zip(ids, labels, strict=True) if label == -100])
    assert SYSTEM in masked and "Where is the goal?" in masked and "Rendered view 3:" in masked
    assert "<think>" not in masked and "<answer>" not in masked

    # Each turn starts right where the prompt HFPolicy feeds for that turn ends, and that prompt is a prefix.
    policy = HFPolicy(path, device="cpu")
    starts = run_starts(labels)
    for t, k in enumerate(i for i, m in enumerate(messages) if m["role"] == "assistant"):
        seen = Conversation(id=f"turn{t}", messages=messages[:k], images=views)
        n = policy.count_tokens(seen)
        policy.generate(seen, Sampling(max_new_tokens=1))
        prompt = policy.token_ids(seen.id)
        assert prompt is not None
        assert prompt[:n] == ids[:n]
        assert starts[t] == n


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_pads_right_and_matches_single_rows(family: str, tiny: Callable[[str], Path]) -> None:
    import torch
    from transformers import AutoModelForImageTextToText

    from sketchmind.train.collator import AssistantOnlyCollator

    path = tiny(family)
    proc = processor(path)
    collate = AssistantOnlyCollator(proc)
    long, short = row(*conversation(ANSWERS)), row(*conversation(ANSWERS[-1:]))
    batch = collate([short, long])
    singles = [collate([short]), collate([long])]
    pad = proc.tokenizer.pad_token_id
    width = batch["input_ids"].shape[1]
    assert width == singles[1]["input_ids"].shape[1] > singles[0]["input_ids"].shape[1]
    for r, single in enumerate(singles):
        n = single["input_ids"].shape[1]
        assert batch["input_ids"][r, :n].equal(single["input_ids"][0])
        assert batch["labels"][r, :n].equal(single["labels"][0])
        assert batch["attention_mask"][r].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][r, n:] == pad).all() and (batch["labels"][r, n:] == -100).all()
    if family == "idefics3":  # (rows, images, C, H, W); the short row's missing image is all zeros
        assert batch["pixel_values"][0, 0].equal(singles[0]["pixel_values"][0, 0])
        assert batch["pixel_values"][1].equal(singles[1]["pixel_values"][0])
        assert not batch["pixel_values"][0, 1:].any()
    else:  # patches and grids of every image, row after row
        for key in ("pixel_values", "image_grid_thw"):
            assert batch[key].equal(torch.cat([singles[0][key], singles[1][key]])), key

    # The model takes the batch as it is and gives a finite loss.
    model = AutoModelForImageTextToText.from_pretrained(path)
    with torch.no_grad():
        loss = model(**batch).loss
    assert torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------- templates

# A Qwen3-thinking-style template: the reasoning of assistant turns before the last user message is
# dropped, the last one is re-laid out as "<think>\n...\n</think>\n\n...", and the generation prompt
# opens the thought. So earlier turns read differently in the full conversation than when generated.
THINKING_TEMPLATE = """\
{%- macro render(content) -%}{%- if content is string -%}{{- content -}}{%- else -%}
{%- for part in content -%}{%- if part.type == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
{%- else -%}{{- part.text -}}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endmacro -%}
{%- set ns = namespace(last_user=-1) -%}
{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}{%- endfor -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' -%}
{%- set content = render(m.content) -%}
{%- set answer = content.split('</think>')[-1] -%}
{%- set thought = content.split('</think>')[0].split('<think>')[-1] if '</think>' in content else '' -%}
{{- '<|im_start|>assistant\\n' -}}
{%- if loop.index0 > ns.last_user -%}{{- '<think>\\n' + thought + '\\n</think>\\n\\n' + answer -}}
{%- else -%}{{- answer -}}{%- endif -%}
{{- '<|im_end|>\\n' -}}
{%- else -%}{{- '<|im_start|>' + m.role + '\\n' + render(m.content) + '<|im_end|>\\n' -}}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n<think>\\n' -}}{%- endif -%}
"""


def test_template_that_rewrites_earlier_turns_labels_the_final_text(
    tiny: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    from sketchmind.train.collator import AssistantOnlyCollator

    proc = processor(tiny("qwen3-vl"))
    proc.chat_template = THINKING_TEMPLATE
    example = row(*conversation(ANSWERS))
    collate = AssistantOnlyCollator(proc)
    with caplog.at_level(logging.WARNING, logger="sketchmind.train.collator"):
        rendered = collate.render(example)
        batch = collate([example])
    assert rendered.rewritten == [2, 4]  # the two earlier turns lost their thoughts; the last one was kept
    assert caplog.text.count("rewrites assistant turns [2, 4]") == 1  # once per collator, not per row
    assert batch["input_ids"][0].tolist() == proc(text=[rendered.text], images=example["images"])["input_ids"][0]

    # Earlier turns: the text the full conversation really holds (no thought). Last turn: everything after
    # the "<think>\n" that the generation prompt already wrote.
    thought, answer = ANSWERS[2].removeprefix("<think>").split("</think>")
    expected = [
        ANSWERS[0].split("</think>")[1] + "<|im_end|>",
        ANSWERS[1].split("</think>")[1] + "<|im_end|>",
        f"{thought}\n</think>\n\n{answer}<|im_end|>",
    ]
    runs = labelled_runs(batch["labels"][0].tolist())
    assert [proc.tokenizer.decode(run) for run in runs] == expected
    assert all(text in rendered.text for text in expected)


def test_template_that_is_not_prefix_stable_is_refused(tiny: Callable[[str], Path]) -> None:
    from sketchmind.train.collator import AssistantOnlyCollator

    proc = processor(tiny("qwen2.5-vl"))
    # The system line counts the messages, so every prefix renders it differently.
    proc.chat_template = "{{- messages | length | string -}}\n" + proc.chat_template
    with pytest.raises(ValueError, match="cannot be told apart"):
        AssistantOnlyCollator(proc)([row(*conversation(ANSWERS))])


# ---------------------------------------------------------------------------------------------- truncation


@pytest.mark.parametrize("family", ["qwen2.5-vl", "idefics3"])
def test_max_length_drops_tail_turns_never_cuts_an_image(family: str, tiny: Callable[[str], Path]) -> None:
    from sketchmind.train.collator import AssistantOnlyCollator

    proc = processor(tiny(family))
    full = row(*conversation(ANSWERS))
    two = row(*conversation(ANSWERS[:2]))
    two_length = AssistantOnlyCollator(proc)([two])["input_ids"].shape[1]
    full_length = AssistantOnlyCollator(proc)([full])["input_ids"].shape[1]
    assert two_length < full_length

    for limit in (two_length, full_length - 1):
        batch = AssistantOnlyCollator(proc, max_length=limit)([full])
        expected = AssistantOnlyCollator(proc)([two])
        assert batch.keys() == expected.keys()
        assert all(batch[k].equal(expected[k]) for k in batch), limit
    one = AssistantOnlyCollator(proc, max_length=two_length - 1)([full])
    assert len(labelled_runs(one["labels"][0].tolist())) == 1
    # A batch keeps its long row's cut and leaves the short row alone.
    mixed = AssistantOnlyCollator(proc, max_length=two_length)([full, row(*conversation(ANSWERS[-1:]))])
    assert mixed["input_ids"][0].equal(expected["input_ids"][0])
    with pytest.raises(ValueError, match="first assistant turn"):
        AssistantOnlyCollator(proc, max_length=10)([full])


# ------------------------------------------------------------------------------------------------ messages


def test_template_messages_conversion() -> None:
    from sketchmind.models.chat import template_messages

    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "plain", "tool_calls": None},
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": None}]},
        {"role": "assistant", "content": None},
    ]
    converted, counts = template_messages(messages)
    assert converted == [
        {"role": "system", "content": "plain"},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": ""}]},
        {"role": "assistant", "content": ""},
    ]
    assert counts == [0, 1, 0]
    with pytest.raises(ValueError, match="unsupported message part"):
        template_messages([{"role": "user", "content": [{"type": "audio"}]}])


def test_image_count_must_match(tiny: Callable[[str], Path]) -> None:
    from sketchmind.train.collator import AssistantOnlyCollator

    example = row(*conversation(ANSWERS))
    example["images"] = example["images"][:-1]
    with pytest.raises(ValueError, match="3 image parts but the row has 2 images"):
        AssistantOnlyCollator(processor(tiny("qwen2.5-vl")))([example])


# ---------------------------------------------------------------------------------------------- property

WORDS = st.sampled_from(["box", "the", "goal", "wall", " ", "\n", "7", "{", '"', "<think>", "</think>", "é", "ok."])
TURN_TEXT = st.lists(WORDS, min_size=1, max_size=8).map("".join)
_PROCESSORS: dict[str, Any] = {}


@settings(max_examples=40, deadline=None)
@given(answers=st.lists(TURN_TEXT, min_size=1, max_size=4), images=st.booleans(), batch=st.booleans())
def test_random_trajectories(tiny: Callable[[str], Path], answers: list[str], images: bool, batch: bool) -> None:
    """Any turn count, text and image layout: the labels decode to exactly the assistant turns."""
    from sketchmind.train.collator import AssistantOnlyCollator

    proc = _PROCESSORS.setdefault("qwen2.5-vl", processor(tiny("qwen2.5-vl")))
    collate = AssistantOnlyCollator(proc)
    example = row(*conversation(answers, observation_images=images))
    rows = [example, row(*conversation(ANSWERS[:1]))] if batch else [example]
    out = collate(rows)
    rendered = collate.render(example)
    n = int(out["attention_mask"][0].sum())
    ids = out["input_ids"][0, :n].tolist()
    labels = out["labels"][0, :n].tolist()
    assert ids == proc(text=[rendered.text], images=example["images"])["input_ids"][0]
    assert len(rendered.spans) == len(answers)
    # Labelled tokens decode to the assistant spans (no token straddles a turn's edges here: the tiny
    # vocabulary has no merge across the header's newline, and the end marker is a special token).
    decoded = proc.tokenizer.decode([t for t in labels if t != -100])
    assert decoded == "".join(a + "<|im_end|>" for a in answers)
    assert decoded == "".join(rendered.text[a:b] for a, b in rendered.spans)
