"""Shipping a trained recipe's policies: only loadable files, checksummed, within the size limit."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from sketchmind.latent.tokens import is_latent_checkpoint
from sketchmind.models.tiny_latent import build_tiny_latent
from sketchmind.train.pipeline import Pipeline
from sketchmind.train.recipe import load_recipe
from sketchmind.train.ship import main, ship

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(tmp_path: Path, tiny_checkpoint: Callable[[str], Path]) -> Pipeline:
    """The micro recipe's run folder with a draw policy (grpo/final) and a latent one (latent2/final) in place."""
    recipe = load_recipe(ROOT / "policies" / "micro.yaml").model_copy(update={"output": str(tmp_path / "run")})
    pipeline = Pipeline(recipe, report=lambda _: None)
    draw = Path(pipeline.model_after("eval"))
    shutil.copytree(tiny_checkpoint("qwen2.5-vl"), draw)
    (draw / "training_args.bin").write_bytes(b"pickled trainer state")
    latent = pipeline.latent_model()
    assert latent is not None
    build_tiny_latent("qwen2.5-vl", latent)
    return pipeline


def test_ship_copies_loadable_files_with_checksums(trained: Pipeline, tmp_path: Path) -> None:
    manifest = ship(trained, tmp_path / "shipped")
    draw, latent = tmp_path / "shipped" / "draw", tmp_path / "shipped" / "latent"
    assert (draw / "model.safetensors").is_file() and not (draw / "training_args.bin").exists()
    assert is_latent_checkpoint(latent) and not is_latent_checkpoint(draw)
    on_disk = json.loads((tmp_path / "shipped" / "manifest.json").read_text())
    assert on_disk == manifest and on_disk["policies"]["draw"]["source"] == trained.model_after("eval")
    for variant, folder in (("draw", draw), ("latent", latent)):
        sums = on_disk["policies"][variant]["sha256"]
        assert sorted(sums) == sorted(p.name for p in folder.iterdir())
        assert all(hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest for name, digest in sums.items())
        assert on_disk["policies"][variant]["parameters"] > 100_000


def test_ship_refuses_an_untrained_or_oversized_policy(trained: Pipeline, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"over the 0\.1 MB"):
        ship(trained, tmp_path / "shipped", max_megabytes=0.1)
    assert not (tmp_path / "shipped").exists()  # nothing half-copied
    shutil.rmtree(trained.model_after("eval"))
    with pytest.raises(ValueError, match="draw policy is not trained yet"):
        ship(trained, tmp_path / "shipped")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((ROOT / "policies" / "micro.yaml").read_text().replace("runs/train/micro", str(trained.out)))
    assert main([str(recipe), str(tmp_path / "shipped")]) == 2


def test_a_recipe_without_latent_stages_replaces_the_draw_policy_and_keeps_the_latent_one(
    trained: Pipeline, tmp_path: Path, tiny_checkpoint: Callable[[str], Path]
) -> None:
    dest = tmp_path / "shipped"
    first = ship(trained, dest)
    stages = trained.recipe.stages.model_copy(update={"latent": None})
    recipe = trained.recipe.model_copy(update={"name": "micro-v2", "output": str(tmp_path / "v2"), "stages": stages})
    v2 = Pipeline(recipe, report=lambda _: None)
    shutil.copytree(tiny_checkpoint("qwen3-vl"), v2.model_after("eval"))
    second = ship(v2, dest)
    assert second["policies"]["latent"] == {"recipe": "micro", **first["policies"]["latent"]}
    assert second["policies"]["draw"]["recipe"] == "micro-v2" and second["recipe"] == "micro-v2"
    assert second["policies"]["draw"]["source"] == v2.model_after("eval")
    assert is_latent_checkpoint(dest / "latent") and json.loads((dest / "manifest.json").read_text()) == second
    # the kept variant counts toward the limit: nothing is copied when the whole folder would be too big
    with pytest.raises(ValueError, match="over the"):
        ship(v2, dest, max_megabytes=second["megabytes"] - 0.01)
    assert json.loads((dest / "manifest.json").read_text()) == second
