"""The distillation table: each distilled student next to its teacher cell — quality (primary metric
with its bootstrap CI), quality ratio, seconds per item, $ per 1k items, and what Confident Learning did."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from labscale.report.tables import fmt

if TYPE_CHECKING:
    from labscale.report.analysis import Analysis

HEADERS = ["task", "model", "teacher", "student", "metric", "teacher score", "student score", "quality ratio",
           "teacher s/item", "student s/item", "speed-up", "teacher $/1k", "student $/1k", "setup $", "cleanlab"]
NOTE = ("Scores on the gold test split, [CI] = the cell's percentile-bootstrap CI; quality ratio = student ÷ "
        "teacher. s/item = the generate run's model seconds ÷ items (batched; model loading excluded). $/1k = "
        "the generate run's recorded $ (its wall time at the pool's price, loading included, + API $) ÷ items "
        "× 1000. Setup $ = the teacher labelling the train (± val) split + training the student (a fine-tuned "
        "teacher's own training is not counted). cleanlab: items flagged as likely label issues in the teacher's "
        "train labels and what was done with them. distill.csv has the same rows.")


def _per_item(meta: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(seconds per item, $ per 1k items) of a generate run's manifest meta."""
    metrics = meta["metrics"]
    items = metrics["items"] or None
    seconds = metrics["generation_seconds"] / items if items else None
    return seconds, (meta.get("cost_usd", 0.0) / items * 1000 if items else None)


def distill_rows(entries: Sequence[Mapping[str, Any]], cells: Sequence[Mapping[str, Any]], analysis: Analysis,
                 meta: Callable[[str], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per distilled cell. `entries`: the aggregate's `distill` params (labscale.distill.plan);
    `cells`: its `cells` params; `meta`: run prefix → its manifest meta."""
    by_label = {(c["task"], c["model"], c["setting"]): c for c in cells}
    stats = {(c.task, c.model, c.setting): c for c in analysis.cells}
    rows = []
    for entry in entries:
        task, model = entry["task"], entry["model"]
        teacher_key, student_key = (task, model, entry["teacher_setting"]), (task, model, entry["setting"])
        metric = analysis.primary.get(task)
        scores: dict[str, Any] = {}
        for side, key in (("teacher", teacher_key), ("student", student_key)):
            interval = stats[key].intervals.get(metric) if metric else None
            scores[f"{side}_score"] = stats[key].row.get(metric) if metric else None
            scores[f"{side}_lo"], scores[f"{side}_hi"] = (interval.lo, interval.hi) if interval else (None, None)
            scores[f"{side}_s_per_item"], scores[f"{side}_usd_per_1k"] = _per_item(meta(by_label[key]["generate"]))
        train = meta(entry["train"])
        setup = train.get("cost_usd", 0.0) + sum(meta(p).get("cost_usd", 0.0) for p in entry["teacher_labels"])
        clean = train["metrics"]
        ratio = scores["student_score"] / scores["teacher_score"] if metric and scores["teacher_score"] else None
        speedup = (scores["teacher_s_per_item"] / scores["student_s_per_item"]
                   if scores["teacher_s_per_item"] and scores["student_s_per_item"] else None)
        rows.append({"task": task, "model": model, "teacher": entry["teacher_setting"], "student": entry["setting"],
                     "metric": metric, **scores, "quality_ratio": ratio, "speedup": speedup, "setup_usd": setup,
                     **{k: clean.get(k) for k in ("teacher_rows", "teacher_unparsed", "rows", "cleanlab",
                                                  "cleanlab_flagged", "cleanlab_dropped", "cleanlab_relabelled",
                                                  "cleanlab_flagged_teacher_errors", "teacher_errors")}})
    return rows


def _score(row: Mapping[str, Any], side: str) -> str:
    if row[f"{side}_score"] is None:
        return fmt(None)
    ci = f" [{fmt(row[f'{side}_lo'])}, {fmt(row[f'{side}_hi'])}]" if row[f"{side}_lo"] is not None else ""
    return f"{fmt(row[f'{side}_score'])}{ci}"


def _cleanlab(row: Mapping[str, Any]) -> str:
    if row["cleanlab"] == "off":
        return "off"
    done = (f"{row['cleanlab_dropped']} dropped" if row["cleanlab"] == "drop"
            else f"{row['cleanlab_relabelled']} relabelled")
    return f"{row['cleanlab_flagged']} of {row['teacher_rows']} flagged, {done}"


def table_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The rows as table cells (see HEADERS)."""
    return [[r["task"], r["model"], r["teacher"], r["student"], r["metric"] or "—", _score(r, "teacher"),
             _score(r, "student"), fmt(r["quality_ratio"]), fmt(r["teacher_s_per_item"]),
             fmt(r["student_s_per_item"]), fmt(r["speedup"]), fmt(r["teacher_usd_per_1k"]),
             fmt(r["student_usd_per_1k"]), fmt(r["setup_usd"]), _cleanlab(r)] for r in rows]


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results.md section ('' for a study without distilled settings)."""
    if not rows:
        return ""
    import pandas as pd

    table = pd.DataFrame(table_cells(rows), columns=HEADERS).to_markdown(index=False, disable_numparse=True)
    return f"\n## Distillation: teacher vs student\n\n{table}\n\n{NOTE}\n"


def html(rows: Sequence[Mapping[str, Any]]) -> str:
    """The report.html section ('' for a study without distilled settings)."""
    if not rows:
        return ""
    from html import escape

    from labscale.report.html import table

    return (f'<h2>Distillation: teacher vs student</h2><p class="note">{escape(NOTE)}</p>'
            f'<div class="distill">{table(HEADERS, table_cells(rows), left=5)}</div>')
