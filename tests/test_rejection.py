"""Stage 2: reflective rejection sampling sorts sampled trajectories by correctness, form and reflection."""

from __future__ import annotations

from pathlib import Path

from sketchmind.models.base import Sampling
from sketchmind.models.expert import ExpertPolicy
from sketchmind.models.hf import HFPolicy
from sketchmind.models.tiny import build_tiny
from sketchmind.train.rejection import VERDICTS, rejection_sample
from sketchmind.train.synth_storage import load_dataset, save_dataset


def test_reflective_expert_samples_are_kept_and_save(tmp_path: Path) -> None:
    result = rejection_sample(ExpertPolicy(reflective=True), ["maze"], 2, k=2, levels=(1, 2), seed=5)
    assert len(result.kept) == 8 and result.rejected == []
    assert len({row["id"] for row in result.kept}) == 8  # k samples of one puzzle stay distinct rows
    assert all(row["correct"] and row["reflective"] for row in result.kept)
    assert result.stats.keep_rate() == 1.0
    assert "| maze | 8 | 8 |" in result.stats.table()
    save_dataset(result.kept, tmp_path)
    assert len(load_dataset(tmp_path)) == 8


def test_correct_but_unreflective_samples_go_to_rejected() -> None:
    result = rejection_sample(ExpertPolicy(reflective=False), ["maze"], 1, k=2, levels=(1,), seed=5)
    assert result.kept == [] and len(result.rejected) == 2
    assert all(row["correct"] and not row["reflective"] for row in result.rejected)
    assert result.stats.counts["maze"]["not_reflective"] == 2
    relaxed = rejection_sample(
        ExpertPolicy(reflective=False), ["maze"], 1, k=2, levels=(1,), seed=5, require_reflective=False
    )
    assert len(relaxed.kept) == 2


def test_a_random_tiny_model_is_sampled_in_batches_and_nothing_is_kept(tmp_path: Path) -> None:
    policy = HFPolicy(build_tiny("qwen2.5-vl", tmp_path / "tiny"))
    sampling = Sampling(temperature=1.0, max_new_tokens=12, seed=0)
    result = rejection_sample(policy, ["maze"], 1, k=3, levels=(1,), sampling=sampling, max_turns=2, batch_size=3)
    counts = result.stats.counts["maze"]
    assert sum(counts.values()) == 3 and counts["kept"] == 0
    assert set(counts) == set(VERDICTS)
    assert all(not row["correct"] for row in result.rejected)
