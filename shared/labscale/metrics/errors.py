"""Metric input errors: bad input (exit code 2, never retried) that is also a plain ValueError."""

from __future__ import annotations

from labscale.errors import BadInputError


class MetricsInputError(BadInputError, ValueError):
    """Inputs a metric cannot score: mismatched lengths, no items, unknown labels or options."""


def check_pairs(predictions: list[str], references: list[str]) -> None:
    """Raise MetricsInputError unless predictions/references are equally long, non-empty lists of str."""
    if len(predictions) != len(references):
        raise MetricsInputError(
            f"{len(predictions)} predictions but {len(references)} references: they must pair up one to one"
        )
    if not predictions:
        raise MetricsInputError("no items to score: predictions and references are empty")
    for name, seq in (("prediction", predictions), ("reference", references)):
        for i, x in enumerate(seq):
            if not isinstance(x, str):
                raise MetricsInputError(f"{name} {i} is {type(x).__name__}, not str")
