"""The whole training pipeline at micro scale: synth -> base -> SFT -> rejection -> SFT -> GRPO -> latent 1, 2 -> eval,
and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from sketchmind.agent import Agent
from sketchmind.latent.tokens import is_latent_checkpoint
from sketchmind.models.base import Conversation, Sampling
from sketchmind.models.hf import HFPolicy
from sketchmind.train.pipeline import STAGES, Pipeline
from sketchmind.train.recipe import RecipeError, RejectionSpec, load_recipe
from sketchmind.train.synth_storage import load_dataset

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "policies" / "micro.yaml"


def _metrics(path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_micro_recipe_runs_every_stage_and_learns(tmp_path: Path) -> None:
    recipe = load_recipe(MICRO).model_copy(update={"output": str(tmp_path / "run")})
    lines: list[str] = []
    pipeline = Pipeline(recipe, report=lines.append)
    summaries = pipeline.run()
    # Every stage but dpo, which the micro policy's few pairs make a test of its own (tests/test_dpo.py), and
    # search, which plans on frozen-lake maps the micro data does not have (tests/test_search_stage.py).
    assert list(summaries) == [stage for stage in STAGES if stage not in ("dpo", "search")]
    assert summaries["synth"]["rows"] == 12 and summaries["base"]["parameters"] > 100_000

    # Reading comes first: fresh maps, a gate checked every 2 steps, a perception table, and SFT starts from it.
    perceive = summaries["perceive"]
    assert perceive["global_step"] == 4 and perceive["gate_passed_at"] is None
    assert 0.0 <= perceive["generated_cell"] <= 1.0
    assert sum("perceive step" in line for line in lines) == 2
    table = json.loads((tmp_path / "run" / "perceive" / "perception.json").read_text())["rows"]
    assert [(row["set"], row["level"], row["n"]) for row in table] == [("generated", 3, 16), ("generated", "all", 16)]
    assert pipeline.model_after("perceive") == str(tmp_path / "run" / "perceive" / "final")

    sft = [m for m in _metrics(tmp_path / "run" / "sft" / "metrics.jsonl") if "loss" in m]
    first, last = sum(m["loss"] for m in sft[:3]) / 3, sum(m["loss"] for m in sft[-3:]) / 3
    assert last < 0.8 * first, f"SFT loss did not fall: {first:.2f} -> {last:.2f}"
    grpo = [m for m in _metrics(tmp_path / "run" / "grpo" / "metrics.jsonl") if "reward" in m]
    assert [m["step"] for m in grpo] == [1, 2] and all(m["reward"] >= 0 for m in grpo)
    assert (tmp_path / "run" / "metrics.png").read_bytes()[:4] == b"\x89PNG"
    assert "| maze |" in "\n".join(lines)  # the rejection keep rates are reported
    held_out = _metrics(tmp_path / "run" / "eval" / "metrics.jsonl")
    modes = ["draw", "text", "direct", "latent", "latent-mean", "latent-noise"]
    assert [(m["mode"], m["n"]) for m in held_out] == [(mode, 2) for mode in modes]
    assert all(0.0 <= m["low"] <= m["accuracy"] <= m["high"] <= 1.0 for m in held_out)

    # The latent stages branch off sft2: latent1 (grounded) then latent2 (free); the draw policy stays grpo's.
    assert summaries["latent1"]["start"] == pipeline.model_after("sft2")
    assert summaries["latent2"]["start"] == str(tmp_path / "run" / "latent1" / "final")
    for stage, steps in (("latent1", 6), ("latent2", 3)):
        latent = _metrics(tmp_path / "run" / stage / "metrics.jsonl")
        assert [m["step"] for m in latent] == list(range(1, steps + 1)) and all(m["loss"] > 0 for m in latent)
    gathered = _metrics(tmp_path / "run" / "metrics.jsonl")
    assert {m["stage"] for m in gathered if "loss" in m} >= {"sft", "sft2", "latent1", "latent2"}
    latent_model = pipeline.latent_model()
    assert latent_model == str(tmp_path / "run" / "latent2" / "final") and is_latent_checkpoint(latent_model)
    assert pipeline.model_after("latent2") == pipeline.model_after("grpo") == str(tmp_path / "run" / "grpo" / "final")
    text, direct = pipeline.baseline_model("text"), pipeline.baseline_model("direct")
    assert [m["model"] for m in held_out] == [pipeline.model_after("grpo"), text, direct, *[latent_model] * 3]
    # The baselines start where the draw policy's cold start does (the reading model: perceive) and train on
    # the same puzzles, written without tools.
    assert summaries["sft"]["start"] == pipeline.model_after("perceive")
    for kind in ("text", "direct"):
        assert summaries[f"sft_{kind}"]["start"] == summaries["sft"]["start"]
        assert summaries[f"sft_{kind}"]["rows"] == summaries["synth"]["rows"]
        run = json.loads((tmp_path / "run" / "eval" / f"maze-{kind}" / "run.json").read_text())
        assert run["mode"] == "text"

    policy = HFPolicy(pipeline.model_after("grpo"))
    # The recipe's coordinates travel with every checkpoint, and an agent speaks them.
    assert policy.coords == "norm1000" and HFPolicy(latent_model).coords == "norm1000"
    assert Agent(policy, "sketchmind").protocol.convention == "norm1000"
    synth_prompt = load_dataset(tmp_path / "run" / "synth")[0]["messages"][0]["content"][0]["text"]
    assert "normalised to 0-1000" in synth_prompt
    user = {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    assert policy.generate(Conversation("c", [user]), Sampling(max_new_tokens=3)).tokens_out == 3

    again: list[str] = []
    Pipeline(recipe, report=again.append).run()
    assert all("skipped" in line for line in again)  # a finished run has nothing left to do


def test_a_stage_killed_with_sigkill_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    raw = yaml.safe_load(MICRO.read_text())
    raw["output"] = str(tmp_path / "run")
    raw["stages"] = {"sft": {"max_steps": 60, "learning_rate": 3.0e-3, "save_steps": 4}}
    raw["eval"]["modes"] = ["draw", "text"]  # no latent stages, so no latent policy to bench
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(raw))
    command = [sys.executable, "-m", "sketchmind.cli", "train", str(recipe_file)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    sft = tmp_path / "run" / "sft"
    deadline = time.monotonic() + 300
    while not (sft / "checkpoint-8").is_dir() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (sft / "checkpoint-8").is_dir() and not (sft / "done.json").exists(), "the run was not killed mid-stage"

    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert "synth: done earlier, skipped" in finished.stdout and "base: done earlier, skipped" in finished.stdout
    steps = [m["step"] for m in _metrics(sft / "metrics.jsonl") if "loss" in m]
    assert steps == list(range(1, 61))  # resumed: every step once, none redone from scratch
    state = json.loads((sft / "done.json").read_text())
    assert state["final"].endswith("sft/final")


def test_recipe_errors_name_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\noutput: y\nmodel: {tiny: {family: qwen2.5-vl}}\nstages: {sft: {max_stpes: 3}}\n")
    with pytest.raises(RecipeError, match=r"stages\.sft\.max_stpes"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {}\n")
    with pytest.raises(RecipeError, match="exactly one of 'base'"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {latent: {source: sft2}}\n")
    with pytest.raises(RecipeError, match=r"stages: .*source 'sft2' needs a stages\.rejection"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\neval: {modes: [draw, latent]}\n")
    with pytest.raises(RecipeError, match="eval mode 'latent' needs a latent policy"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\neval: {modes: [draw, direct]}\n")
    with pytest.raises(RecipeError, match="'direct' needs the direct baseline"):
        load_recipe(bad)
    latent = "stages: {latent: {}}\n"
    bad.write_text(f"name: x\noutput: y\nmodel: {{base: m}}\n{latent}eval: {{modes: [latent-mean, latent]}}\n")
    with pytest.raises(RecipeError, match="'latent-mean' needs mode 'latent' listed before it"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\ndata: {families: [maze, needle], n: {maze: 3}}\n")
    with pytest.raises(RecipeError, match="n has no count for needle"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {sft: null, baselines: [text]}\n")
    with pytest.raises(RecipeError, match=r"baselines are SFT'd with stages\.sft's settings"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {sft: null, search: {arm: draw}}\n")
    with pytest.raises(RecipeError, match=r"must come from stages\.search with arm: text"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {sft: null, search: {arm: text}, rejection: {}}\n")
    with pytest.raises(RecipeError, match=r"no cold-start rows to mix"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {sft: null, search: {arm: text}, latent: {}}\n")
    with pytest.raises(RecipeError, match="the latent stages start from the cold start's policy"):
        load_recipe(bad)
    bad.write_text("name: x\noutput: y\nmodel: {base: m}\nstages: {rejection: {families: [lake]}}\n")
    with pytest.raises(RecipeError, match="lake"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="no such recipe"):
        load_recipe(tmp_path / "missing.yaml")


@pytest.mark.parametrize("recipe", sorted((ROOT / "policies").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_are_valid(recipe: Path) -> None:
    loaded = load_recipe(recipe)
    assert loaded.name.startswith("sketchmind-")
    assert Pipeline(loaded).enabled()[0] == "synth"


def test_perceive_widens_its_curriculum_then_stops_at_the_gate(tmp_path: Path) -> None:
    from sketchmind.train.recipe import PerceiveSpec, ReadingGate

    micro = load_recipe(MICRO)
    assert micro.stages.perceive is not None
    anything = ReadingGate(cell=0.0, exact=0.0)  # every check passes: widen at the first, stop once all are open
    perceive = PerceiveSpec(
        **{**micro.stages.perceive.model_dump(), "levels": [3, 4], "gate": anything, "widen": anything}
    )
    recipe = micro.model_copy(
        update={"output": str(tmp_path / "run"), "stages": micro.stages.model_copy(update={"perceive": perceive})}
    )
    lines: list[str] = []
    summary = Pipeline(recipe, report=lines.append).run(only=["synth", "base", "perceive"])["perceive"]
    assert "perceive: level 4 joins" in lines
    assert summary["gate_passed_at"] == 4 and summary["levels_open"] == 4 and summary["global_step"] == 4
    # The curriculum is saved in the file that marks the checkpoint complete: a run resumed from step 2 goes
    # on with both sizes, and no kill can leave a checkpoint without it.
    state = json.loads((tmp_path / "run" / "perceive" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["stateful_callbacks"]["ReadingGateCallback"]["attributes"] == {"unlocked": 2}
    table = json.loads((tmp_path / "run" / "perceive" / "perception.json").read_text())["rows"]
    assert [(row["set"], row["level"]) for row in table] == [("generated", 3), ("generated", 4), ("generated", "all")]


def test_perceive_with_only_the_image_token_loss_trains_without_eager_attention(tmp_path: Path) -> None:
    from sketchmind.train.recipe import PerceiveSpec

    micro = load_recipe(MICRO)
    assert micro.stages.perceive is not None
    perceive = PerceiveSpec(**{**micro.stages.perceive.model_dump(), "guide_attention": 0.0})
    recipe = micro.model_copy(
        update={"output": str(tmp_path / "run"), "stages": micro.stages.model_copy(update={"perceive": perceive})}
    )
    summary = Pipeline(recipe, report=lambda _line: None).run(only=["synth", "base", "perceive"])["perceive"]
    assert summary["global_step"] == 4
    logged = [m for m in _metrics(tmp_path / "run" / "perceive" / "metrics.jsonl") if "loss" in m]
    assert logged and all("token_ce" in m and "look" not in m for m in logged)


def test_the_default_recipe_ships_its_search_policy_and_what_learns_from_it_speaks_search(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "policies" / "sketchmind-tiny.yaml").model_copy(update={"output": str(tmp_path)})
    pipeline = Pipeline(recipe)
    assert pipeline.enabled() == ["synth", "base", "search", "eval"]  # no cold start: the search policy ships
    search = str(pipeline.folder("search") / "final")
    assert pipeline.model_after("eval") == search
    # with rejection sampling added, it samples the search policy, and sft2 learns from those samples
    stages = recipe.stages.model_copy(update={"rejection": RejectionSpec(mix_cold_start=False)})
    pipeline = Pipeline(recipe.model_copy(update={"stages": stages}))
    assert pipeline.enabled() == ["synth", "base", "search", "rejection", "sft2", "eval"]
    assert pipeline.model_after("rejection") == search and pipeline.model_after("eval").endswith("sft2/final")

    # each checkpoint says the protocol its stage trained it to speak: the search's, passed on to what learns
    # from its samples; a config copied from a start that spoke another is corrected by the stamp
    for stage in ("search", "sft2"):
        (tmp_path / stage / "final").mkdir(parents=True)
        (tmp_path / stage / "final" / "config.json").write_text('{"sketchmind_protocol": "sketchmind"}')
    pipeline.stamp("search", tmp_path / "search" / "final")
    assert [pipeline.stage_protocol(s) for s in ("search", "sft2")] == ["search", "search"]
    pipeline.stamp("sft2", tmp_path / "sft2" / "final")  # its copied config said sketchmind: now what it speaks
    assert json.loads((tmp_path / "sft2" / "final" / "config.json").read_text())["sketchmind_protocol"] == "search"
    micro = Pipeline(load_recipe(ROOT / "policies" / "micro.yaml"))
    assert [micro.stage_protocol(s) for s in ("base", "perceive", "sft", "latent1", "sft_text", "grpo")] == [
        None,
        None,
        "sketchmind",
        "sketchmind",
        "sketchmind",
        "sketchmind",  # what its start (sft2, from the cold start) speaks
    ]
