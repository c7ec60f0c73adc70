"""Metric suites: a task names one (`TaskDef.metric_suite`); `compute_suite` runs it.

Each suite returns (corpus metrics {name: float}, per-item records [dict], one per prediction).

- "summarization": corpus rouge1, rouge2, rougeL, rougeLsum, bleu (0-100), bertscore_precision,
  bertscore_recall, bertscore_f1; per item rouge1, rouge2, rougeL, rougeLsum, bertscore_f1.
  Options: bertscore (bool, default true; false skips it and its keys), bertscore_model (model
  id/path; default the offline MiniLM), bertscore_num_layers (default 6), bertscore_batch_size
  (default 32).
- "classification": corpus accuracy, precision_macro, recall_macro, f1_macro, f1_weighted,
  valid_rate, resolvable_rate, unresolvable_rate; per item parsed_label (str | None), status,
  correct (bool). Needs `labels`; references are the gold labels. No options.

Unknown options raise MetricsInputError (a typo must not silently change what is measured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.metrics.errors import MetricsInputError, check_pairs
from labscale.metrics.labels import ParsedLabel, label_metrics, parse_label
from labscale.metrics.text import bertscore, bleu, default_bertscore_model, rouge

SuiteResult = tuple[dict[str, float], list[dict[str, Any]]]
SuiteFn = Callable[[list[str], list[str], "Sequence[str] | None", dict[str, Any]], SuiteResult]

SUITES: dict[str, SuiteFn] = {}


def register_suite(name: str) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: register `fn(predictions, references, labels, options)` as suite `name`."""

    def deco(fn: SuiteFn) -> SuiteFn:
        if name in SUITES:
            raise ValueError(f"metric suite {name!r} is already registered")
        SUITES[name] = fn
        return fn

    return deco


def _check_options(suite: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise MetricsInputError(
            f"metric suite {suite!r}: unknown options {unknown}; allowed: {sorted(allowed) or 'none'}"
        )


@register_suite("summarization")
def _summarization(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """ROUGE + BLEU + (optionally) BERTScore."""
    _check_options(
        "summarization",
        options,
        {"bertscore", "bertscore_model", "bertscore_num_layers", "bertscore_batch_size"},
    )
    use_bertscore = options.get("bertscore", True)
    if not isinstance(use_bertscore, bool):
        raise MetricsInputError(
            f"metric suite 'summarization': option bertscore must be true or false, not {use_bertscore!r}"
        )
    corpus, items = rouge(predictions, references)
    records: list[dict[str, Any]] = [dict(item) for item in items]
    corpus["bleu"] = bleu(predictions, references)
    if use_bertscore:
        means, f1 = bertscore(
            predictions,
            references,
            model_type=options.get("bertscore_model"),
            num_layers=int(options.get("bertscore_num_layers", 6)),
            batch_size=int(options.get("bertscore_batch_size", 32)),
        )
        corpus.update(means)
        for rec, f in zip(records, f1):
            rec["bertscore_f1"] = f
    return corpus, records


@register_suite("classification")
def _classification(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """Parse each output into a label, then accuracy / macro & weighted F1 / parse-status rates."""
    _check_options("classification", options, set())
    if not labels:
        raise MetricsInputError("metric suite 'classification' needs the task's labels")
    parsed = [parse_label(p, labels) for p in predictions]
    predicted = [p.label for p in parsed]
    statuses = [p.status for p in parsed]
    corpus = label_metrics(predicted, references, labels, statuses)
    records = [
        {"parsed_label": p.label, "status": p.status, "correct": p.label is not None and p.label == g}
        for p, g in zip(parsed, references)
    ]
    return corpus, records


def compute_suite(
    suite: str,
    predictions: list[str],
    references: list[str],
    labels: Sequence[str] | None = None,
    options: dict | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Run metric suite `suite`: (corpus metrics, per-item records in prediction order).

    Raises KeyError for an unknown suite, MetricsInputError (a ValueError) for bad inputs/options.
    """
    try:
        fn = SUITES[suite]
    except KeyError:
        raise KeyError(f"unknown metric suite {suite!r}; known suites: {sorted(SUITES)}") from None
    check_pairs(predictions, references)
    return fn(list(predictions), list(references), labels, dict(options or {}))


__all__ = [
    "SUITES",
    "MetricsInputError",
    "ParsedLabel",
    "bertscore",
    "bleu",
    "compute_suite",
    "default_bertscore_model",
    "label_metrics",
    "parse_label",
    "register_suite",
    "rouge",
]
