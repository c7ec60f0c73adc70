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
- "binary_classification": "classification" plus precision, recall, f1 of the positive label, which
  is the FIRST of `labels` (entity matching: "y" of y / n, as seed 000 reports).
- "tool_call": corpus exact_match, name_accuracy, arg_precision, arg_recall, arg_f1 (micro over
  (function, argument, value) triples), valid_rate (the output is JSON of the call), resolvable_rate,
  unresolvable_rate; per item status, exact_match, name_match, arg_precision, arg_recall, arg_f1.
  References are JSON calls (see `labscale.metrics.tool_calls`). No options.

Suites registered with `needs_labels=True` (LABEL_SUITES) are the ones label tasks use.

Unknown options raise MetricsInputError (a typo must not silently change what is measured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.metrics.errors import MetricsInputError, check_pairs
from labscale.metrics.labels import ParsedLabel, check_labels, label_metrics, parse_label
from labscale.metrics.text import bertscore, bleu, default_bertscore_model, rouge
from labscale.metrics.tool_calls import ParsedCalls, ToolCall, parse_tool_calls, tool_call_metrics

SuiteResult = tuple[dict[str, float], list[dict[str, Any]]]
SuiteFn = Callable[[list[str], list[str], "Sequence[str] | None", dict[str, Any]], SuiteResult]

PRIMARY_METRIC: dict[str, str] = {"summarization": "rougeL", "classification": "accuracy",
                                  "binary_classification": "accuracy", "tool_call": "exact_match"}
"""Metric suite → the metric (a mean of per-item values) a task's verdicts are decided on and a
compiled prompt is chosen by."""

SUITES: dict[str, SuiteFn] = {}
LABEL_SUITES: set[str] = set()
"""Suites that parse outputs into the task's labels (what a `kind: label` task must use)."""


def register_suite(name: str, needs_labels: bool = False) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: register `fn(predictions, references, labels, options)` as suite `name`."""

    def deco(fn: SuiteFn) -> SuiteFn:
        if name in SUITES:
            raise ValueError(f"metric suite {name!r} is already registered")
        SUITES[name] = fn
        if needs_labels:
            LABEL_SUITES.add(name)
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


def _label_suite(
    suite: str, predictions: list[str], references: list[str], labels: Sequence[str] | None,
    options: dict[str, Any], positive: str | None = None,
) -> SuiteResult:
    """Parse each output into a label, then the label metrics (binary ones too with `positive`)."""
    _check_options(suite, options, set())
    if not labels:
        raise MetricsInputError(f"metric suite {suite!r} needs the task's labels")
    parsed = [parse_label(p, labels) for p in predictions]
    predicted = [p.label for p in parsed]
    statuses = [p.status for p in parsed]
    corpus = label_metrics(predicted, references, labels, statuses, positive=positive)
    records = [
        {"parsed_label": p.label, "status": p.status, "correct": p.label is not None and p.label == g}
        for p, g in zip(parsed, references)
    ]
    return corpus, records


@register_suite("classification", needs_labels=True)
def _classification(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """Accuracy / macro & weighted F1 / parse-status rates."""
    return _label_suite("classification", predictions, references, labels, options)


@register_suite("binary_classification", needs_labels=True)
def _binary_classification(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """As "classification", plus P / R / F1 of the positive label (the first of `labels`)."""
    positive = labels[0] if labels else None
    return _label_suite("binary_classification", predictions, references, labels, options, positive)


@register_suite("tool_call")
def _tool_call(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """Function name / argument / exact match of JSON (or Python-syntax) function calls."""
    _check_options("tool_call", options, set())
    return tool_call_metrics(predictions, references)


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
    "LABEL_SUITES",
    "SUITES",
    "MetricsInputError",
    "ParsedCalls",
    "ParsedLabel",
    "ToolCall",
    "bertscore",
    "bleu",
    "check_labels",
    "compute_suite",
    "default_bertscore_model",
    "label_metrics",
    "parse_label",
    "parse_tool_calls",
    "register_suite",
    "rouge",
    "tool_call_metrics",
]
