"""Run a recipe's stages in order: synth -> base -> sft -> rejection -> sft2 -> dpo -> grpo -> latent1, 2 -> eval.

Each stage writes into its own folder under the recipe's ``output`` and ends by writing ``done.json``
there. A re-run skips finished stages, and the trainer stages resume from their last checkpoint, so a
run killed at any point (even SIGKILL) continues where it stopped; its time over all runs is kept by a
``stage_clock.StageClock``. Every stage's metrics are gathered into ``output/metrics.jsonl`` and plotted in
``output/metrics.png`` (``plots``).

Two models come out of a run. The *draw policy* is the chain sft -> sft2 -> grpo (``model_after``). The optional
``dpo`` stage trains on rejection sampling's pairs from the policy GRPO starts from (sft2), so the two can be
compared from one start; with both, GRPO still starts from sft2 unless ``grpo.from_dpo`` chains it after DPO, and
the draw policy is GRPO's (``dpo_model`` is DPO's). The
latent stages (``stages.latent`` in the recipe) branch off it: ``latent1`` starts from the SFT'd draw
policy (``latent.source``: sft2 if there is one, else sft) and ``latent2`` from ``latent1``'s final; the
*latent policy* is ``latent2``'s final (``latent_model``), a latent checkpoint (``latent.json`` + P).
The optional baselines (``stages.baselines``: ``sft_text``, ``sft_direct``) start from the base model.
``eval`` benches each arm with its own policy (``eval_stage.run_eval``, the policy from
``eval_policies.eval_policy``): the latent policy in the ``latent`` and ``auto`` modes and in the latent
ablations (``latent-mean``, ``latent-noise``), the baselines in ``text`` and ``direct``, the draw policy in
``draw``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sketchmind.files import write_json_atomic
from sketchmind.train.params import parameter_count
from sketchmind.train.plots import gather_metrics
from sketchmind.train.ranks import is_main, wait_for_everyone, world_size
from sketchmind.train.recipe import Recipe, SFTSpec
from sketchmind.train.stage_clock import StageClock

if TYPE_CHECKING:
    from sketchmind.protocols import Protocol
    from sketchmind.train.search_stage import SolveTable
    from sketchmind.train.synth_stats import SynthStats

STAGES: tuple[str, ...] = (
    "synth", "base", "perceive", "search", "sft", "rejection", "sft2", "dpo", "grpo", "latent1", "latent2", "sft_text",
    "sft_direct", "eval",
)  # fmt: skip
DRAW_TRAINERS: tuple[str, ...] = (
    "perceive",
    "search",
    "sft",
    "sft2",
    "dpo",
    "grpo",
)  # the stages that train the draw policy
# The stages every process of a launch runs (the Trainer's data parallelism); the others run on the main process
# while the rest wait (docs/multi-gpu.md).
PARALLEL_STAGES: tuple[str, ...] = ("perceive", "search", "sft", "sft2", "dpo", "grpo", "sft_text", "sft_direct")
DONE_FILE = "done.json"
Report = Callable[[str], None]


class Pipeline:
    """The stages of one recipe, each skipped when already done."""

    def __init__(self, recipe: Recipe, report: Report = print, *, rich_progress: bool = False) -> None:
        self.recipe = recipe
        self.out = Path(recipe.output)
        self.report = report if is_main() else _silent  # one voice per launch: the main process's
        self.rich_progress = rich_progress  # trainer progress as a rich bar (the CLI) instead of tqdm
        self._latent_cache: tuple[list[dict[str, Any]], int] | None = None  # see _latent_rows

    # ------------------------------------------------------------------ bookkeeping

    def folder(self, stage: str) -> Path:
        return self.out / stage

    def done(self, stage: str) -> dict[str, Any] | None:
        """The summary a finished stage left, or None."""
        path = self.folder(stage) / DONE_FILE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def enabled(self) -> list[str]:
        """The stages this recipe asks for, in order."""
        stages = self.recipe.stages
        skip = {
            "base": self.recipe.model.tiny is None,
            "perceive": stages.perceive is None,
            "search": stages.search is None,
            "sft": stages.sft is None,
            "rejection": stages.rejection is None,
            "sft2": stages.rejection is None,
            "dpo": stages.dpo is None,
            "grpo": stages.grpo is None,
            "latent1": stages.latent is None,
            "latent2": stages.latent is None,
            "sft_text": "text" not in stages.baselines,
            "sft_direct": "direct" not in stages.baselines,
            "eval": self.recipe.eval is None,
        }
        return [s for s in STAGES if not skip.get(s, False)]

    def model_after(self, stage: str) -> str:
        """The draw policy the stages up to ``stage`` produced (the input of the next draw stage).

        Only the trainers of ``DRAW_TRAINERS`` change it: the latent stages branch off and leave it as it was, so
        ``model_after("latent2")`` is still grpo's final (the latent policy is ``latent_model()``).
        """
        order = self.enabled()
        trained = [s for s in order[: order.index(stage) + 1] if s in DRAW_TRAINERS]
        if trained:
            return str(self.folder(trained[-1]) / "final")
        if self.recipe.model.tiny is not None:
            return str(self.folder("base") / "model")
        assert self.recipe.model.base is not None
        return self.recipe.model.base

    def dpo_model(self) -> str | None:
        """DPO's final checkpoint (None when the recipe has no dpo stage)."""
        return str(self.folder("dpo") / "final") if "dpo" in self.enabled() else None

    def grpo_start(self) -> str:
        """The model GRPO starts from: the one DPO starts from too (both arms from one start), or with
        ``grpo.from_dpo`` DPO's final; without a dpo stage, the draw policy before GRPO."""
        spec = self.recipe.stages.grpo
        if "dpo" in self.enabled() and not (spec is not None and spec.from_dpo):
            return self.model_after(self.previous("dpo"))
        return self.model_after(self.previous("grpo"))

    def latent_model(self) -> str | None:
        """The latent policy: ``latent2``'s final checkpoint (None when the recipe has no latent stages)."""
        return str(self.folder("latent2") / "final") if "latent2" in self.enabled() else None

    def baseline_model(self, kind: str) -> str | None:
        """The ``text`` or ``direct`` baseline's final checkpoint (None when the recipe does not train it)."""
        stage = f"sft_{kind}"
        return str(self.folder(stage) / "final") if stage in self.enabled() else None

    def latest_model(self) -> str:
        """The draw policy of the furthest finished stage (the base model if none has finished)."""
        finished = [s for s in self.enabled() if self.done(s) is not None]
        return self.model_after(finished[-1]) if finished else self.model_after(self.enabled()[0])

    def run(self, only: Sequence[str] | None = None) -> dict[str, Any]:
        """Run every enabled stage not yet done (or just ``only``); return each stage's summary."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rich_progress:
            _quiet_library_bars()
        summaries: dict[str, Any] = {}
        for stage in self.enabled():
            if only and stage not in only:
                continue
            finished = self.done(stage)
            if finished is not None:
                self.report(f"{stage}: done earlier, skipped")
                summaries[stage] = finished
                continue
            self.report(f"{stage}: running")
            if not is_main():  # the main process alone writes the stage's bookkeeping: wait for it, then read it
                if stage in PARALLEL_STAGES:
                    getattr(self, f"_{stage}")()
                wait_for_everyone()
                summaries[stage] = self.done(stage)
                continue
            with StageClock(self.folder(stage)) as clock:
                summary = getattr(self, f"_{stage}")()
                for key in ("model", "final"):  # every checkpoint a stage makes says how it writes and speaks
                    if key in summary:
                        self.stamp(stage, summary[key])
                # A resumed stage counts the time of its killed runs too.
                summary["seconds"] = round(clock.seconds(), 1)
                summary["segments"] = clock.segments
                write_json_atomic(self.folder(stage) / DONE_FILE, summary)
            wait_for_everyone()
            self.report(f"{stage}: done in {summary['seconds']:.0f} s")
            summaries[stage] = summary
        if is_main():
            gather_metrics(self.out, self.enabled())
        return summaries

    def protocol(self) -> Protocol:
        """The text protocol of the recipe's trajectories: ``sketchmind``, in the recipe's coordinates."""
        from sketchmind.protocols import get_protocol

        return get_protocol("sketchmind", self.recipe.coords)

    def stamp(self, stage: str, model_dir: str | Path) -> None:
        """Record in a checkpoint's config the recipe's coordinate convention and the protocol the stage trained
        it to speak (``stage_protocol``; none: the key is removed); HFPolicy reads both back."""
        from sketchmind.models.hf import COORDS_KEY, PROTOCOL_KEY

        stamp_config(model_dir, COORDS_KEY, self.recipe.coords)
        stamp_config(model_dir, PROTOCOL_KEY, self.stage_protocol(stage))

    def stage_protocol(self, stage: str) -> str | None:
        """The protocol ``stage``'s checkpoint speaks, so a config copied from the start model never says wrong.

        The search stage's text arm writes ``search``; the trainers on the synth trajectories (the cold start,
        the baselines, the latent stages) ``sketchmind``; sft2, DPO and GRPO train on the samples of their start
        policy, so they speak what it speaks. Base and perceive models speak none (None).
        """
        if stage == "search":
            spec = self.recipe.stages.search
            return "search" if spec is not None and spec.arm == "text" else None
        if stage in ("sft", "sft_text", "sft_direct", "latent1", "latent2"):
            return "sketchmind"
        starts = {"sft2": lambda: self.model_after("rejection"), "dpo": lambda: self.model_after(self.previous("dpo"))}
        starts["grpo"] = self.grpo_start
        return _speaks(starts[stage]()) if stage in starts else None

    def previous(self, stage: str) -> str:
        order = self.enabled()
        return order[order.index(stage) - 1]

    # ------------------------------------------------------------------ stages

    def _synth(self) -> dict[str, Any]:
        from sketchmind.train.synth_storage import save_dataset

        data = self.recipe.data
        rows, stats = [], None
        for family in data.families:
            got, got_stats = self._synthesize(family, data.n_for(family), data.seed)
            rows.extend(got)
            if stats is None:
                stats = got_stats
            else:
                stats.groups.extend(got_stats.groups)  # families differ, so groups never collide
        save_dataset(rows, self.folder("synth"), stats=stats)
        self.report(stats.table() if stats else "no data")
        return {"rows": len(rows)}

    def _synthesize(self, family: str, n: int, seed: int) -> tuple[list[dict[str, Any]], SynthStats]:
        """Expert rows for one family, with the recipe's levels, reflective share, filters and coordinates."""
        from sketchmind.train.synth import synthesize

        data = self.recipe.data
        return synthesize(
            [family],
            n,
            levels=data.levels.get(family),
            seed=seed,
            reflective_fraction=data.reflective_fraction,
            min_rounds=data.min_rounds,
            protocol=self.protocol(),
        )

    def _base(self) -> dict[str, Any]:
        from sketchmind.models.tiny import build_tiny, message_corpus
        from sketchmind.train.synth_storage import load_dataset

        tiny = self.recipe.model.tiny
        assert tiny is not None
        texts: Iterable[str] = message_corpus(load_dataset(self.folder("synth")))
        if self.recipe.stages.perceive is not None:  # the reading rows' symbols must be tokens of their own
            from sketchmind.train.perception import perception_corpus

            texts = itertools.chain(texts, perception_corpus())
        if self.recipe.stages.search is not None:  # the search's cell names and moves
            from sketchmind.train.search_rows import search_corpus

            texts = itertools.chain(texts, search_corpus())
        path = build_tiny(
            tiny.family,
            self.folder("base") / "model",
            corpus=texts,
            vocab_size=tiny.vocab_size,
            hidden_size=tiny.hidden_size,
            layers=tiny.layers,
            seed=self.recipe.seed,
            max_pixels=tiny.max_pixels,
            fixed_side=tiny.fixed_side,
            image_size=tiny.image_size,
            init_std=tiny.init_std,
            rope_theta=tiny.rope_theta,
        )
        return {"model": str(path), "parameters": parameter_count(path)}

    def _perceive(self) -> dict[str, Any]:
        """Teach reading on fresh maps, small ones first, until the validation gate passes; then measure it."""
        from sketchmind.train.perception import (
            Curriculum,
            Guidance,
            gate_callback,
            guided_trainer,
            reading_dataset,
            reading_table,
            validation_puzzles,
        )
        from sketchmind.train.sft import run_sft

        spec = self.recipe.stages.perceive
        assert spec is not None
        curriculum = Curriculum(sorted(spec.levels), 1 if spec.curriculum else len(spec.levels))
        gate = gate_callback(
            validation_puzzles(spec), spec.gate, spec.widen, curriculum, every=spec.eval_every, report=self.report
        )
        guidance = Guidance(attention=spec.guide_attention, tokens=spec.guide_tokens)
        guided = guidance.attention > 0 or guidance.tokens > 0
        args = spec.trl_args()
        metrics = run_sft(
            self.model_after(self.previous("perceive")),
            reading_dataset(spec.family, curriculum, fresh_rows_needed(args), spec.seed),
            self.folder("perceive"),
            seed=self.recipe.seed,
            trl=args,
            dtype=self.recipe.model.dtype,
            callbacks=[gate],
            rich_progress=self.rich_progress,
            trainer_extension=(lambda base: guided_trainer(base, guidance)) if guided else None,
            attn_implementation="eager" if guidance.attention > 0 else None,  # the guidance reads attention weights
        )
        final = str(self.folder("perceive") / "final")
        summary = {"final": final, "gate_passed_at": gate.passed_at, "levels_open": curriculum.current()[-1]}
        if not is_main():  # the held-out reading table is generation: the main process measures and saves it
            return summary
        table = reading_table(final, self.recipe, self.folder("perceive"))
        self.report(table.markdown())
        return summary | table.summary() | _scalars(metrics)

    def _search(self) -> dict[str, Any]:
        """Teach the frozen-lake search on fresh maps, small ones first; then solve held-out maps in closed loop."""
        from sketchmind.train.perception import Curriculum, Guidance, guided_trainer, validation_puzzles
        from sketchmind.train.search_stage import batch_search_targets, search_dataset, widen_callback
        from sketchmind.train.sft import run_sft

        spec = self.recipe.stages.search
        assert spec is not None
        curriculum = Curriculum(sorted(spec.levels), 1 if spec.curriculum else len(spec.levels))
        validation = validation_puzzles(spec)
        widen = widen_callback(validation, spec.arm, spec.widen, curriculum, every=spec.eval_every, report=self.report)
        guidance = Guidance(attention=spec.guide_attention, tokens=spec.guide_tokens)
        guided = guidance.attention > 0 or guidance.tokens > 0
        args = spec.trl_args()
        metrics = run_sft(
            self.model_after(self.previous("search")),
            search_dataset(spec.family, spec.arm, curriculum, fresh_rows_needed(args), spec.seed),
            self.folder("search"),
            seed=self.recipe.seed,
            trl=args,
            dtype=self.recipe.model.dtype,
            callbacks=[widen],
            rich_progress=self.rich_progress,
            trainer_extension=(
                (lambda base: guided_trainer(base, guidance, batch_search_targets, row_keys=("map",)))
                if guided
                else None
            ),
            attn_implementation="eager" if guidance.attention > 0 else None,
        )
        final = str(self.folder("search") / "final")
        summary = {"final": final, "arm": spec.arm, "levels_open": curriculum.current()[-1]}
        if not is_main():
            return summary
        table = self._solve_table(final)
        self.report(table.markdown())
        return summary | table.summary() | _scalars(metrics)

    def _solve_table(self, model: str) -> SolveTable:
        """The search model's closed-loop solves on held-out maps (the eval seed) and VSP's, saved beside it."""
        from sketchmind.models.hf import HFPolicy
        from sketchmind.tasks import get_family
        from sketchmind.tasks.base import make_dataset
        from sketchmind.train.perception import vsp_puzzles
        from sketchmind.train.search_stage import SOLVE_FILE, measure_solving

        spec = self.recipe.stages.search
        assert spec is not None
        family = get_family(spec.family)
        seed = self.recipe.eval.seed if self.recipe.eval is not None else spec.seed + 2
        sets = {"generated": make_dataset(family, spec.levels, spec.solve_n, seed=seed)}
        vsp = self.recipe.eval.vsp if self.recipe.eval is not None else None
        if vsp:
            sets["vsp"] = [p for p in vsp_puzzles(Path(vsp)) if p.level in spec.levels]
        table = measure_solving(HFPolicy(model), sets, spec.arm, family)
        table.save(self.folder("search") / SOLVE_FILE)
        return table

    def _sft(self) -> dict[str, Any]:
        from sketchmind.train.synth_storage import load_dataset

        assert self.recipe.stages.sft is not None
        return self._fine_tune("sft", load_dataset(self.folder("synth")), self.recipe.stages.sft)

    def _rejection(self) -> dict[str, Any]:
        from sketchmind.models.base import Sampling
        from sketchmind.models.hf import HFPolicy
        from sketchmind.train.rejection import rejection_sample
        from sketchmind.train.synth_storage import save_dataset

        spec = self.recipe.stages.rejection
        assert spec is not None
        import torch

        policy = HFPolicy(self.model_after(self.previous("rejection")), dtype=self.recipe.model.dtype)
        # Unseeded sampling draws from torch's global generator: seed it, so the samples do not depend on
        # what ran before in this process (an uninterrupted run and a resumed one keep the same rows).
        torch.manual_seed(spec.seed)
        sampling = Sampling(temperature=spec.temperature, top_p=spec.top_p, max_new_tokens=spec.max_new_tokens)
        result = None
        for family in spec.families or self.recipe.data.families:
            got = rejection_sample(
                policy,
                [family],
                spec.n,
                k=spec.k,
                levels=self.recipe.data.levels.get(family),
                seed=spec.seed,
                sampling=sampling,
                require_reflective=spec.require_reflective,
            )
            if result is None:
                result = got
            else:
                result.kept += got.kept
                result.rejected += got.rejected
                result.stats.counts.update(got.stats.counts)
        assert result is not None
        save_dataset(result.kept, self.folder("rejection") / "kept")
        save_dataset(result.rejected, self.folder("rejection") / "rejected")
        self.report(result.stats.table())
        return {"kept": len(result.kept), "rejected": len(result.rejected), **result.stats.to_dict()}

    def _sft2(self) -> dict[str, Any]:
        from datasets import concatenate_datasets  # type: ignore[import-untyped]

        from sketchmind.train.synth_storage import is_saved, load_dataset

        spec = self.recipe.stages.rejection
        assert spec is not None
        parts = []
        kept = self.folder("rejection") / "kept"
        if is_saved(kept) and len(rows := load_dataset(kept)) > 0:
            parts.append(rows)
        if self.recipe.stages.sft is None:  # the synth rows are another policy's format: only the kept samples
            if not parts:
                raise StageError("rejection sampling kept no sample, so sft2 has nothing to train on")
        elif spec.mix_cold_start or not parts:
            parts.append(load_dataset(self.folder("synth")))
        return self._fine_tune("sft2", concatenate_datasets(parts), spec.sft)

    def _grpo(self) -> dict[str, Any]:
        from sketchmind.train.grpo import run_grpo

        spec = self.recipe.stages.grpo
        assert spec is not None
        start = self.grpo_start()
        metrics = run_grpo(
            start,
            self.folder("grpo"),
            families=spec.families or self.recipe.data.families,
            protocol=_speaks(start),
            n=spec.n,
            seed=spec.seed,
            gated=spec.gated,
            lora=spec.lora,
            trl=spec.trl_args(),
            dtype=self.recipe.model.dtype,
            rich_progress=self.rich_progress,
            coords=self.recipe.coords,
        )
        return {"start": start, "final": str(self.folder("grpo") / "final"), **_scalars(metrics)}

    def _dpo(self) -> dict[str, Any]:
        from sketchmind.train.dpo import preference_pairs, run_dpo

        spec, rejection = self.recipe.stages.dpo, self.recipe.stages.rejection
        assert spec is not None and rejection is not None
        experts: list[dict[str, Any]] = []
        if spec.expert_chosen:  # the expert on rejection sampling's own puzzles: the same seed and levels
            if _speaks(self.model_after(self.previous("dpo"))) != "sketchmind":
                raise StageError("dpo.expert_chosen: the expert writes sketchmind trajectories, not the policy's own")
            for family in rejection.families or self.recipe.data.families:
                experts.extend(self._synthesize(family, rejection.n, rejection.seed)[0])
        samples = self.folder("rejection")
        pairs, stats = preference_pairs(
            _saved_rows(samples / "kept"), _saved_rows(samples / "rejected"), experts, per_puzzle=spec.pairs_per_puzzle
        )
        self.report(f"dpo: {stats.line()}")
        if len(pairs) < spec.min_pairs:
            raise StageError(
                f"dpo: {len(pairs)} preference pairs, fewer than dpo.min_pairs={spec.min_pairs}: a pair needs a "
                "kept and a wrongly answered sample of one puzzle (sample more with rejection.n or rejection.k, or "
                "set dpo.expert_chosen: true to prefer the expert's trajectory where no sample was kept)"
            )
        start = self.model_after(self.previous("dpo"))
        metrics = run_dpo(
            start,
            pairs,
            self.folder("dpo"),
            seed=self.recipe.seed,
            trl=spec.trl_args(),
            dtype=self.recipe.model.dtype,
            lora=spec.lora,
            max_length=spec.max_length,
            rich_progress=self.rich_progress,
        )
        final = str(self.folder("dpo") / "final")
        return {"start": start, "final": final, **stats.to_dict(), **_scalars(metrics)}

    def _latent1(self) -> dict[str, Any]:
        source = self.recipe.stages.latent_source()
        assert source is not None
        return self._latent_stage("latent1", 1, self.model_after(source))

    def _latent2(self) -> dict[str, Any]:
        return self._latent_stage("latent2", 2, str(self.folder("latent1") / "final"))

    def _latent_stage(self, stage: str, number: Literal[1, 2], start: str) -> dict[str, Any]:
        from sketchmind.train.latent_stage import run_latent_stage

        spec = self.recipe.stages.latent
        assert spec is not None
        loop = spec.stage1 if number == 1 else spec.stage2
        rows, skipped = self._latent_rows()
        summary = run_latent_stage(
            start,
            rows,
            self.folder(stage),
            stage=number,
            k=spec.k,
            gamma=spec.gamma,
            grounding=spec.grounding,
            stage2_grounding_weight=spec.stage2.grounding_weight if number == 2 else 0.0,
            max_steps=loop.max_steps,
            lr=loop.learning_rate,
            weight_decay=loop.weight_decay,
            max_grad_norm=loop.max_grad_norm,
            save_steps=loop.save_steps,
            max_pixels=loop.max_pixels,
            seed=self.recipe.seed,
            dtype=self.recipe.model.dtype,
        )
        summary.pop("final_dir", None)
        final = str(self.folder(stage) / "final")
        return {"rows": len(rows), "skipped": skipped, "start": start, "final": final, **_scalars(summary)}

    def _sft_text(self) -> dict[str, Any]:
        return self._baseline("text")

    def _sft_direct(self) -> dict[str, Any]:
        return self._baseline("direct")

    def _baseline(self, kind: Literal["text", "direct"]) -> dict[str, Any]:
        """SFT the cold start's model on the synth puzzles written as ``kind`` rows, with the cold start's settings."""
        from sketchmind.train.baselines import baseline_row
        from sketchmind.train.synth_storage import load_dataset, save_dataset

        stage = f"sft_{kind}"
        data = self.folder(stage) / "data"
        if is_main() and not (data / DONE_FILE).is_file():
            save_dataset([baseline_row(row, kind) for row in load_dataset(self.folder("synth"))], data)
            write_json_atomic(data / DONE_FILE, {})
        wait_for_everyone()  # the other processes train on the rows the main process wrote
        # The same start as the draw policy's cold start (the reading model when perceive runs), so draw, text
        # and direct differ only in how the trajectories are written.
        start = self._cold_start()
        assert self.recipe.stages.sft is not None  # the recipe checks that baselines have their settings
        return self._fine_tune(stage, load_dataset(data), self.recipe.stages.sft, start=start)

    def _cold_start(self) -> str:
        """The model the cold-start SFT starts from: the last of base, perceive and search that the recipe runs."""
        enabled = self.enabled()
        for stage in ("search", "perceive", "base"):
            if stage in enabled:
                return self.model_after(stage)
        return self.model_after("synth")

    def _latent_rows(self) -> tuple[list[dict[str, Any]], int]:
        """The latent stages' rows (the synth rows, or fresh puzzles with ``latent.n``) and how many were unusable.

        A row whose observation shows no view has nothing to imagine and is skipped. Fresh puzzles are
        generated once per run (both stages see the same rows: the seed is fixed).
        """
        if self._latent_cache is not None:
            return self._latent_cache
        from sketchmind.latent.data import latent_row
        from sketchmind.train.synth_storage import load_dataset

        spec = self.recipe.stages.latent
        assert spec is not None
        data = self.recipe.data
        source: list[Any] = []
        if spec.n is None:
            source = list(load_dataset(self.folder("synth")))
        else:
            for family in data.families:
                source.extend(self._synthesize(family, spec.n, spec.seed)[0])
        rows: list[dict[str, Any]] = []
        for row in source:
            try:
                rows.append(latent_row(row, spec.k))
            except ValueError:
                continue
        if not rows:
            raise ValueError(f"none of the {len(source)} rows can become a latent row (no rendered views)")
        self._latent_cache = (rows, len(source) - len(rows))
        return self._latent_cache

    def _eval(self) -> dict[str, Any]:
        from sketchmind.train.eval_stage import run_eval

        return run_eval(self)

    def _fine_tune(self, stage: str, dataset: Any, spec: SFTSpec, *, start: str | None = None) -> dict[str, Any]:
        """SFT ``dataset`` on the model before ``stage`` (or ``start``) with an SFT section's settings."""
        from sketchmind.train.sft import run_sft

        start = start or self.model_after(self.previous(stage))
        metrics = run_sft(
            start,
            dataset,
            self.folder(stage),
            seed=self.recipe.seed,
            trl=spec.trl_args(),  # the section's TRL fields (trl_config.build_config puts them together)
            dtype=self.recipe.model.dtype,
            lora=spec.lora,
            max_length=spec.max_length,
            rich_progress=self.rich_progress,
        )
        return {"rows": len(dataset), "start": start, "final": str(self.folder(stage) / "final"), **_scalars(metrics)}


class StageError(RuntimeError):
    """A stage cannot run on what the stages before it left (e.g. no preference pairs); the message is one line."""


def _quiet_library_bars() -> None:
    """Silence the per-file bars transformers and datasets print (weights, shards): the trainer's rich bar
    and our stage lines are the progress a person reads."""
    from datasets.utils.logging import disable_progress_bar as quiet_datasets  # type: ignore[import-untyped]
    from transformers.utils.logging import disable_progress_bar as quiet_transformers

    quiet_transformers()  # type: ignore[no-untyped-call]
    quiet_datasets()


def _saved_rows(folder: Path) -> list[dict[str, Any]]:
    """The rows of a dataset ``save_dataset`` wrote (none when it saved no rows, or saved nothing)."""
    from sketchmind.train.synth_storage import is_saved, load_dataset

    return list(load_dataset(folder)) if is_saved(folder) else []


def _silent(line: str) -> None:
    """The report of the processes other than the main one."""


def fresh_rows_needed(trl_args: dict[str, Any]) -> int:
    """One fresh map per row the trainer can ask for: the recipe's batch size and max_steps (trl's included),
    on every process of the launch."""
    per_step = trl_args["per_device_train_batch_size"] * trl_args.get("gradient_accumulation_steps", 1)
    return int(trl_args["max_steps"] * per_step * world_size())


def _scalars(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


def stamp_config(model_dir: str | Path, key: str, value: str | None) -> None:
    """Record ``key: value`` in a checkpoint's ``config.json`` (what it was trained on; HFPolicy reads it back);
    ``None`` removes the key."""
    config = Path(model_dir) / "config.json"
    values = json.loads(config.read_text(encoding="utf-8"))
    if values.get(key) != value:
        if value is None:
            values.pop(key)
        else:
            values[key] = value
        write_json_atomic(config, values)


def _speaks(model_dir: str | Path) -> str:
    """The protocol a checkpoint was trained to speak (its config's ``sketchmind_protocol``), else sketchmind."""
    from sketchmind.models.hf import PROTOCOL_KEY
    from sketchmind.protocols import DEFAULT_PROTOCOL

    config = Path(model_dir) / "config.json"
    values = json.loads(config.read_text(encoding="utf-8")) if config.is_file() else {}
    return str(values.get(PROTOCOL_KEY) or DEFAULT_PROTOCOL)
