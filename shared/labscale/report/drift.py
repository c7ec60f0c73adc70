"""Drift: how a study's cell scores moved since its previous aggregate run in the same store."""

from __future__ import annotations

from dataclasses import dataclass

from labscale.report.analysis import CellStats
from labscale.report.runs import AggregateMetrics, CellScores, RunMeta
from labscale.store import ArtifactStore, Manifest

STAGE_PREFIX = "aggregate"
_EPS = 1e-12


@dataclass(frozen=True)
class DriftRow:
    """A metric of one cell that changed; `flagged` when the previous value lies outside the current CI
    (None for corpus-only metrics, which have no CI)."""

    task: str
    model: str
    setting: str
    metric: str
    previous: float
    current: float
    lo: float | None
    hi: float | None
    flagged: bool | None

    @property
    def delta(self) -> float:
        return self.current - self.previous


@dataclass(frozen=True)
class Drift:
    """The previous run compared with, the changed metrics, and how many shared cells did not change."""

    previous: Manifest
    rows: list[DriftRow]
    unchanged_cells: int

    @property
    def flagged(self) -> list[DriftRow]:
        return [r for r in self.rows if r.flagged]


def previous_aggregate(store: ArtifactStore, study: str, current_prefix: str) -> Manifest | None:
    """The latest committed aggregate run of `study` other than `current_prefix` (None if there is none)."""
    candidates = []
    for prefix in store.committed_children(STAGE_PREFIX):
        if prefix == current_prefix or prefix.count("/") != 1:
            continue
        manifest = store.manifest(prefix)
        if manifest is not None and RunMeta.of(manifest).study == study:
            candidates.append(manifest)
    return max(candidates, key=lambda m: (m.committed_at, m.prefix), default=None)


def drift_rows(previous_scores: list[CellScores], cells: list[CellStats]) -> tuple[list[DriftRow], int]:
    """Changed metrics of the cells both runs have, and how many of those cells did not change at all."""
    before = {(c.task, c.model, c.setting): c.scores for c in previous_scores}
    rows: list[DriftRow] = []
    unchanged = 0
    for cell in cells:
        scores = before.get((cell.task, cell.model, cell.setting))
        if scores is None:
            continue
        changed = False
        for metric, previous in scores.items():
            current = cell.row.get(metric)
            if previous is None or not isinstance(current, (int, float)) or abs(current - previous) <= _EPS:
                continue
            changed = True
            ci = cell.intervals.get(metric)
            rows.append(DriftRow(cell.task, cell.model, cell.setting, metric, float(previous), float(current),
                                 *((None, None, None) if ci is None else (ci.lo, ci.hi, not ci.contains(previous)))))
        unchanged += not changed
    return rows, unchanged


def find_drift(store: ArtifactStore, study: str, current_prefix: str, cells: list[CellStats]) -> Drift | None:
    """Drift against the study's previous aggregate run, or None when this is its first."""
    previous = previous_aggregate(store, study, current_prefix)
    if previous is None:
        return None
    rows, unchanged = drift_rows(RunMeta.of(previous).metrics_as(AggregateMetrics).cell_scores, cells)
    return Drift(previous, rows, unchanged)
