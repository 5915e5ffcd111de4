"""The latent decode loop on a tiny random Qwen2.5-VL latent checkpoint: feedback, batching, cache, agent."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from recorded import MAZE

from sketchmind.agent import Agent, Budgets
from sketchmind.models.base import Conversation, Sampling

if TYPE_CHECKING:
    import torch

    from sketchmind.models.hf import _Row
    from sketchmind.models.latent import LatentPolicy

pytest.importorskip("transformers")

K = 3
GREEDY = Sampling(max_new_tokens=14)
FORCE_AT = 2  # a row whose id contains "latent" is pushed to open a block as its 3rd token


@pytest.fixture(scope="module")
def path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sketchmind.models.tiny_latent import build_tiny_latent

    return build_tiny_latent("qwen2.5-vl", tmp_path_factory.mktemp("latent"), k=K)


def forced_class() -> type[LatentPolicy]:
    from sketchmind.models.latent import LatentPolicy

    class Forced(LatentPolicy):
        """Biases ``<|latent_start|>`` at step ``FORCE_AT`` (or at every step with ``always``) in "latent" rows."""

        always = False

        def _choose(self, logits: torch.Tensor, rows: Sequence[_Row], sampling: Sampling) -> tuple[torch.Tensor, ...]:
            logits = logits.clone()
            for b, row in enumerate(rows):
                if "latent" in row.plan.conversation.id and (self.always or len(row.ids) == FORCE_AT):
                    logits[b, self.spec.start_id] += 1e4
            return super()._choose(logits, rows, sampling)

    return Forced


@pytest.fixture(scope="module")
def policy(path: Path) -> LatentPolicy:
    policy = forced_class()(path)
    # Rows here are compared with single runs token count for token count: every conversation prefills all of
    # its prompt (shared-prefix reuse has its own tests: tests/test_prefix_reuse.py).
    policy.prefix_cache = 0
    return policy


def chat(cid: str, question: str = "Where is the goal?") -> Conversation:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": [{"type": "text", "text": "You reason by drawing."}]},
        {"role": "user", "content": [{"type": "text", "text": question}]},
    ]
    return Conversation(id=cid, messages=messages)


def block(k: int = K) -> str:
    return "<|latent_start|>" + "<|latent_pad|>" * k + "<|latent_end|>"


def reference(
    policy: LatentPolicy, path: Path, prompt: list[int], steps: int, *, feed: bool
) -> tuple[list[int], float]:
    """Greedy decoding by full forwards without a cache, building ``inputs_embeds`` by hand.

    The projection is rebuilt from the checkpoint file as ``nn.RMSNorm`` + ``nn.Linear`` (the contract's
    keys). With ``feed=False`` the slots get the pad token's embedding instead: the control that shows the
    test can tell feedback from no feedback.
    """
    import torch
    from safetensors.torch import load_file

    spec = policy.spec
    weights = load_file(str(path / "latent_projection.safetensors"))
    norm, linear = torch.nn.RMSNorm(spec.hidden_size, eps=1e-6), torch.nn.Linear(spec.hidden_size, spec.hidden_size)
    norm.load_state_dict({"weight": weights["norm.weight"]})
    linear.load_state_dict({"weight": weights["linear.weight"], "bias": weights["linear.bias"]})
    model: Any = policy._model
    embed, decoder, head = model.get_input_embeddings(), model.get_decoder(), model.get_output_embeddings()
    embeds = embed(torch.tensor([prompt]))
    out: list[int] = []
    logprob, slots_left, closing = 0.0, 0, False
    with torch.no_grad():
        for _ in range(steps):
            n = embeds.shape[1]
            hidden = decoder(inputs_embeds=embeds, position_ids=torch.arange(n).view(1, 1, n).expand(3, 1, n))
            last = hidden.last_hidden_state[:, -1:]
            logits = head(last[0, -1]).float()
            if slots_left:
                token, slots_left = spec.pad_id, slots_left - 1
                closing = slots_left == 0
            elif closing:
                token, closing = spec.end_id, False
            else:
                if len(out) == FORCE_AT:
                    logits[spec.start_id] += 1e4
                masked = logits.clone()
                masked[[spec.pad_id, spec.end_id]] = -math.inf
                token = int(masked.argmax())
                logprob += float(torch.log_softmax(logits, -1)[token])
                if token == spec.start_id:
                    slots_left = spec.k
            out.append(token)
            if token in policy._eos:
                break
            # A slot gets P(h_prev), the previous position's final hidden state; anything else its embedding.
            latent_slot = token == spec.pad_id and feed
            step = linear(norm(last)) if latent_slot else embed(torch.tensor([[token]]))
            embeds = torch.cat([embeds, step], dim=1)
    return out, logprob


def test_a_latent_block_is_fed_the_projected_hidden_state(policy: LatentPolicy, path: Path) -> None:
    conversation = chat("latent-ref")
    prompt = policy._plan(conversation).prompt_ids
    n_prompt = len(prompt)
    got = policy.generate(conversation, GREEDY)
    assert got.text.count(block()) == 1 and got.text.count("<|latent_pad|>") == K
    assert got.tokens_in == n_prompt  # one prefill of the prompt, nothing re-prefilled during the block
    want_ids, want_logprob = reference(policy, path, prompt, GREEDY.max_new_tokens, feed=True)
    ids = policy.token_ids(conversation.id)
    assert ids is not None
    assert ids[n_prompt:] == want_ids[: len(ids) - n_prompt]
    assert got.tokens_out == len(want_ids)
    assert got.logprob is not None and math.isclose(got.logprob, want_logprob, abs_tol=1e-3)
    # The control: feeding the pad embedding instead of P(h) gives a different continuation.
    plain_ids, plain_logprob = reference(policy, path, prompt, GREEDY.max_new_tokens, feed=False)
    assert plain_ids != want_ids or not math.isclose(plain_logprob, want_logprob, abs_tol=1e-3)
    policy.release(conversation.id)


def test_batch_rows_with_and_without_a_block_equal_single_rows(policy: LatentPolicy) -> None:
    questions = ("Where is the goal?", "Zoom in.", "Find a safe path from the start to the exit.")
    names = ("latent", "plain", "late-latent")
    rows = [chat(f"{name}-b{i}", q) for i, (name, q) in enumerate(zip(names, questions, strict=True))]
    singles = [chat(f"{name}-s{i}", q) for i, (name, q) in enumerate(zip(names, questions, strict=True))]
    for turn in range(2):  # the second turn reuses each row's cache, latent KV included
        batched = policy.generate_batch(rows, GREEDY)
        alone = [policy.generate(c, GREEDY) for c in singles]
        for got, want in zip(batched, alone, strict=True):
            assert got.text == want.text and got.tokens_out == want.tokens_out and got.tokens_in == want.tokens_in
            assert got.logprob is not None and want.logprob is not None
            assert math.isclose(got.logprob, want.logprob, abs_tol=1e-3)
        assert [block() in g.text for g in batched] == [True, False, True]
        for conversation, got in [*zip(rows, batched, strict=True), *zip(singles, alone, strict=True)]:
            conversation.messages += [
                {"role": "assistant", "content": [{"type": "text", "text": got.text}]},
                {"role": "user", "content": [{"type": "text", "text": f"turn {turn} seen"}]},
            ]
    for conversation in rows + singles:
        policy.release(conversation.id)


def test_the_next_turn_reuses_the_cache_with_the_latent_block(policy: LatentPolicy) -> None:
    conversation = chat("latent-cache")
    first = policy.generate(conversation, GREEDY)
    assert block() in first.text
    kept = policy.token_ids(conversation.id)
    spec = policy.spec
    assert kept is not None
    start = kept.index(spec.start_id)
    assert kept[start : start + K + 2] == [spec.start_id, *[spec.pad_id] * K, spec.end_id]
    conversation.messages += [
        {"role": "assistant", "content": [{"type": "text", "text": first.text}]},
        {"role": "user", "content": [{"type": "text", "text": "go on"}]},
    ]
    full = policy.count_tokens(conversation)
    second = policy.generate(conversation, GREEDY)
    # Only the end of turn and the new message are prefilled: the block's text re-matched the cached ids.
    assert second.tokens_in is not None and second.tokens_in < full - len(kept) + 8
    policy.release(conversation.id)


def test_sampling_blocks_are_k_long_reproducible_and_capped(path: Path) -> None:
    greedy_cap = forced_class()(path, max_latent_blocks=2)
    greedy_cap.always = True  # would open a block at every text step: the cap masks the third
    got = greedy_cap.generate(chat("latent-cap"), Sampling(max_new_tokens=30))
    assert got.text.count("<|latent_start|>") == 2 and got.text.count(block()) == 2
    sampled = forced_class()(path)
    sampling = Sampling(max_new_tokens=14, temperature=0.9, seed=7)
    a = sampled.generate(chat("latent-s1"), sampling)
    b = sampled.generate(chat("latent-s2"), sampling)
    assert a.text == b.text and a.text.count(block()) == 1
    forbidden = forced_class()(path)
    forbidden.set_latent("latent-off", False)
    assert "<|latent" not in forbidden.generate(chat("latent-off"), GREEDY).text


def scripted_class() -> type[LatentPolicy]:
    """A latent policy that writes a given script per turn (biasing each next token), latent blocks included."""
    from sketchmind.models.latent import LatentPolicy

    class Scripted(LatentPolicy):
        scripts: ClassVar[list[str]] = []

        def _choose(self, logits: torch.Tensor, rows: Sequence[_Row], sampling: Sampling) -> tuple[torch.Tensor, ...]:
            logits = logits.clone()
            latent = {self.spec.pad_id, self.spec.end_id}
            for b, row in enumerate(rows):
                turn = sum(m["role"] == "assistant" for m in row.plan.conversation.messages)
                script = self._tok.encode(self.scripts[min(turn, len(self.scripts) - 1)], add_special_tokens=False)
                script.append(self._tok.convert_tokens_to_ids("<|im_end|>"))
                written = sum(token not in latent for token in row.ids)  # the loop writes pads and the end
                if written < len(script):
                    logits[b, script[written]] += 1e4
            return super()._choose(logits, rows, sampling)

    return Scripted


CALL = '<tool_call>{"name": "box", "arguments": {"view": 1, "bbox": [1, 1, 9, 9]}}</tool_call>'


def test_latent_mode_records_calls_renders_nothing_and_ends_in_one_turn(path: Path) -> None:
    from sketchmind.models.hf import HFPolicy

    policy = scripted_class()(path)
    policy.scripts = [f"<think>imagine the box</think>{CALL}<|latent_start|><answer>3</answer>"]
    agent = Agent(policy, mode="latent", budgets=Budgets(max_turns=4), sampling=Sampling(max_new_tokens=120))
    trace = agent.solve(MAZE, "How many boxes?")
    assert trace.status == "answered" and trace.answer == "3"
    assert len(trace.steps) == 1 and block() in trace.steps[0].raw
    assert [c["name"] for c in trace.steps[0].calls] == ["box"] and trace.steps[0].view_ids == []
    assert len(trace.views) == 1  # the input image only: nothing was drawn
    policy.scripts = [f"{CALL}<|latent_start|>no answer here"]
    trace = agent.solve(MAZE, "How many boxes?")
    assert trace.status == "no_answer" and len(trace.steps) == 1 and trace.steps[0].calls
    [batched] = agent.solve_batch([(MAZE, "How many boxes?")])
    assert batched.status == "no_answer" and [s.raw for s in batched.steps] == [s.raw for s in trace.steps]
    with pytest.raises(ValueError, match="latent-token policy"):
        Agent(HFPolicy(path), mode="latent")


def test_auto_mode_draws_until_the_budget_is_spent_then_imagines(path: Path) -> None:
    policy = scripted_class()(path)
    policy.scripts = [
        f"{CALL}<|latent_start|>",  # while drawing, latents are masked: the start becomes some other token
        CALL,  # over the image budget: the run switches to imagining instead of stopping at the budget
        f"{CALL}<|latent_start|><answer>4</answer>",
    ]
    budgets = Budgets(max_turns=5, max_images=2)  # the input and one drawing
    agent = Agent(policy, mode="auto", budgets=budgets, sampling=Sampling(max_new_tokens=80))
    trace = agent.solve(MAZE, "How many boxes?")
    assert trace.status == "answered" and trace.answer == "4" and len(trace.steps) == 3
    assert "<|latent" not in trace.steps[0].raw and trace.steps[0].view_ids == [2]
    assert "<|latent" not in trace.steps[1].raw and trace.steps[1].view_ids == [] and trace.steps[1].errors
    assert block() in trace.steps[2].raw and trace.steps[2].calls and trace.steps[2].view_ids == []
    assert len(trace.views) == 2  # the input and the one drawing


def test_cli_solves_in_latent_and_auto_mode_with_a_latent_checkpoint(path: Path) -> None:
    from sketchmind.cli import main
    from sketchmind.models.latent import LatentPolicy
    from sketchmind.models.loading import load_policy

    assert isinstance(load_policy(str(path)), LatentPolicy)
    for mode in ("latent", "auto"):
        argv = ["solve", "--blank", "Draw the goal.", "--model", str(path), "--mode", mode]
        # A random model rarely answers: 0 (answered) or 1 (no answer) are both a clean run; 2/3 are not.
        assert main([*argv, "--max-new-tokens", "8", "--max-turns", "2"]) in (0, 1)


def test_ablations_replace_the_latents_and_the_means_are_the_computed_ones(path: Path) -> None:
    import torch

    forced = forced_class()
    normal = forced(path)
    want = normal.generate(chat("latent-ablate"), GREEDY)
    means = normal.latent_means()
    assert want.text.count(block()) == 1 and means is not None and tuple(means.shape) == (K, normal.spec.hidden_size)
    # One block: the per-slot means are that block's own latents, so feeding them changes nothing.
    same = forced(path, ablation="mean", slot_means=means).generate(chat("latent-ablate"), GREEDY)
    assert same.text == want.text and math.isclose(same.logprob or 0, want.logprob or 0, abs_tol=1e-3)
    shifted = forced(path, ablation="mean", slot_means=means + 3 * means.std()).generate(chat("latent-ablate"), GREEDY)
    noised = [forced(path, ablation="noise").generate(chat("latent-ablate"), GREEDY) for _ in range(2)]
    assert noised[0].text == noised[1].text  # seeded: an ablation run is reproducible
    assert {shifted.text, noised[0].text} != {want.text} or not math.isclose(shifted.logprob or 0, want.logprob or 0)
    with pytest.raises(ValueError, match="needs slot_means of shape"):
        forced(path, ablation="mean", slot_means=torch.zeros(K + 1, normal.spec.hidden_size))
    with pytest.raises(ValueError, match="unknown latent ablation"):
        forced(path, ablation="zero")  # type: ignore[arg-type]
