"""aggregate: one results row per task × model × setting, from the committed runs of a study.

Reads: every cell's score manifest and per_item.jsonl (+ its generate and train manifests for time,
tokens, $, kWh and CO2e), and the study's previous aggregate run (for drift).
Writes: results.csv, results.parquet (both with the per-item metrics' CIs), results.md (also printed
by the CLI; deterministic) and report.html (self-contained; see `labscale.report`).
With `benchmarks:`, also each benchmark run's results.json → benchmarks.csv and a "base vs adapted"
section in results.md and report.html (see `labscale.report.benchmarks`).
With distilled settings, each student vs its teacher → distill.csv and a "Distillation" section
(see `labscale.report.distill`).
With a `tracking:` block, each cell is also logged to W&B or MLflow (see `track_cells`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from labscale.spec import RunSpec, spec_key
from labscale.jsonl import read_jsonl
from labscale.stage import StageContext, stage_main
from labscale.store import ArtifactStore, Manifest
from labscale.telemetry import publish_quietly, study_registry
from labscale.telemetry.metrics import CELL_LABELS

if TYPE_CHECKING:  # the statistics (numpy, scipy) load when the stage runs, not when the planner reads CODE_VERSION
    from labscale.report.analysis import Analysis, CellStats
    from labscale.tracking import TrackedRun

STAGE = "aggregate"

LEAD_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "bertscore_f1",
                "accuracy", "worst_group_accuracy", "f1_macro", "f1_weighted", "valid_rate", "resolvable_rate",
                "unresolvable_rate")
"""Metric columns shown first (in this order) when present; others follow alphabetically."""
COST_COLUMNS = ("train_path", "train_s", "generate_s", "items_per_s", "tokens_in", "tokens_out", "usd", "kwh",
                "kg_co2e")
LABEL_COLUMNS = ("task", "model", "setting", "n")
CI_SUFFIXES = ("_lo", "_hi")


def lineage(store: ArtifactStore, prefixes: list[str]) -> dict[str, Manifest]:
    """The committed manifests of `prefixes` and of every input they were made from (each once)."""
    seen: dict[str, Manifest] = {}
    pending = list(prefixes)
    while pending:
        prefix = pending.pop()
        if prefix not in seen:
            seen[prefix] = store.require(prefix)
            pending.extend(seen[prefix].meta.get("inputs", {}).values())
    return seen


def cell_row(ctx: StageContext, cell: dict[str, Any]) -> dict[str, Any]:
    """One results row: the cell's labels, its scores, its time and token counts, and its $.

    A cell's $ counts its own train/generate/score runs; prep is shared between cells (study total only).
    """
    manifests = {p: ctx.store.require(p) for p in (cell["score"], cell["generate"], cell["train"]) if p}
    score = manifests[cell["score"]].meta["metrics"]
    gen = manifests[cell["generate"]].meta["metrics"]
    row: dict[str, Any] = {"task": cell["task"], "model": cell["model"], "setting": cell["setting"],
                           "n": score["items"]}
    row.update(score["scores"])
    train_seconds = 0.0
    if cell["train"]:
        train = ctx.store.require(cell["train"]).meta["metrics"]
        train_seconds = train["train_seconds"]
        row["train_path"] = train["path"] + (" (budget stop)" if train.get("stopped_by_budget") else "")
    else:
        row["train_path"] = "-"
    row.update({
        "train_s": round(train_seconds, 1),
        "generate_s": round(gen["generation_seconds"], 1),
        "items_per_s": gen["items_per_second"],
        "tokens_in": gen["tokens_in"],
        "tokens_out": gen["tokens_out"],
        "usd": _meta_sum(manifests.values(), "cost_usd", 6),
        "kwh": _meta_sum(manifests.values(), "energy_kwh", 9),
        "kg_co2e": _meta_sum(manifests.values(), "kg_co2e", 9),
    })
    return row


def _meta_sum(manifests: Iterable[Manifest], key: str, digits: int) -> float:
    """Sum of a number the runs recorded in their manifest meta (0 for runs that did not record it)."""
    return round(sum(m.meta.get(key, 0.0) for m in manifests), digits)


def cell_stats(ctx: StageContext, cell: dict[str, Any]) -> CellStats:
    """A cell's results row and its per-item metric columns (from score's per_item.jsonl)."""
    from labscale.report.analysis import CellStats, item_columns

    path = ctx.store.fetch_file(cell["score"], "per_item.jsonl", ctx.scratch / cell["score"] / "per_item.jsonl")
    row = cell_row(ctx, cell)
    ids, columns = item_columns(read_jsonl(path), row)
    return CellStats(cell["task"], cell["model"], cell["setting"], row, ids, columns)


def stats_row(cell: CellStats) -> dict[str, Any]:
    """The cell's results row plus `<metric>_lo` / `<metric>_hi` for every metric with a CI."""
    cis = {f"{m}{s}": v for m, ci in cell.intervals.items() for s, v in zip(CI_SUFFIXES, (ci.lo, ci.hi))}
    return {**cell.row, **cis}


def metric_columns(columns: Iterable[str]) -> list[str]:
    """The metric columns among `columns` (not labels, costs or CI bounds): the usual ones first."""
    columns = list(columns)
    ci = {c for c in columns for s in CI_SUFFIXES if c.endswith(s) and c.removesuffix(s) in columns}
    others = set(columns) - {*LABEL_COLUMNS, *COST_COLUMNS, *ci}
    return [m for m in LEAD_METRICS if m in others] + sorted(others - set(LEAD_METRICS))


def results_frame(rows: list[dict[str, Any]]) -> Any:
    """Rows as a DataFrame with labels first, each metric (then its CI bounds) next, costs last."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    metrics = [c for m in metric_columns(frame.columns) for c in (m, *(m + s for s in CI_SUFFIXES))
               if c in frame.columns]
    return frame[[*LABEL_COLUMNS, *metrics, *(c for c in COST_COLUMNS if c in frame.columns)]]


def markdown_tables(frame: Any, title: str, analysis: Analysis | None = None) -> str:
    """One table per task (tasks have different metrics), without columns empty for that task or CI
    bounds; then, given the analysis, the task's "competitive with the reference" verdicts."""
    import pandas as pd

    from labscale.report.tables import PAIR_HEADERS, fmt, reference_label, verdict_rows

    parts = [f"# Results: {title}\n"]
    ci = [c for c in frame.columns if c.endswith(CI_SUFFIXES) and c not in metric_columns(frame.columns)]
    for task, rows in frame.groupby("task", sort=False):
        rows = rows.drop(columns=ci).dropna(axis=1, how="all").drop(columns=["task"])
        parts.append(f"## {task}\n\n{rows.to_markdown(index=False, floatfmt='.4g')}\n")
        verdicts = verdict_rows(analysis, task) if analysis else []
        if verdicts:
            table = pd.DataFrame([[fmt(v) for v in r] for r in verdicts], columns=[*PAIR_HEADERS, "competitive"])
            parts.append(f"Competitive with {reference_label(analysis)} (margin {fmt(analysis.params.margin)}):\n\n"
                         f"{table.to_markdown(index=False, disable_numparse=True)}\n")
    return "\n".join(parts)


def write_benchmarks(ctx: StageContext) -> list[dict[str, Any]]:
    """The base-vs-adapted rows of the study's benchmark runs, also written to benchmarks.csv (if any)."""
    import pandas as pd

    from labscale.report.benchmarks import comparison_rows

    entries = ctx.spec.params["benchmarks"]
    files = {b["run"]: ctx.store.fetch_file(b["run"], "results.json", ctx.scratch / b["run"] / "results.json")
             for b in entries}
    rows = comparison_rows(entries, {run: json.loads(path.read_text())["results"] for run, path in files.items()})
    if rows:
        pd.DataFrame(rows).to_csv(ctx.out_dir / "benchmarks.csv", index=False)
    return rows


def write_distill(ctx: StageContext, analysis: Analysis) -> list[dict[str, Any]]:
    """Each distilled student vs its teacher (labscale.report.distill), also written to distill.csv (if any)."""
    import pandas as pd

    from labscale.report.distill import distill_rows

    params = ctx.spec.params
    rows = distill_rows(params.get("distill", []), params["cells"], analysis, lambda p: ctx.store.require(p).meta)
    if rows:
        pd.DataFrame(rows).to_csv(ctx.out_dir / "distill.csv", index=False)
    return rows


def write_report(ctx: StageContext, frame: Any, analysis: Analysis,
                 benchmarks: list[dict[str, Any]], distilled: list[dict[str, Any]]) -> dict[str, Any]:
    """report.html, with drift against the study's previous aggregate run; returns a summary for the meta."""
    from labscale.report.drift import find_drift
    from labscale.report.html import render_report

    drift = find_drift(ctx.store, ctx.spec.study, ctx.spec.prefix, analysis.cells)
    metrics = {task: metric_columns(rows.dropna(axis=1, how="all").columns)
               for task, rows in frame.groupby("task", sort=False)}
    html = render_report(ctx.spec.params["study"], analysis, metrics, drift, benchmarks, distilled)
    (ctx.out_dir / "report.html").write_text(html, encoding="utf-8")
    verdicts = [{"task": r.task, "model": r.a.model, "setting": r.a.setting, "metric": r.metric,
                 "verdict": r.verdict, **({"diff": r.comparison.diff.mean, "diff_lo": r.comparison.diff.lo,
                                           "diff_hi": r.comparison.diff.hi} if r.comparison else {})}
                for r in analysis.verdicts]
    return {"reference": analysis.params.reference, "margin": analysis.params.margin, "verdicts": verdicts,
            "drift": None if drift is None else {"previous": drift.previous.prefix, "changed": len(drift.rows),
                                                 "flagged": len(drift.flagged)}}


def run_spec(store: ArtifactStore, prefix: str) -> RunSpec:
    """The spec the run committed at `prefix` was planned with."""
    return RunSpec.model_validate_json(store.backend.get_bytes(spec_key(prefix)))


def tracked_cell(ctx: StageContext, cell: dict[str, Any], stats: CellStats) -> TrackedRun:
    """A cell for the tracker: its results row's numbers (CIs included) as metrics; as parameters, what
    it ran (its generate run's params, its training recipe, its metric suite) and the store URIs of its
    runs and of these results."""
    from labscale.tracking import TrackedRun, cell_name, flat_params, metric_values

    specs = {stage: run_spec(ctx.store, cell[stage]) for stage in ("train", "generate", "score") if cell[stage]}
    uris = {stage: f"{ctx.store.uri}/{spec.prefix}" for stage, spec in [*specs.items(), ("results", ctx.spec)]}
    recipe = (specs["train"].params.get("train") or specs["train"].params.get("distill")) if "train" in specs else None
    ran = {**specs["generate"].params, "train": recipe, "uri": uris}
    params = {**{k: cell[k] for k in CELL_LABELS}, **flat_params(ran), "metric_suite": specs["score"].params["suite"],
              "train_path": stats.row["train_path"]}
    return TrackedRun(cell_name(cell), params, metric_values(stats_row(stats)))


def track_cells(ctx: StageContext, cells: list[CellStats]) -> dict[str, str]:
    """Log every cell to the study's `tracking:` backend; returns cell name → tracker run id.

    The block is in this stage's params (its key), not its runtime: adding or changing it reruns just
    this cheap stage, which then logs (as runtime, a study whose aggregate is committed would never
    log). Train, generate and score keys never include it; train gets it as runtime.
    """
    from labscale.tracking import log_runs

    runs = [tracked_cell(ctx, cell, stats) for cell, stats in zip(ctx.spec.params["cells"], cells, strict=True)]
    return log_runs(ctx.spec.params["tracking"], ctx.spec.study, runs)


def run(ctx: StageContext) -> dict[str, Any]:
    """Build the results tables, statistics and report of the study's cells (and log them to its tracker)."""
    from labscale.report import ReportParams
    from labscale.report.analysis import analyze
    from labscale.report.benchmarks import markdown as benchmark_markdown
    from labscale.report.distill import markdown as distill_markdown
    from labscale.report.privacy import markdown as privacy_markdown, privacy_rows

    params = ctx.spec.params
    analysis = analyze([cell_stats(ctx, cell) for cell in params["cells"]], ReportParams.from_params(params))
    frame = results_frame([stats_row(cell) for cell in analysis.cells])
    frame.to_csv(ctx.out_dir / "results.csv", index=False)
    frame.to_parquet(ctx.out_dir / "results.parquet", index=False)
    benchmarks = write_benchmarks(ctx)
    distilled = write_distill(ctx, analysis)
    private = privacy_rows(params["cells"], lambda prefix: ctx.store.require(prefix).meta["metrics"])
    (ctx.out_dir / "results.md").write_text(markdown_tables(frame, params["study"], analysis)
                                            + benchmark_markdown(benchmarks) + distill_markdown(distilled)
                                            + privacy_markdown(private), encoding="utf-8")
    report = write_report(ctx, frame, analysis, benchmarks, distilled)
    ends = [c["score"] for c in params["cells"]] + [b["run"] for b in params["benchmarks"]]
    study_cost = sum(m.meta["cost_usd"] for m in lineage(ctx.store, ends).values())
    ctx.log.info("%d cells aggregated; estimated compute cost $%.4f", len(frame), study_cost)
    cell_scores = [{**{k: cell[k] for k in ("task", "model", "setting")},
                    "scores": ctx.store.require(cell["score"]).meta["metrics"]["scores"]} for cell in params["cells"]]
    tracked = {"tracker_runs": track_cells(ctx, analysis.cells)} if "tracking" in params else {}
    return {"cells": len(frame), "cost_usd": study_cost, "budget_usd": params["budget_usd"], "cell_scores": cell_scores,
            "report": report, **tracked, **({"distill": distilled} if distilled else {}),
            **({"privacy": private} if private else {})}


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
