"""The typed stage contract: what each stage run is told to compute (its RunSpec's `params`, part of
the run key) and how to run it (`Runtime`, not part of the key).

The planner (labscale.plan) builds these objects; stages read attributes (`ctx.params.shots`). Where
a stage has several code paths, its params are a union told apart by `kind`:
- train: `sft | dp_sgd | dpo | student | api_finetune` (one module each in labscale.training);
- generate: `open | api | student` (an open or API model, plain, compiled (`compile`) or with
  contrastive search (`decoding`, open models); or a distilled cell's student classifier).
A run's key is the hash of the canonical JSON dump of its params (labscale.spec.run_key).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from labscale.config.study import (
    CompileConfig, DecodingConfig, Dtype, Engine, ModelConfig, ModelPrice, PreferenceConfig, ReportReference, ScoreConfig, SettingKind,
    StudentRecipe, Tracking, TrainConfig,
)
from labscale.metrics import PRIMARY_METRIC
from labscale.prices import TokenPrice, api_price, fine_tuned_price, training_price_per_mtok
from labscale.tasks.base import TaskDef

Split = Literal["train", "val", "test"]


class Params(BaseModel):
    """A frozen, strict parameter object: unknown fields are errors, nothing changes after planning."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ── shared pieces ────────────────────────────────────────────────────────────────────────────────

class ModelParams(Params):
    """What identifies a model's behaviour: neither its study-local id nor how hard we call its API."""

    kind: Literal["hf", "openai"] = "hf"
    path: str
    base_url: str | None = None
    revision: str | None = None
    build: Literal["tiny-llama"] | None = None
    family: str = "plain"
    quantization: Literal["none", "4bit"] = "none"
    max_length: int = 2048
    dtype: Dtype = "auto"
    """An open model's compute dtype (labscale.config.study.Dtype). Part of the run key when not auto."""
    price: ModelPrice | None = None
    """An API model's price as the study gives it (None: labscale.prices' table). Part of the run key
    when given: the recorded dollars depend on it."""

    @model_serializer(mode="wrap")
    def _defaults_left_out(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """No `price` key when the table prices the model and no `dtype` key when it is auto, so such
        runs keep the keys they had before either was a choice."""
        data = handler(self)
        if self.price is None:
            data.pop("price", None)
        if self.dtype == "auto":
            data.pop("dtype", None)
        return data

    @classmethod
    def of(cls, model: ModelConfig) -> "ModelParams":
        return cls.model_validate(model.model_dump(include=set(cls.model_fields)))

    @property
    def is_api(self) -> bool:
        return self.kind == "openai"

    @property
    def token_price(self) -> TokenPrice | None:
        """What a call to this API model costs per token (a fine-tuned `ft:` model's at its fine-tuned
        rates): the study's price, else labscale.prices' table; None when neither has one."""
        given = self.price
        return api_price(self.path, given.token_price() if given else None,
                         given.fine_tuned.token_price() if given and given.fine_tuned else None)

    @property
    def fine_tuned_price(self) -> TokenPrice | None:
        """What a call to a model fine-tuned from this one costs per token (study, else table)."""
        given = self.price
        return fine_tuned_price(self.path, given.fine_tuned.token_price() if given and given.fine_tuned else None)

    @property
    def training_price(self) -> float | None:
        """USD per million trained tokens of fine-tuning this model through its API (study, else table)."""
        return training_price_per_mtok(self.path, self.price.training_per_1m if self.price else None)


class ApiRuntime(Params):
    """How an API model is called, not what it answers (so not part of a run key)."""

    concurrency: int = 8
    requests_per_minute: float | None = None
    max_retries: int = 6
    timeout_s: float = 60.0
    fine_tune_poll_s: float = 30.0

    @classmethod
    def of(cls, model: ModelConfig) -> "ApiRuntime | None":
        """An API model's call settings; None for an open model."""
        return cls.model_validate(model.model_dump(include=set(cls.model_fields))) if model.kind == "openai" else None


class EngineRuntime(Params):
    """How a vLLM engine is started (labscale.models.vllm_engine): the same for every cell of one model
    in a study, so that one engine answers them all."""

    max_lora_rank: int = 0
    """The largest LoRA rank of the study's fine-tuned settings (0: the engine serves no adapters)."""
    gpu_memory_utilization: float = 0.9
    """The fraction of the GPU's memory the engine may take (weights + KV cache)."""


class Runtime(Params):
    """How to run, not what to compute: none of it is part of the run key."""

    api: ApiRuntime | None = None
    """The cell's API model's call settings (generate, API fine-tuning)."""
    judge: ApiRuntime | None = None
    """The judge's call settings when the judge is an API model (score, dpo)."""
    budget_usd: float | None = None
    """A train run's share of the study's dollar budget (it stops cleanly when spent)."""
    tracking: Tracking | None = None
    """Where a train run's logs go (W&B, MLflow)."""
    engine: EngineRuntime | None = None
    """A generate run on the vLLM engine: how its engine is started."""


class FileRef(Params):
    """A local file the planner uploads to the store before anything runs (content-addressed)."""

    prefix: str
    name: str


# ── prep ─────────────────────────────────────────────────────────────────────────────────────────

class PrepSource(Params):
    """A Hub dataset (`hf`, `hf_config`, `revision`) or uploaded local files per source split."""

    hf: str | None = None
    hf_config: str | None = None
    revision: str | None = None
    files: dict[str, FileRef] | None = None


class PrepParams(Params):
    task: TaskDef
    source: PrepSource
    splits: dict[Split, str]
    max_items: dict[Split, int] = {}
    columns: dict[str, str] = {}
    fewshot_pool: int
    family: str
    seed: int


# ── train ────────────────────────────────────────────────────────────────────────────────────────

class LoraTrainParams(Params):
    """A LoRA recipe on a model (SFT, DP-SGD, DPO) or a closed model's API fine-tuning."""

    model: ModelParams
    train: TrainConfig
    seed: int


class SftParams(LoraTrainParams):
    kind: Literal["sft"] = "sft"


class DpSgdParams(LoraTrainParams):
    """`train.dp` is set."""

    kind: Literal["dp_sgd"] = "dp_sgd"


class PreferenceParams(Params):
    """A preference setting's sampling, judging and DPO settings, resolved at plan time."""

    judge: ModelParams
    zeta: float
    judge_max_new_tokens: int
    candidates: int
    temperature: float
    top_p: float
    max_new_tokens: int
    """Longest sampled response (the setting's, else the study's generation, else the task's)."""
    beta: float
    batch_size: int
    """Prompts per sampling batch (the study's generation batch size)."""

    @classmethod
    def of(cls, config: PreferenceConfig, judge: ModelParams, max_new_tokens: int, batch_size: int
           ) -> "PreferenceParams":
        return cls(**config.model_dump(exclude={"judge", "max_new_tokens"}), judge=judge,
                   max_new_tokens=max_new_tokens, batch_size=batch_size)


class DpoParams(LoraTrainParams):
    kind: Literal["dpo"] = "dpo"
    preference: PreferenceParams


class ApiFinetuneParams(LoraTrainParams):
    kind: Literal["api_finetune"] = "api_finetune"


class StudentParams(Params):
    """A distilled cell's student: what its train run learns with and its generate run answers with
    (the teacher's labels are inputs of the train run)."""

    kind: Literal["student"] = "student"
    distill: StudentRecipe
    seed: int


TrainParams = Annotated[SftParams | DpSgdParams | DpoParams | ApiFinetuneParams | StudentParams,
                        Field(discriminator="kind")]

TRAIN_PARAMS: dict[SettingKind, type[Params]] = {
    SettingKind.FINETUNED: SftParams, SettingKind.DP: DpSgdParams, SettingKind.PREFERENCE: DpoParams,
    SettingKind.DISTILLED: StudentParams, SettingKind.API_FINETUNED: ApiFinetuneParams,
}
"""The train stage's params (hence its path) for each training setting kind."""


# ── generate ─────────────────────────────────────────────────────────────────────────────────────

class ModelGenerateParams(Params):
    """A model answering a prep split: its prompt (shots, CoT, or a compiled search) and lengths."""

    model: ModelParams
    shots: int = 0
    cot: bool = False
    compile: CompileConfig | None = None
    """Present → the prompt is searched on the validation split first (labscale.compile)."""
    seed: int
    max_new_tokens: int
    min_new_tokens: int = 0
    split: Split = "test"
    """The prep split answered (a distilled cell's teacher labels the train and val splits)."""


class OpenGenerateParams(ModelGenerateParams):
    """An open model (± the cell's adapter): batched, sharded, greedy or contrastive decoding."""

    kind: Literal["open"] = "open"
    batch_size: int | Literal["auto"]
    """auto → resolved by the generate run (labscale.models.memory), recorded in its metrics."""
    shard_size: int
    decoding: DecodingConfig | None = None
    """None → greedy."""
    engine: Engine = "hf"
    """hf or vllm (greedy only). Part of the run key when vllm (two engines' answers are two runs); an hf
    run keeps the key it had before engines were a choice."""

    @model_serializer(mode="wrap")
    def _engine_only_when_vllm(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        if self.engine == "hf":
            data.pop("engine", None)
        return data


class ApiGenerateParams(ModelGenerateParams):
    """An API model: items journaled one by one, so batch and shard sizes do not apply."""

    kind: Literal["api"] = "api"


GenerateParams = Annotated[OpenGenerateParams | ApiGenerateParams | StudentParams, Field(discriminator="kind")]


# ── score ────────────────────────────────────────────────────────────────────────────────────────

class ScoreOptions(Params):
    """The metric-suite options a study's `scoring:` block sets for the cell's suite (most take none)."""

    bertscore: bool | None = None
    bertscore_model: str | None = None
    abstention_phrases: list[str] | None = None

    @classmethod
    def of(cls, suite: str, scoring: ScoreConfig) -> "ScoreOptions":
        return cls.model_validate(scoring.model_dump(include=SUITE_OPTIONS.get(suite, set()), exclude_none=True))

    def as_kwargs(self) -> dict[str, Any]:
        """The options set, for the metric suite's keyword arguments."""
        return self.model_dump(exclude_none=True)


SUITE_OPTIONS: dict[str, set[str]] = {"summarization": {"bertscore", "bertscore_model"}, "qa": {"abstention_phrases"}}
"""Metric suite → the fields of a study's `scoring:` block it takes as options."""


class JudgeParams(Params):
    """The study's "what is missing" judge in a cell's score run."""

    model: ModelParams
    zeta: float
    max_new_tokens: int
    batch_size: int


class ScoreParams(Params):
    suite: str
    labels: list[str] = []
    options: ScoreOptions = ScoreOptions()
    judge: JudgeParams | None = None


# ── benchmark ────────────────────────────────────────────────────────────────────────────────────

class BenchmarkParams(Params):
    """lm-eval tasks on an open model (± an adapter, an input of the run)."""

    model: ModelParams
    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | float | None = None
    batch_size: int = 8
    task_files: dict[str, FileRef] = {}
    """A local lm-eval task folder's files (relative path → uploaded file)."""


# ── aggregate ────────────────────────────────────────────────────────────────────────────────────

class Cell(Params):
    """One row of the results table and the runs that produce it."""

    task: str
    model: str
    setting: str
    generate: str
    score: str
    train: str | None = None


class Benchmark(Params):
    """One benchmark run of an open model: the base model (setting None) or one of its adapters."""

    model: str
    run: str
    setting: str | None = None
    trained_on: str | None = None
    """The task the adapter was trained on."""

    @property
    def role(self) -> str:
        """The run's input role in the aggregate, e.g. `tiny:benchmark`, `claims/tiny/ft:benchmark`."""
        return "/".join(p for p in (self.trained_on, self.model, self.setting) if p) + ":benchmark"


class Distillation(Params):
    """A distilled cell: its student's train run and the teacher's labelling runs."""

    task: str
    model: str
    setting: str
    teacher_setting: str
    train: str
    teacher_labels: list[str]


class ReportParams(Params):
    """The report's statistics and labels, resolved from the study at plan time."""

    reference: ReportReference
    """The cell every other cell of a task is compared with."""
    margin: float = 0.02
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    primary: dict[str, str] = {}
    """Task id → its suite's primary metric ("" when the suite has none)."""
    setting_kinds: dict[str, SettingKind] = {}

    def primary_metric(self, task: str, available: set[str]) -> str | None:
        """The task's primary metric; for a suite without one, rougeL or accuracy, whichever was scored."""
        metric = self.primary.get(task) or next((m for m in PRIMARY_METRIC.values() if m in available), None)
        return metric if metric in available else None


class AggregateParams(Params):
    study: str
    pool: str
    budget_usd: float | None = None
    cells: list[Cell]
    report: ReportParams
    benchmarks: list[Benchmark] = []
    distill: list[Distillation] = []
    tracking: Tracking | None = None
    """Part of the key: adding a tracker reruns (only) this cheap run, which logs."""


STAGE_PARAMS: dict[str, Any] = {
    "prep": PrepParams, "train": TrainParams, "generate": GenerateParams, "score": ScoreParams,
    "benchmark": BenchmarkParams, "aggregate": AggregateParams,
}
"""Each stage's params type (a union for train and generate, told apart by `kind`)."""

StageParams = (PrepParams | SftParams | DpSgdParams | DpoParams | ApiFinetuneParams | StudentParams
               | OpenGenerateParams | ApiGenerateParams | ScoreParams | BenchmarkParams | AggregateParams)
