"""Group fairness metrics for label tasks (the bias probe, seed 000 on CivilComments).

Items are split into cells by (group, gold label) — e.g. (female, TOXIC) — as in the group-DRO
literature; worst-group accuracy is the lowest accuracy over the cells that have items. Each cell's
accuracy and count are reported too, so a reader sees how small the worst cell is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from labscale.metrics.errors import MetricsInputError


def group_metrics(correct: Sequence[bool], gold: Sequence[str], groups: Sequence[str]) -> dict[str, float]:
    """worst_group_accuracy, plus group_accuracy/<group>/<label> and group_count/<group>/<label>
    for every (group, gold label) cell that has items."""
    if not (len(correct) == len(gold) == len(groups)):
        raise MetricsInputError(f"{len(correct)} scores, {len(gold)} gold labels and {len(groups)} groups: "
                                "must be equal")
    if not correct:
        raise MetricsInputError("no items to score")
    cells: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for ok, label, group in zip(correct, gold, groups):
        cells[(str(group), label)].append(bool(ok))
    out: dict[str, float] = {}
    for (group, label), hits in sorted(cells.items()):
        out[f"group_accuracy/{group}/{label}"] = sum(hits) / len(hits)
        out[f"group_count/{group}/{label}"] = float(len(hits))
    out["worst_group_accuracy"] = min(sum(h) / len(h) for h in cells.values())
    return out
