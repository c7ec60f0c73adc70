"""report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

from labscale.config.study import SettingKind
from labscale.report import benchmarks, distill
from labscale.report.analysis import Analysis
from labscale.report.drift import Drift
from labscale.report.plots import Point, pareto_svg
from labscale.report.tables import PAIR_HEADERS, fmt, fmt_ci, pair_cells, reference_label, verdict_rows

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1400px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.8rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f3f3f3;white-space:nowrap}
td.l,th.l{text-align:left;white-space:nowrap}.results{overflow-x:auto}
.yes{background:#d9f2d9}.no{background:#f8d7d7}.inconclusive{background:#fff3cd}.flag{background:#f8d7d7}
.note{color:#555;font-size:.85rem;max-width:70rem}figure{margin:0 0 1rem}
"""
SHOWN_COSTS = ("usd", "kwh", "kg_co2e", "train_s", "generate_s")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], left: int = 0,
          row_classes: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped text, the first `left` columns left-aligned."""
    def cells(values: Sequence[Any], tag: str) -> str:
        return "".join(f'<{tag}{" class=l" if i < left else ""}>{escape(fmt(v))}</{tag}>' for i, v in enumerate(values))

    body = []
    for i, row in enumerate(rows):
        cls = row_classes[i] if row_classes else ""
        body.append(f"<tr{f' class={cls}' if cls else ''}>{cells(row, 'td')}</tr>")
    return f"<table><thead><tr>{cells(headers, 'th')}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _results_section(analysis: Analysis, metrics: dict[str, list[str]]) -> str:
    """Per task: every cell's metrics (mean [CI] for per-item metrics, † for corpus-only ones) and costs."""
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
                     f"{table(headers, rows, left=2)}</div>")
    parts.append(f'<p class="note">Per-item metrics: mean [{analysis.params.confidence:.0%} bootstrap CI]. '
                 "† corpus-level metric (e.g. BLEU, macro-F1): not a mean of per-item values, so no CI is given. "
                 "Costs: estimated USD, kWh and kg CO2e of the cell's own train/generate/score runs "
                 "(0 where not recorded).</p>")
    return "".join(parts)


def _pareto_section(analysis: Analysis) -> str:
    parts = ["<h2>Score vs cost</h2>"]
    for task, metric in analysis.primary.items():
        points = [Point(c.label, float(c.row.get("usd") or 0.0), c.intervals[metric].mean, c.intervals[metric].lo,
                        c.intervals[metric].hi) for c in analysis.task_cells(task)]
        svg = pareto_svg(points, f"{metric} (mean, {analysis.params.confidence:.0%} CI)", task)
        parts.append(f'<figure class="pareto" data-task="{escape(task)}">{svg}<figcaption class="note">{escape(task)}: '
                     f"{escape(metric)} against estimated cost; circles joined by the line are Pareto-optimal "
                     "(no other cell is both cheaper and better).</figcaption></figure>")
    return "".join(parts)


def _setting_header(setting: str, kind: SettingKind | None) -> str:
    """The setting's id, after its kind's label unless the id is that label."""
    label = kind.label if kind is not None else "setting"
    return setting if label == setting else f"{label} ({setting})"


def _seeds_section(analysis: Analysis) -> str:
    """Per task: models × settings (zero-shot / few-shot / CoT / fine-tuned) on the primary metric."""
    kinds = analysis.params.setting_kinds
    parts = ["<h2>Settings per model</h2>"]
    for task, metric in analysis.primary.items():
        cells = analysis.task_cells(task)
        settings = list(dict.fromkeys(c.setting for c in cells))
        order = {k: i for i, k in enumerate(SettingKind)}
        settings.sort(key=lambda s: order[kinds[s]] if s in kinds else len(order))
        by_key = {(c.model, c.setting): c for c in cells}
        headers = ["model", *(_setting_header(s, kinds.get(s)) for s in settings)]
        rows = [[model, *(fmt_ci(by_key[model, s].intervals[metric]) if (model, s) in by_key else None
                          for s in settings)] for model in dict.fromkeys(c.model for c in cells)]
        parts.append(f"<h3>{escape(task)}: {escape(metric)}</h3>{table(headers, rows, left=1)}")
    return "".join(parts)


def _verdict_section(analysis: Analysis) -> str:
    p = analysis.params
    ref = reference_label(analysis)
    parts = [f"<h2>Competitive with {escape(ref)}?</h2>",
             f'<p class="note">Competitive with the reference <b>{escape(ref)}</b> = non-inferior by margin '
             f"δ = {fmt(p.margin)} on the task's primary metric: <b>yes</b> when the {p.confidence:.0%} paired "
             "bootstrap CI of mean(cell − reference) lies above −δ, <b>no</b> when it lies below −δ, "
             "<b>inconclusive</b> otherwise. p: two-sided paired sign-flip permutation test of mean Δ = 0; "
             "d_z: mean Δ / sd(Δ).</p>"]
    for task in analysis.primary:
        classes = [r.verdict or "" for r in analysis.verdicts if r.task == task]
        rows = verdict_rows(analysis, task)
        parts.append(f'<h3>{escape(task)}</h3><div class="verdicts" data-task="{escape(task)}">'
                     f'{table([*PAIR_HEADERS, "competitive"], rows, left=4, row_classes=classes)}</div>')
    return "".join(parts)


def _comparison_section(analysis: Analysis) -> str:
    if not analysis.baselines:
        return ""
    parts = ['<h2>Settings compared within each model</h2><p class="note">Each setting against the model\'s '
             "first setting, on the same items (paired).</p>"]
    for task in analysis.primary:
        rows = [pair_cells(r) for r in analysis.baselines if r.task == task]
        if rows:
            parts.append(f"<h3>{escape(task)}</h3>{table(PAIR_HEADERS, rows, left=4)}")
    return "".join(parts)


def _benchmark_section(rows: Sequence[Mapping[str, Any]]) -> str:
    """Base vs adapted on the study's lm-eval benchmarks ('' for a study without them)."""
    if not rows:
        return ""
    return (f'<h2>Benchmarks: base vs adapted</h2><p class="note">{escape(benchmarks.NOTE)}</p>'
            f'<div class="benchmarks">{table(benchmarks.HEADERS, benchmarks.table_cells(rows), left=5)}</div>')


def _drift_section(drift: Drift | None) -> str:
    if drift is None:
        return '<h2>Drift</h2><p class="note">No earlier aggregate run of this study in the store.</p>'
    prev = drift.previous
    head = (f'<h2>Drift</h2><p class="note">Against the previous run {escape(prev.prefix)} '
            f"(committed {escape(prev.committed_at)}): {len(drift.rows)} metric(s) changed, "
            f"{len(drift.flagged)} outside the current CI; {drift.unchanged_cells} shared cell(s) scored the same.</p>")
    if not drift.rows:
        return head
    rows = [[r.task, r.model, r.setting, r.metric, r.previous, r.current, r.delta,
             None if r.lo is None else f"[{fmt(r.lo)}, {fmt(r.hi)}]",
             {True: "outside CI", False: "within CI", None: "no CI (corpus metric)"}[r.flagged]] for r in drift.rows]
    headers = ["task", "model", "setting", "metric", "previous", "current", "Δ", "current CI", "flag"]
    classes = ["flag" if r.flagged else "" for r in drift.rows]
    return head + f'<div class="drift">{table(headers, rows, left=4, row_classes=classes)}</div>'


def render_report(title: str, analysis: Analysis, metrics: dict[str, list[str]], drift: Drift | None,
                  benchmark_rows: Sequence[Mapping[str, Any]], distill_rows: Sequence[Mapping[str, Any]] = ()) -> str:
    """The whole page. `metrics`: task → its metric columns, in table order; `benchmark_rows`: see
    `labscale.report.benchmarks.comparison_rows`; `distill_rows`: `labscale.report.distill.distill_rows`."""
    p = analysis.params
    intro = (f'<p class="note">{len(analysis.cells)} cells. CIs: percentile bootstrap over items, '
             f"{p.bootstrap_samples} resamples, seed {p.seed}, {p.confidence:.0%}; a cell's metrics and the cells "
             "compared on a task are resampled on the same items.</p>")
    body = "".join([intro, _results_section(analysis, metrics), _pareto_section(analysis), _seeds_section(analysis),
                    _verdict_section(analysis), _comparison_section(analysis), _benchmark_section(benchmark_rows),
                    distill.html(distill_rows),
                    _drift_section(drift)])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>labscale report: {escape(title)}'
            f"</title><style>{CSS}</style></head><body><h1>labscale report: {escape(title)}</h1>{body}</body></html>\n")
