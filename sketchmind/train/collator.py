"""SFT batches with the loss on the assistant's tokens only, tokenized exactly as ``HFPolicy`` renders them.

A row is a whole trajectory in TRL's VLM chat format (``messages`` with text and bare image parts, and
``images`` in the order the image parts appear). ``AssistantOnlyCollator`` renders it with the
processor's chat template (the message conversion of ``HFPolicy._render``), runs the processor on the
text and images, and labels only what the model itself wrote: each assistant turn's text and its
end-of-turn token (``<|im_end|>``, ``<end_of_utterance>`` ...), so the model learns to stop. The role
header, system and user text, observations and every image token are -100.

**Finding the assistant turns.** The chat template is the only authority on where a turn starts, so
the spans come from rendering prefixes of the conversation. For assistant message ``k``, ``text`` being
the full rendering:

- ``before = render(messages[:k])`` must be a prefix of ``text`` (templates that render earlier messages
  differently depending on what follows cannot be split into prompt and answer; we refuse them);
- the turn starts where ``render(messages[:k], add_generation_prompt=True)``, the prompt the model saw
  at inference, stops agreeing with ``text`` (compared token by token of that prompt): normally right
  after the role header, and still right when the template rewrites the turn in the full conversation
  (Qwen3 thinking templates drop the reasoning of earlier turns and open the generation prompt with
  ``<think>\\n``, which the rewritten turn then lacks);
- the turn ends after the first end-of-turn marker from there on.

The labels are therefore the final text's true spans, rewritten or not; a rewritten turn is logged,
since the model is then trained on text it never wrote at inference.

**Characters to tokens.** The tokenizer's offsets on ``text`` (placeholders not yet expanded) say which
text tokens end inside a span. The processor then expands each image placeholder into many tokens; the
text tokens reappear in its output in the same order, with only image tokens inserted, so one in-order
walk carries the labels over and leaves every inserted token at -100.

**Length.** ``max_length`` never cuts inside an image: a row that is too long loses its last turns (it
is re-rendered up to the last assistant turn whose end token fits), and a row whose first assistant turn
does not fit raises ``ValueError``.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sketchmind.models.chat import template_messages
from sketchmind.models.hf import END_OF_TURN

if TYPE_CHECKING:
    import torch
    from PIL import Image

IGNORE_INDEX = -100
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Rendered:
    """One row as the model sees it: the template text, its images, and where the assistant turns are."""

    messages: list[dict[str, Any]]  # template-ready messages
    images: list[Image.Image]
    tools: list[Any] | None
    text: str
    spans: list[tuple[int, int]]  # character spans of the assistant turns in ``text``, end marker included
    turns: list[int]  # the message index of each span
    rewritten: list[int]  # message indices of assistant turns the template rewrote in the full text


class AssistantOnlyCollator:
    """Collate trajectory rows into a right-padded batch whose labels cover the assistant turns only.

    ``processor`` is the model's ``AutoProcessor`` (a fast tokenizer inside). The batch holds whatever
    the processor returns for the texts and images (``input_ids``, ``attention_mask``, ``pixel_values``,
    ``image_grid_thw`` / ``pixel_attention_mask``, ``mm_token_type_ids`` ...) plus ``labels``.
    ``max_length`` drops the tail turns of longer rows (never cutting an image); ``max_pixels``
    downscales larger images as ``HFPolicy(max_pixels=...)`` does, so both see the same pixels.
    """

    def __init__(self, processor: Any, max_length: int | None = None, *, max_pixels: int | None = None) -> None:
        self.processor = processor
        self.max_length = max_length
        self.max_pixels = max_pixels
        self._tok: Any = getattr(processor, "tokenizer", processor)
        if not getattr(self._tok, "is_fast", False):
            raise ValueError("AssistantOnlyCollator needs a fast tokenizer (character offsets)")
        # The same renderer HFPolicy uses: the processor's template, else the tokenizer's.
        self._renderer: Any = processor if getattr(processor, "chat_template", None) else self._tok
        vocab = self._tok.get_vocab()
        self._end_markers = [m for m in END_OF_TURN if m in vocab]
        image_tokens = (getattr(processor, name, None) for name in ("image_token", "video_token"))
        self._image_ids = {vocab[t] for t in image_tokens if isinstance(t, str) and t in vocab}
        self._warned = False

    # ------------------------------------------------------------------------------------------ public API

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """The batch for ``rows``: processor outputs plus ``labels`` (-100 outside assistant turns and on pads)."""
        import torch

        examples = [self.render(row) for row in rows]
        batch = self._encode(examples)
        while self.max_length is not None:
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            long = [r for r, n in enumerate(lengths) if n > self.max_length]
            if not long:
                break
            for r in long:  # each pass drops at least one turn of each long row, so this ends
                examples[r] = self._shorten(examples[r], batch["input_ids"][r, : lengths[r]].tolist())
            batch = self._encode(examples)

        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = torch.full_like(ids, IGNORE_INDEX)
        for r, example in enumerate(examples):
            n = int(mask[r].sum())
            row_labels, _ = self.labels(example, ids[r, :n].tolist())
            labels[r, :n] = torch.tensor(row_labels, dtype=ids.dtype)
        batch["labels"] = labels
        return batch

    def render(self, row: Mapping[str, Any]) -> Rendered:
        """The full chat-template text of ``row`` and its assistant spans (see the module docstring)."""
        messages, counts = template_messages(row["messages"])
        images = [self._pil(image) for image in row.get("images") or []]
        if sum(counts) != len(images):
            raise ValueError(f"the messages have {sum(counts)} image parts but the row has {len(images)} images")
        tools = row.get("tools") or None
        return self._rendered(messages, images, list(tools) if tools else None)

    def labels(self, example: Rendered, ids: Sequence[int]) -> tuple[list[int], list[int]]:
        """Labels for ``ids`` (the processor's ids of ``example``, unpadded) and each turn's end-token index.

        ``ids`` holds the tokens of ``example.text`` in order, with the image expansions inserted; a text
        token is labelled when it ends inside an assistant span (and is not an image token). So a token
        that straddles a turn's start, where the tokenizer merged the header's last character with the
        turn's first (``Assistant:`` + ``box`` -> ``:box``), is trained rather than silently dropped.
        """
        encoded = self._tok(example.text, add_special_tokens=False, return_offsets_mapping=True)
        text_ids: list[int] = encoded["input_ids"]
        starts = [span[0] for span in example.spans]
        owners = []  # the span each text token ends in, or -1
        for start, end in encoded["offset_mapping"]:
            last = max(start, end - 1)
            k = bisect.bisect_right(starts, last) - 1
            owners.append(k if k >= 0 and last < example.spans[k][1] else -1)

        labels = [IGNORE_INDEX] * len(ids)
        ends = [-1] * len(example.spans)
        i = 0
        for j, token in enumerate(ids):
            if i < len(text_ids) and token == text_ids[i]:
                k = owners[i]
                if k >= 0 and token not in self._image_ids:
                    labels[j] = token
                    ends[k] = j
                i += 1
        if i != len(text_ids):
            raise ValueError(
                f"the processor's ids do not contain the text's tokens in order ({i} of {len(text_ids)} found); "
                "is the processor expanding placeholders in an unexpected way?"
            )
        return labels, ends

    # ---------------------------------------------------------------------------------------- rendering

    def _template(self, messages: list[dict[str, Any]], tools: list[Any] | None, *, prompt: bool) -> str:
        text = self._renderer.apply_chat_template(messages, tools=tools, add_generation_prompt=prompt, tokenize=False)
        if not isinstance(text, str):
            raise TypeError(f"chat template returned {type(text).__name__}, expected text")
        return text

    def _prefix(self, messages: list[dict[str, Any]], tools: list[Any] | None, *, prompt: bool) -> str:
        """The rendering of a conversation prefix; the empty one may not render at all (``messages[0]``)."""
        try:
            return self._template(messages, tools, prompt=prompt)
        except Exception:
            if messages:
                raise
            return ""

    def _rendered(self, messages: list[dict[str, Any]], images: list[Image.Image], tools: list[Any] | None) -> Rendered:
        text = self._template(messages, tools, prompt=False)
        spans: list[tuple[int, int]] = []
        turns: list[int] = []
        rewritten: list[int] = []
        for k, message in enumerate(messages):
            if message.get("role") != "assistant":
                continue
            before = self._prefix(messages[:k], tools, prompt=False)
            if not text.startswith(before) or (spans and len(before) < spans[-1][1]):
                raise ValueError(
                    f"the chat template renders the messages before assistant turn {k} differently in the full "
                    "conversation, so its prompt and answer cannot be told apart"
                )
            prompt = self._prefix(messages[:k], tools, prompt=True)
            start = self._turn_start(before, prompt, text, k)
            end = self._turn_end(text, start, k)
            spans.append((start, end))
            turns.append(k)
            # As generated right after its prompt, the turn would render as after[len(prompt):].
            after = self._template(messages[: k + 1], tools, prompt=False)
            if not (after.startswith(prompt) and after[len(prompt) :].startswith(text[start:end])):
                rewritten.append(k)
        if rewritten and not self._warned:
            self._warned = True  # once per collator, not once per row
            logger.warning(
                "the chat template rewrites assistant turns %s in the full conversation (e.g. drops their "
                "reasoning); training on the rewritten text",
                rewritten,
            )
        return Rendered(messages, images, tools, text, spans, turns, rewritten)

    def _turn_start(self, before: str, prompt: str, text: str, k: int) -> int:
        """Where turn ``k`` starts in ``text``: after the whole tokens of its generation prompt that ``text`` repeats.

        Whole tokens, not characters: with a prompt ending in ``<think>\\n`` and a rewritten turn that opens
        with ``<tool_call>``, the shared ``<`` belongs to the turn.
        """
        if not prompt.startswith(before):
            raise ValueError(f"the generation prompt of assistant turn {k} does not extend the messages before it")
        header = prompt[len(before) :]
        rest = text[len(before) :]
        matched = 0
        for _, end in self._tok(header, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]:
            if not rest.startswith(header[:end]):
                break
            matched = end
        return len(before) + matched

    def _turn_end(self, text: str, start: int, k: int) -> int:
        """Just after the first end-of-turn marker at or after ``start``."""
        hits = [(i, m) for m in self._end_markers if (i := text.find(m, start)) >= 0]
        if not hits:
            raise ValueError(f"assistant turn {k} has no end-of-turn marker (looked for {self._end_markers})")
        i, marker = min(hits)
        return i + len(marker)

    def _pil(self, image: Any) -> Image.Image:
        """An RGB PIL image, downscaled to ``max_pixels`` exactly as ``HFPolicy`` does."""
        from sketchmind.images import fit_pixels

        return fit_pixels(image, self.max_pixels)

    # ----------------------------------------------------------------------------------------- encoding

    def _encode(self, examples: Sequence[Rendered]) -> dict[str, torch.Tensor]:
        """One processor call for the batch: right padding, tensors only."""
        import torch

        kwargs: dict[str, Any] = {}
        if any(example.images for example in examples):
            kwargs["images"] = [example.images for example in examples]
        encoded = self.processor(
            text=[example.text for example in examples],
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=False,  # as HFPolicy: the template already holds any BOS
            **kwargs,
        )
        return {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}

    def _shorten(self, example: Rendered, ids: list[int]) -> Rendered:
        """``example`` cut after its last assistant turn whose end token fits in ``max_length``."""
        assert self.max_length is not None
        _, ends = self.labels(example, ids)
        last = len(example.messages) - 1  # cutting after the last message would change nothing
        fits = [t for t, end in enumerate(ends) if 0 <= end < self.max_length and example.turns[t] < last]
        if not fits:
            raise ValueError(
                f"a row does not fit in max_length={self.max_length}: even cut after its first assistant turn "
                f"(which ends at token {ends[0] + 1 if ends else len(ids)})"
            )
        cut = example.turns[fits[-1]] + 1
        _, counts = template_messages(example.messages[:cut])
        return self._rendered(example.messages[:cut], example.images[: sum(counts)], example.tools)
