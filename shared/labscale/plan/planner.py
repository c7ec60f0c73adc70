"""Expand a study into the DAG of stage runs (tasks × models × settings), each with its key."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from labscale.config import LoadedStudy, ModelConfig, TaskConfig
from labscale.config.study import ScoreConfig, SettingConfig
from labscale.cost import pool_usd_per_hour
from labscale.distill.plan import plan_student
from labscale.plan.judging import plans_cell, preference_params, score_judge
from labscale.plan.runspec import RunSpec, run_key
from labscale.report import report_params
from labscale.store import sha256_file
from labscale.tasks import resolve_task


@cache
def code_version(stage: str) -> str:
    """The stage module's CODE_VERSION (bumped when its behaviour changes)."""
    return importlib.import_module(f"labscale.jobs.{stage}").CODE_VERSION


@dataclass(frozen=True)
class Cell:
    """One row of the results table and the runs that produce it."""

    task: str
    model: str
    setting: str
    generate: str
    score: str
    train: str | None = None


@dataclass(frozen=True)
class Benchmark:
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


@dataclass
class Plan:
    """Runs in dependency order (every run after its inputs), plus local files to upload first."""

    study: LoadedStudy
    runs: list[RunSpec] = field(default_factory=list)
    uploads: dict[str, Path] = field(default_factory=dict)
    """Store prefix → local data (or benchmark task) file that a stage reads (committed before anything runs)."""
    cells: list[Cell] = field(default_factory=list)
    benchmarks: list[Benchmark] = field(default_factory=list)
    distillations: list[dict[str, Any]] = field(default_factory=list)
    """Distilled cells: task, model, student setting, teacher_setting, student train run, teacher-label runs."""

    @property
    def aggregate(self) -> RunSpec:
        return self.runs[-1]


class _Builder:
    def __init__(self, loaded: LoadedStudy):
        self.loaded = loaded
        self.study = loaded.study
        self.plan = Plan(study=loaded)
        self._seen: dict[str, RunSpec] = {}

    def add(self, stage: str, params: dict[str, Any], inputs: dict[str, str], runtime: dict[str, Any] | None = None,
            on_api: bool = False, **labels: str) -> RunSpec:
        """Plan one run (once per key). `on_api` runs only wait on an API: they run and are priced on CPU."""
        key = run_key(stage, params, inputs, code_version(stage))
        pool = "cpu" if on_api else self.study.pool
        price = pool_usd_per_hour(pool, None if on_api else self.study.usd_per_hour)
        spec = RunSpec(stage=stage, key=key, study=self.study.name, labels=labels, params=params, runtime=runtime or {},
                       inputs=inputs, store=self.study.store, pool=pool, usd_per_hour=price,
                       pushgateway=self.study.pushgateway, carbon=self.study.carbon.model_dump())
        if spec.prefix not in self._seen:  # identical runs (same key) are planned once
            self._seen[spec.prefix] = spec
            self.plan.runs.append(spec)
        return self._seen[spec.prefix]

    def cell(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig) -> None:
        """The runs of one task × model × setting: (train →) generate → score."""
        labels = {"task": task.id, "model": model.id, "setting": setting.id}
        prep = self.prep(task, model.family)
        if setting.distill is not None:
            train, generate, distillation = plan_student(self, task, model, setting, prep, labels)
            self.plan.distillations.append(distillation)
        else:
            train = self.train(task, model, setting, labels) if setting.finetune is not None else None
            generate = self.generate(task, model, setting, prep, train, labels)
        task_def = resolve_task(task)
        score_params = {"suite": task_def.metric_suite, "labels": list(task_def.labels),
                        "options": score_options(task_def.metric_suite, self.study.scoring)}
        score_runtime: dict[str, Any] = {}
        judge = score_judge(self.study, setting)
        if judge is not None:
            score_params["judge"], score_runtime["judge"] = judge
        score = self.add("score", score_params, {"prep": prep.prefix, "predictions": generate.prefix},
                         score_runtime, **labels)
        self.plan.cells.append(Cell(task.id, model.id, setting.id, generate.prefix, score.prefix,
                                    train and train.prefix))

    def train(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, labels: dict[str, str]) -> RunSpec:
        """Fine-tune on `setting.train_task`'s data (cross-task adapters), else the cell's own task.

        The run's share of the study budget and the `tracking:` block (where its logs go) are `runtime`:
        growing the grid or adding a dashboard must not retrain anything.
        """
        assert setting.finetune is not None
        study = self.study
        train_task = next(t for t in study.tasks if t.id == setting.train_task) if setting.train_task else task
        recipe = setting.finetune.model_copy(update=train_task.finetune.model_dump(exclude_none=True))
        unset = {block for block in ("dp", "audit") if getattr(recipe, block) is None}  # keeps SFT keys unchanged
        params = {"model": model_params(model), "train": recipe.model_dump(mode="json", exclude=unset),
                  "seed": study.seed}
        n_train = len(study.tasks) * len(study.models) * sum(s.finetune is not None for s in study.settings)
        share = study.budget.usd / n_train if study.budget.usd is not None else None
        runtime = {**api_runtime(model), "budget_usd": share,
                   "tracking": study.tracking and study.tracking.model_dump(mode="json")}
        if setting.preference is not None:
            params["preference"], runtime["judge"] = preference_params(study, setting,
                                                                       resolve_task(task).max_new_tokens)
        prep = self.prep(train_task, model.family)
        return self.add("train", params, {"prep": prep.prefix}, runtime, model.kind == "openai",
                        **{**labels, "task": train_task.id})

    def generate(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, prep: RunSpec,
                 train: RunSpec | None, labels: dict[str, str], split: str = "test") -> RunSpec:
        """Batch and shard sizes shape an open model's run (padding, resume units); an API's answers
        are journaled per item, so for API models they do not matter and are not part of the key.
        `split`: the prep split answered (a distilled cell's teacher labels the train split)."""
        gen, api, task_def = self.study.generation, model.kind == "openai", resolve_task(task)
        sizes = {"batch_size": gen.batch_size, "shard_size": gen.shard_size}
        lengths = {"max_new_tokens": gen.max_new_tokens or task_def.max_new_tokens}
        if task_def.min_new_tokens:
            lengths["min_new_tokens"] = task_def.min_new_tokens
        params = {"model": model_params(model), "shots": setting.shots, "cot": setting.cot, "seed": self.study.seed,
                  **lengths, **({} if api else sizes)}
        if setting.compile is not None:
            params["compile"] = setting.compile.model_dump(mode="json")
        if setting.decoding is not None and setting.decoding.strategy != "greedy":
            params["decoding"] = setting.decoding.model_dump(mode="json")
        if split != "test":
            params["split"] = split
        inputs = {"prep": prep.prefix, **({"adapter": train.prefix} if train else {})}
        return self.add("generate", params, inputs, api_runtime(model), api, **labels)

    def aggregate(self) -> RunSpec:
        """The study's last run: results, statistics and report over every cell's scores (and the benchmarks)."""
        study, cells, benchmarks = self.study, self.plan.cells, self.plan.benchmarks
        params = {"study": study.name, "pool": study.pool, "budget_usd": study.budget.usd,
                  "cells": [c.__dict__ for c in cells], "report": report_params(study),
                  "benchmarks": [b.__dict__ for b in benchmarks]}
        if self.plan.distillations:
            params["distill"] = self.plan.distillations
        if study.tracking is not None:  # part of the key: adding a tracker reruns (only) this cheap run, which logs
            params["tracking"] = study.tracking.model_dump(mode="json")
        inputs = {**{f"{c.task}/{c.model}/{c.setting}:score": c.score for c in cells},
                  **{b.role: b.run for b in benchmarks}}
        return self.add("aggregate", params, inputs)

    def source_params(self, task: TaskConfig) -> dict[str, Any]:
        source = task.source
        if source.hf:
            return {"hf": source.hf, "hf_config": source.hf_config, "revision": source.revision}
        return {"files": {split: self.upload(self.loaded.resolve(rel))
                          for split, rel in sorted((source.files or {}).items())}}

    def upload(self, path: Path) -> dict[str, str]:
        """Plan a local file's upload to the store, content-addressed; returns its reference for a run's params."""
        prefix = f"sources/{sha256_file(path)[:32]}"
        self.plan.uploads[prefix] = path
        return {"prefix": prefix, "name": path.name}

    def task_files(self, include_path: str | None) -> dict[str, dict[str, str]]:
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
        bench = {**config.model_dump(mode="json", exclude={"include_path"}),
                 "task_files": self.task_files(config.include_path)}
        for model in (m for m in self.study.models if m.kind == "hf"):
            params = {"model": model_params(model), **bench}
            self.plan.benchmarks.append(Benchmark(model.id, self.add("benchmark", params, {}, model=model.id).prefix))
            for train, cell in self.adapters(model).items():
                setting = next(s for s in self.study.settings if s.id == cell.setting)
                labels = {"task": setting.train_task or cell.task, "model": model.id, "setting": setting.id}
                run = self.add("benchmark", params, {"adapter": train}, **labels)
                self.plan.benchmarks.append(Benchmark(model.id, run.prefix, setting.id, labels["task"]))

    def adapters(self, model: ModelConfig) -> dict[str, Cell]:
        """The model's distinct adapters: train run prefix → the first cell evaluated with it (a distilled
        cell's train run is a student classifier, not an adapter of the model)."""
        found: dict[str, Cell] = {}
        students = {d["train"] for d in self.plan.distillations}
        for cell in self.plan.cells:
            if cell.model == model.id and cell.train and cell.train not in students:
                found.setdefault(cell.train, cell)
        return found

    def prep(self, task: TaskConfig, family: str) -> RunSpec:
        params = {
            "task": resolve_task(task).model_dump(mode="json"),
            "source": self.source_params(task),
            "splits": dict(sorted(task.splits.items())),
            "max_items": dict(sorted(task.max_items.items())),
            "columns": dict(sorted(task.columns.items())),
            "fewshot_pool": task.fewshot_pool,
            "family": family,
            "seed": self.study.seed,
        }
        return self.add("prep", params, {}, task=task.id, family=family)


SUITE_OPTIONS: dict[str, set[str]] = {"summarization": {"bertscore", "bertscore_model"}, "qa": {"abstention_phrases"}}
"""Metric suite → the fields of a study's `scoring:` block it takes as options."""


def score_options(suite: str, scoring: ScoreConfig) -> dict[str, Any]:
    """The metric-suite options a study's scoring block sets for `suite` (most suites take none)."""
    return scoring.model_dump(include=SUITE_OPTIONS.get(suite, set()), exclude_none=True)


API_RUNTIME_FIELDS = {"concurrency", "requests_per_minute", "max_retries", "timeout_s", "fine_tune_poll_s"}
"""How an API model is called, not what it answers: passed to generate outside the run key."""


def api_runtime(model: ModelConfig) -> dict[str, Any]:
    """An API model's call settings (empty for an open model)."""
    return model.model_dump(include=API_RUNTIME_FIELDS) if model.kind == "openai" else {}


def model_params(model: ModelConfig) -> dict[str, Any]:
    """What identifies a model's behaviour (neither its study-local id nor how hard we call its API)."""
    return model.model_dump(mode="json", exclude={"id", *API_RUNTIME_FIELDS})


def build_plan(loaded: LoadedStudy) -> Plan:
    """All runs of a study in dependency order; the aggregate run is last."""
    b = _Builder(loaded)
    for task in loaded.study.tasks:
        for model in loaded.study.models:
            for setting in loaded.study.settings:
                if plans_cell(setting, model):
                    b.cell(task, model, setting)
    b.benchmarks()
    b.aggregate()
    return b.plan
