"""report.html: one self-contained page (inline CSS and SVG, no scripts, nothing fetched)."""

from __future__ import annotations

from html import escape

from labscale.config.study import SettingKind
from labscale.report.analysis import Analysis
from labscale.report.drift import Drift
from labscale.report.plots import Point, pareto_svg
from labscale.report.sections import HtmlSection
from labscale.report.tables import (
    PAIR_HEADERS, Table, fmt, fmt_ci, pair_cells, reference_label, verdict_rule, verdict_table,
)

CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1400px;color:#222;padding:0 1rem}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}h3{font-size:1rem}
table{border-collapse:collapse;margin:.5rem 0 1rem;font-size:.8rem}
th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:right}th{background:#f3f3f3;white-space:nowrap}
td.l,th.l{text-align:left;white-space:nowrap}.results{overflow-x:auto}
.yes{background:#d9f2d9}.no{background:#f8d7d7}.inconclusive{background:#fff3cd}.no-signal{background:#eee}.flag{background:#f8d7d7}
.note{color:#555;font-size:.85rem;max-width:70rem}figure{margin:0 0 1rem}
"""


def page(title: str, body: str) -> str:
    """The whole page around the sections' HTML."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>labscale report: {escape(title)}'
            f"</title><style>{CSS}</style></head><body><h1>labscale report: {escape(title)}</h1>{body}</body></html>\n")


def intro_section(analysis: Analysis) -> HtmlSection:
    p = analysis.params
    return HtmlSection(f'<p class="note">{len(analysis.cells)} cells. CIs: percentile bootstrap over items, '
                       f"{p.bootstrap_samples} resamples, seed {p.seed}, {p.confidence:.0%}; a cell's metrics and the "
                       "cells compared on a task are resampled on the same items.</p>")


def pareto_section(analysis: Analysis) -> HtmlSection:
    """Per task: the primary metric against each cell's cost, the Pareto-optimal cells joined."""
    parts = ["<h2>Score vs cost</h2>"]
    for task, metric in analysis.primary.items():
        points = [Point(c.label, float(c.row.get("usd") or 0.0), c.intervals[metric].mean, c.intervals[metric].lo,
                        c.intervals[metric].hi) for c in analysis.task_cells(task)]
        svg = pareto_svg(points, f"{metric} (mean, {analysis.params.confidence:.0%} CI)", task)
        parts.append(f'<figure class="pareto" data-task="{escape(task)}">{svg}<figcaption class="note">{escape(task)}: '
                     f"{escape(metric)} against estimated cost; circles joined by the line are Pareto-optimal "
                     "(no other cell is both cheaper and better).</figcaption></figure>")
    return HtmlSection("".join(parts))


def _setting_header(setting: str, kind: SettingKind | None) -> str:
    """The setting's id, after its kind's label unless the id is that label."""
    label = kind.label if kind is not None else "setting"
    return setting if label == setting else f"{label} ({setting})"


def seeds_section(analysis: Analysis) -> HtmlSection:
    """Per task: models × settings (zero-shot / few-shot / CoT / fine-tuned …) on the primary metric."""
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
        parts.append(f"<h3>{escape(task)}: {escape(metric)}</h3>{Table(headers, rows, left=1).html()}")
    return HtmlSection("".join(parts))


def verdict_section(analysis: Analysis) -> HtmlSection:
    """Per task: each cell against the reference, with its verdict (results.md has these under each task)."""
    p = analysis.params
    ref = reference_label(analysis)
    parts = [f"<h2>Competitive with {escape(ref)}?</h2>",
             f'<p class="note">Competitive with the reference <b>{escape(ref)}</b> = non-inferior by margin '
             f"δ = {fmt(p.margin)} on the task's primary metric: {escape(verdict_rule(p))}. "
             "p: two-sided paired sign-flip permutation test of mean Δ = 0; d_z: mean Δ / sd(Δ).</p>"]
    for task in analysis.primary:
        parts.append(f'<h3>{escape(task)}</h3><div class="verdicts" data-task="{escape(task)}">'
                     f"{verdict_table(analysis, task).html()}</div>")
    return HtmlSection("".join(parts))


def comparison_section(analysis: Analysis) -> HtmlSection:
    """Within each model, each setting against the model's first setting."""
    if not analysis.baselines:
        return HtmlSection("")
    parts = ['<h2>Settings compared within each model</h2><p class="note">Each setting against the model\'s '
             "first setting, on the same items (paired).</p>"]
    for task in analysis.primary:
        rows = [pair_cells(r) for r in analysis.baselines if r.task == task]
        if rows:
            parts.append(f"<h3>{escape(task)}</h3>{Table(PAIR_HEADERS, rows, left=4).html()}")
    return HtmlSection("".join(parts))


def drift_section(drift: Drift | None) -> HtmlSection:
    """How the cells' metrics moved since the study's previous aggregate run in the store."""
    if drift is None:
        return HtmlSection('<h2>Drift</h2><p class="note">No earlier aggregate run of this study in the store.</p>')
    prev = drift.previous
    head = (f'<h2>Drift</h2><p class="note">Against the previous run {escape(prev.prefix)} '
            f"(committed {escape(prev.committed_at)}): {len(drift.rows)} metric(s) changed, "
            f"{len(drift.flagged)} outside the current CI; {drift.unchanged_cells} shared cell(s) scored the same.</p>")
    if not drift.rows:
        return HtmlSection(head)
    rows = [[r.task, r.model, r.setting, r.metric, r.previous, r.current, r.delta,
             None if r.lo is None else f"[{fmt(r.lo)}, {fmt(r.hi)}]",
             {True: "outside CI", False: "within CI", None: "no CI (corpus metric)"}[r.flagged]] for r in drift.rows]
    headers = ["task", "model", "setting", "metric", "previous", "current", "Δ", "current CI", "flag"]
    table = Table(headers, rows, left=4, row_classes=["flag" if r.flagged else "" for r in drift.rows])
    return HtmlSection(head + f'<div class="drift">{table.html()}</div>')
