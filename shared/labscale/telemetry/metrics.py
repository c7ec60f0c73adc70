"""The metric families labscale exports (names and labels are documented in docs/storage-and-metrics.md).

One fresh `CollectorRegistry` per stage run, so a batch job pushes exactly its own series.
Per run: labels study/task/model/setting/stage/pool/run_key. Per study (pushed by aggregate):
cost so far, budget, last success and the latest score of every cell.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from labscale.spec import CELL_LABELS, RUN_LABELS, RunSpec, run_labels


@dataclass
class StageOutcome:
    """What one stage run did, as the telemetry sees it."""

    succeeded: bool
    seconds: float
    cost_usd: float
    energy_kwh: float = 0.0
    kg_co2e: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    """The stage's own result dict (items, tokens_in/out, scores, …) — empty on failure."""


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_gpu_bytes() -> int | None:
    """Peak CUDA memory allocated by torch in this process, or None without CUDA."""
    torch = sys.modules.get("torch")  # only if the stage imported it; never import torch for this
    if torch is None or not torch.cuda.is_available():
        return None
    return int(torch.cuda.max_memory_allocated())


def stage_registry(spec: RunSpec, outcome: StageOutcome) -> CollectorRegistry:
    """A registry holding one run's metrics (every series labelled with the run's labels)."""
    registry = CollectorRegistry()
    labels = run_labels(spec)

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, RUN_LABELS, registry=registry).labels(**labels).set(value)

    def counter(name: str, doc: str, value: float) -> None:
        Counter(name, doc, RUN_LABELS, registry=registry).labels(**labels).inc(value)

    result = outcome.metrics
    gauge("labscale_stage_duration_seconds", "Wall time of the stage run.", outcome.seconds)
    gauge("labscale_stage_success", "1 if the stage run succeeded, 0 if it failed.", float(outcome.succeeded))
    gauge("labscale_stage_estimated_cost_usd", "Estimated compute cost: wall-hours × pool price.", outcome.cost_usd)
    gauge("labscale_stage_energy_joules", "Energy of the run: GPU (NVML or TDP estimate) + CPU + RAM.",
          outcome.energy_kwh * 3.6e6)
    gauge("labscale_stage_emissions_co2e_grams", "Estimated emissions: energy × PUE × grid intensity.",
          outcome.kg_co2e * 1000.0)
    gauge("labscale_stage_peak_rss_bytes", "Peak resident memory of the stage process.", peak_rss_bytes())
    gpu = peak_gpu_bytes()
    if gpu is not None:
        gauge("labscale_stage_peak_gpu_memory_bytes", "Peak CUDA memory allocated by torch.", gpu)
    if outcome.succeeded:
        gauge("labscale_stage_last_success_timestamp_seconds", "Unix time the stage run succeeded.", time.time())
    if "items" in result:
        counter("labscale_stage_items", "Items the stage processed.", result["items"])
    if "tokens_in" in result:
        counter("labscale_stage_input_tokens", "Prompt tokens read by the model.", result["tokens_in"])
        counter("labscale_stage_output_tokens", "Tokens the model generated.", result["tokens_out"])
        if result.get("generation_seconds"):
            gauge("labscale_stage_output_tokens_per_second", "Generated tokens per second of generation time.",
                  result["tokens_out"] / result["generation_seconds"])
    if result.get("scores"):
        score = Gauge("labscale_score", "A task metric of the run's predictions (one series per metric).",
                      (*RUN_LABELS, "metric"), registry=registry)
        for metric, value in sorted(result["scores"].items()):
            score.labels(**labels, metric=metric).set(value)
    return registry


def study_registry(spec: RunSpec, study_summary: dict[str, Any]) -> CollectorRegistry:
    """A registry with a study's totals and the latest score of each cell (from aggregate's result)."""
    registry = CollectorRegistry()
    labels = {"study": spec.study, "pool": spec.pool}
    names = tuple(labels)

    Gauge("labscale_study_cost_usd", "Estimated compute cost of all the study's stage runs so far.",
          names, registry=registry).labels(**labels).set(study_summary["cost_usd"])
    if study_summary.get("budget_usd") is not None:
        Gauge("labscale_study_budget_usd", "The study's dollar budget.",
              names, registry=registry).labels(**labels).set(study_summary["budget_usd"])
    Gauge("labscale_study_last_success_timestamp_seconds", "Unix time the study's results were last published.",
          names, registry=registry).labels(**labels).set(time.time())
    cell = Gauge("labscale_cell_score", "Latest score of a task × model × setting cell.",
                 (*names, *CELL_LABELS, "metric"), registry=registry)
    for row in study_summary["cell_scores"]:
        for metric, value in sorted(row["scores"].items()):
            cell.labels(**labels, **{k: row[k] for k in CELL_LABELS}, metric=metric).set(value)
    return registry
