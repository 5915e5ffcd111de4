"""Latent (Mirage-style) training: tokens, latent rows, vision targets, both stages, the checkpoint contract."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed (the train extra)"
)

K = 4


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint: Callable[[str], Path]) -> Path:
    return tiny_checkpoint("qwen2.5-vl")  # build_tiny's defaults: hidden 64, 2 layers


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    from sketchmind.train.synth import synthesize

    kept, _ = synthesize(["maze"], 2, levels=[1])
    assert len(kept) == 2
    return kept


@pytest.fixture(scope="module")
def stage1(tiny: Path, rows: list[dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sketchmind.train.latent_stage import run_latent_stage

    out = tmp_path_factory.mktemp("stage1")
    return run_latent_stage(tiny, rows, out, stage=1, k=K, max_steps=10, lr=3e-3, save_steps=5, device="cpu")


def loaded(path: Path) -> tuple[Any, Any, Any, Any]:
    from sketchmind.train.latent_stage import load_latent_model

    return load_latent_model(path, K, "cpu")


# ------------------------------------------------------------------------------------------------ tokens


def test_tokens_added_and_round_trip(tiny: Path, tmp_path: Path) -> None:
    from sketchmind.latent.tokens import LATENT_TOKENS, load_projection, read_spec, save_latent
    from sketchmind.train.latent_stage import save_checkpoint

    model, processor, spec, projection = loaded(tiny)
    tok = processor.tokenizer
    assert tok.convert_tokens_to_ids(list(LATENT_TOKENS)) == [spec.start_id, spec.pad_id, spec.end_id]
    assert model.get_input_embeddings().weight.shape[0] > spec.end_id
    ids = tok(spec.block(), add_special_tokens=False)["input_ids"]
    assert ids == [spec.start_id, *[spec.pad_id] * K, spec.end_id]  # one token each
    assert tok.decode(ids, skip_special_tokens=True) == ""

    save_checkpoint(model, processor, spec, projection, tmp_path)
    assert read_spec(tmp_path) == spec
    again = load_projection(tmp_path)
    for name, tensor in projection.state_dict().items():
        assert again.state_dict()[name].equal(tensor)
    # a second load of the saved directory keeps the ids (no duplicate tokens)
    _, processor2, spec2, _ = loaded(tmp_path)
    assert spec2 == spec and len(processor2.tokenizer) == len(tok)
    save_latent(spec, projection, tmp_path)  # idempotent


def test_projection_starts_at_embedding_scale(tiny: Path) -> None:
    import torch

    from sketchmind.latent.tokens import embedding_rms

    model, _, spec, projection = loaded(tiny)
    h = torch.randn(5, spec.hidden_size) * 30  # hidden states far off the embedding scale
    out = projection(h)
    rms = out.pow(2).mean(dim=-1).sqrt()
    assert torch.allclose(rms, torch.full_like(rms, embedding_rms(model)), rtol=1e-3)
    assert torch.allclose(torch.nn.functional.cosine_similarity(out, h), torch.ones(5), atol=1e-5)


# -------------------------------------------------------------------------------------------------- data


def test_latent_rows_one_assistant_turn(rows: list[dict[str, Any]]) -> None:
    from sketchmind.latent.data import latent_block, latent_rows
    from sketchmind.latent.tokens import LATENT_PAD, LATENT_START

    for row, latent in zip(rows, latent_rows(rows, k=K), strict=True):
        assert [m["role"] for m in latent["messages"]] == ["system", "user", "assistant"]
        assert latent["messages"][:2] == row["messages"][:2]
        assert len(latent["images"]) == 1 and latent["images"][0] is row["images"][0]
        text = latent["messages"][2]["content"][0]["text"]
        views = len(row["images"]) - 1
        assert text.count(LATENT_START) == views == len(latent["latent_images"])
        assert text.count(LATENT_PAD) == K * views
        assert text.count(latent_block(K)) == views
        assert latent["latent_images"] == row["images"][1:]
        assert "<observation>" not in text and text.endswith("</answer>")
        # every tool call precedes the blocks of its turn: as many calls as views, here
        assert text.count("<tool_call>") == views


# ----------------------------------------------------------------------------------------------- targets


def test_targets_shape_and_differ(tiny: Path, rows: list[dict[str, Any]]) -> None:
    from sketchmind.latent.targets import view_targets

    model, processor, spec, _ = loaded(tiny)
    views = rows[0]["images"][1:3]
    targets = view_targets(model, processor, views, K)
    assert targets.shape == (2, K, spec.hidden_size)
    assert not targets.requires_grad
    assert (targets[0] - targets[1]).abs().max() > 1e-4  # different drawings, different targets
    assert (targets[0, 0] - targets[0, -1]).abs().max() > 1e-4  # chunks are different regions


def test_chain_forward_matches_teacher_forcing(tiny: Path, rows: list[dict[str, Any]]) -> None:
    """The KV-cached chain is the same computation as one pass with its slot inputs filled in."""
    import torch

    from sketchmind.latent.forward import base_inputs, chain_forward, teacher_forward
    from sketchmind.train.latent_stage import Data

    model, processor, spec, projection = loaded(tiny)
    data = Data(rows[:1], model, processor, spec, None)
    inputs = base_inputs(model, data.batch(0), spec)
    assert len(inputs.slots) == K * len(data.rows[0]["latent_images"])
    with torch.no_grad():
        hidden, slot_inputs = chain_forward(model, inputs, projection)
        again = teacher_forward(model, inputs, slot_inputs)
    assert slot_inputs.shape == (len(inputs.slots), spec.hidden_size)
    assert torch.allclose(hidden, again, atol=1e-4)
    # slot j's input is P of the hidden state just before it
    assert torch.allclose(slot_inputs, projection(hidden[0, inputs.slots - 1]), atol=1e-4)


# ------------------------------------------------------------------------------------------------ stages


def test_stage1_lowers_loss_and_raises_cos(stage1: dict[str, Any]) -> None:
    from sketchmind.train.latent_stage import read_metrics

    out = Path(stage1["final_dir"]).parent
    steps = read_metrics(out)
    assert [s["step"] for s in steps] == list(range(1, 11))
    # rows alternate, so compare the same row early and late
    assert steps[8]["loss"] < steps[0]["loss"] and steps[9]["loss"] < steps[1]["loss"]
    assert steps[8]["cos"] > steps[0]["cos"] + 0.2
    assert steps[8]["ce"] < steps[0]["ce"]
    assert (out / "checkpoint-5" / "train_state.pt").is_file()


def test_stage2_runs_and_lowers_ce(stage1: dict[str, Any], rows: list[dict[str, Any]], tmp_path: Path) -> None:
    from sketchmind.train.latent_stage import read_metrics, run_latent_stage

    summary = run_latent_stage(stage1["final_dir"], rows, tmp_path, stage=2, k=K, max_steps=4, lr=3e-3, device="cpu")
    steps = read_metrics(tmp_path)
    assert len(steps) == 4 and all(s["loss"] == s["ce"] for s in steps)
    assert steps[2]["ce"] < steps[0]["ce"] and steps[3]["ce"] < steps[1]["ce"]
    assert summary["stage"] == 2 and Path(summary["final_dir"]).is_dir()


def test_resume_from_last_checkpoint(tiny: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    from sketchmind.train.latent_stage import last_checkpoint, read_metrics, run_latent_stage

    run_latent_stage(tiny, rows, tmp_path, stage=1, k=K, max_steps=2, lr=1e-3, save_steps=2, device="cpu")
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / "metrics.jsonl").open("a").write(json.dumps({"step": 3, "loss": 0.0}) + "\n")  # a died step
    summary = run_latent_stage(tiny, rows, tmp_path, stage=1, k=K, max_steps=3, lr=1e-3, save_steps=2, device="cpu")
    steps = read_metrics(tmp_path)
    assert [s["step"] for s in steps] == [1, 2, 3] and steps[2]["loss"] > 0
    assert summary["steps"] == 3


# ---------------------------------------------------------------------------------------------- contract


def test_checkpoint_contract_loads(stage1: dict[str, Any]) -> None:
    from sketchmind.latent.tokens import LATENT_FILE, PROJECTION_FILE, load_projection, read_spec
    from sketchmind.models.base import Conversation, Sampling
    from sketchmind.models.hf import HFPolicy

    final = Path(stage1["final_dir"])
    data = json.loads((final / LATENT_FILE).read_text())
    assert set(data) == {"k", "start_id", "pad_id", "end_id", "hidden_size"} and data["k"] == K
    assert (final / PROJECTION_FILE).is_file()
    spec = read_spec(final)
    assert load_projection(final).state_dict()["linear.weight"].shape == (spec.hidden_size, spec.hidden_size)

    conversation = Conversation(
        id="c",
        messages=[{"role": "user", "content": [{"type": "image", "view": 1}, {"type": "text", "text": "Maze?"}]}],
        images={1: np.zeros((56, 56, 3), dtype=np.uint8)},
    )
    generation = HFPolicy(str(final), device="cpu").generate(conversation, Sampling(max_new_tokens=4))
    assert generation.tokens_out


# ---------------------------------------------------------------------------------------------- grounding


def shared_direction_case() -> tuple[Any, Any, Any, Any]:
    """Targets of 3 blocks x K=2 sharing one dominant direction (e0, weight 10) plus a per-view one.

    Returns the targets, the center, a constant prediction (the shared direction) and a view-specific
    but imperfect prediction (the right view's direction, the shared one under-weighted).
    """
    import torch

    from sketchmind.latent.losses import center_targets

    h, k, blocks = 8, 2, 3
    eye = torch.eye(h)
    targets = torch.stack([10 * eye[0] + eye[1 + b] + 0.5 * eye[5 + j] for b in range(blocks) for j in range(k)])
    constant = eye[0].repeat(len(targets), 1)
    specific = torch.stack([eye[0] + eye[1 + b] for b in range(blocks) for _ in range(k)])
    return targets, center_targets(targets, k), constant, specific


def test_plain_cosine_prefers_the_shared_direction() -> None:
    from sketchmind.latent.losses import grounding_loss

    targets, _, constant, specific = shared_direction_case()
    assert float(grounding_loss(constant, targets, "cosine", None)) < 0.01  # the constant is nearly optimal
    assert grounding_loss(constant, targets, "cosine", None) < grounding_loss(specific, targets, "cosine", None)


@pytest.mark.parametrize("grounding", ["centered", "contrastive"])
def test_centered_groundings_reward_the_view(grounding: Any) -> None:
    import torch

    from sketchmind.latent.losses import grounding_loss

    targets, center, constant, specific = shared_direction_case()
    exact = float(grounding_loss(targets * 3, targets, grounding, center))  # scale does not matter
    worse = float(grounding_loss(constant, targets, grounding, center))
    assert exact < float(grounding_loss(specific, targets, grounding, center)) < worse
    assert worse > 0.9  # no credit for the shared direction
    if grounding == "centered":
        assert exact == pytest.approx(0.0, abs=1e-5)
    # another block's targets (a right-looking latent of the wrong view) are penalised too
    wrong = targets.view(3, 2, -1).roll(1, dims=0).reshape(6, -1)
    assert float(grounding_loss(wrong, targets, grounding, center)) > worse
    with pytest.raises(ValueError, match="needs the mean target"):
        grounding_loss(targets, targets, grounding, None)
    assert torch.isfinite(grounding_loss(center.repeat(3, 1), targets, grounding, center))  # zero vectors


# ------------------------------------------------------------------------------------- stage-2 grounding


def test_stage2_grounding_weight_adds_the_term(tiny: Path, rows: list[dict[str, Any]]) -> None:
    """λ > 0 adds λ x the grounding term on the chain's own P(h_prev); its gradient reaches P."""
    import torch

    from sketchmind.latent.forward import base_inputs, chain_forward
    from sketchmind.latent.losses import grounding_loss, stage2_loss
    from sketchmind.train.latent_stage import Data

    model, processor, spec, projection = loaded(tiny)
    data = Data(rows[:1], model, processor, spec, None)
    batch = data.batch(0)
    targets, center = data.targets(0), data.center()

    def loss_and_grad(weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        model.zero_grad(set_to_none=True)
        projection.zero_grad(set_to_none=True)
        inputs = base_inputs(model, batch, spec)  # a fresh graph (the token embeddings are trained)
        loss, ce, _ = stage2_loss(
            model, projection, inputs, batch["labels"], targets, grounding_weight=weight, center=center
        )
        loss.backward()
        grad = projection.linear.weight.grad
        assert grad is not None
        return loss.detach(), ce.detach(), grad.clone()

    loss0, ce0, grad0 = loss_and_grad(0.0)
    loss1, ce1, grad1 = loss_and_grad(0.5)
    assert loss0 == ce0 and torch.allclose(ce1, ce0)  # λ = 0 is CE only; the CE itself is unchanged
    inputs = base_inputs(model, batch, spec)
    with torch.no_grad():
        _, slot_inputs = chain_forward(model, inputs, projection)
        term = grounding_loss(slot_inputs, targets, "contrastive", center)
    assert float(term) > 0
    assert float(loss1 - ce1) == pytest.approx(0.5 * float(term), rel=1e-4)
    assert not torch.allclose(grad1, grad0)  # the term's gradient reaches P
    with pytest.raises(ValueError, match="needs the targets"):
        stage2_loss(model, projection, inputs, batch["labels"], None, grounding_weight=0.5, center=center)


def test_stage2_grounding_weight_options(tiny: Path, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    import pydantic

    from sketchmind.train.latent_stage import run_latent_stage
    from sketchmind.train.recipe import LatentTrainSpec

    with pytest.raises(ValueError, match="stage 2 only"):
        run_latent_stage(tiny, rows, tmp_path, stage=1, k=K, stage2_grounding_weight=0.5, max_steps=1, device="cpu")
    assert LatentTrainSpec().stage2.grounding_weight == 0.0  # the default stays CE only
    assert LatentTrainSpec.model_validate({"stage2": {"grounding_weight": 0.5}}).stage2.grounding_weight == 0.5
    with pytest.raises(pydantic.ValidationError):
        LatentTrainSpec.model_validate({"stage1": {"grounding_weight": 0.5}})
    with pytest.raises(pydantic.ValidationError):
        LatentTrainSpec.model_validate({"stage2": {"grounding_weight": -1}})
