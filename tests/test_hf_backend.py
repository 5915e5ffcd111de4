"""The transformers backend on real tiny checkpoints (built offline): cache reuse, batching, sampling, errors."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from sketchmind.models.base import BackendError, Conversation, Generation, Sampling
from sketchmind.models.tiny import FAMILIES, build_tiny

if TYPE_CHECKING:
    from sketchmind.models.hf import HFPolicy

pytest.importorskip("transformers")

SYSTEM = "You reason by drawing. Call a tool or answer."
QUESTIONS = (
    "Where is the goal?",
    "Draw a box around the maze and count the boxes in each row and column.",
    "Zoom in.",
    "Find a safe path from the start to the exit, avoiding every hole and wall.",
)
GREEDY = Sampling(max_new_tokens=10)


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(family, root / family.replace(".", "")) for family in FAMILIES}


@pytest.fixture(scope="module")
def policies(paths: dict[str, Path]) -> dict[str, HFPolicy]:
    from sketchmind.models.hf import HFPolicy

    policies = {family: HFPolicy(path) for family, path in paths.items()}
    for policy in policies.values():  # fresh conversations here are full-prefill references (shared prefixes:
        policy.prefix_cache = 0  # tests/test_prefix_reuse.py)
    return policies


def images(n: int = 6) -> dict[int, np.ndarray]:
    """Views of different sizes (Qwen sees different grids; Idefics3 resizes them all)."""
    rng = np.random.default_rng(0)
    return {i: rng.integers(0, 256, (48 + 8 * i, 64 + 16 * (i % 3), 3), dtype=np.uint8) for i in range(1, n + 1)}


def opening(cid: str, question: str = QUESTIONS[0], view: int = 1) -> Conversation:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
        {"role": "user", "content": [{"type": "image", "view": view}, {"type": "text", "text": question}]},
    ]
    return Conversation(id=cid, messages=messages, images=images())


def extend(conversation: Conversation, text: str, view: int) -> None:
    """The assistant's turn, then the tool result with a new view."""
    conversation.messages += [
        {"role": "assistant", "content": [{"type": "text", "text": text}]},
        {
            "role": "tool",
            "content": [{"type": "text", "text": f"view {view} (box drawn)"}, {"type": "image", "view": view}],
        },
    ]


def canned(turn: int) -> str:
    return (
        f'<think>look at view {turn}</think><tool_call>{{"name": "box", "arguments": {{"view": {turn}}}}}</tool_call>'
    )


def assert_same(a: Generation, b: Generation) -> None:
    assert a.text == b.text
    assert a.tokens_out == b.tokens_out
    assert a.logprob is not None and b.logprob is not None
    assert math.isclose(a.logprob, b.logprob, abs_tol=1e-3), (a.logprob, b.logprob)


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_and_counts_tokens(policies: dict[str, HFPolicy], family: str) -> None:
    import torch

    policy = policies[family]
    assert policy.device.type == "cpu" and policy.dtype == torch.float32
    conversation = opening(f"load-{family}")
    n = policy.count_tokens(conversation)
    out = policy.generate(conversation, GREEDY)
    assert out.tokens_in == n > 20  # the first turn prefills the whole prompt
    assert out.context == n + (out.tokens_out or 0)
    assert 1 <= (out.tokens_out or 0) <= GREEDY.max_new_tokens and out.seconds > 0
    assert out.logprob is not None and out.logprob < 0
    policy.release(conversation.id)
    again = policy.generate(conversation, GREEDY)
    assert_same(out, again)  # greedy is deterministic
    policy.release(conversation.id)


def test_sampling_is_reproducible_with_a_seed(policies: dict[str, HFPolicy]) -> None:
    policy = policies["qwen2.5-vl"]
    conversation = opening("sampled")
    hot = Sampling(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=7)
    first = policy.generate(conversation, hot)
    # The conversation did not change: only its last prompt token is prefilled again, and the same seed
    # draws the same tokens from the cached prompt.
    second = policy.generate(conversation, hot)
    assert second.tokens_in == 1 and first.tokens_in and first.tokens_in > 20
    assert second.context == first.context  # a cached prompt still counts whole in the context
    assert_same(first, second)
    others = {policy.generate(conversation, Sampling(12, 1.0, 0.9, seed)).text for seed in (8, 9, 10)}
    assert len(others | {first.text}) > 1
    policy.release(conversation.id)


@pytest.mark.parametrize("family", FAMILIES)
def test_cache_reuse_equals_full_prefill(policies: dict[str, HFPolicy], family: str) -> None:
    """Four turns, a new image each turn: prefilling only the new tokens changes nothing."""
    policy = policies[family]
    cached, fresh = opening(f"cached-{family}"), opening(f"fresh-{family}")  # interleaved on one model
    previous = 0
    for turn in range(1, 5):
        full = policy.count_tokens(fresh) if turn == 1 else previous_full(policy, fresh)
        got = policy.generate(cached, GREEDY)
        policy.release(fresh.id)
        want = policy.generate(fresh, GREEDY)
        assert_same(got, want)
        assert want.tokens_in == full
        if turn == 1:
            assert got.tokens_in == full
        else:  # exactly what the previous prompt did not have: the assistant turn, the result, the image
            assert got.tokens_in == full - previous
            assert got.tokens_in is not None and got.tokens_in < full * 0.6
        previous = full
        for conversation in (cached, fresh):
            extend(conversation, canned(turn), view=turn + 1)
    policy.release(cached.id)
    policy.release(fresh.id)


def previous_full(policy: HFPolicy, conversation: Conversation) -> int:
    policy.release(conversation.id)
    return policy.count_tokens(conversation)


@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_ids_are_kept_and_match_a_reference_forward(
    policies: dict[str, HFPolicy], paths: dict[str, Path], family: str
) -> None:
    """Turns that append the model's own text reuse its sampled ids verbatim, and decode as HF generate would.

    The reference is transformers' own ``generate`` from one full prefill of the same ids with every image.
    """
    policy = policies[family]
    conversation = opening(f"own-{family}")
    reference = Reference(paths[family])
    for turn in range(1, 4):
        before = policy.token_ids(conversation.id) or []
        n_prompt = policy.count_tokens(conversation)
        got = policy.generate(conversation, GREEDY)
        ids = policy.token_ids(conversation.id)
        assert ids is not None and ids[: len(before)] == before  # never re-encoded
        new = n_prompt - len(before)
        assert got.tokens_in is not None and new <= got.tokens_in <= new + 1  # + the last sampled token
        if turn > 1:
            assert got.tokens_in < n_prompt * 0.6
        text, logprob = reference.generate(ids[:n_prompt], conversation, GREEDY.max_new_tokens)
        assert got.text == text
        assert got.logprob is not None and math.isclose(got.logprob, logprob, abs_tol=1e-3)
        extend(conversation, got.text, view=turn + 1)
    policy.release(conversation.id)


class Reference:
    """transformers' ``generate`` on a full prompt of given ids: the independent check."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        model: Any = AutoModelForImageTextToText.from_pretrained(path)
        self.model = model.eval()
        self.processor: Any = AutoProcessor.from_pretrained(path)  # type: ignore[no-untyped-call]

    def generate(self, ids: list[int], conversation: Conversation, max_new_tokens: int) -> tuple[str, float]:
        import torch
        from PIL import Image

        views = [p["view"] for m in conversation.messages for p in m["content"] if p["type"] == "image"]
        pil = [Image.fromarray(conversation.images[v]) for v in views]
        input_ids = torch.tensor([ids])
        config = self.model.config
        if hasattr(config, "vision_start_token_id"):  # Qwen: flat patches + grids, token types for M-RoPE
            pixels = dict(self.processor.image_processor(images=pil, return_tensors="pt"))
            pixels["mm_token_type_ids"] = (input_ids == config.image_token_id).long()
        else:
            pixels = dict(self.processor.image_processor(images=[pil], return_tensors="pt"))
        with torch.no_grad():
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                **pixels,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                output_scores=True,
                return_dict_in_generate=True,
            )
        new = out.sequences[0, len(ids) :].tolist()
        logprob = sum(float(torch.log_softmax(s[0].float(), -1)[t]) for s, t in zip(out.scores, new, strict=True))
        eos = set(self.model.generation_config.eos_token_id)
        if new and new[-1] in eos:
            new = new[:-1]
        text = self.processor.tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text, logprob


@pytest.mark.parametrize("family", FAMILIES)
def test_batch_equals_single_rows(policies: dict[str, HFPolicy], family: str) -> None:
    """Rows of different lengths and image sizes, over two turns (the second reuses each row's cache)."""
    policy = policies[family]
    probe = opening(f"probe-{family}")
    text = policy.generate(probe, GREEDY).text
    policy.release(probe.id)
    # A stop string from row 0's own output: that row finishes early and leaves the batch.
    sampling = Sampling(max_new_tokens=10, stop=(printable_piece(text),))
    rows = [opening(f"batch{i}-{family}", q, view=i + 1) for i, q in enumerate(QUESTIONS)]
    singles = [opening(f"single{i}-{family}", q, view=i + 1) for i, q in enumerate(QUESTIONS)]
    for turn in range(1, 3):
        batched = policy.generate_batch(rows, sampling)
        alone = [policy.generate(c, sampling) for c in singles]
        for got, want in zip(batched, alone, strict=True):
            assert_same(got, want)
            assert got.tokens_in == want.tokens_in
        if turn == 1:
            assert len({g.tokens_out for g in batched}) > 1  # rows finished at different steps
        for conversation, got in [*zip(rows, batched, strict=True), *zip(singles, alone, strict=True)]:
            extend(conversation, got.text, view=5 + turn)
    for conversation in rows + singles:
        policy.release(conversation.id)


def printable_piece(text: str) -> str:
    """Two printable ASCII characters from the middle of ``text``."""
    for i in range(2, len(text) - 1):
        piece = text[i : i + 2]
        if piece.isascii() and piece.isprintable() and piece.strip() == piece:
            return piece
    pytest.fail(f"no printable piece in {text!r}")


def test_stop_strings_and_max_new_tokens(policies: dict[str, HFPolicy]) -> None:
    policy = policies["qwen3-vl"]
    conversation = opening("stops")
    free = policy.generate(conversation, Sampling(max_new_tokens=16))
    policy.release(conversation.id)
    stop = printable_piece(free.text)
    cut = policy.generate(conversation, Sampling(max_new_tokens=16, stop=("never appears", stop)))
    assert cut.text == free.text[: free.text.index(stop)]
    assert cut.tokens_out is not None and free.tokens_out is not None and cut.tokens_out < free.tokens_out
    ids = policy.token_ids(conversation.id)
    assert ids is not None  # the kept sampled ids spell a prefix of the returned text
    policy.release(conversation.id)
    for n in (1, 3):
        assert policy.generate(conversation, Sampling(max_new_tokens=n)).tokens_out == n
        policy.release(conversation.id)
    with pytest.raises(ValueError, match="max_new_tokens"):
        policy.generate(conversation, Sampling(max_new_tokens=0))


def test_edited_history_falls_back_to_a_full_prefill(policies: dict[str, HFPolicy]) -> None:
    policy = policies["idefics3"]
    conversation = opening("edited")
    extend(conversation, policy.generate(conversation, GREEDY).text, view=2)
    policy.generate(conversation, GREEDY)
    conversation.messages[1]["content"][1]["text"] = "Where is the exit?"  # rewrite the first question
    full = policy.count_tokens(conversation)
    got = policy.generate(conversation, GREEDY)
    policy.release(conversation.id)
    assert got.tokens_in == full and full == policy.count_tokens(conversation)
    assert_same(got, policy.generate(conversation, GREEDY))
    policy.release(conversation.id)


def test_turn_failures_are_one_line_and_drop_the_cache(policies: dict[str, HFPolicy]) -> None:
    policy = policies["qwen2.5-vl"]
    conversation = opening("failing")
    extend(conversation, policy.generate(conversation, GREEDY).text, view=2)
    assert policy.token_ids(conversation.id) is not None
    # An array no image library can read (5 channels) fails mid-turn, after part of the prompt is planned.
    conversation.images = {**conversation.images, 9: np.zeros((8, 8, 5), dtype=np.uint8)}
    conversation.messages[-1]["content"].append({"type": "image", "view": 9})
    with pytest.raises(BackendError) as failure:
        policy.generate(conversation, GREEDY)
    assert "\n" not in str(failure.value)
    assert policy.token_ids(conversation.id) is None
    conversation.messages[-1]["content"][-1] = {"type": "image", "view": 42}
    with pytest.raises(BackendError, match="view 42"):
        policy.generate(conversation, GREEDY)
    conversation.messages[-1]["content"].pop()
    with pytest.raises(BackendError, match="timed out"):
        policy.generate(conversation, Sampling(max_new_tokens=50, timeout=1e-9))
    assert policy.token_ids(conversation.id) is None


def test_buffered_layer_appends_in_place_and_grows() -> None:
    import torch

    from sketchmind.models.hf_cache import BufferedLayer

    layer = BufferedLayer(capacity=4)
    chunks = [torch.randn(2, 2, n, 8) for n in (3, 1, 5)]  # the third overflows the capacity
    for chunk in chunks:
        keys, values = layer.update(chunk, -chunk)
    assert torch.equal(keys, torch.cat(chunks, dim=2)) and torch.equal(values, -keys)
    assert layer.get_seq_length() == 9 and layer.capacity >= 9
    layer.batch_select_indices(torch.tensor([1]))
    layer.crop(-2)
    assert layer.keys is not None and torch.equal(layer.keys, torch.cat(chunks, dim=2)[1:, :, :7])


def test_missing_model_is_a_one_line_backend_error(tmp_path: Path) -> None:
    from sketchmind.models.hf import HFPolicy

    with pytest.raises(BackendError) as missing:
        HFPolicy(tmp_path / "no-such-model")
    assert "does not exist" in str(missing.value) and "\n" not in str(missing.value)
    with pytest.raises(BackendError) as offline:
        HFPolicy("nobody-here/no-such-model")
    assert str(offline.value) == "model 'nobody-here/no-such-model' not found locally and the hub is offline"


def test_import_stays_light() -> None:
    code = (
        "import sys, sketchmind, sketchmind.models.hf; "
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
