"""Tables shared by results.md and report.html: number formats, one `Table` rendered either way, and
the paired-comparison rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from labscale.params import ReportParams
from labscale.report.analysis import Analysis, PairRow
from labscale.stats import Interval

PAIR_HEADERS = ["model", "setting", "vs", "metric", "n paired", "mean Δ", "Δ CI", "p (sign-flip)", "d_z"]
MISSING = "—"


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value: Any) -> str:
    """A number with 4 significant digits ('—' for missing), anything else as text."""
    if is_missing(value):
        return MISSING
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_ci(ci: Interval) -> str:
    """'mean [lo, hi]'; only the space after the mean may break a line."""
    return f"{fmt(ci.mean)} [{fmt(ci.lo)},\u00a0{fmt(ci.hi)}]"


@dataclass(frozen=True)
class Table:
    """Rows of cells (text, numbers or None) under headers: a pipe table in results.md, an HTML table
    in report.html, each cell formatted the same way (`fmt`)."""

    headers: Sequence[str]
    rows: Sequence[Sequence[Any]]
    left: int = 0
    """report.html: the first `left` columns (the labels) are left-aligned."""
    row_classes: Sequence[str] = ()
    """report.html: a CSS class per row ('' for none), e.g. a verdict's colour."""
    blank: str = MISSING
    """How a missing value (None, NaN) shows."""

    def cell(self, value: Any) -> str:
        return self.blank if is_missing(value) else fmt(value)

    def markdown(self) -> str:
        from tabulate import tabulate

        return tabulate([[self.cell(v) for v in row] for row in self.rows], headers=list(self.headers),
                        tablefmt="pipe", disable_numparse=True)

    def html(self) -> str:
        def cells(values: Sequence[Any], tag: str) -> str:
            return "".join(f'<{tag}{" class=l" if i < self.left else ""}>{escape(self.cell(v))}</{tag}>'
                           for i, v in enumerate(values))

        body = []
        for i, row in enumerate(self.rows):
            cls = self.row_classes[i] if self.row_classes else ""
            body.append(f"<tr{f' class={cls}' if cls else ''}>{cells(row, 'td')}</tr>")
        return f"<table><thead><tr>{cells(self.headers, 'th')}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def pair_cells(row: PairRow) -> list[Any]:
    """One paired comparison as table cells (see PAIR_HEADERS)."""
    c = row.comparison
    if c is None:
        return [row.a.model, row.a.setting, row.b.label, row.metric, 0, None, None, None, None]
    return [row.a.model, row.a.setting, row.b.label, row.metric, c.diff.n, c.diff.mean,
            f"[{fmt(c.diff.lo)}, {fmt(c.diff.hi)}]", c.p_value, c.d_z]


def verdict_table(analysis: Analysis, task: str) -> Table:
    """The task's "competitive with the reference" rows (PAIR_HEADERS + verdict), coloured by verdict
    (report.html's CSS class: the verdict, `no-signal` for "no signal")."""
    rows = [r for r in analysis.verdicts if r.task == task]
    return Table([*PAIR_HEADERS, "competitive"], [[*pair_cells(r), r.verdict or "n/a"] for r in rows], left=4,
                 row_classes=[(r.verdict or "").replace(" ", "-") for r in rows])


def verdict_rule(params: ReportParams) -> str:
    """How a "competitive" verdict is decided, in words (results.md and report.html say the same)."""
    confidence = f"{params.confidence * 100:.3g} %"
    alpha = f"{(1 - params.confidence) / 2 * 100:.3g} %"
    return (f"yes = the {confidence} paired bootstrap CI of Δ = mean(cell − reference) lies above −δ "
            f"(one-sided α = {alpha}); no = it lies below −δ; inconclusive = it contains −δ; "
            "no signal = both cells score one and the same value on every item (e.g. both 0), so Δ has no spread to judge")


def reference_label(analysis: Analysis) -> str:
    ref = analysis.params.reference
    return f"{ref.model} / {ref.setting}"
