"""aggregate: one results row per task × model × setting, from the committed runs of a study.

Reads: every cell's score manifest and per_item.jsonl (+ its generate and train manifests for time,
tokens, $, kWh and CO2e), and the study's previous aggregate run (for drift).
Writes: results.csv, results.parquet (both with the per-item metrics' CIs), and the report's one list
of sections (`labscale.report.document`) as results.md (also printed by the CLI; deterministic) and as
report.html (self-contained).
With `benchmarks:`, also each benchmark run's results.json → benchmarks.csv and a "base vs adapted"
section (see `labscale.report.benchmarks`).
With distilled settings, each student vs its teacher → distill.csv and a "Distillation" section
(see `labscale.report.distill`); with audited or DP-trained settings, a "Privacy" section.
With a `tracking:` block, each cell is also logged to W&B or MLflow (see `track_cells`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from labscale.jsonl import read_jsonl
from labscale.params import AggregateParams, Cell, LoraTrainParams, ModelGenerateParams, ScoreParams, StudentParams
from labscale.report.analysis import Analysis, CellStats, analyze, item_columns
from labscale.report.benchmarks import comparison_rows
from labscale.report.distill import distill_rows
from labscale.report.document import build_report
from labscale.report.drift import find_drift
from labscale.report.privacy import privacy_rows
from labscale.report.results import results_frame, stats_row
from labscale.report.runs import CellScores, GenerateMetrics, Runs, ScoreMetrics, TrainMetrics
from labscale.spec import RunSpec, spec_key
from labscale.stage import StageContext, stage_main
from labscale.store import ArtifactStore
from labscale.telemetry import publish_quietly, study_registry
from labscale.telemetry.metrics import CELL_LABELS
from labscale.tracking import TrackedRun, cell_name, flat_params, log_runs, metric_values

STAGE = "aggregate"


def aggregate_params(ctx: StageContext) -> AggregateParams:
    params = ctx.params
    assert isinstance(params, AggregateParams)
    return params


def cell_row(runs: Runs, cell: Cell) -> dict[str, Any]:
    """One results row: the cell's labels, its scores, its time and token counts, and its $.

    A cell's $ counts its own train/generate/score runs, each over all its attempts (a resumed run's
    earlier attempts included); prep is shared between cells (study total only).
    """
    own = [runs[p] for p in (cell.score, cell.generate, cell.train) if p]
    score, gen = runs[cell.score].metrics_as(ScoreMetrics), runs[cell.generate].metrics_as(GenerateMetrics)
    row: dict[str, Any] = {"task": cell.task, "model": cell.model, "setting": cell.setting, "n": score.items}
    row.update(score.scores)
    train_seconds = 0.0
    if cell.train:
        train = runs[cell.train].metrics_as(TrainMetrics)
        train_seconds = train.train_seconds  # a resumed run's: over all its attempts
        attempts = runs[cell.train].attempts
        row["train_path"] = (train.path + (" (budget stop)" if train.stopped_by_budget else "")
                             + (f" ({attempts} attempts)" if attempts > 1 else ""))
    else:
        row["train_path"] = "-"
    row.update({
        "engine": gen.engine,
        "train_s": round(train_seconds, 1),
        "generate_s": round(gen.generation_seconds, 1),
        "items_per_s": gen.items_per_second,
        "tokens_in": gen.tokens_in,
        "tokens_out": gen.tokens_out,
        "usd": round(sum(m.cost_usd for m in own), 6),
        "kwh": round(sum(m.energy_kwh for m in own), 9),
        "kg_co2e": round(sum(m.kg_co2e for m in own), 9),
    })
    return row


def cell_stats(ctx: StageContext, runs: Runs, cell: Cell) -> CellStats:
    """A cell's results row and its per-item metric columns (from score's per_item.jsonl)."""
    path = ctx.store.fetch_file(cell.score, "per_item.jsonl", ctx.scratch / cell.score / "per_item.jsonl")
    row = cell_row(runs, cell)
    ids, columns = item_columns(read_jsonl(path), row)
    return CellStats(cell.task, cell.model, cell.setting, row, ids, columns)


def write_benchmarks(ctx: StageContext) -> list[dict[str, Any]]:
    """The base-vs-adapted rows of the study's benchmark runs, also written to benchmarks.csv (if any)."""
    import pandas as pd

    entries = aggregate_params(ctx).benchmarks
    files = {b.run: ctx.store.fetch_file(b.run, "results.json", ctx.scratch / b.run / "results.json") for b in entries}
    rows = comparison_rows(entries, {run: json.loads(path.read_text())["results"] for run, path in files.items()})
    if rows:
        pd.DataFrame(rows).to_csv(ctx.out_dir / "benchmarks.csv", index=False)
    return rows


def write_distill(ctx: StageContext, runs: Runs, analysis: Analysis) -> list[dict[str, Any]]:
    """Each distilled student vs its teacher (labscale.report.distill), also written to distill.csv (if any)."""
    import pandas as pd

    params = aggregate_params(ctx)
    rows = distill_rows(params.distill, params.cells, analysis, runs)
    if rows:
        pd.DataFrame(rows).to_csv(ctx.out_dir / "distill.csv", index=False)
    return rows


def report_summary(analysis: Analysis, drift_summary: dict[str, Any] | None) -> dict[str, Any]:
    """The report's verdicts and drift, for the run's meta."""
    verdicts = [{"task": r.task, "model": r.a.model, "setting": r.a.setting, "metric": r.metric,
                 "verdict": r.verdict, **({"diff": r.comparison.diff.mean, "diff_lo": r.comparison.diff.lo,
                                           "diff_hi": r.comparison.diff.hi} if r.comparison else {})}
                for r in analysis.verdicts]
    return {"reference": analysis.params.reference.model_dump(), "margin": analysis.params.margin,
            "verdicts": verdicts, "drift": drift_summary}


def run_spec(store: ArtifactStore, prefix: str) -> RunSpec:
    """The spec the run committed at `prefix` was planned with."""
    return RunSpec.model_validate_json(store.backend.get_bytes(spec_key(prefix)))


def tracked_cell(ctx: StageContext, cell: Cell, stats: CellStats) -> TrackedRun:
    """A cell for the tracker: its results row's numbers (CIs included) as metrics; as parameters, what
    it ran (its generate run's params, its training recipe, its metric suite) and the store URIs of its
    runs and of these results."""
    prefixes = {"train": cell.train, "generate": cell.generate, "score": cell.score}
    specs = {stage: run_spec(ctx.store, prefix) for stage, prefix in prefixes.items() if prefix}
    uris = {stage: f"{ctx.store.uri}/{spec.prefix}" for stage, spec in [*specs.items(), ("results", ctx.spec)]}
    trained = specs["train"].params if "train" in specs else None
    recipe = (trained.train if isinstance(trained, LoraTrainParams)
              else trained.distill if isinstance(trained, StudentParams) else None)
    generated, scored = specs["generate"].params, specs["score"].params
    assert isinstance(generated, ModelGenerateParams | StudentParams) and isinstance(scored, ScoreParams)
    ran = {**generated.model_dump(mode="json"), "train": recipe and recipe.model_dump(mode="json"), "uri": uris}
    labels = cell.model_dump(include=set(CELL_LABELS))
    params = {**labels, **flat_params(ran), "metric_suite": scored.suite, "train_path": stats.row["train_path"],
              "engine": stats.row["engine"]}
    return TrackedRun(cell_name(labels), params, metric_values(stats_row(stats)))


def track_cells(ctx: StageContext, cells: list[CellStats]) -> dict[str, str]:
    """Log every cell to the study's `tracking:` backend; returns cell name → tracker run id.

    The block is in this stage's params (its key), not its runtime: adding or changing it reruns just
    this cheap stage, which then logs (as runtime, a study whose aggregate is committed would never
    log). Train, generate and score keys never include it; train gets it as runtime.
    """
    params = aggregate_params(ctx)
    assert params.tracking is not None
    runs = [tracked_cell(ctx, cell, stats) for cell, stats in zip(params.cells, cells, strict=True)]
    return log_runs(params.tracking, ctx.spec.study, runs)


def run(ctx: StageContext) -> dict[str, Any]:
    """Build the results tables, statistics and report of the study's cells (and log them to its tracker)."""
    params = aggregate_params(ctx)
    runs = Runs(ctx.store)
    analysis = analyze([cell_stats(ctx, runs, cell) for cell in params.cells], params.report)
    frame = results_frame([stats_row(cell) for cell in analysis.cells])
    frame.to_csv(ctx.out_dir / "results.csv", index=False)
    frame.to_parquet(ctx.out_dir / "results.parquet", index=False)
    benchmarks = write_benchmarks(ctx)
    distilled = write_distill(ctx, runs, analysis)
    private = privacy_rows(params.cells, lambda prefix: runs[prefix].metrics_as(TrainMetrics))
    drift = find_drift(ctx.store, ctx.spec.study, ctx.spec.prefix, analysis.cells)
    report = build_report(params.study, analysis, frame, drift, benchmarks, distilled, private)
    (ctx.out_dir / "results.md").write_text(report.markdown(), encoding="utf-8")
    (ctx.out_dir / "report.html").write_text(report.html(), encoding="utf-8")
    drift_summary = None if drift is None else {"previous": drift.previous.prefix, "changed": len(drift.rows),
                                                "flagged": len(drift.flagged)}
    ends = [c.score for c in params.cells] + [b.run for b in params.benchmarks]
    study_cost = sum(m.cost_usd for m in runs.lineage(ends).values())
    ctx.log.info("%d cells aggregated; estimated compute cost $%.4f", len(frame), study_cost)
    cell_scores = [CellScores(task=c.task, model=c.model, setting=c.setting,
                              scores=runs[c.score].metrics_as(ScoreMetrics).scores) for c in params.cells]
    tracked = {"tracker_runs": track_cells(ctx, analysis.cells)} if params.tracking is not None else {}
    return {"cells": len(frame), "cost_usd": study_cost, "budget_usd": params.budget_usd,
            "cell_scores": [c.model_dump() for c in cell_scores], "report": report_summary(analysis, drift_summary),
            **tracked, **({"distill": distilled} if distilled else {}), **({"privacy": private} if private else {})}


def publish_study_metrics(spec: RunSpec, store: ArtifactStore) -> None:
    """Publish the study's totals and latest cell scores — on every invocation, so each scheduled
    rerun refreshes them even when every stage was cached."""
    summary = store.require(spec.prefix).meta["metrics"]
    publish_quietly(logging.getLogger("labscale.aggregate"), study_registry(spec, summary), {"study": spec.study},
                    store, f"metrics/study/{spec.study}.prom", spec.pushgateway)


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.aggregate --spec URI`."""
    return stage_main(STAGE, run, argv, after=publish_study_metrics)


if __name__ == "__main__":
    raise SystemExit(main())
