"""A study's statistics from its cells' per-item records: CIs per cell, paired comparisons, verdicts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from labscale.metrics.labels import STATUSES
from labscale.params import ReportParams
from labscale.stats import Comparison, Interval, Verdict, bootstrap_means, non_inferiority, paired_compare

ITEM_RENAMES: dict[str, str] = {"correct": "accuracy", "name_match": "name_accuracy", "em": "exact_match",
                                "abstained": "abstention_rate"}
"""Per-item field → the corpus metric that is its mean."""
CATEGORICAL: dict[str, tuple[str, ...]] = {"status": STATUSES}
"""Per-item text field → its values; the corpus metric `<value>_rate` is the mean of `field == value`."""
PairVerdict = Verdict | Literal["no signal"]
"""A cell against the reference: labscale.stats' non-inferiority verdict, or "no signal" when both cells
score one and the same value on every item (e.g. both 0): Δ is 0 everywhere, its bootstrap CI has no
width, and the items say nothing about whether one is as good as the other. (Two constant cells that
differ, say 1 everywhere against 0 everywhere, keep their verdict: Δ then says all there is.)"""


def item_columns(records: Sequence[dict[str, Any]], corpus: Mapping[str, Any] | None = None
                 ) -> tuple[list[str], dict[str, np.ndarray]]:
    """Item ids and one numeric column per per-item metric, named like the corpus metric it averages to.

    A field counts only when every record has a number (or bool) for it, and, given the `corpus`
    metrics, only when its mean IS the corpus metric of that name (a micro-averaged F1 is not the mean
    of per-item F1s, so it gets no column and no CI).
    """
    ids = [str(r["id"]) for r in records]
    columns: dict[str, np.ndarray] = {}
    if not records:
        return ids, columns
    for key in sorted(records[0]):
        values = [r.get(key) for r in records]
        if key in CATEGORICAL:
            for value in CATEGORICAL[key]:
                columns[f"{value}_rate"] = np.array([v == value for v in values], dtype=float)
        elif key != "id" and all(isinstance(v, (bool, int, float)) for v in values):
            columns[ITEM_RENAMES.get(key, key)] = np.array(values, dtype=float)
    if corpus is not None:
        columns = {k: v for k, v in columns.items() if _is_mean(v, corpus.get(k))}
    return ids, columns


def _is_mean(values: np.ndarray, corpus_value: Any) -> bool:
    return isinstance(corpus_value, (int, float)) and abs(float(values.mean()) - corpus_value) <= 1e-9


@dataclass
class CellStats:
    """One cell: its results row, its per-item columns (by item id) and their CIs."""

    task: str
    model: str
    setting: str
    row: dict[str, Any]
    ids: list[str]
    columns: dict[str, np.ndarray]
    intervals: dict[str, Interval] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.setting}"

    def aligned(self, other: "CellStats", metric: str) -> tuple[np.ndarray, np.ndarray]:
        """This cell's and `other`'s values of `metric` on the items both scored, in id order."""
        mine = dict(zip(self.ids, self.columns[metric]))
        theirs = dict(zip(other.ids, other.columns[metric]))
        common = sorted(mine.keys() & theirs.keys())
        return np.array([mine[i] for i in common]), np.array([theirs[i] for i in common])


@dataclass(frozen=True)
class PairRow:
    """Cell A vs cell B of one task on its primary metric; `verdict` only against the reference."""

    task: str
    a: CellStats
    b: CellStats
    metric: str
    comparison: Comparison | None
    """None when the two cells share no scored items."""
    verdict: PairVerdict | None = None


@dataclass
class Analysis:
    """Everything the report shows, computed once."""

    params: ReportParams
    cells: list[CellStats]
    primary: dict[str, str]
    """task → its primary metric (tasks without one are left out)."""
    verdicts: list[PairRow]
    baselines: list[PairRow]
    """Within each model, each setting vs the model's first setting (paired, no verdict)."""

    def task_cells(self, task: str) -> list[CellStats]:
        return [c for c in self.cells if c.task == task]

    @property
    def tasks(self) -> list[str]:
        return list(dict.fromkeys(c.task for c in self.cells))


def _compare(task: str, a: CellStats, b: CellStats, metric: str, params: ReportParams, verdict: bool) -> PairRow:
    x, y = a.aligned(b, metric)
    if x.size == 0:
        return PairRow(task, a, b, metric, None)
    comparison = paired_compare(x, y, params.bootstrap_samples, params.seed, params.confidence)
    if not verdict:
        return PairRow(task, a, b, metric, comparison)
    return PairRow(task, a, b, metric, comparison,
                   "no signal" if _constant(np.concatenate([x, y])) else non_inferiority(comparison.diff, params.margin))


def _constant(values: np.ndarray) -> bool:
    """Every value is the same."""
    return bool(np.all(values == values[0]))


def analyze(cells: list[CellStats], params: ReportParams) -> Analysis:
    """Fill each cell's CIs and compare cells within each task (vs the reference, vs the model's baseline)."""
    for cell in cells:
        if cell.columns:
            cell.intervals = bootstrap_means(cell.columns, params.bootstrap_samples, params.seed, params.confidence)
    analysis = Analysis(params, cells, {}, [], [])
    ref = params.reference
    for task in analysis.tasks:
        group = analysis.task_cells(task)
        metric = params.primary_metric(task, set.intersection(*(set(c.columns) for c in group)))
        if metric is None:
            continue
        analysis.primary[task] = metric
        reference = next((c for c in group if (c.model, c.setting) == (ref.model, ref.setting)), None)
        pairs: set[tuple[str, str]] = set()
        for cell in group:
            if reference is not None and cell is not reference:
                analysis.verdicts.append(_compare(task, cell, reference, metric, params, verdict=True))
                pairs.add((cell.label, reference.label))
            base = next(c for c in group if c.model == cell.model)
            if cell is not base and (cell.label, base.label) not in pairs:
                analysis.baselines.append(_compare(task, cell, base, metric, params, verdict=False))
    return analysis


def pareto_front(costs: Sequence[float], scores: Sequence[float]) -> list[bool]:
    """Which points no other point beats (cost ≤ and score ≥, one of them strictly)."""
    points = list(zip(costs, scores))
    return [not any(c2 <= c and s2 >= s and (c2, s2) != (c, s) for c2, s2 in points) for c, s in points]
