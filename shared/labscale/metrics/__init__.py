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
- "group_classification" (the bias probe): "binary_classification"'s metrics plus
  worst_group_accuracy (the lowest accuracy over (group, gold label) cells) and
  group_accuracy/<group>/<label>, group_count/<group>/<label>; per item also group. Needs the `group`
  attribute of every item. No options.
- "qa": corpus exact_match, f1 (SQuAD normalisation; "|||" separates alternative gold answers),
  abstention_rate; per item em, f1, abstained. With the `answer_type` attribute (Qasper's
  extractive / abstractive / yes_no / unanswerable) also f1/<type>, count/<type>,
  abstention_rate_answerable, abstention_rate_unanswerable; abstaining on an unanswerable item
  scores 1. Option: abstention_phrases (list; default `labscale.metrics.qa.DEFAULT_ABSTENTION_PHRASES`).

Attributes: a task maps attribute roles to row fields (`TaskDef.attributes`); suites registered with
`attributes=(roles...)` receive one {role: value} dict per item (`compute_suite(attributes=...)`).

Suites registered with `needs_labels=True` (LABEL_SUITES) are the ones label tasks use.

Unknown options raise MetricsInputError (a typo must not silently change what is measured).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.metrics.errors import MetricsInputError, check_pairs
from labscale.metrics.groups import group_metrics
from labscale.metrics.labels import ParsedLabel, check_labels, label_metrics, parse_label
from labscale.metrics.qa import qa_metrics, qa_suite_options
from labscale.metrics.text import bertscore, bleu, default_bertscore_model, rouge
from labscale.metrics.tool_calls import ParsedCalls, ToolCall, parse_tool_calls, tool_call_metrics

SuiteResult = tuple[dict[str, float], list[dict[str, Any]]]
SuiteFn = Callable[[list[str], list[str], "Sequence[str] | None", dict[str, Any]], SuiteResult]

PRIMARY_METRIC: dict[str, str] = {"summarization": "rougeL", "classification": "accuracy",
                                  "binary_classification": "accuracy", "group_classification": "accuracy",
                                  "tool_call": "exact_match", "qa": "f1"}
"""Metric suite → the metric (a mean of per-item values) a task's verdicts are decided on and a
compiled prompt is chosen by."""

SUITES: dict[str, SuiteFn] = {}
LABEL_SUITES: set[str] = set()
"""Suites that parse outputs into the task's labels (what a `kind: label` task must use)."""
SUITE_ATTRIBUTES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
"""Suite → (attribute roles it reads, roles it requires); such a suite takes `attributes=` too."""


def register_suite(name: str, needs_labels: bool = False, attributes: tuple[str, ...] = (),
                   requires: tuple[str, ...] = ()) -> Callable[[SuiteFn], SuiteFn]:
    """Decorator: register `fn(predictions, references, labels, options)` as suite `name`; with
    `attributes` (roles it reads, `requires` of them mandatory) it is also passed `attributes=`."""

    def deco(fn: SuiteFn) -> SuiteFn:
        if name in SUITES:
            raise ValueError(f"metric suite {name!r} is already registered")
        SUITES[name] = fn
        if needs_labels:
            LABEL_SUITES.add(name)
        if attributes:
            SUITE_ATTRIBUTES[name] = (attributes, requires)
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


@register_suite("group_classification", needs_labels=True, attributes=("group",), requires=("group",))
def _group_classification(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any],
    attributes: list[dict[str, str]],
) -> SuiteResult:
    """As "binary_classification", plus worst-group accuracy and accuracy/count per (group, label)."""
    positive = labels[0] if labels else None
    corpus, records = _label_suite("group_classification", predictions, references, labels, options, positive)
    groups = [a["group"] for a in attributes]
    corpus.update(group_metrics([r["correct"] for r in records], references, groups))
    for record, group in zip(records, groups):
        record["group"] = group
    return corpus, records


@register_suite("tool_call")
def _tool_call(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any]
) -> SuiteResult:
    """Function name / argument / exact match of JSON (or Python-syntax) function calls."""
    _check_options("tool_call", options, set())
    return tool_call_metrics(predictions, references)


@register_suite("qa", attributes=("answer_type",))
def _qa(
    predictions: list[str], references: list[str], labels: Sequence[str] | None, options: dict[str, Any],
    attributes: list[dict[str, str]],
) -> SuiteResult:
    """SQuAD exact match / token F1, with abstention metrics by answer type."""
    _check_options("qa", options, {"abstention_phrases"})
    typed = sum("answer_type" in a for a in attributes)
    if 0 < typed < len(attributes):
        raise MetricsInputError("metric suite 'qa': some items lack the answer_type attribute")
    types = [a["answer_type"] for a in attributes] if typed else None
    return qa_metrics(predictions, references, types, qa_suite_options(options))


def compute_suite(
    suite: str,
    predictions: list[str],
    references: list[str],
    labels: Sequence[str] | None = None,
    options: dict | None = None,
    attributes: Sequence[dict[str, str]] | None = None,
) -> tuple[dict[str, float], list[dict]]:
    """Run metric suite `suite`: (corpus metrics, per-item records in prediction order).

    `attributes`: one {role: value} dict per item (suites that read none ignore them).
    Raises KeyError for an unknown suite, MetricsInputError (a ValueError) for bad inputs/options.
    """
    try:
        fn = SUITES[suite]
    except KeyError:
        raise KeyError(f"unknown metric suite {suite!r}; known suites: {sorted(SUITES)}") from None
    check_pairs(predictions, references)
    if suite not in SUITE_ATTRIBUTES:
        return fn(list(predictions), list(references), labels, dict(options or {}))
    items = [dict(a) for a in attributes] if attributes is not None else [{} for _ in predictions]
    if len(items) != len(predictions):
        raise MetricsInputError(f"{len(items)} attribute records for {len(predictions)} predictions: must be equal")
    missing = [role for role in SUITE_ATTRIBUTES[suite][1] if any(role not in a for a in items)]
    if missing:
        raise MetricsInputError(f"metric suite {suite!r} needs the {missing} attribute(s) of every item — "
                                "map them to row fields in the task's attributes")
    return fn(list(predictions), list(references), labels, dict(options or {}), attributes=items)


__all__ = [
    "LABEL_SUITES",
    "SUITES",
    "SUITE_ATTRIBUTES",
    "MetricsInputError",
    "ParsedCalls",
    "ParsedLabel",
    "ToolCall",
    "bertscore",
    "bleu",
    "check_labels",
    "compute_suite",
    "default_bertscore_model",
    "group_metrics",
    "label_metrics",
    "parse_label",
    "parse_tool_calls",
    "qa_metrics",
    "register_suite",
    "rouge",
    "tool_call_metrics",
]
