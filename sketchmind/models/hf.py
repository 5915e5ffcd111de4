"""Local Hugging Face backend: any ``AutoModelForImageTextToText`` as a ``Policy``, with its own decode loop.

``HFPolicy`` renders the neutral messages with the processor's chat template, prefills, and decodes
token by token over ``model(...)`` forwards with a ``DynamicCache``. Owning the loop (rather than
calling ``model.generate``) is what makes the two performance features possible:

**KV-cache reuse across turns.** A conversation is append-only, so after a turn the backend keeps, per
``conversation.id``, the token ids it has seen (the prompt and the sampled tokens, *as sampled*: decoding
and re-encoding is not stable), the KV cache, and *marks*: points where a prefix of those ids is known
to be exactly a prefix of the rendered conversation (character offset, image count and next rotary
position). On the next turn the conversation is rendered in full, the longest mark whose text and
images are a prefix of the new rendering is found, and only the rest (typically the end-of-turn token,
the observation text and the new image) is tokenized and prefilled on top of the cache. An edited
history falls back to an earlier mark, or to a full prefill. The vision tower only ever sees the new
images: the processor runs on the new suffix alone.

Positions are always passed explicitly, so the model never infers them from cache length or from its
hidden ``rope_deltas`` attribute (which interleaved conversations would corrupt). For Qwen2-VL/2.5-VL/3-VL
the 3-D M-RoPE positions of the new tokens come from the model's own ``get_rope_index`` run on the suffix
and shifted by the conversation's next position (M-RoPE positions are shift-equivariant, and every
mark sits on a text token, never inside an image), so cached and full-prefill positions agree. Other
models (Idefics3, Llama-style text) get 1-D positions.

**Shared-prefix reuse across conversations.** Requests from different conversations usually share their
first tokens: the system prompt with the tool specs, which is most of an agent's first turn. As vLLM's
automatic prefix caching does, the backend keeps the KV of that prefix (the leading system messages as the
chat template renders them, keyed by their text; at most ``PREFIX_CACHE`` of them, least recently used
dropped) and a conversation with no longer cached state of its own starts from it, prefilling only the rest.
The prefix is computed by one forward of its tokens the first time it is seen (those tokens count in that
turn's ``tokens_in``), and used only when the full rendering tokenizes as the prefix's ids followed by the
rest's (no token straddles the boundary), so a cached prefix never changes the prompt the model reads.

**Batched lockstep.** ``generate_batch`` runs many conversations per forward: the cached KV of each row
is left-padded to a common length, the new tokens are left-padded after it, an attention mask hides
both paddings, and each row has its own positions. Rows stop independently and leave the batch as
they finish (their cache is saved for their next turn); decoding goes on until all rows are done.
``generate`` is the same code with one row. The cache is our own ``hf_cache.BufferedLayer`` per layer,
preallocated for the turn, so a decoded token is written in place instead of re-concatenating the layer
(``DynamicCache``'s way, which costs most of a batched CPU decode step).

**Continuous batching.** ``running_batch()`` returns a ``hf_running.RunningBatch`` built from the same pieces
(``_plan``, ``_inputs``, ``_choose``, ``_finish``): rows join it between decode steps and leave it as they end,
so the server never waits for a batch's longest row before starting the next request.

Not thread-safe: one call at a time per ``HFPolicy``. torch/transformers are imported on construction,
so ``import sketchmind`` stays light.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sketchmind.models import hub
from sketchmind.models.base import BackendError, Conversation, Generation, Policy, Sampling
from sketchmind.transformers_compat import cache_keyword

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from sketchmind.models.hf_cache import KV
    from sketchmind.models.hf_running import RunningBatch

# End-of-turn markers of common chat templates; generation also stops on the config's eos ids.
END_OF_TURN = ("<|im_end|>", "<end_of_utterance>", "<|endoftext|>", "<|end_of_text|>", "<|eot_id|>", "<end_of_turn>")

_DTYPES = {
    "float32": "float32",
    "fp32": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


@dataclass(frozen=True)
class _Mark:
    """``ids[:tokens]`` is exactly the rendering ``text[:chars]`` with its first ``images`` images."""

    tokens: int
    chars: int
    images: int
    position: int  # the rotary position of the token after them


@dataclass
class _State:
    """What one conversation leaves behind for its next turn."""

    ids: list[int]
    text: str
    arrays: list[np.ndarray]  # the images of ``text``, by reference (views are immutable)
    marks: list[_Mark]
    kv: KV
    kv_len: int  # <= len(ids): the last sampled token is never forwarded


PREFIX_CACHE = 4  # shared prefixes (e.g. system prompts) whose KV is kept, least recently used dropped first
PREFIX_MIN_TOKENS = 16  # shorter shared prefixes are not worth a cache entry

COORDS_KEY = "sketchmind_coords"  # config.json key: the coordinate convention a checkpoint was trained on
PROTOCOL_KEY = "sketchmind_protocol"  # config.json key: the protocol a checkpoint was trained to speak


@dataclass
class Plan:
    """One row's prefill: what is reused from the cache and what is new."""

    conversation: Conversation
    text: str  # the full rendering, generation prompt included
    arrays: list[np.ndarray]
    mark: _Mark | None
    marks: list[_Mark]  # the reusable marks, kept for the next state
    kv: KV | None
    kv_len: int
    prompt_ids: list[int]  # the full prompt: reused ids + suffix
    new_ids: list[int]  # prompt_ids[kv_len:]: what this turn prefills
    positions: torch.Tensor  # (3 or 1, len(new_ids))
    next_position: int
    per_token: dict[str, torch.Tensor]  # extra (1, len(new_ids)) inputs, e.g. token_type_ids
    pixels: dict[str, torch.Tensor]  # processor outputs for the new images only
    warmed: int = 0  # tokens prefilled for this plan outside the batch (a shared prefix seen the first time)


@dataclass
class Row:
    """One row being decoded: its plan, its sampler and what it has produced so far (``LatentPolicy`` extends it)."""

    plan: Plan
    generator: torch.Generator | None
    ids: list[int] = field(default_factory=list)
    logprob: float = 0.0
    eos: bool = False


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _is_oom(error: BaseException) -> bool:
    return (
        isinstance(error, MemoryError) or "out of memory" in str(error).lower() or "OutOfMemory" in type(error).__name__
    )


PICKLED_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".ckpt")  # weight formats that unpickle when loaded


def refuse_pickled_weights(source: str | Path) -> None:
    """Raise ``BackendError`` (one line) for a local checkpoint whose weights are not safetensors.

    transformers would refuse it too (we load with ``use_safetensors=True``), but with a hub-style
    message; this says what is wrong and what to do. Hub ids and non-directories pass through.
    """
    folder = Path(source).expanduser()
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLED_WEIGHTS)
    if pickled:
        raise BackendError(
            f"refusing to load {str(source)!r}: its weights ({', '.join(pickled[:3])}) are pickle files, which can "
            "run code when loaded; convert them to safetensors (model.save_pretrained(..., safe_serialization=True))"
        )


def _same_image(a: np.ndarray, b: np.ndarray) -> bool:
    return a is b or (a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b))


class HFPolicy(Policy):
    """A local transformers vision-language model with cross-turn KV reuse and batched lockstep decoding.

    ``model`` is a local checkpoint directory or a hub id (the hub needs network access; with
    ``HF_HUB_OFFLINE`` a model that is not on disk or in the hub cache raises ``BackendError``).
    ``device`` defaults to cuda, then mps, then cpu; ``dtype`` to bfloat16 on cuda (float16 where bf16
    is unsupported), float16 on mps, float32 on cpu. ``max_pixels`` downscales larger images (keeping
    their aspect ratio) before the processor sees them. ``prefix_cache`` is how many shared prefixes
    (system prompts) keep their KV for other conversations (0: no shared-prefix reuse).
    """

    prefix_cache: int = PREFIX_CACHE

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_pixels: int | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.device = torch.device(device or self._auto_device())
        self.dtype = self._resolve_dtype(dtype)
        self.max_pixels = max_pixels
        source = str(Path(model).expanduser()) if isinstance(model, Path) else model
        self.name = f"hf:{Path(source).name or source}"
        self._check_source(source)
        # No network when it cannot help: a hub id that is not cached then fails at once, not after retries.
        local = hub.local_files_only(source)
        try:
            processor: Any = AutoProcessor.from_pretrained(source, local_files_only=local)  # type: ignore[no-untyped-call]
            # safetensors only: a .bin/.pt checkpoint is a pickle, and loading one can run arbitrary code.
            model_: Any = AutoModelForImageTextToText.from_pretrained(
                source, dtype=self.dtype, use_safetensors=True, local_files_only=local
            )
        except Exception as error:  # transformers raises OSError, ValueError, hub errors...
            if not Path(source).exists() and local:
                why = "the hub is offline" if hub.offline() else f"the hub ({hub.endpoint()}) cannot be reached"
                raise BackendError(f"model {source!r} not found locally and {why}") from error
            raise BackendError(f"cannot load model {source!r}: {_one_line(error)}") from error
        self._processor = processor
        self._model = model_.to(self.device).eval()
        self.coords = getattr(model_.config, COORDS_KEY, None)
        self.protocol_name = getattr(model_.config, PROTOCOL_KEY, None)
        self._tok: Any = getattr(self._processor, "tokenizer", self._processor)
        self._tok.padding_side = "left"  # for anyone batching through the processor; we pad ourselves
        self._pad_id = self._tok.pad_token_id if self._tok.pad_token_id is not None else 0
        self._eos = self._stop_ids()
        inner = getattr(self._model, "model", None)
        rope_index = getattr(inner, "get_rope_index", None)
        self._rope_index = rope_index if callable(rope_index) else None  # Qwen-VL style 3-D M-RoPE
        from sketchmind.models import hf_cache

        # Caches are only stitched across turns and rows for plain full-attention layers (not sliding windows).
        self._reuse = hf_cache.plain_layers(self._model.config)
        # Decode steps feed one text token per row: the language model alone, without the multimodal wrapper.
        self._decoder: Any = self._model.get_decoder()
        self._cache_kw = cache_keyword(self._model.forward)
        self._decoder_cache_kw = cache_keyword(self._decoder.forward)
        self._embed: Any = self._model.get_input_embeddings()
        self._head: Any = self._model.get_output_embeddings()
        self._states: dict[str, _State] = {}
        self._prefixes: OrderedDict[str, _State] = OrderedDict()  # shared-prefix text -> its state, LRU last
        self._on_text: Callable[[str], None] | None = None  # set by generate_stream for one call

    # ------------------------------------------------------------------------------------ public API

    def generate(self, conversation: Conversation, sampling: Sampling = Sampling()) -> Generation:
        """The next assistant turn, prefilling only what the cache does not already hold.

        ``text`` is the decoded new tokens without the end-of-turn token (special tokens skipped;
        protocol tags such as ``<tool_call>`` are ordinary tokens and stay) and cut before the first
        ``sampling.stop`` string, if one was produced. ``tokens_in`` counts the tokens prefilled this
        turn, ``tokens_out`` the sampled ones (end-of-turn included), and ``logprob`` sums their
        log-probabilities under the raw model distribution (before temperature and top-p).
        """
        return self.generate_batch([conversation], sampling)[0]

    def generate_batch(
        self, conversations: Sequence[Conversation], sampling: Sampling = Sampling()
    ) -> list[Generation]:
        """One turn for each conversation, decoded together in lockstep (left padding, per-row positions).

        Each row reuses its own cached KV as ``generate`` does, so multi-turn rollouts stay incremental
        when batched. Greedy rows give the same tokens as ``generate`` (up to float rounding in near
        ties). With sampling, row ``i`` draws from its own generator seeded ``sampling.seed + i``, so
        copies of one conversation in a batch give different samples and row 0 matches ``generate``.
        """
        import torch

        if not conversations:
            return []
        if sampling.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {sampling.max_new_tokens}")
        try:
            with torch.inference_mode():
                plans = [self._plan(conversation, shared=True) for conversation in conversations]
                return self._run(plans, sampling)
        except Exception as error:  # the model or processor failed mid-turn: one line, and no stale cache
            failure = self._failure(error, conversations)
            if failure is error:
                raise
            raise failure from error

    def _failure(self, error: Exception, conversations: Sequence[Conversation]) -> BackendError:
        """``error`` (raised mid-turn) as the one-line ``BackendError`` to raise; drops the conversations' caches."""
        import torch

        self._drop(conversations)
        if isinstance(error, BackendError):
            return error
        if _is_oom(error):
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            return BackendError(f"out of memory on {self.device.type}: {_one_line(error)}")
        return BackendError(f"model error: {_one_line(error)}")

    def generate_stream(
        self, conversation: Conversation, sampling: Sampling, on_text: Callable[[str], None]
    ) -> Generation:
        """``generate``, calling ``on_text`` with the decoded text so far after every sampled token.

        Not thread-safe, like every call here: the callback lives on the policy for the call's duration.
        """
        self._on_text = on_text
        try:
            return self.generate(conversation, sampling)
        finally:
            self._on_text = None

    def running_batch(self) -> RunningBatch | None:
        """A new continuous batch over this policy (``hf_running``: requests join and leave between decode
        steps), or None where rows cannot be stitched into a running cache: sliding-window or linear-attention
        layers, or a subclass that decodes rows its own way (``LatentPolicy``)."""
        base = HFPolicy
        custom = any(
            getattr(type(self), name) is not getattr(base, name) for name in ("_new_row", "_choose", "_next_embeds")
        )
        if not self._reuse or custom:
            return None
        from sketchmind.models.hf_running import RunningBatch

        return RunningBatch(self)

    def release(self, conversation_id: str) -> None:
        """Drop the conversation's cached ids and KV."""
        self._states.pop(conversation_id, None)

    def fork(self, source_id: str, target_id: str) -> None:
        """``target_id`` starts from ``source_id``'s cached ids, KV and marks (shared, not copied).

        Sharing is safe: a state is never changed in place (a turn saves a new one, and the KV is copied into
        each turn's own buffers), so either conversation's next turn leaves the other's state as it was.
        """
        state = self._states.get(source_id)
        if state is not None:
            self._states[target_id] = state

    def count_tokens(self, conversation: Conversation) -> int:
        """The full prompt length in tokens (images included), as the next turn would see it."""
        import torch

        with torch.inference_mode():
            return len(self._plan(conversation).prompt_ids)

    def token_ids(self, conversation_id: str) -> list[int] | None:
        """The exact token ids held for a conversation (prompts and sampled tokens), e.g. to score a rollout."""
        state = self._states.get(conversation_id)
        return list(state.ids) if state else None

    # ------------------------------------------------------------------------------------- loading

    def _auto_device(self) -> str:
        import torch

        if torch.cuda.is_available():
            return "cuda"
        if torch.backends.mps.is_available():
            return "mps"
        return "cpu"

    def _resolve_dtype(self, dtype: str | None) -> torch.dtype:
        import torch

        if dtype in (None, "auto"):
            if self.device.type == "cuda":
                return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.float16 if self.device.type == "mps" else torch.float32
        name = _DTYPES.get(dtype.lower())
        if name is None:
            raise ValueError(f"unknown dtype {dtype!r}; expected one of auto, {', '.join(sorted(_DTYPES))}")
        resolved: torch.dtype = getattr(torch, name)
        return resolved

    @staticmethod
    def _check_source(source: str) -> None:
        """A path-like name that does not exist is a typo, not a hub id: say so without asking the hub."""
        if (source.startswith(("/", "./", "../", "~")) or source.count("/") > 1) and not Path(source).exists():
            raise BackendError(f"model path {source!r} does not exist")
        refuse_pickled_weights(source)

    def _stop_ids(self) -> frozenset[int]:
        """The config's eos ids, the tokenizer's eos and the end-of-turn markers the vocabulary has."""
        ids: set[int] = set()
        eos = getattr(self._model.generation_config, "eos_token_id", None)
        ids.update(eos if isinstance(eos, list) else [] if eos is None else [eos])
        if self._tok.eos_token_id is not None:
            ids.add(self._tok.eos_token_id)
        vocab = self._tok.get_vocab()
        ids.update(vocab[name] for name in END_OF_TURN if name in vocab)
        return frozenset(ids)

    # ------------------------------------------------------------------------------------- prompts

    def _render(self, conversation: Conversation) -> tuple[str, list[np.ndarray]]:
        """The chat-template text (with the generation prompt) and the images in the order it shows them."""
        from sketchmind.models.chat import template_messages, view_images

        try:
            messages, _ = template_messages(conversation.messages)
            arrays = view_images(conversation.messages, conversation.images)
        except ValueError as error:
            raise BackendError(str(error)) from error
        renderer = self._processor if getattr(self._processor, "chat_template", None) else self._tok
        tools = list(conversation.tools) if conversation.tools else None
        text = renderer.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=False)
        if not isinstance(text, str):
            raise BackendError(f"chat template returned {type(text).__name__}, expected text")
        return text, arrays

    def _pil(self, array: np.ndarray) -> Image.Image:
        from sketchmind.images import fit_pixels

        return fit_pixels(array, self.max_pixels)

    def _plan(self, conversation: Conversation, shared: bool = False) -> Plan:
        """Render the conversation, find what the cache already holds, and encode only the rest.

        With ``shared``, a cached shared prefix (the leading system messages) is reused when the
        conversation's own state holds less of the prompt; it is computed first if it is not cached yet.
        """
        import torch

        text, arrays = self._render(conversation)
        state = self._states.get(conversation.id) if self._reuse else None
        mark, marks = self._match(state, text, arrays) if state else (None, [])
        warmed = 0
        if shared and self._reuse and self.prefix_cache > 0:
            prefix, warmed = self._shared_prefix(conversation, text)
            if prefix is not None and (mark is None or mark.tokens < prefix.marks[-1].tokens):
                state, mark, marks = prefix, prefix.marks[-1], list(prefix.marks)
            else:
                warmed = 0
        kept: list[int] = state.ids[: mark.tokens] if state and mark else []
        suffix_text = text[mark.chars :] if mark else text
        kv_len = min(state.kv_len, mark.tokens) if state and mark else 0
        if mark and not suffix_text:
            kv_len = min(kv_len, mark.tokens - 1)  # nothing new (e.g. sampling again): re-forward the last token
        pending = kept[kv_len:]  # reused ids whose KV is not cached: sampled text tokens
        start = mark.position - len(pending) if mark else 0

        images = [self._pil(array) for array in arrays[mark.images if mark else 0 :]]
        encoded = self._processor(
            text=[suffix_text], images=images or None, return_tensors="pt", add_special_tokens=False
        )
        encoded = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
        suffix = encoded.pop("input_ids")
        encoded.pop("attention_mask", None)
        token_types = encoded.pop("mm_token_type_ids", None)
        suffix_ids: list[int] = suffix[0].tolist()
        new_ids = pending + suffix_ids

        positions = torch.arange(start, start + len(pending)).view(1, -1)
        next_position = start + len(pending)
        if self._rope_index is not None:
            positions = positions.expand(3, -1)
            if suffix_ids:
                if token_types is None:
                    token_types = self._token_types(suffix)
                rope, _ = self._rope_index(
                    input_ids=suffix,
                    mm_token_type_ids=token_types,
                    image_grid_thw=encoded.get("image_grid_thw"),
                    video_grid_thw=encoded.get("video_grid_thw"),
                )
                rope = rope[:, 0].cpu() + next_position  # positions are shift-equivariant
                positions = torch.cat([positions, rope], dim=1)
                next_position = int(rope.max()) + 1
        else:
            positions = torch.arange(start, start + len(new_ids)).view(1, -1)
            next_position = start + len(new_ids)

        # Per-token extras (token_type_ids...) are padded like input_ids; everything else is pixels.
        per_token = {k: v for k, v in encoded.items() if v.dim() == 2 and v.shape == suffix.shape}
        pixels = {k: v for k, v in encoded.items() if k not in per_token}
        per_token = {k: torch.cat([v.new_zeros(1, len(pending)), v], dim=1) for k, v in per_token.items()}
        kv = [(k[:, :, :kv_len], v[:, :, :kv_len]) for k, v in state.kv] if state and mark and kv_len else None
        return Plan(
            conversation=conversation,
            text=text,
            arrays=arrays,
            mark=mark,
            marks=marks,
            kv=kv,
            kv_len=kv_len if kv else 0,
            prompt_ids=kept + suffix_ids,
            new_ids=new_ids,
            positions=positions,
            next_position=next_position,
            per_token=per_token,
            pixels=pixels,
            warmed=warmed,
        )

    def _shared_prefix(self, conversation: Conversation, text: str) -> tuple[_State | None, int]:
        """The cached state of the conversation's shared prefix and how many tokens computing it just took.

        The shared prefix is the leading system messages as the chat template renders them (with the
        request's tools). None when there is none, it holds an image, it is too short, or the rendering
        does not tokenize as its ids followed by the rest's (then reusing it could change the prompt).
        """
        from sketchmind.models.chat import template_messages

        lead = 0
        while lead < len(conversation.messages) and conversation.messages[lead].get("role") == "system":
            lead += 1
        if lead == 0 or lead == len(conversation.messages):
            return None, 0
        try:
            messages, counts = template_messages(conversation.messages[:lead])
        except ValueError:
            return None, 0
        if any(counts):
            return None, 0
        renderer = self._processor if getattr(self._processor, "chat_template", None) else self._tok
        tools = list(conversation.tools) if conversation.tools else None
        prefix = renderer.apply_chat_template(messages, tools=tools, add_generation_prompt=False, tokenize=False)
        if not isinstance(prefix, str) or not prefix or len(prefix) >= len(text) or not text.startswith(prefix):
            return None, 0
        ids: list[int] = self._tok(prefix, add_special_tokens=False)["input_ids"]
        rest: list[int] = self._tok(text[len(prefix) :], add_special_tokens=False)["input_ids"]
        if len(ids) < PREFIX_MIN_TOKENS or self._tok(text, add_special_tokens=False)["input_ids"] != ids + rest:
            return None, 0
        state = self._prefixes.get(prefix)
        if state is not None and state.ids == ids:
            self._prefixes.move_to_end(prefix)
            return state, 0
        config = self._model.config
        media = {getattr(config, key, None) for key in ("image_token_id", "video_token_id")} - {None}
        if media & set(ids):
            return None, 0
        state = _State(
            ids=ids,
            text=prefix,
            arrays=[],
            marks=[_Mark(len(ids), len(prefix), 0, len(ids))],
            kv=self._prefill_alone(ids),
            kv_len=len(ids),
        )
        self._prefixes[prefix] = state
        while len(self._prefixes) > self.prefix_cache:
            self._prefixes.popitem(last=False)
        return state, len(ids)

    def _prefill_alone(self, ids: list[int]) -> KV:
        """The KV of ``ids`` (text tokens at positions 0..n-1) from one forward of them alone."""
        import torch

        from sketchmind.models import hf_cache

        n = len(ids)
        positions = torch.arange(n).view(1, n)
        if self._rope_index is not None:  # text-only M-RoPE: the same position on all three axes
            positions = positions.unsqueeze(0).expand(3, 1, n)
        cache = hf_cache.padded_cache(self._model.config, [None], [0], n)
        self._model(
            input_ids=torch.tensor([ids], dtype=torch.long, device=self.device),
            attention_mask=torch.ones((1, n), dtype=torch.long, device=self.device),
            position_ids=positions.to(self.device),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_kw: cache},
        )
        return hf_cache.row_kv(cache, 0, [(0, n)])

    def _match(self, state: _State, text: str, arrays: list[np.ndarray]) -> tuple[_Mark | None, list[_Mark]]:
        """The longest mark of ``state`` that the new rendering extends, and the marks up to it."""
        same = 0
        while same < min(len(arrays), len(state.arrays)) and _same_image(arrays[same], state.arrays[same]):
            same += 1
        for i in range(len(state.marks) - 1, -1, -1):
            mark = state.marks[i]
            if mark.images <= same and text.startswith(state.text[: mark.chars]):
                return mark, state.marks[: i + 1]
        return None, []

    def _token_types(self, ids: torch.Tensor) -> torch.Tensor:
        """0 text, 1 image, 2 video, for processors that do not return ``mm_token_type_ids``."""
        import torch

        config = self._model.config
        types = torch.zeros_like(ids)
        types[ids == getattr(config, "image_token_id", -1)] = 1
        types[ids == getattr(config, "video_token_id", -1)] = 2
        return types

    # ------------------------------------------------------------------------------------- decoding

    def _inputs(self, plans: Sequence[Plan], max_new_tokens: int) -> tuple[dict[str, Any], int, int]:
        """The padded prefill inputs for ``plans``: (kwargs, cached length L, new length S)."""
        import torch

        device = self.device
        rows = len(plans)
        cached = max(p.kv_len for p in plans)
        new = max(len(p.new_ids) for p in plans)
        ids = torch.full((rows, new), self._pad_id, dtype=torch.long)
        mask = torch.zeros((rows, cached + new), dtype=torch.long)
        positions = torch.zeros((plans[0].positions.shape[0], rows, new), dtype=torch.long)
        per_token: dict[str, torch.Tensor] = {}
        for i, plan in enumerate(plans):
            n = len(plan.new_ids)
            ids[i, new - n :] = torch.tensor(plan.new_ids, dtype=torch.long)
            mask[i, cached - plan.kv_len : cached] = 1
            mask[i, cached + new - n :] = 1
            positions[:, i, new - n :] = plan.positions
            for key, value in plan.per_token.items():
                per_token.setdefault(key, value.new_zeros((rows, new)))[i, new - n :] = value[0]
        kwargs: dict[str, Any] = {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "position_ids": (positions if self._rope_index is not None else positions[0]).to(device),
            **{k: v.to(device) for k, v in per_token.items()},
            **self._merge_pixels([p.pixels for p in plans]),
        }
        if self._reuse:  # our own cache, sized for the whole turn; otherwise the model makes its default one
            from sketchmind.models import hf_cache

            kv = [p.kv for p in plans]
            capacity = cached + new + max_new_tokens
            kwargs[self._cache_kw] = hf_cache.padded_cache(self._model.config, kv, [p.kv_len for p in plans], capacity)
        return kwargs, cached, new

    def _merge_pixels(self, encoded: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Concatenate the rows' image inputs in row order, as the models scatter them into image tokens.

        Idefics-style 5-D ``pixel_values`` (batch, images, C, H, W) go into one pseudo-row along the image
        axis (the model flattens rows and images anyway), spatially zero-padded if sizes differ (padding is
        masked by ``pixel_attention_mask``); flat ones (Qwen patches, grids) are concatenated on axis 0.
        """
        import torch

        merged: dict[str, torch.Tensor] = {}
        for key in dict.fromkeys(k for e in encoded for k in e):
            parts = [e[key] for e in encoded if key in e]
            five_d = key == "pixel_values" and parts[0].dim() == 5
            if five_d or (key == "pixel_attention_mask" and parts[0].dim() == 4):
                height = max(p.shape[-2] for p in parts)
                width = max(p.shape[-1] for p in parts)
                padded = [torch.nn.functional.pad(p, (0, width - p.shape[-1], 0, height - p.shape[-2])) for p in parts]
                value = torch.cat([p.flatten(0, 1) for p in padded]).unsqueeze(0)
            else:
                value = torch.cat(parts)
            if value.is_floating_point():
                value = value.to(self.dtype)
            merged[key] = value.to(self.device)
        return merged

    def _run(self, plans: Sequence[Plan], sampling: Sampling) -> list[Generation]:
        """Prefill all rows, then decode in lockstep; finished rows save their state and leave the batch."""
        import torch

        started = time.perf_counter()
        rows = [self._new_row(plan, self._generator(sampling, i)) for i, plan in enumerate(plans)]
        kwargs, cached, new = self._inputs(plans, sampling.max_new_tokens)
        mask = kwargs["attention_mask"]
        out = self._model(**kwargs, use_cache=True, logits_to_keep=1)
        cache = getattr(out, self._cache_kw)
        logits = out.logits[:, -1]
        next_position = torch.tensor([p.next_position for p in plans], device=self.device)
        active = list(range(len(rows)))
        results: list[Generation | None] = [None] * len(rows)
        steps = 0  # tokens decoded (forwarded) so far by every active row
        hidden: torch.Tensor | None = None  # the last decode step's final hidden states (none after the prefill)
        while True:
            tokens, logprobs = self._choose(logits, [rows[r] for r in active], sampling)
            finished: list[int] = []
            for b, (token, logprob) in enumerate(zip(tokens.tolist(), logprobs.tolist(), strict=True)):
                row = rows[active[b]]
                row.ids.append(token)
                row.logprob += logprob
                row.eos = token in self._eos
                if self._on_text is not None and not row.eos:  # streaming (one row): the text so far
                    self._on_text(self._decode(row.ids, skip_special=True))
                if row.eos or len(row.ids) >= sampling.max_new_tokens or self._stopped(row, sampling.stop):
                    finished.append(b)
            for b in finished:
                plan = rows[active[b]].plan
                # Where the row's KV sits in the batch cache: [pad|cached] [pad|new] [decoded...]
                spans = [(cached - plan.kv_len, cached), (cached + new - len(plan.new_ids), cached + new + steps)]
                results[active[b]] = self._finish(rows[active[b]], cache, b, spans, started, sampling.stop)
            if len(finished) == len(active):
                break
            if sampling.timeout is not None and time.perf_counter() - started > sampling.timeout:
                raise BackendError(f"generation timed out after {sampling.timeout:g} s")
            if finished:
                keep = [b for b in range(len(active)) if b not in finished]
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, next_position, tokens = mask[index], next_position[index], tokens[index]
                hidden = hidden[index] if hidden is not None else None
                active = [active[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            positions = next_position.view(-1, 1)
            if self._rope_index is not None:
                positions = positions.unsqueeze(0).expand(3, -1, -1)
            hidden = self._decoder(
                inputs_embeds=self._next_embeds(tokens, hidden, [rows[r] for r in active]),
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                **{self._decoder_cache_kw: cache},
            ).last_hidden_state
            logits = self._head(hidden[:, -1])
            next_position = next_position + 1
            steps += 1
        return [r for r in results if r is not None]

    def _new_row(self, plan: Plan, generator: torch.Generator | None) -> Row:
        """A row's decoding state; subclasses return a ``Row`` subclass to keep per-row state of their own."""
        return Row(plan, generator)

    def _next_embeds(self, tokens: torch.Tensor, hidden: torch.Tensor | None, rows: Sequence[Row]) -> torch.Tensor:
        """The decode step's input embeddings, ``(rows, 1, hidden)``: the embeddings of the chosen ``tokens``.

        ``hidden`` is the previous decode step's ``last_hidden_state`` (``None`` right after the prefill), so a
        subclass can feed a row a function of its own last hidden state instead of a token (latent reasoning).
        """
        embeds: torch.Tensor = self._embed(tokens.view(-1, 1))
        return embeds

    def _generator(self, sampling: Sampling, row: int) -> torch.Generator | None:
        import torch

        if sampling.temperature <= 0 or sampling.seed is None:
            return None
        generator = torch.Generator(device=self.device)
        generator.manual_seed(sampling.seed + row)
        return generator

    def _choose(self, logits: torch.Tensor, rows: Sequence[Row], sampling: Sampling) -> tuple[torch.Tensor, ...]:
        """Next token per row (greedy or temperature/top-p sampling) and its raw log-probability."""
        import torch

        logits = logits.float()
        logprobs = torch.log_softmax(logits, dim=-1)
        if sampling.temperature <= 0:
            tokens = logits.argmax(dim=-1)
        else:
            probs = torch.softmax(logits / sampling.temperature, dim=-1)
            if sampling.top_p < 1.0:
                # Keep the smallest set of tokens whose probability reaches top_p (always the top one).
                sorted_probs, order = probs.sort(dim=-1, descending=True)
                outside = sorted_probs.cumsum(dim=-1) - sorted_probs >= sampling.top_p
                outside[:, 0] = False
                sorted_probs = sorted_probs.masked_fill(outside, 0.0)
                probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
            tokens = torch.cat([torch.multinomial(probs[b], 1, generator=row.generator) for b, row in enumerate(rows)])
        return tokens, logprobs.gather(-1, tokens.view(-1, 1)).view(-1)

    def _decode(self, ids: Sequence[int], *, skip_special: bool) -> str:
        text: str = self._tok.decode(ids, skip_special_tokens=skip_special, clean_up_tokenization_spaces=False)
        return text

    def _stopped(self, row: Row, stops: Sequence[str]) -> bool:
        """Whether the tail of the row's text now contains a stop string."""
        if not stops:
            return False
        # A stop string of n characters spans at most 4n byte-level tokens; a few more for safety.
        window = 4 * max(len(s) for s in stops) + 4
        tail = self._decode(row.ids[-window:], skip_special=True)
        return any(s and s in tail for s in stops)

    def _finish(
        self, row: Row, cache: Any, b: int, spans: Sequence[tuple[int, int]], started: float, stops: Sequence[str]
    ) -> Generation:
        """The row's ``Generation``; its cache (batch row ``b``) and marks become the conversation's state.

        ``spans`` are the (start, end) slot ranges of row ``b`` that hold its KV, in token order: the prompt's,
        then the decoded tokens'.
        """
        plan = row.plan
        text_ids = row.ids[:-1] if row.eos else row.ids
        text = self._decode(text_ids, skip_special=True)
        cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
        if cut >= 0:
            text = text[:cut]
        if self._reuse:
            self._save(row, cache, b, spans, text_ids, text)
        return Generation(
            text=text,
            tokens_in=len(plan.new_ids) + plan.warmed,
            tokens_out=len(row.ids),
            context=len(plan.prompt_ids) + len(row.ids),
            logprob=row.logprob,
            seconds=time.perf_counter() - started,
        )

    def _save(
        self, row: Row, cache: Any, b: int, spans: Sequence[tuple[int, int]], text_ids: list[int], text: str
    ) -> None:
        """Keep the prompt, the sampled ids that spell a prefix of ``text``, their KV and the marks."""
        from sketchmind.models import hf_cache

        plan = row.plan
        kept = self._committed(text_ids, text)
        forwarded = min(kept, len(row.ids) - 1)  # the last sampled token was never forwarded
        kv = hf_cache.row_kv(cache, b, hf_cache.first_slots(spans, plan.kv_len + len(plan.new_ids) + forwarded))
        prompt = _Mark(len(plan.prompt_ids), len(plan.text), len(plan.arrays), plan.next_position)
        marks = [*plan.marks, prompt]
        sampled = self._decode(text_ids[:kept], skip_special=False)
        if kept:
            marks.append(
                _Mark(prompt.tokens + kept, prompt.chars + len(sampled), prompt.images, prompt.position + kept)
            )
        self._states[plan.conversation.id] = _State(
            ids=plan.prompt_ids + text_ids[:kept],
            text=plan.text + sampled,
            arrays=plan.arrays,
            marks=marks,
            kv=kv,
            kv_len=len(plan.prompt_ids) + forwarded,
        )

    def _committed(self, ids: list[int], text: str) -> int:
        """How many leading ``ids`` decode (special tokens and all) to a prefix of ``text``.

        Usually all of them. Not when the text was cut at a stop string, or when the model sampled a
        special token that the returned text skips: the next rendering will not contain those tokens.
        """
        if self._decode(ids, skip_special=False) == text:
            return len(ids)
        good, bad = 0, len(ids)  # byte-level pieces can make this non-monotone; any good answer is safe
        while bad - good > 1:
            mid = (good + bad) // 2
            if text.startswith(self._decode(ids[:mid], skip_special=False)):
                good = mid
            else:
                bad = mid
        return good

    def _drop(self, conversations: Sequence[Conversation]) -> None:
        for conversation in conversations:
            self._states.pop(conversation.id, None)
