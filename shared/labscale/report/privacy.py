"""The report's "Privacy" section: each audited or DP-trained cell's ε spent and memorisation numbers,
read from its train run's metrics (see labscale.training.audit and labscale.training.dp_sgd)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.params import Cell
from labscale.report.runs import TrainMetrics
from labscale.report.sections import TableSection
from labscale.report.tables import Table

PRIVACY_COLUMNS = ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "mia_auc", "mia_advantage",
                   "canary_exposure", "canary_exposure_max")
"""Train-run metrics the table shows (a non-DP cell has no ε: it is left blank)."""
LABELS = ("task", "model", "setting")
NOTE = ("ε spent (DP-SGD, at δ); membership-inference ROC AUC (0.5 = no leak) and advantage; mean canary "
        "exposure in bits (of at most canary_exposure_max).")


def privacy_rows(cells: Sequence[Cell], train_metrics: Callable[[str], TrainMetrics]) -> list[dict[str, Any]]:
    """One row per cell whose train run reported privacy numbers (`train_metrics`: prefix → its metrics)."""
    rows = []
    for cell in cells:
        metrics = train_metrics(cell.train) if cell.train else None
        found = metrics.model_dump(include=set(PRIVACY_COLUMNS), exclude_none=True) if metrics else {}
        if found:
            rows.append({"task": cell.task, "model": cell.model, "setting": cell.setting,
                         **{c: found[c] for c in PRIVACY_COLUMNS if c in found}})
    return rows


def privacy_section(rows: Sequence[dict[str, Any]]) -> TableSection:
    """The rows' labels and the privacy columns any of them has (empty for a study without audits)."""
    shown = [c for c in PRIVACY_COLUMNS if any(c in row for row in rows)]
    cells = [[row.get(c) for c in (*LABELS, *shown)] for row in rows]
    return TableSection("Privacy", Table([*LABELS, *shown], cells, left=3, blank="-"), NOTE, "privacy")
