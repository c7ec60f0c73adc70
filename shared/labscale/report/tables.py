"""Table cells shared by report.html and results.md: number formats and paired-comparison rows."""

from __future__ import annotations

import math
from typing import Any

from labscale.report.analysis import Analysis, PairRow
from labscale.stats import Interval

PAIR_HEADERS = ["model", "setting", "vs", "metric", "n paired", "mean Δ", "Δ CI", "p (sign-flip)", "d_z"]


def fmt(value: Any) -> str:
    """A number with 4 significant digits ('—' for missing), anything else as text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_ci(ci: Interval) -> str:
    """'mean [lo, hi]'; only the space after the mean may break a line."""
    return f"{fmt(ci.mean)} [{fmt(ci.lo)},\u00a0{fmt(ci.hi)}]"


def pair_cells(row: PairRow) -> list[Any]:
    """One paired comparison as table cells (see PAIR_HEADERS)."""
    c = row.comparison
    if c is None:
        return [row.a.model, row.a.setting, row.b.label, row.metric, 0, None, None, None, None]
    return [row.a.model, row.a.setting, row.b.label, row.metric, c.diff.n, c.diff.mean,
            f"[{fmt(c.diff.lo)}, {fmt(c.diff.hi)}]", c.p_value, c.d_z]


def verdict_rows(analysis: Analysis, task: str | None = None) -> list[list[Any]]:
    """The "competitive with the reference" rows (PAIR_HEADERS + verdict), of one task or all."""
    return [[*pair_cells(r), r.verdict or "n/a"] for r in analysis.verdicts if task is None or r.task == task]


def reference_label(analysis: Analysis) -> str:
    ref = analysis.params.reference
    return f"{ref['model']} / {ref['setting']}"
