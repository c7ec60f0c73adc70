"""Expand a study into the DAG of stage runs (tasks × models × settings), each with its key and typed
params (labscale.params)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from labscale.config import LoadedStudy, ModelConfig, TaskConfig
from labscale.config.study import Engine, GenerationConfig, SettingConfig, SettingKind, Study, resolve_task
from labscale.cost import pool_usd_per_hour
from labscale.errors import BadInputError
from labscale.metrics import PRIMARY_METRIC
from labscale.params import (
    TRAIN_PARAMS, AggregateParams, ApiGenerateParams, ApiRuntime, Benchmark, BenchmarkParams, Cell, Distillation,
    DpoParams, EngineRuntime, FileRef, LoraTrainParams, ModelParams, OpenGenerateParams, PrepParams, PrepSource, ReportParams,
    Runtime, ScoreOptions, ScoreParams, StageParams,
)
from labscale.models.memory import auto_batch, pool_gpu_memory_gib, vllm_memory
from labscale.plan.distill import plan_student
from labscale.plan.judging import plans_cell, preference_params, score_judge
from labscale.spec import RunSpec, code_version, run_key
from labscale.store import sha256_file


@dataclass
class Plan:
    """Runs in dependency order (every run after its inputs), plus local files to upload first."""

    study: LoadedStudy
    runs: list[RunSpec] = field(default_factory=list)
    uploads: dict[str, Path] = field(default_factory=dict)
    """Store prefix → local data (or benchmark task) file that a stage reads (committed before anything runs)."""
    cells: list[Cell] = field(default_factory=list)
    benchmarks: list[Benchmark] = field(default_factory=list)
    distillations: list[Distillation] = field(default_factory=list)

    @property
    def aggregate(self) -> RunSpec:
        return self.runs[-1]


def generation_engine(model: ModelConfig, generation: GenerationConfig, pool: str) -> Engine:
    """An open model's generation engine: the model's `engine`, else the study's `generation.engine`, else
    vllm on a GPU pool (its start-up pays off on a real model) and hf for the project-built tiny model
    or on the cpu pool. A 4-bit (QLoRA) model runs on hf unless it names vllm itself, which config.checks
    refuses, as it refuses vllm with a setting's contrastive search."""
    if model.engine is not None:
        return model.engine
    if model.quantization == "4bit":  # vLLM 0.32 loads no bitsandbytes 4-bit weights (config.checks)
        return "hf"
    if generation.engine is not None:
        return generation.engine
    return "vllm" if pool != "cpu" and model.build is None else "hf"


class Builder:
    """The planner's `PlanBuilder` (labscale.plan.builder): one study's runs, each planned once per key."""

    def __init__(self, loaded: LoadedStudy):
        self.loaded = loaded
        self.study = loaded.study
        self.plan = Plan(study=loaded)
        self._seen: dict[str, RunSpec] = {}

    def add(self, stage: str, params: StageParams, inputs: dict[str, str], runtime: Runtime | None = None,
            on_api: bool = False, **labels: str) -> RunSpec:
        """Plan one run (once per key). `on_api` runs only wait on an API: they run and are priced on CPU."""
        key = run_key(stage, params, inputs, code_version(stage))
        pool = "cpu" if on_api else self.study.pool
        price = pool_usd_per_hour(pool, None if on_api else self.study.usd_per_hour)
        spec = RunSpec(stage=stage, key=key, study=self.study.name, labels=labels, params=params, runtime=runtime or Runtime(),
                       inputs=inputs, store=self.study.store, pool=pool, usd_per_hour=price,
                       pushgateway=self.study.pushgateway, carbon=self.study.carbon)
        if spec.prefix not in self._seen:  # identical runs (same key) are planned once
            self._seen[spec.prefix] = spec
            self.plan.runs.append(spec)
        return self._seen[spec.prefix]

    def cell(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig) -> None:
        """The runs of one task × model × setting: (train →) generate → score."""
        labels = {"task": task.id, "model": model.id, "setting": setting.id}
        prep = self.prep(task, model.family)
        if setting.kind is SettingKind.DISTILLED:
            train, generate, distillation = plan_student(self, task, model, setting, prep, labels)
            self.plan.distillations.append(distillation)
        else:
            train = self.train(task, model, setting, labels) if setting.kind.trains else None
            generate = self.generate(task, model, setting, prep, train, labels)
        task_def = resolve_task(task)
        judge, judge_runtime = score_judge(self.study, setting) or (None, None)
        score_params = ScoreParams(suite=task_def.metric_suite, labels=list(task_def.labels),
                                   options=ScoreOptions.of(task_def.metric_suite, self.study.scoring), judge=judge)
        score = self.add("score", score_params, {"prep": prep.prefix, "predictions": generate.prefix},
                         Runtime(judge=judge_runtime), **labels)
        self.plan.cells.append(Cell(task=task.id, model=model.id, setting=setting.id, generate=generate.prefix,
                                    score=score.prefix, train=train and train.prefix))

    def train(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, labels: dict[str, str]) -> RunSpec:
        """Fine-tune on `setting.train_task`'s data (cross-task adapters), else the cell's own task.

        The run's share of the study budget and the `tracking:` block (where its logs go) are `runtime`:
        growing the grid or adding a dashboard must not retrain anything.
        """
        assert setting.finetune is not None
        study = self.study
        train_task = next(t for t in study.tasks if t.id == setting.train_task) if setting.train_task else task
        recipe = setting.finetune.model_copy(update=train_task.finetune.model_dump(exclude_none=True))
        n_train = len(study.tasks) * len(study.models) * sum(s.finetune is not None for s in study.settings)
        share = study.budget.usd / n_train if study.budget.usd is not None else None
        runtime = Runtime(api=ApiRuntime.of(model), budget_usd=share, tracking=study.tracking)
        common = {"model": ModelParams.of(model), "train": recipe, "seed": study.seed}
        params: LoraTrainParams
        if setting.preference is not None:
            preference, judge_runtime = preference_params(study, setting, resolve_task(task).max_new_tokens)
            params = DpoParams(**common, preference=preference)
            runtime = runtime.model_copy(update={"judge": judge_runtime})
        else:
            params = TRAIN_PARAMS[setting.kind_for(model)](**common)
        prep = self.prep(train_task, model.family)
        return self.add("train", params, {"prep": prep.prefix}, runtime, model.kind == "openai",
                        **{**labels, "task": train_task.id})

    def generate(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, prep: RunSpec,
                 train: RunSpec | None, labels: dict[str, str], split: str = "test") -> RunSpec:
        """Batch and shard sizes shape an open model's run (padding, resume units); an API's answers
        are journaled per item, so for API models they do not matter and are not part of the key.
        `split`: the prep split answered (a distilled cell's teacher labels the train split)."""
        gen, task_def = self.study.generation, resolve_task(task)
        common = {"model": ModelParams.of(model), "shots": setting.shots, "cot": setting.cot,
                  "compile": setting.compile, "seed": self.study.seed,
                  "max_new_tokens": gen.max_new_tokens or task_def.max_new_tokens,
                  "min_new_tokens": task_def.min_new_tokens or 0, "split": split}
        params: OpenGenerateParams | ApiGenerateParams
        if model.kind == "openai":
            params = ApiGenerateParams(**common)
        else:
            greedy = setting.decoding is None or setting.decoding.strategy == "greedy"
            engine = generation_engine(model, gen, self.study.pool) if greedy else "hf"
            params = OpenGenerateParams(**common, batch_size=gen.batch_size, shard_size=gen.shard_size_for(engine),
                                        decoding=None if greedy else setting.decoding, engine=engine)
        inputs = {"prep": prep.prefix, **({"adapter": train.prefix} if train else {})}
        runtime = Runtime(api=ApiRuntime.of(model))
        if isinstance(params, OpenGenerateParams) and params.engine == "vllm":
            runtime = Runtime(engine=self.engine_runtime(params))
        return self.add("generate", params, inputs, runtime, params.model.is_api, **labels)

    def engine_runtime(self, params: OpenGenerateParams) -> EngineRuntime:
        """How the vLLM engine of a model's cells starts — the same for all of them, so one engine serves
        them all: LoRA up to the study's largest fine-tuning rank (a task's own `finetune.r` included),
        and on a GPU pool the memory share that the model's weights plus a full batch of the longest
        sequences take (labscale.models.memory; 0.9 where that cannot be planned, e.g. a model whose
        shape is unknown offline)."""
        trains = [s for s in self.study.settings if s.finetune is not None]
        rank = max([s.finetune.r for s in trains] + [t.finetune.r for t in self.study.tasks if trains and t.finetune.r],
                   default=0)
        gpu = pool_gpu_memory_gib(self.study.pool)
        share = EngineRuntime().gpu_memory_utilization
        if gpu is not None:
            try:
                share = vllm_memory(auto_batch(params.model, gpu_memory_gib=gpu, max_new_tokens=params.max_new_tokens,
                                               prompt_tokens=params.model.max_length - params.max_new_tokens,
                                               base_dir=self.loaded.base_dir)).gpu_memory_utilization
            except BadInputError:
                pass  # `labscale plan` says the model does not fit
        return EngineRuntime(max_lora_rank=rank, gpu_memory_utilization=share)

    def aggregate(self) -> RunSpec:
        """The study's last run: results, statistics and report over every cell's scores (and the benchmarks)."""
        study, cells, benchmarks = self.study, self.plan.cells, self.plan.benchmarks
        params = AggregateParams(study=study.name, pool=study.pool, budget_usd=study.budget.usd, cells=cells,
                                 report=report_params(study), benchmarks=benchmarks,
                                 distill=self.plan.distillations, tracking=study.tracking)
        inputs = {**{f"{c.task}/{c.model}/{c.setting}:score": c.score for c in cells},
                  **{b.role: b.run for b in benchmarks}}
        return self.add("aggregate", params, inputs)

    def source_params(self, task: TaskConfig) -> PrepSource:
        source = task.source
        if source.hf:
            return PrepSource(hf=source.hf, hf_config=source.hf_config, revision=source.revision)
        return PrepSource(files={split: self.upload(self.loaded.resolve(rel))
                                 for split, rel in sorted((source.files or {}).items())})

    def upload(self, path: Path) -> FileRef:
        """Plan a local file's upload to the store, content-addressed; returns its reference for a run's params."""
        prefix = f"sources/{sha256_file(path)[:32]}"
        self.plan.uploads[prefix] = path
        return FileRef(prefix=prefix, name=path.name)

    def task_files(self, include_path: str | None) -> dict[str, FileRef]:
        """The local lm-eval task folder's files (relative path → reference): editing one re-keys the benchmarks."""
        if include_path is None:
            return {}
        folder = self.loaded.resolve(include_path)
        files = [p for p in sorted(folder.rglob("*")) if p.is_file()
                 and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts)]
        return {p.relative_to(folder).as_posix(): self.upload(p) for p in files}

    def benchmarks(self) -> None:
        """Capability-regression runs: each open model as it is, and with each adapter trained on it."""
        config = self.study.benchmarks
        if config is None:
            return
        task_files = self.task_files(config.include_path)
        for model in (m for m in self.study.models if m.kind == "hf"):
            params = BenchmarkParams(**config.model_dump(exclude={"include_path"}), model=ModelParams.of(model),
                                     task_files=task_files)
            self.plan.benchmarks.append(Benchmark(model=model.id,
                                                  run=self.add("benchmark", params, {}, model=model.id).prefix))
            for train, cell in self.adapters(model).items():
                setting = next(s for s in self.study.settings if s.id == cell.setting)
                labels = {"task": setting.train_task or cell.task, "model": model.id, "setting": setting.id}
                run = self.add("benchmark", params, {"adapter": train}, **labels)
                self.plan.benchmarks.append(Benchmark(model=model.id, run=run.prefix, setting=setting.id,
                                                      trained_on=labels["task"]))

    def adapters(self, model: ModelConfig) -> dict[str, Cell]:
        """The model's distinct adapters: train run prefix → the first cell evaluated with it (a distilled
        cell's train run is a student classifier, not an adapter of the model)."""
        found: dict[str, Cell] = {}
        students = {d.train for d in self.plan.distillations}
        for cell in self.plan.cells:
            if cell.model == model.id and cell.train and cell.train not in students:
                found.setdefault(cell.train, cell)
        return found

    def prep(self, task: TaskConfig, family: str) -> RunSpec:
        params = PrepParams(task=resolve_task(task), source=self.source_params(task), splits=task.splits,
                            max_items=task.max_items, columns=task.columns, fewshot_pool=task.fewshot_pool,
                            family=family, seed=self.study.seed)
        return self.add("prep", params, {}, task=task.id, family=family)


def report_params(study: Study) -> ReportParams:
    """The aggregate's report parameters (part of its run key). `report.reference` was checked against the
    study's models and settings when the study was loaded."""
    ref = study.report.reference
    return ReportParams(
        reference={"model": ref.model if ref else study.models[0].id,
                   "setting": ref.setting if ref else study.settings[0].id},
        margin=study.report.margin, bootstrap_samples=study.report.bootstrap_samples,
        confidence=study.report.confidence, seed=study.seed,
        primary={t.id: PRIMARY_METRIC.get(resolve_task(t).metric_suite, "") for t in study.tasks},
        setting_kinds={s.id: s.kind for s in study.settings},
    )


def build_plan(loaded: LoadedStudy) -> Plan:
    """All runs of a study in dependency order; the aggregate run is last."""
    b = Builder(loaded)
    for task in loaded.study.tasks:
        for model in loaded.study.models:
            for setting in loaded.study.settings:
                if plans_cell(setting, model):
                    b.cell(task, model, setting)
    b.benchmarks()
    b.aggregate()
    return b.plan
