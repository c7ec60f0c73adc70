"""The report: one list of sections, rendered as results.md (what the CLI prints) and as report.html."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from labscale.report.analysis import Analysis
from labscale.report.benchmarks import benchmark_section
from labscale.report.distill import distill_section
from labscale.report.drift import Drift
from labscale.report.html import (
    comparison_section, drift_section, intro_section, page, pareto_section, seeds_section, verdict_section,
)
from labscale.report.privacy import privacy_section
from labscale.report.results import ResultsSection
from labscale.report.sections import Section, settings_section


@dataclass(frozen=True)
class Report:
    """A study's report: its sections, in order."""

    title: str
    sections: Sequence[Section]

    def markdown(self) -> str:
        """results.md."""
        return "".join(s.markdown() for s in self.sections)

    def html(self) -> str:
        """report.html: one self-contained page."""
        return page(self.title, "".join(s.html() for s in self.sections))


def build_report(title: str, analysis: Analysis, frame: Any, drift: Drift | None,
                 benchmarks: Sequence[Mapping[str, Any]] = (), distilled: Sequence[Mapping[str, Any]] = (),
                 private: Sequence[dict[str, Any]] = ()) -> Report:
    """The report of a study's analysis. `frame`: its results table (labscale.report.results.results_frame);
    `benchmarks`, `distilled`, `private`: the rows of labscale.report.benchmarks.comparison_rows,
    labscale.report.distill.distill_rows and labscale.report.privacy.privacy_rows (empty: no section)."""
    return Report(title, [
        intro_section(analysis), ResultsSection(title, frame, analysis), pareto_section(analysis),
        seeds_section(analysis), verdict_section(analysis), comparison_section(analysis), settings_section(analysis),
        benchmark_section(benchmarks), distill_section(distilled), privacy_section(private), drift_section(drift),
    ])
