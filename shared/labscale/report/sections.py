"""One interface for the report's sections: each renders itself into results.md and into report.html,
and both files are the same list of sections (labscale.report.document) rendered one way or the other."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape
from typing import Protocol

from labscale.report.analysis import Analysis
from labscale.report.tables import Table


class Section(Protocol):
    """A part of the report. Either rendering is '' where the section has nothing to show (a study
    without benchmarks) or shows only in report.html (plots, paired comparisons, drift)."""

    def markdown(self) -> str:
        """Its part of results.md."""
        ...

    def html(self) -> str:
        """Its part of report.html's body."""
        ...


@dataclass(frozen=True)
class TableSection:
    """A titled table with its note, the same in results.md and report.html ('' in both without rows)."""

    title: str
    table: Table
    note: str = ""
    name: str = ""
    """report.html: the CSS class of the table's box (what the page's readers find it by)."""

    def markdown(self) -> str:
        if not self.table.rows:
            return ""
        note = f"{self.note}\n\n" if self.note else ""
        return f"\n## {self.title}\n\n{note}{self.table.markdown()}\n"

    def html(self) -> str:
        if not self.table.rows:
            return ""
        note = f'<p class="note">{escape(self.note)}</p>' if self.note else ""
        return f'<h2>{escape(self.title)}</h2>{note}<div class="{self.name}">{self.table.html()}</div>'


@dataclass(frozen=True)
class HtmlSection:
    """A part only report.html shows (its plots, CIs of paired differences, drift since the last run):
    results.md stays the plain tables the CLI prints."""

    body: str

    def markdown(self) -> str:
        return ""

    def html(self) -> str:
        return self.body


def settings_section(analysis: Analysis) -> TableSection:
    """Each setting of the study (in study order) with its kind (labscale.config.study.SettingKind)."""
    kinds = analysis.params.setting_kinds
    settings = dict.fromkeys(c.setting for c in analysis.cells)
    rows = [[s, kinds[s].label if s in kinds else None] for s in settings]
    return TableSection("Setting kinds", Table(["setting", "kind"], rows, left=2),
                        "What each setting does to a model, decided from its fields when the study was loaded.",
                        "settings")
