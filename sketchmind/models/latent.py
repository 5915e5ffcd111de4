"""Latent reasoning: a ``HFPolicy`` that imagines in hidden states instead of rendering a drawing.

The model generates text as usual. When it samples ``<|latent_start|>``, the next ``K`` positions are
*latent slots*: the input embedding of each slot is ``P(h)``, where ``h`` is the decoder's final hidden
state (after the final norm) at the previous position and ``P`` is the checkpoint's projection
(``RMSNorm(H)`` then ``Linear(H, H)``). After the ``K`` slots ``<|latent_end|>`` is fed as an ordinary
token and sampling resumes. In the returned text each block reads
``<|latent_start|>`` + ``<|latent_pad|>`` x K + ``<|latent_end|>``, so parsers and traces see where the
model imagined.

Checkpoint contract: an ordinary HF model directory (``HFPolicy`` loads it) whose tokenizer has the three
tokens above, plus ``latent.json`` (``{"k", "start_id", "pad_id", "end_id", "hidden_size"}``, optionally
``"eps"``) and ``latent_projection.safetensors`` (``norm.weight``, ``linear.weight``, ``linear.bias``).

The hidden-state feedback rides on ``HFPolicy``'s own decode loop through two hooks: ``_choose`` (which
token each row gets: sampled, or forced inside a block) and ``_next_embeds`` (what each row is fed:
a token embedding, or ``P(h)`` in a slot). So KV reuse, lockstep batches with per-row latent state,
sampling, EOS and stop strings all behave as in ``HFPolicy``. The KV of a latent slot is kept in the
conversation's cache like any other position; a later full re-prefill (edited history) would see the
pad token's embedding there instead, since the text only records where the block was.

torch is imported inside functions: importing this module stays as light as ``sketchmind.models.hf``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sketchmind.latent.tokens import (
    LATENT_END,
    LATENT_FILE,
    LATENT_PAD,
    LATENT_START,
    PROJECTION_FILE,
    LatentSpec,
    read_spec,
)
from sketchmind.models.base import BackendError
from sketchmind.models.hf import HFPolicy, Plan, Row

if TYPE_CHECKING:
    import torch

    from sketchmind.models.base import Sampling

PROJECTION_EPS = 1e-6  # P's RMSNorm epsilon, as the trainer's nn.RMSNorm (latent/tokens.py) uses


@dataclass(frozen=True)
class Projection:
    """``P(h) = Linear(RMSNorm(h))``, applied with plain tensors (no ``nn.Module``, so no import-time torch)."""

    norm_weight: torch.Tensor  # (H,)
    weight: torch.Tensor  # (H, H), as nn.Linear stores it: out x in
    bias: torch.Tensor  # (H,)
    eps: float = PROJECTION_EPS

    def __call__(self, hidden: torch.Tensor) -> torch.Tensor:
        import torch

        # The norm in float32, as the decoder's own RMSNorm does, so bf16 checkpoints match training.
        x = hidden.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        x = (x.to(hidden.dtype) * self.norm_weight).to(self.weight.dtype)
        return torch.nn.functional.linear(x, self.weight, self.bias)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"norm.weight": self.norm_weight, "linear.weight": self.weight, "linear.bias": self.bias}


def projection_for_inference(
    directory: str | Path, spec: LatentSpec, *, device: Any = "cpu", dtype: torch.dtype | None = None
) -> Projection:
    """Read ``latent_projection.safetensors`` and check its shapes against ``spec.hidden_size``."""
    from safetensors.torch import load_file

    tensors = load_file(str(Path(directory) / PROJECTION_FILE))
    h = spec.hidden_size
    expected = {"norm.weight": (h,), "linear.weight": (h, h), "linear.bias": (h,)}
    for key, shape in expected.items():
        if key not in tensors or tuple(tensors[key].shape) != shape:
            got = tuple(tensors[key].shape) if key in tensors else "missing"
            raise ValueError(f"{PROJECTION_FILE}: {key} should be {shape}, got {got}")
    moved = {k: tensors[k].to(device=device, dtype=dtype) for k in expected}
    return Projection(moved["norm.weight"], moved["linear.weight"], moved["linear.bias"])


@dataclass
class _LatentRow(Row):
    """A row's latent state for one turn: blocks opened so far, slots still to feed, and the pending end."""

    blocks: int = 0
    slots_left: int = 0
    closing: bool = False
    allowed: bool = True  # whether this row may open a block at all (the agent's per-conversation switch)


class LatentPolicy(HFPolicy):
    """``HFPolicy`` over a latent checkpoint: ``<|latent_start|>`` opens ``K`` slots fed with ``P(h_prev)``.

    ``max_latent_blocks`` caps the blocks per row per turn: past it, ``<|latent_start|>`` is masked out.
    ``<|latent_pad|>`` and ``<|latent_end|>`` are always masked when sampling text (only the loop writes
    them). ``set_latent(conversation_id, False)`` forbids blocks for one conversation (the agent's
    ``auto`` mode renders first and only lets the model imagine once drawing is no longer possible).
    Log-probabilities are of the sampled tokens under the raw model distribution; the forced pads and
    end tokens add nothing to them but count in ``tokens_out`` and ``max_new_tokens``.

    ``ablation`` is the latent ablation of the diagnostics, at decode time: ``"mean"`` feeds every slot the
    mean latent of its slot index (``slot_means``, e.g. another policy's ``latent_means()`` after a normal
    run) and ``"noise"`` Gaussian noise at the norm of the latent it replaces. Whatever the ablation, the
    latents the model computed are averaged per slot index (``latent_means()``).
    """

    def __init__(
        self,
        model: str | Path,
        *,
        device: str | None = None,
        dtype: str | None = None,
        max_pixels: int | None = None,
        max_latent_blocks: int = 16,
        ablation: Literal["mean", "noise"] | None = None,
        slot_means: torch.Tensor | None = None,
    ) -> None:
        super().__init__(model, device=device, dtype=dtype, max_pixels=max_pixels)
        directory = Path(model).expanduser()
        if not (directory / LATENT_FILE).is_file():
            raise BackendError(f"{str(model)!r} is not a latent checkpoint: no {LATENT_FILE}")
        try:
            self.spec = read_spec(directory)
            self._projection = projection_for_inference(directory, self.spec, device=self.device, dtype=self.dtype)
        except (ValueError, KeyError, OSError) as error:
            raise BackendError(f"cannot load the latent head of {str(model)!r}: {error}") from error
        vocab = self._tok.get_vocab()
        named = {LATENT_START: self.spec.start_id, LATENT_PAD: self.spec.pad_id, LATENT_END: self.spec.end_id}
        for token, token_id in named.items():
            if vocab.get(token) != token_id:
                raise BackendError(f"{LATENT_FILE} says {token} is {token_id}; the tokenizer says {vocab.get(token)}")
        self._latent_text = {token_id: token for token, token_id in named.items()}
        self.max_latent_blocks = max_latent_blocks
        if ablation not in (None, "mean", "noise"):
            raise ValueError(f"unknown latent ablation {ablation!r}; use 'mean' or 'noise'")
        if ablation == "mean" and (
            slot_means is None or tuple(slot_means.shape) != (self.spec.k, self.spec.hidden_size)
        ):
            raise ValueError(f"the mean ablation needs slot_means of shape ({self.spec.k}, {self.spec.hidden_size})")
        self.ablation = ablation
        self._slot_means = None if slot_means is None else slot_means.to(self.device)
        self._noise = None if ablation != "noise" else self._generator_for_noise()
        self._latent_sums: list[Any] = [None] * self.spec.k  # per slot index: the sum of the computed latents
        self._latent_counts = [0] * self.spec.k
        self._forbidden: set[str] = set()
        self.name = self.name.replace("hf:", "latent:", 1)

    def latent_means(self) -> torch.Tensor | None:
        """``(K, H)``: the mean of the latents this policy computed at each slot index (None before any)."""
        import torch

        if not all(self._latent_counts):
            return None
        return torch.stack([s / n for s, n in zip(self._latent_sums, self._latent_counts, strict=True)]).float().cpu()

    def _generator_for_noise(self) -> torch.Generator:
        import torch

        return torch.Generator(device=self.device).manual_seed(0)

    def set_latent(self, conversation_id: str, allowed: bool) -> None:
        """Allow or forbid latent blocks in a conversation's next turns (allowed unless told otherwise)."""
        if allowed:
            self._forbidden.discard(conversation_id)
        else:
            self._forbidden.add(conversation_id)

    def release(self, conversation_id: str) -> None:
        super().release(conversation_id)
        self._forbidden.discard(conversation_id)

    # ------------------------------------------------------------------------------ decode hooks

    def _new_row(self, plan: Plan, generator: torch.Generator | None) -> Row:
        return _LatentRow(plan, generator, allowed=plan.conversation.id not in self._forbidden)

    def _choose(self, logits: torch.Tensor, rows: Sequence[Row], sampling: Sampling) -> tuple[torch.Tensor, ...]:
        """Sample text rows with the latent tokens masked as needed; force pads and the end inside blocks."""
        import torch

        spec = self.spec
        raw = logits.float()
        masked = raw.clone()
        masked[:, [spec.pad_id, spec.end_id]] = -torch.inf
        for b, row in enumerate(rows):
            assert isinstance(row, _LatentRow)
            if not row.allowed or row.blocks >= self.max_latent_blocks:
                masked[b, spec.start_id] = -torch.inf
        tokens, _ = super()._choose(masked, rows, sampling)
        # As HFPolicy: the log-probability under the raw distribution, not the masked one.
        logprobs = torch.log_softmax(raw, dim=-1).gather(-1, tokens.view(-1, 1)).view(-1)
        for b, row in enumerate(rows):
            assert isinstance(row, _LatentRow)
            forced = None
            if row.slots_left:
                forced, row.slots_left = spec.pad_id, row.slots_left - 1
                row.closing = row.slots_left == 0
            elif row.closing:
                forced, row.closing = spec.end_id, False
            elif int(tokens[b]) == spec.start_id:
                row.blocks += 1
                row.slots_left = spec.k
            if forced is not None:
                tokens[b], logprobs[b] = forced, 0.0
        return tokens, logprobs

    def _next_embeds(self, tokens: torch.Tensor, hidden: torch.Tensor | None, rows: Sequence[Row]) -> torch.Tensor:
        """Token embeddings, except that a latent slot (a pad) gets ``P`` of its row's previous hidden state."""
        import torch

        embeds = super()._next_embeds(tokens, hidden, rows)
        slots = (tokens == self.spec.pad_id).nonzero().view(-1)
        if len(slots):
            # A pad is only ever forced after latent_start or another pad, both decoded: hidden exists.
            assert hidden is not None
            latents = self._projection(hidden[slots])
            # _choose has already counted this pad: slots_left is what remains after it.
            index = [self.spec.k - 1 - rows[int(b)].slots_left for b in slots]  # type: ignore[attr-defined]
            for latent, i in zip(latents.detach().float().reshape(len(index), -1), index, strict=True):
                self._latent_sums[i] = latent if self._latent_sums[i] is None else self._latent_sums[i] + latent
                self._latent_counts[i] += 1
            if self.ablation == "mean":
                assert self._slot_means is not None
                latents = self._slot_means[index].reshape(latents.shape).to(latents.dtype)
            elif self.ablation == "noise":
                noise = torch.randn(latents.shape, generator=self._noise, device=latents.device, dtype=torch.float32)
                latents = (noise * latents.float().norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)).to(
                    latents.dtype
                )
            embeds = embeds.clone()
            embeds[slots] = latents.to(embeds.dtype)
        return embeds

    def _decode(self, ids: Sequence[int], *, skip_special: bool) -> str:
        """As ``HFPolicy``, but the latent tokens stay in the text even when other special tokens are skipped."""
        if not skip_special:
            return super()._decode(ids, skip_special=False)
        parts: list[str] = []
        run: list[int] = []
        for token in ids:
            if token in self._latent_text:
                parts += [super()._decode(run, skip_special=True), self._latent_text[token]]
                run = []
            else:
                run.append(token)
        parts.append(super()._decode(run, skip_special=True))
        return "".join(parts)
