"""The results table: one row per task × model × setting (labels, metrics with their CI bounds, costs),
and the report's first section (results.md: one table per task with its verdicts; report.html: each
cell's metrics with their CIs and its costs)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from typing import Any

from labscale.report.analysis import Analysis, CellStats
from labscale.report.tables import Table, fmt, fmt_ci, reference_label, verdict_rule, verdict_table

LEAD_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "bertscore_f1",
                "accuracy", "worst_group_accuracy", "f1_macro", "f1_weighted", "valid_rate", "resolvable_rate",
                "unresolvable_rate")
"""Metric columns shown first (in this order) when present; others follow alphabetically."""
COST_COLUMNS = ("train_path", "engine", "train_s", "generate_s", "items_per_s", "tokens_in", "tokens_out", "usd", "kwh",
                "kg_co2e")
LABEL_COLUMNS = ("task", "model", "setting", "n")
CI_SUFFIXES = ("_lo", "_hi")
SHOWN_COSTS = ("usd", "kwh", "kg_co2e", "train_s", "generate_s")
"""The costs report.html shows next to a cell's metrics."""


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


@dataclass(frozen=True)
class ResultsSection:
    """Every cell's metrics and costs, one table per task (tasks have different metrics)."""

    title: str
    """The study's name."""
    frame: Any
    """`results_frame` of the analysis' cells."""
    analysis: Analysis

    def task_metrics(self) -> dict[str, list[str]]:
        """Task → the metric columns it has values for, in table order."""
        return {task: metric_columns(rows.dropna(axis=1, how="all").columns)
                for task, rows in self.frame.groupby("task", sort=False)}

    def markdown(self) -> str:
        """Per task: the table without columns empty for that task or CI bounds, then the task's
        "competitive with the reference" verdicts."""
        frame, analysis = self.frame, self.analysis
        parts = [f"# Results: {self.title}\n"]
        ci = [c for c in frame.columns if c.endswith(CI_SUFFIXES) and c not in metric_columns(frame.columns)]
        for task, rows in frame.groupby("task", sort=False):
            rows = rows.drop(columns=ci).dropna(axis=1, how="all").drop(columns=["task"])
            parts.append(f"## {task}\n\n{rows.to_markdown(index=False, floatfmt='.4g')}\n")
            verdicts = verdict_table(analysis, task)
            if verdicts.rows:
                parts.append(f"Competitive with {reference_label(analysis)} (margin {fmt(analysis.params.margin)}): "
                             f"{verdict_rule(analysis.params)}.\n\n{verdicts.markdown()}\n")
        return "\n".join(parts)

    def html(self) -> str:
        """Per task: every cell's metrics (mean [CI] for per-item metrics, † for corpus-only ones) and costs."""
        analysis, metrics = self.analysis, self.task_metrics()
        parts = ["<h2>Results</h2>"]
        for task in analysis.tasks:
            names = metrics[task]
            cells = analysis.task_cells(task)
            with_ci = {n for c in cells for n in c.intervals}
            headers = ["model", "setting", "n", *(n if n in with_ci else f"{n} †" for n in names), *SHOWN_COSTS]
            rows = [[c.model, c.setting, c.row.get("n"),
                     *(fmt_ci(c.intervals[n]) if n in c.intervals else c.row.get(n) for n in names),
                     *(c.row.get(k) for k in SHOWN_COSTS)] for c in cells]
            parts.append(f'<h3>{escape(task)}</h3><div class="results" data-task="{escape(task)}">'
                         f"{Table(headers, rows, left=2).html()}</div>")
        parts.append(f'<p class="note">Per-item metrics: mean [{analysis.params.confidence:.0%} bootstrap CI]. '
                     "† corpus-level metric (e.g. BLEU, macro-F1): not a mean of per-item values, so no CI is given. "
                     "Costs: estimated USD, kWh and kg CO2e of the cell's own train/generate/score runs "
                     "(0 where not recorded).</p>")
        return "".join(parts)
