"""Expand a study into the DAG of stage runs (tasks × models × settings), each with its key."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from labscale.config import LoadedStudy, ModelConfig, TaskConfig
from labscale.config.study import ScoreConfig
from labscale.cost import pool_usd_per_hour
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


@dataclass
class Plan:
    """Runs in dependency order (every run after its inputs), plus local files to upload first."""

    study: LoadedStudy
    runs: list[RunSpec] = field(default_factory=list)
    uploads: dict[str, Path] = field(default_factory=dict)
    """Store prefix → local data file that prep reads (committed before anything runs)."""
    cells: list[Cell] = field(default_factory=list)

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
            **labels: str) -> RunSpec:
        key = run_key(stage, params, inputs, code_version(stage))
        spec = RunSpec(stage=stage, key=key, study=self.study.name, labels=labels, params=params, runtime=runtime or {},
                       inputs=inputs, store=self.study.store, pool=self.study.pool,
                       usd_per_hour=pool_usd_per_hour(self.study.pool, self.study.usd_per_hour),
                       pushgateway=self.study.pushgateway, carbon=self.study.carbon.model_dump())
        if spec.prefix not in self._seen:  # identical runs (same key) are planned once
            self._seen[spec.prefix] = spec
            self.plan.runs.append(spec)
        return self._seen[spec.prefix]

    def source_params(self, task: TaskConfig) -> dict[str, Any]:
        source = task.source
        if source.hf:
            return {"hf": source.hf, "hf_config": source.hf_config, "revision": source.revision}
        files = {}
        for split, rel in sorted((source.files or {}).items()):
            path = self.loaded.resolve(rel)
            prefix = f"sources/{sha256_file(path)[:32]}"
            self.plan.uploads[prefix] = path
            files[split] = {"prefix": prefix, "name": path.name}
        return {"files": files}

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


def score_options(suite: str, scoring: ScoreConfig) -> dict[str, Any]:
    """The metric-suite options a study's scoring block sets (only text suites take any)."""
    return scoring.model_dump(exclude_none=True) if suite == "summarization" else {}


API_RUNTIME_FIELDS = {"concurrency", "requests_per_minute", "max_retries", "timeout_s", "fine_tune_poll_s"}
"""How an API model is called, not what it answers: passed to generate outside the run key."""


def model_params(model: ModelConfig) -> dict[str, Any]:
    """What identifies a model's behaviour (neither its study-local id nor how hard we call its API)."""
    return model.model_dump(mode="json", exclude={"id", *API_RUNTIME_FIELDS})


def build_plan(loaded: LoadedStudy) -> Plan:
    """All runs of a study in dependency order; the aggregate run is last."""
    b = _Builder(loaded)
    study = loaded.study
    aggregate_inputs: dict[str, str] = {}
    finetuned = [s for s in study.settings if s.finetune is not None]
    n_train = len(study.tasks) * len(study.models) * len(finetuned)
    train_budget = study.budget.usd / n_train if study.budget.usd is not None and n_train else None
    for task in study.tasks:
        task_def = resolve_task(task)
        for model in study.models:
            prep = b.prep(task, model.family)
            for setting in study.settings:
                labels = {"task": task.id, "model": model.id, "setting": setting.id}
                runtime = model.model_dump(include=API_RUNTIME_FIELDS) if model.kind == "openai" else {}
                gen_inputs = {"prep": prep.prefix}
                train = None
                if setting.finetune is not None:
                    train_task = next(t for t in study.tasks if t.id == setting.train_task) if setting.train_task \
                        else task
                    recipe = setting.finetune.model_copy(update=train_task.finetune.model_dump(exclude_none=True))
                    train_params = {"model": model_params(model), "train": recipe.model_dump(mode="json"),
                                    "seed": study.seed, "budget_usd": train_budget}
                    train_prep = b.prep(train_task, model.family)
                    train = b.add("train", train_params, {"prep": train_prep.prefix}, runtime=runtime,
                                  **{**labels, "task": train_task.id})
                    gen_inputs["adapter"] = train.prefix
                gen = study.generation
                gen_params = {
                    "model": model_params(model),
                    "shots": setting.shots,
                    "cot": setting.cot,
                    "batch_size": gen.batch_size,
                    "shard_size": gen.shard_size,
                    "max_new_tokens": gen.max_new_tokens or task_def.max_new_tokens,
                    "seed": study.seed,
                }
                generate = b.add("generate", gen_params, gen_inputs, runtime=runtime, **labels)
                score_params = {"suite": task_def.metric_suite, "labels": list(task_def.labels),
                                "options": score_options(task_def.metric_suite, study.scoring)}
                score = b.add("score", score_params, {"prep": prep.prefix, "predictions": generate.prefix}, **labels)
                cell = Cell(task.id, model.id, setting.id, generate.prefix, score.prefix, train and train.prefix)
                b.plan.cells.append(cell)
                cell_id = f"{task.id}/{model.id}/{setting.id}"
                aggregate_inputs[f"{cell_id}:score"] = score.prefix
    agg_params = {"study": study.name, "pool": study.pool, "budget_usd": study.budget.usd,
                  "cells": [c.__dict__ for c in b.plan.cells], "report": report_params(study)}
    b.add("aggregate", agg_params, aggregate_inputs)
    return b.plan
