"""Latent diagnostics (cosine to the vision targets, the mean/noise ablation) and the token bench's structure."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("transformers") is None, reason="transformers is not installed (the train extra)"
)

K = 4
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny models on shared cores run far faster single-threaded."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sketchmind.models.tiny_latent import build_tiny_latent

    return build_tiny_latent("qwen2.5-vl", tmp_path_factory.mktemp("latent"), k=K, hidden_size=64, layers=2)


@pytest.fixture(scope="module")
def held_out() -> list[dict[str, Any]]:
    """Synth rows of a seed no test trains on."""
    from sketchmind.train.synth import synthesize

    rows, _ = synthesize(["maze"], 2, levels=[1], seed=5)
    assert len(rows) == 2
    return rows


def test_cosine_is_finite_and_counts_every_slot(checkpoint: Path, held_out: list[dict[str, Any]]) -> None:
    from sketchmind.latent.data import latent_rows, n_blocks
    from sketchmind.train.latent_diagnostics import latent_cosine

    stats = latent_cosine(checkpoint, held_out)
    assert stats.n_rows == 2
    assert stats.n_slots == K * n_blocks(latent_rows(held_out, K))
    values = (stats.mean, stats.min, stats.max, stats.shuffled_mean)
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in values)
    assert stats.min <= stats.mean <= stats.max
    centered = (stats.centered_mean, stats.centered_shuffled_mean)
    assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in centered)
    assert stats.n_retrieval_slots > 0 and 0.0 < stats.chance <= 0.5  # sequences with two blocks or more
    assert 0.0 <= stats.retrieval <= 1.0 and 0.0 <= stats.retrieval_raw <= 1.0


def test_ablation_modes_are_finite_and_relative_to_the_model(checkpoint: Path, held_out: list[dict[str, Any]]) -> None:
    from sketchmind.train.latent_diagnostics import latent_ablation

    result = latent_ablation(checkpoint, held_out)
    assert list(result) == ["model", "mean", "noise"]
    assert all(set(r) == {"ce", "increase", "tokens"} for r in result.values())
    assert result["model"]["increase"] == 0.0
    assert len({r["tokens"] for r in result.values()}) == 1 and result["model"]["tokens"] > 0
    for mode in ("mean", "noise"):
        assert math.isfinite(result[mode]["ce"]) and result[mode]["ce"] > 0
        assert result[mode]["increase"] == pytest.approx(result[mode]["ce"] - result["model"]["ce"])
        assert result[mode]["ce"] != result["model"]["ce"]  # the slot inputs really were replaced
    assert list(latent_ablation(checkpoint, held_out, modes=("noise",))) == ["model", "noise"]
    with pytest.raises(ValueError, match="unknown ablation modes"):
        latent_ablation(checkpoint, held_out, modes=("zeros",))


def test_following_mask_by_hand() -> None:
    import torch

    from sketchmind.latent.tokens import LatentSpec
    from sketchmind.train.latent_diagnostics import following_mask

    spec = LatentSpec(k=2, start_id=90, pad_id=91, end_id=92, hidden_size=8)
    ids = torch.tensor([[1, 2, 3, 90, 91, 91, 92, 4, 5, 90, 91, 91, 92, 6, 7]])
    labels = ids.clone()
    labels[0, :2] = -100  # the prompt
    labels[0, -1] = -100  # padding
    expected = [0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 0]  # after the first pad: text and the next start
    assert following_mask(ids, labels, spec)[0].int().tolist() == expected
    assert not following_mask(torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2, 3]]), spec).any()


def test_model_mode_equals_a_direct_chain_computation(checkpoint: Path, held_out: list[dict[str, Any]]) -> None:
    """One row, computed the long way: the P(h_prev) chain, then token by token CE after the first block."""
    import torch

    from sketchmind.latent.data import latent_row
    from sketchmind.latent.forward import base_inputs, chain_forward
    from sketchmind.train.collator import AssistantOnlyCollator
    from sketchmind.train.latent_diagnostics import latent_ablation
    from sketchmind.train.latent_stage import load_latent_model

    row = latent_row(held_out[0], K)
    model, processor, spec, projection = load_latent_model(checkpoint, K, "cpu")
    model.eval()
    batch = AssistantOnlyCollator(processor)([row])
    with torch.no_grad():
        hidden, _ = chain_forward(model, base_inputs(model, batch, spec), projection)
        logprobs = torch.log_softmax(model.lm_head(hidden[0]).float(), dim=-1)
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    first_pad = ids.index(spec.pad_id)
    losses = [
        -float(logprobs[p - 1, ids[p]])
        for p in range(first_pad + 1, len(ids))
        if labels[p] != -100 and ids[p] not in (spec.pad_id, spec.end_id)
    ]
    result = latent_ablation(checkpoint, [row], modes=("model",))
    assert result["model"]["tokens"] == len(losses)
    assert result["model"]["ce"] == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_bench_latent_quick_prints_the_ratio_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("bench_latent", ROOT / "tools" / "bench_latent.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_latent"] = bench  # dataclasses look their module up while the class is created
    spec.loader.exec_module(bench)

    out = tmp_path / "latent.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    header = "| Family | Puzzles | Views | Draw | Latent | Text | Draw / latent | Draw / text |"
    assert printed.count(header) == 2  # one Markdown table per definition
    assert "(i) final context" in printed and "(ii) stateless prompt tokens" in printed
    verdicts = [line for line in printed.splitlines() if line.startswith(("- PASS: ", "- FAIL: "))]
    assert len(verdicts) == 2 and all("(target >= 10x)" in line for line in verdicts)

    payload = json.loads(out.read_text())
    assert [g["name"] for g in payload["groups"]] == ["frozenlake (level 5)", "maze (level 3)", "all"]
    assert payload["groups"][-1]["puzzles"] == 4
    for g in payload["groups"]:
        for definition in ("final", "prompts"):
            draw, latent, text = (g[definition][m] for m in ("draw", "latent", "text"))
            assert draw > latent > 0 and draw > text > 0  # the same trajectory, fewer tokens without views
    for solve in payload["solves"]:
        if solve["mode"] == "draw":
            assert solve["turns"] >= 2 and solve["image_tokens"] > 0
        else:
            assert solve["turns"] == 1


def test_retrieval_counts_by_hand() -> None:
    import torch

    from sketchmind.train.latent_diagnostics import retrieval_counts

    k, blocks = 2, 3
    targets = torch.randn(blocks * k, 16, generator=torch.Generator().manual_seed(0))
    predicted = targets.clone()
    predicted[4:] = targets[:2]  # block 2 predicts block 0's view: its 2 slots are wrong
    assert retrieval_counts(predicted, targets, k) == (4, 6, 2.0)  # chance: 6 slots x 1/3
    assert retrieval_counts(targets[:1].repeat(6, 1), targets, k)[0] <= 2  # a constant wins at most by luck
    assert retrieval_counts(targets[:k], targets[:k], k) == (0, 0, 0.0)  # one block: nothing to retrieve
