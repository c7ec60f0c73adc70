"""The results' "Privacy" table: each audited or DP-trained cell's ε spent and memorisation numbers,
read from its train run's metrics (see labscale.privacy, labscale.models.dp_training)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

PRIVACY_COLUMNS = ("epsilon", "delta", "noise_multiplier", "max_grad_norm", "mia_auc", "mia_advantage",
                   "canary_exposure", "canary_exposure_max")
"""Train-run metrics the table shows (a non-DP cell has no ε: it is left blank)."""


def privacy_rows(cells: list[dict[str, Any]], train_metrics: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per cell whose train run reported privacy numbers (`train_metrics`: prefix → metrics)."""
    rows = []
    for cell in cells:
        metrics = train_metrics(cell["train"]) if cell.get("train") else {}
        found = {c: metrics[c] for c in PRIVACY_COLUMNS if c in metrics}
        if found:
            rows.append({**{k: cell[k] for k in ("task", "model", "setting")}, **found})
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """The "Privacy" section of results.md ('' without rows)."""
    import pandas as pd

    if not rows:
        return ""
    shown = [c for c in PRIVACY_COLUMNS if any(c in row for row in rows)]
    frame = pd.DataFrame(rows, columns=["task", "model", "setting", *shown])
    table = frame.astype(object).where(frame.notna(), None).to_markdown(index=False, floatfmt=".4g", missingval="-")
    return ("\n## Privacy\n\nε spent (DP-SGD, at δ); membership-inference ROC AUC (0.5 = no leak) and "
            f"advantage; mean canary exposure in bits (of at most canary_exposure_max).\n\n{table}\n")
