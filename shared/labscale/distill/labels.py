"""Teacher predictions → training labels."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labscale.metrics.labels import parse_label


@dataclass(frozen=True)
class TeacherLabels:
    """The rows a teacher labelled: item id → its label index (items it gave no label are left out)."""

    by_id: dict[str, int]
    unparsed: int
    """Answers that named no single label (unresolvable): those items are not trained on."""


def teacher_labels(predictions: Sequence[dict], labels: Sequence[str]) -> TeacherLabels:
    """Parse each teacher answer (generate's predictions.jsonl rows) into one of `labels`."""
    index = {label: i for i, label in enumerate(labels)}
    by_id: dict[str, int] = {}
    for row in predictions:
        parsed = parse_label(row["prediction"], labels).label
        if parsed is not None:
            by_id[row["id"]] = index[parsed]
    return TeacherLabels(by_id, len(predictions) - len(by_id))
