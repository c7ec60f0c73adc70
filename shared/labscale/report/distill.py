"""The distillation table: each distilled student next to its teacher cell — quality (primary metric
with its bootstrap CI), quality ratio, seconds per item, $ per 1k items, and what Confident Learning did."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from labscale.params import Cell, Distillation
from labscale.report.analysis import Analysis
from labscale.report.runs import GenerateMetrics, RunMeta, Runs, TrainMetrics
from labscale.report.sections import TableSection
from labscale.report.tables import Table, fmt

HEADERS = ["task", "model", "teacher", "student", "metric", "teacher score", "student score", "quality ratio",
           "teacher s/item", "student s/item", "speed-up", "teacher $/1k", "student $/1k", "setup $", "cleanlab"]
NOTE = ("Scores on the gold test split, [CI] = the cell's percentile-bootstrap CI; quality ratio = student ÷ "
        "teacher. s/item = the generate run's model seconds ÷ items (batched; model loading excluded). $/1k = "
        "the generate run's recorded $ (its wall time at the pool's price, loading included, + API $) ÷ items "
        "× 1000. Setup $ = the teacher labelling the train (± val) split + training the student (a fine-tuned "
        "teacher's own training is not counted). cleanlab: items flagged as likely label issues in the teacher's "
        "train labels and what was done with them. distill.csv has the same rows.")
CLEANING = ("teacher_rows", "teacher_unparsed", "rows", "cleanlab", "cleanlab_flagged", "cleanlab_dropped",
            "cleanlab_relabelled", "cleanlab_flagged_teacher_errors", "teacher_errors")
"""The student's train-run numbers each row carries."""


def _per_item(run: RunMeta) -> tuple[float | None, float | None]:
    """(seconds per item, $ per 1k items) of a generate run."""
    metrics = run.metrics_as(GenerateMetrics)
    items = metrics.items or None
    seconds = metrics.generation_seconds / items if items else None
    return seconds, (run.cost_usd / items * 1000 if items else None)


def distill_rows(entries: Sequence[Distillation], cells: Sequence[Cell], analysis: Analysis,
                 runs: Runs) -> list[dict[str, Any]]:
    """One row per distilled cell. `entries`: the aggregate's `distill` params (labscale.plan.distill);
    `cells`: its cells; `runs`: the store's committed runs."""
    by_label = {(c.task, c.model, c.setting): c for c in cells}
    stats = {(c.task, c.model, c.setting): c for c in analysis.cells}
    rows = []
    for entry in entries:
        task, model = entry.task, entry.model
        teacher_key, student_key = (task, model, entry.teacher_setting), (task, model, entry.setting)
        metric = analysis.primary.get(task)
        scores: dict[str, Any] = {}
        for side, key in (("teacher", teacher_key), ("student", student_key)):
            interval = stats[key].intervals.get(metric) if metric else None
            scores[f"{side}_score"] = stats[key].row.get(metric) if metric else None
            scores[f"{side}_lo"], scores[f"{side}_hi"] = (interval.lo, interval.hi) if interval else (None, None)
            scores[f"{side}_s_per_item"], scores[f"{side}_usd_per_1k"] = _per_item(runs[by_label[key].generate])
        train = runs[entry.train]
        setup = train.cost_usd + sum(runs[p].cost_usd for p in entry.teacher_labels)
        student = train.metrics_as(TrainMetrics)
        ratio = scores["student_score"] / scores["teacher_score"] if metric and scores["teacher_score"] else None
        speedup = (scores["teacher_s_per_item"] / scores["student_s_per_item"]
                   if scores["teacher_s_per_item"] and scores["student_s_per_item"] else None)
        rows.append({"task": task, "model": model, "teacher": entry.teacher_setting, "student": entry.setting,
                     "metric": metric, **scores, "quality_ratio": ratio, "speedup": speedup, "setup_usd": setup,
                     **{k: getattr(student, k) for k in CLEANING}})
    return rows


def _score(row: Mapping[str, Any], side: str) -> str | None:
    if row[f"{side}_score"] is None:
        return None
    ci = f" [{fmt(row[f'{side}_lo'])}, {fmt(row[f'{side}_hi'])}]" if row[f"{side}_lo"] is not None else ""
    return f"{fmt(row[f'{side}_score'])}{ci}"


def _cleanlab(row: Mapping[str, Any]) -> str:
    if row["cleanlab"] == "off":
        return "off"
    done = (f"{row['cleanlab_dropped']} dropped" if row["cleanlab"] == "drop"
            else f"{row['cleanlab_relabelled']} relabelled")
    return f"{row['cleanlab_flagged']} of {row['teacher_rows']} flagged, {done}"


def distill_section(rows: Sequence[Mapping[str, Any]]) -> TableSection:
    """Each student next to its teacher (`distill_rows`; empty for a study without distilled settings)."""
    cells = [[r["task"], r["model"], r["teacher"], r["student"], r["metric"], _score(r, "teacher"),
              _score(r, "student"), r["quality_ratio"], r["teacher_s_per_item"], r["student_s_per_item"],
              r["speedup"], r["teacher_usd_per_1k"], r["student_usd_per_1k"], r["setup_usd"], _cleanlab(r)]
             for r in rows]
    return TableSection("Distillation: teacher vs student", Table(HEADERS, cells, left=5), NOTE, "distill")
