"""A training recipe: one YAML file describes the base model, the data and every stage of a policy.

The same schema serves a 2-layer model built on a laptop CPU and a 7B model on a GPU cluster; only
the numbers (and ``launch`` for accelerate) change. Unknown keys are errors, so a typo in a recipe
fails at load time with the field's path, not hours into a run. So do negative or zero counts, rates
and sizes, and a file that is not a small YAML mapping (binary, huge, or an alias bomb). The sections TRL
trains (``TrlSection``) also take any other field of TRL's ``SFTConfig`` / ``DPOConfig`` / ``GRPOConfig`` in a
``trl:`` mapping, checked against the installed TRL's class at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sketchmind.train.trl_config import ConfigName
from sketchmind.train.weights import check_training_dtype

# Counts, sizes and rates: a zero or negative one is a typo that would fail (or silently do nothing) mid-run.
PosInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]  # seeds (numpy refuses negative ones) and optional extras
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Name = Annotated[str, Field(min_length=1)]
MAX_RECIPE_BYTES = 1 << 20  # recipes are a page of YAML
MAX_RECIPE_VALUES = 100_000  # values after YAML aliases are expanded: more is an alias bomb, not a recipe


def _check_families(families: list[str], levels: dict[str, list[int]]) -> None:
    """Every family (and every family given levels) exists and has those levels: a ``ValueError`` naming
    the first that does not, at load time rather than when a stage reaches it."""
    from sketchmind.tasks import get_family

    for name in dict.fromkeys([*families, *levels]):
        family = get_family(name)
        wrong = [n for n in levels.get(name, []) if n not in family.levels]
        if wrong:
            raise ValueError(f"{name} has levels {family.levels[0]}-{family.levels[-1]}, not {wrong[0]}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TinyModel(Strict):
    """Build a tiny random model from a config, with a tokenizer trained on the recipe's own data."""

    family: Literal["qwen2.5-vl", "qwen3-vl", "idefics3"] = "qwen2.5-vl"
    hidden_size: PosInt = 64
    layers: PosInt = 2
    vocab_size: PosInt = 2000
    image_size: PosInt = 64  # the vision tower's native patch grid, in pixels
    max_pixels: PosInt = 256 * 28 * 28
    # Resize every square image to this side (a multiple of 28; None: keep sizes within max_pixels). One token grid
    # for every map puts the tokens of cell (r, c) of an n x n map at the same place in every image; when the grid
    # varies per image a tiny model reads larger maps far more slowly (docs/perception.md).
    fixed_side: PosInt | None = None
    init_std: PosFloat = 0.1
    # The language model's rotary base. Qwen's 1e6 leaves a tiny model's image rows and columns only its
    # slowest frequencies (under 0.03 and 0.0002 radians per cell): it cannot tell cells apart by position.
    rope_theta: PosFloat | None = None


class ModelSpec(Strict):
    """Either a pretrained checkpoint (``base``: a path or hub id) or a ``tiny`` model to build.

    ``dtype`` is the weights' dtype in every stage that trains them (``train/weights.py``) and in rejection
    sampling. Unset (or ``auto``), training stages keep float32 master weights (bf16 autocast on CUDA) and
    sampling picks bf16 on GPUs that support it; float16 is refused (it cannot train without loss scaling).
    """

    base: str | None = None
    tiny: TinyModel | None = None
    dtype: str | None = None

    @model_validator(mode="after")
    def one_source(self) -> ModelSpec:
        if (self.base is None) == (self.tiny is None):
            raise ValueError("model needs exactly one of 'base' (a checkpoint) or 'tiny' (a config to build)")
        return self

    @field_validator("dtype")
    @classmethod
    def trainable_dtype(cls, value: str | None) -> str | None:
        check_training_dtype(value)  # an unknown dtype, or one the stages cannot train in, fails at load time
        return value


class DataSpec(Strict):
    """Cold-start data: expert trajectories on generated puzzles."""

    families: list[str] = Field(default_factory=lambda: ["frozenlake", "maze"])
    n: PosInt | dict[str, PosInt] = 20  # puzzles per level: one number for every family, or family -> number
    levels: dict[str, list[PosInt]] = Field(default_factory=dict)  # family -> levels (default: all)
    seed: NonNegInt = 0
    reflective_fraction: Fraction = 0.3
    min_rounds: NonNegInt = 2

    @model_validator(mode="after")
    def every_family_counted(self) -> DataSpec:
        if isinstance(self.n, dict) and (missing := [f for f in self.families if f not in self.n]):
            raise ValueError(f"n has no count for {', '.join(missing)}")
        _check_families(self.families, self.levels)
        return self

    def n_for(self, family: str) -> int:
        """Puzzles per level of ``family``."""
        return self.n[family] if isinstance(self.n, dict) else self.n


class TrlSection(Strict):
    """A section a TRL trainer runs: friendly keys, plus any other field of its TRL config in ``trl``.

    ``TRL_NAMES`` maps each friendly key to the TRL field it sets; ``trl`` (e.g. ``{gradient_accumulation_steps:
    4, lr_scheduler_type: cosine}``) is checked against the installed TRL's ``TRL_CONFIG`` class at load time
    (``trl_config.check_fields``). A ``trl`` field wins over a friendly key left at its default; setting both
    is an error, since one of them would be silently ignored.
    """

    TRL_CONFIG: ClassVar[ConfigName] = "SFTConfig"
    TRL_NAMES: ClassVar[dict[str, str]] = {}
    TRL_MAPPINGS: ClassVar[tuple[str, ...]] = ("trl",)  # the mappings of raw TRL fields, in the order they apply
    trl: dict[str, Any] = Field(default_factory=dict)

    # One check for every raw mapping (``trl``, and grpo's older ``extra``), each error located at its mapping.
    @field_validator("trl", "extra", check_fields=False)
    @classmethod
    def known_trl_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        _check_trl_fields(cls.TRL_CONFIG, value)
        return value

    @model_validator(mode="after")
    def one_key_per_field(self) -> TrlSection:
        setters = {field: key for key, field in self.TRL_NAMES.items() if key in self.model_fields_set}
        for mapping in self.TRL_MAPPINGS:
            for field in getattr(self, mapping):
                if field in setters:
                    raise ValueError(
                        f"{setters[field]} and {mapping}.{field} both set {self.TRL_CONFIG}.{field}: keep one"
                    )
                setters[field] = f"{mapping}.{field}"
        return self

    def trl_args(self) -> dict[str, Any]:
        """The section's TRL fields: the friendly keys under their TRL names, then each of ``TRL_MAPPINGS``."""
        args = {field: getattr(self, key) for key, field in self.TRL_NAMES.items()}
        for mapping in self.TRL_MAPPINGS:
            args |= getattr(self, mapping)
        return args


def _check_trl_fields(config: ConfigName, values: dict[str, Any]) -> None:
    """``trl_config.check_fields`` when TRL is installed; without it no stage can train, which says so itself."""
    if not values:
        return  # no TRL import for sections without a trl mapping: loading a recipe stays fast
    from sketchmind.train.trl_config import check_fields

    try:
        check_fields(config, values)
    except ImportError:  # pragma: no cover - the train extra is missing
        return


class SFTSpec(TrlSection):
    """An SFT round (``run_sft``): its TRL ``SFTConfig`` fields, plus the collator's and LoRA's settings."""

    TRL_NAMES: ClassVar[dict[str, str]] = {
        "epochs": "num_train_epochs",
        "max_steps": "max_steps",
        "learning_rate": "learning_rate",
        "batch_size": "per_device_train_batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "save_steps": "save_steps",
    }
    epochs: PosFloat = 1.0
    max_steps: Annotated[int, Field(ge=-1)] = -1  # -1: train for ``epochs``
    learning_rate: PosFloat = 1e-4
    batch_size: PosInt = 1
    grad_accum: PosInt = 1
    save_steps: PosInt = 50
    max_length: PosInt | None = None
    lora: dict[str, Any] | None = None  # peft LoraConfig arguments, e.g. {"r": 16, "lora_alpha": 32}


class ReadingGate(Strict):
    """When a model reads well enough to move on: teacher-forced accuracy on held-out validation maps."""

    cell: Fraction = 0.99  # cells read right
    exact: Fraction = 0.95  # maps read right in every cell


class FreshMapsSpec(TrlSection):
    """A stage that trains on fresh frozen-lake maps, small ones first, with the guidance losses.

    Every training row is a new map, generated when the trainer asks for it (``seed``, never a data or eval
    seed). Progress is checked every ``eval_every`` steps on ``eval_n`` validation maps per level (seed
    ``seed + 1``, never trained on). Trained by ``run_sft``: ``trl`` takes any other ``SFTConfig`` field.
    """

    TRL_NAMES: ClassVar[dict[str, str]] = {
        "max_steps": "max_steps",
        "batch_size": "per_device_train_batch_size",
        "learning_rate": "learning_rate",
        "warmup_steps": "warmup_steps",
        "save_steps": "save_steps",
    }
    family: str = "frozenlake-classic"
    levels: list[PosInt] = Field(default_factory=lambda: [3, 4, 5, 6, 7, 8])
    seed: NonNegInt = 4000  # each stage its own default, so two stages never train on the same maps
    max_steps: PosInt = 1000
    batch_size: PosInt = 16
    learning_rate: PosFloat = 1e-3
    warmup_steps: NonNegInt = 20
    save_steps: PosInt = 100
    eval_every: PosInt = 50
    eval_n: PosInt = 8
    # Training-only help (train/perception.py Guidance): weights of the attention and image-token losses, 0 = off.
    guide_attention: NonNegFloat = 1.0
    guide_tokens: NonNegFloat = 1.0
    curriculum: bool = True  # levels in order, small maps first: the next joins once the open ones are learnt

    @model_validator(mode="after")
    def known_family(self) -> FreshMapsSpec:
        _check_families([self.family], {self.family: self.levels})
        return self


class PerceiveSpec(FreshMapsSpec):
    """Reading before reasoning (``train/perception.py``): transcribe fresh maps until the gate is passed.

    ``max_steps`` bounds the time spent if the gate is never reached.
    """

    gate: ReadingGate = ReadingGate()  # every level open and read this well: reading is done
    widen: ReadingGate = ReadingGate(cell=0.97, exact=0.75)  # the open levels read this well: the next one joins


class SearchSpec(FreshMapsSpec):
    """Planning by search (``train/search_stage.py``): the frozen-lake search on fresh maps, then a closed loop.

    ``arm`` is how the search is written: ``draw``, one line a turn, each turn seeing only the view with the
    search so far drawn; or ``text``, the whole search in words after one image (``train/search_rows.py``).
    Sizes open from the smallest once the open ones' validation answer tokens are ``widen`` right. The stage
    ends after ``max_steps`` and solves ``solve_n`` held-out maps per level (the recipe's eval seed) and
    VSP's own maps in closed loop.
    """

    arm: Literal["draw", "text"] = "draw"
    seed: NonNegInt = 5000
    widen: Fraction = 0.9
    solve_n: PosInt = 16

    @model_validator(mode="after")
    def frozen_lake(self) -> SearchSpec:
        if self.family not in ("frozenlake-classic", "frozenlake"):
            raise ValueError(f"stages.search plans on frozen-lake maps, not {self.family!r}")
        return self


class RejectionSpec(Strict):
    families: list[str] | None = Field(None, min_length=1)  # the families sampled (default: data.families)
    n: PosInt = 4  # puzzles per level and family
    k: PosInt = 4  # samples per puzzle
    seed: NonNegInt = 1000  # fresh puzzles: never the cold-start seed
    temperature: NonNegFloat = 0.9
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    max_new_tokens: PosInt = 256
    require_reflective: bool = True
    mix_cold_start: bool = True  # the second SFT round sees the cold-start rows too
    sft: SFTSpec = SFTSpec()

    @model_validator(mode="after")
    def known_families(self) -> RejectionSpec:
        _check_families(self.families or [], {})
        return self


class DPOSpec(TrlSection):
    """The DPO stage (``run_dpo``): its TRL ``DPOConfig`` fields, plus how pairs are made, the collator's and LoRA's.

    A pair is a kept (chosen) and a wrong-answered (rejected) sample of rejection sampling for the same puzzle,
    at most ``pairs_per_puzzle`` of them per puzzle. ``expert_chosen`` also pairs a puzzle no sample solved: the
    expert's trajectory for it is the chosen one (gold against the policy's own, as in SPIN). Fewer than
    ``min_pairs`` pairs stops the stage with one line saying so. ``lora`` as in ``SFTSpec``: with LoRA the
    reference is the start policy with the adapter off, without it a second copy of the weights.
    """

    TRL_CONFIG: ClassVar[ConfigName] = "DPOConfig"
    TRL_NAMES: ClassVar[dict[str, str]] = {
        "beta": "beta",
        "epochs": "num_train_epochs",
        "max_steps": "max_steps",
        "learning_rate": "learning_rate",
        "batch_size": "per_device_train_batch_size",
        "grad_accum": "gradient_accumulation_steps",
        "save_steps": "save_steps",
    }
    beta: PosFloat = 0.1  # how far from the start policy the preferences may pull it (DPO's KL weight)
    epochs: PosFloat = 1.0
    max_steps: Annotated[int, Field(ge=-1)] = -1  # -1: train for ``epochs``
    learning_rate: PosFloat = 1e-6
    batch_size: PosInt = 1  # pairs per step: each pair is two sequences
    grad_accum: PosInt = 1
    save_steps: PosInt = 50
    max_length: PosInt | None = None
    pairs_per_puzzle: PosInt = 4
    expert_chosen: bool = False
    min_pairs: PosInt = 1
    lora: dict[str, Any] | None = None


class GRPOSpec(TrlSection):
    """The GRPO stage (``run_grpo``): its TRL ``GRPOConfig`` fields, plus the puzzles, rewards and LoRA.

    ``seed`` seeds both the puzzles and the trainer; ``extra`` is the older name of ``trl`` (both may be
    used, but not for the same field). With a ``dpo`` stage too, GRPO starts where DPO does (the rejection-sampled
    SFT policy), so the two are compared from one start; ``from_dpo`` chains them instead (GRPO from DPO's final).
    """

    TRL_CONFIG: ClassVar[ConfigName] = "GRPOConfig"
    TRL_NAMES: ClassVar[dict[str, str]] = {
        "seed": "seed",
        "max_steps": "max_steps",
        "num_generations": "num_generations",
        "max_completion_length": "max_completion_length",
        "learning_rate": "learning_rate",
        "max_tool_calling_iterations": "max_tool_calling_iterations",
        "use_vllm": "use_vllm",
    }
    families: list[str] | None = Field(None, min_length=1)  # the families of its puzzles (default: data.families)
    n: PosInt = 20
    seed: NonNegInt = 2000
    max_steps: PosInt = 100
    num_generations: PosInt = 4
    max_completion_length: PosInt = 256
    learning_rate: PosFloat = 1e-6
    gated: bool = True  # ViLaSR: no format reward when the answer is wrong
    max_tool_calling_iterations: PosInt = 8
    use_vllm: bool = False
    lora: dict[str, Any] | None = None
    from_dpo: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)  # the older name of ``trl``: any other GRPOConfig field
    TRL_MAPPINGS: ClassVar[tuple[str, ...]] = ("extra", "trl")

    @model_validator(mode="after")
    def known_families(self) -> GRPOSpec:
        _check_families(self.families or [], {})
        return self


EvalMode = Literal["draw", "dpo", "text", "direct", "latent", "auto", "latent-mean", "latent-noise"]


class EvalSpec(Strict):
    """Held-out benchmarks of the trained policies, one run per family and mode.

    Modes: ``draw`` (the draw policy), ``dpo`` (DPO's final, drawing: with a grpo stage too, the arm to compare
    with ``draw``, from the same start), ``text`` (the text-CoT baseline when ``stages.baselines`` has it, else
    the draw policy with its tools off), ``direct`` (the direct-answer baseline), ``latent`` and ``auto``
    (the latent policy), ``latent-mean`` / ``latent-noise`` (latent mode with every latent replaced by the
    ``latent`` run's mean latent of its slot index, or by noise: list ``latent`` first).
    ``vsp`` also runs every mode on the VSP maze examples (a folder holding ``maps/``).
    """

    families: list[str] = Field(default_factory=lambda: ["frozenlake", "maze"])
    n: PosInt = 10
    seed: NonNegInt = 99  # held out: never a training seed
    modes: list[EvalMode] = Field(default_factory=lambda: list[EvalMode](["draw"]))
    vsp: str | None = None
    batch_size: PosInt = 8
    levels: dict[str, list[PosInt]] = Field(default_factory=dict)  # family -> levels (default: all)
    max_turns: PosInt = 10
    max_new_tokens: PosInt = 512

    @model_validator(mode="after")
    def known_families(self) -> EvalSpec:
        _check_families(self.families, self.levels)
        return self


class LatentStageSpec(Strict):
    """One latent stage's loop (``sketchmind.train.latent_stage.run_latent_stage``)."""

    max_steps: PosInt = 100  # one latent row per step, rows visited in order, cyclically
    learning_rate: PosFloat = 1e-5
    weight_decay: NonNegFloat = 0.0
    max_grad_norm: PosFloat = 1.0
    save_steps: PosInt = 50
    max_pixels: PosInt | None = None  # the views' (and the input image's) pixel budget; default: the processor's


class LatentStage2Spec(LatentStageSpec):
    """Stage 2's loop, plus its optional grounding term."""

    # λ: stage 2's loss = CE + λ x the stage-1 grounding term on the chain's own P(h_prev) (0: CE only)
    grounding_weight: float = Field(0.0, ge=0)


class LatentTrainSpec(Strict):
    """Mirage-style latent visual reasoning: two stages that branch off an SFT'd draw policy.

    ``latent1`` (grounded) trains K latent slots per rendered view towards the view's vision-encoder
    features (a cosine that rewards the view-specific part, plus gamma x the text CE); ``latent2`` (free)
    trains the text CE through the model's own hidden-state chain P(h) (``stage2.grounding_weight`` > 0 also
    keeps the grounding term on that chain). The draw policy (``grpo``'s, or the
    last SFT's) is left as it is.
    """

    k: int = Field(4, ge=1)  # latent slots per view
    gamma: NonNegFloat = 0.1  # stage 1: loss = grounding + gamma * CE
    # stage 1's grounding term (sketchmind.latent.losses): "cosine" is Mirage's plain cosine, which the
    # targets' shared direction lets a constant latent satisfy; the others also score the view-specific part
    grounding: Literal["contrastive", "centered", "cosine"] = "contrastive"
    source: Literal["sft", "sft2", "grpo"] | None = None  # the model latent1 starts from; default: sft2, else sft
    n: PosInt | None = None  # puzzles per level and family; None: the synth stage's rows (the cold-start data)
    seed: NonNegInt = 3000  # only with n: fresh puzzles, never a cold-start, rejection or GRPO seed
    stage1: LatentStageSpec = LatentStageSpec()
    stage2: LatentStage2Spec = LatentStage2Spec()


class Stages(Strict):
    perceive: PerceiveSpec | None = None  # reading first: the draw policy's SFT starts from its model
    search: SearchSpec | None = None  # planning by search on frozen-lake maps, from the reading model
    # The cold start on the synth trajectories; null skips it (a search policy is then the start of what follows).
    sft: SFTSpec | None = SFTSpec()
    rejection: RejectionSpec | None = None
    dpo: DPOSpec | None = None  # preferences on rejection sampling's pairs, from the policy GRPO starts from
    grpo: GRPOSpec | None = None
    latent: LatentTrainSpec | None = None
    # no-drawing baselines (train/baselines.py), each SFT'd from the base model on the synth puzzles with sft's settings
    baselines: list[Literal["text", "direct"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def dpo_has_its_pairs(self) -> Stages:
        if self.dpo is not None and self.rejection is None:
            raise ValueError("stages.dpo needs a stages.rejection section: its pairs are rejection sampling's samples")
        if self.grpo is not None and self.grpo.from_dpo and self.dpo is None:
            raise ValueError("grpo.from_dpo needs a stages.dpo section")
        return self

    @model_validator(mode="after")
    def sft_settings_for_the_stages_that_use_them(self) -> Stages:
        if self.sft is None and self.baselines:
            raise ValueError("stages.baselines are SFT'd with stages.sft's settings: keep a stages.sft section")
        if self.sft is None and (self.search is None or self.search.arm != "text"):
            raise ValueError("stages.sft is null, so the policy must come from stages.search with arm: text")
        if self.sft is None and self.rejection is not None and self.rejection.mix_cold_start:
            raise ValueError("stages.sft is null: no cold-start rows to mix (set rejection.mix_cold_start: false)")
        return self

    @model_validator(mode="after")
    def latent_source_runs(self) -> Stages:
        if self.latent is None:
            return self
        if self.latent.source in (None, "sft"):
            if self.sft is None and (self.latent.source == "sft" or self.rejection is None):
                raise ValueError("the latent stages start from the cold start's policy: keep a stages.sft section")
            return self
        needs = {"sft2": ("rejection", self.rejection), "grpo": ("grpo", self.grpo)}[self.latent.source]
        if needs[1] is None:
            raise ValueError(f"latent.source {self.latent.source!r} needs a stages.{needs[0]} section")
        return self

    def latent_source(self) -> str | None:
        """The stage whose final model ``latent1`` starts from (None when no latent stages are asked for)."""
        if self.latent is None:
            return None
        return self.latent.source or ("sft2" if self.rejection is not None else "sft")


class Recipe(Strict):
    """Everything needed to train one policy from scratch, reproducibly."""

    name: Name
    output: Name  # run directory; a re-run resumes in it
    seed: NonNegInt = 0
    # How the policy writes coordinates: "pixels" of the view (Qwen2.5-VL grounding) or "norm1000" (0-1000 on
    # both axes, Qwen3-VL). Recorded in the checkpoint's config, so every agent running it speaks the same.
    coords: Literal["pixels", "norm1000", "unit"] = "pixels"
    model: ModelSpec
    data: DataSpec = DataSpec()
    stages: Stages = Stages()
    eval: EvalSpec | None = None

    @model_validator(mode="after")
    def latent_modes_need_latent_stages(self) -> Recipe:
        modes = self.eval.modes if self.eval else []
        imagining = [m for m in modes if m in ("latent", "auto", "latent-mean", "latent-noise")]
        if imagining and self.stages.latent is None:
            raise ValueError(f"eval mode {imagining[0]!r} needs a latent policy: add a stages.latent section")
        if "dpo" in modes and self.stages.dpo is None:
            raise ValueError("eval mode 'dpo' needs the DPO policy: add a stages.dpo section")
        if "direct" in modes and "direct" not in self.stages.baselines:
            raise ValueError("eval mode 'direct' needs the direct baseline: add it to stages.baselines")
        if "latent-mean" in modes and ("latent" not in modes or modes.index("latent") > modes.index("latent-mean")):
            raise ValueError("eval mode 'latent-mean' needs mode 'latent' listed before it (its mean latents)")
        return self


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message is one line."""


def _one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit]


def _too_many_values(value: Any, budget: int) -> bool:
    """Whether ``value`` holds more than ``budget`` values once aliases are expanded (a cycle always does).

    YAML aliases share one object, so loading a "billion laughs" file is cheap; anything that later walks
    it (validation of ``Any`` fields, JSON dumps of the recipe into checkpoints) is not. Stops early.
    """
    stack, seen = [value], 0
    while stack:
        item = stack.pop()
        seen += 1
        if seen > budget:
            return True
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file. Raises ``RecipeError`` (one line) naming the first problem's field."""
    import yaml

    file = Path(path)
    if file.is_dir():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    if not file.is_file():
        raise RecipeError(f"{path}: no such recipe file")
    try:
        data = file.read_bytes()
    except OSError as error:
        raise RecipeError(f"{path}: cannot read ({error.strerror or error})") from None
    if len(data) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{path}: {len(data):,} bytes is too big for a recipe (at most {MAX_RECIPE_BYTES:,})")
    try:
        raw = yaml.safe_load(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as error:
        raise RecipeError(f"{path}: not valid YAML ({_one_line(str(error), 120)})") from None
    except RecursionError:
        raise RecipeError(f"{path}: not valid YAML (nested too deeply)") from None
    if raw is None:
        raise RecipeError(f"{path}: empty recipe (want a mapping with name, output and model)")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: the top level must be a mapping of recipe fields, not {type(raw).__name__}")
    if _too_many_values(raw, MAX_RECIPE_VALUES):
        raise RecipeError(f"{path}: YAML aliases expand to over {MAX_RECIPE_VALUES:,} values (an alias bomb?)")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the top level"
        raise RecipeError(_one_line(f"{path}: {where}: {first['msg']}", 300)) from None
