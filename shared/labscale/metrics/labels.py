"""Label tasks: parse a free-text model output into one of the task's labels, and score the labels.

Parsing statuses:
- "valid": the output, stripped of surrounding whitespace and trailing punctuation, equals one label
  exactly (case-insensitive), e.g. "No." for labels yes/no. Separator variants do not count as
  exact: "not enough info" for NOT_ENOUGH_INFO is "resolvable".
- "resolvable": not exact, but exactly one distinct label is mentioned as a whole word/phrase
  (case-insensitive; in a label, "_", "-" and spaces match any run of those, so NOT_ENOUGH_INFO
  matches "not enough info"). If the output has "Answer:" (case-insensitive), the text after the
  LAST "Answer:" is looked at first (chain-of-thought ends with "Answer: X"); the whole output is
  the fallback when that part mentions no label. Overlapping mentions keep the longest, so
  "not entailment" is NOT_ENTAILMENT only, not also ENTAILMENT.
- "unresolvable": no label, or several distinct labels, are mentioned; the label is None.
Known limit: negation is not understood ("it is not SUPPORTS" resolves to SUPPORTS).
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from labscale.metrics.errors import MetricsInputError

STATUSES: tuple[str, ...] = ("valid", "resolvable", "unresolvable")
_TRAILING = string.punctuation.replace("_", "") + string.whitespace
_SEP = r"[\s_\-]+"
ANSWER_MARKER = re.compile(r"\banswer\s*:", re.IGNORECASE)
"""Where a chain of thought gives its final answer (the text after the last one is parsed)."""


@dataclass(frozen=True)
class ParsedLabel:
    """A parsed model output: the canonical label (None when unresolvable) and how it was found."""

    label: str | None
    status: str


def label_key(label: str) -> str:
    """Case- and separator-insensitive form of a label, to detect duplicates."""
    return " ".join(re.split(_SEP, label.strip().casefold()))


def check_labels(labels: Sequence[str]) -> None:
    """Raise MetricsInputError unless `labels` are non-empty strings, distinct up to case/separators."""
    _patterns(tuple(labels))


@functools.lru_cache(maxsize=64)
def _patterns(labels: tuple[str, ...]) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """Validate labels and compile one whole-word pattern per label."""
    if not labels:
        raise MetricsInputError("no labels given: a label task needs at least one label")
    seen: dict[str, str] = {}
    out = []
    for label in labels:
        if not isinstance(label, str) or not label.strip():
            raise MetricsInputError(f"label {label!r} is not a non-empty string")
        key = label_key(label)
        if key in seen:
            raise MetricsInputError(
                f"labels {seen[key]!r} and {label!r} are the same label up to case/separators"
            )
        seen[key] = label
        parts = [re.escape(p) for p in re.split(_SEP, label.strip()) if p]
        out.append((label, re.compile(r"(?<!\w)" + _SEP.join(parts) + r"(?!\w)", re.IGNORECASE)))
    return tuple(out)


def _mentioned(text: str, patterns: tuple[tuple[str, re.Pattern[str]], ...]) -> set[str]:
    """Distinct labels mentioned in text; among overlapping mentions the longest wins."""
    matches = [(m.start(), m.end(), label) for label, pat in patterns for m in pat.finditer(text)]
    matches.sort(key=lambda m: (m[0] - m[1], m[0]))  # longest first
    taken: list[tuple[int, int]] = []
    found: set[str] = set()
    for start, end, label in matches:
        if any(start < t_end and t_start < end for t_start, t_end in taken):
            continue
        taken.append((start, end))
        found.add(label)
    return found


def parse_label(text: str, labels: Sequence[str]) -> ParsedLabel:
    """Map a model output to one of `labels` with a status: valid / resolvable / unresolvable."""
    patterns = _patterns(tuple(labels))
    core = text.strip().rstrip(_TRAILING)
    for label, _ in patterns:
        if core.casefold() == label.strip().casefold():
            return ParsedLabel(label, "valid")
    answers = list(ANSWER_MARKER.finditer(text))
    candidates = [text[answers[-1].end():]] if answers else []
    candidates.append(text)
    for part in candidates:
        found = _mentioned(part, patterns)
        if len(found) == 1:
            return ParsedLabel(found.pop(), "resolvable")
        if len(found) > 1:
            break
    return ParsedLabel(None, "unresolvable")


def used_labels(predicted: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The task labels (in task order) that occur in `gold` or `predicted`: what macro averages are
    over (scikit-learn's default, the sorted union of y_true and y_pred, without the None of an
    unresolvable output)."""
    present = set(gold) | {p for p in predicted if p is not None}
    return [label for label in labels if label in present]


def label_metrics(
    predicted: list[str | None],
    gold: list[str],
    labels: Sequence[str],
    statuses: list[str],
    positive: str | None = None,
) -> dict[str, float]:
    """Accuracy, macro P/R/F1, weighted F1 (sklearn, zero_division=0) and the parse-status rates.

    A None prediction counts as wrong (a false negative for its gold label, a false positive for no
    label). Macro/weighted averages follow scikit-learn's convention: over the task labels present in
    `gold` or `predicted` (`used_labels`), so a label the test split never holds and the model never
    answers does not score a 0 that would pull the macro average down. Keys: accuracy, precision_macro,
    recall_macro, f1_macro, f1_weighted, valid_rate, resolvable_rate, unresolvable_rate (the three
    rates sum to 1). With `positive` (one of `labels`), also precision, recall and f1 of that label
    alone (binary tasks such as entity matching report the positive class).
    """
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels = list(labels)
    if positive is not None and positive not in labels:
        raise MetricsInputError(f"positive label {positive!r} is not among the task labels {labels}")
    _patterns(tuple(labels))  # validates the labels
    n = len(gold)
    if not (len(predicted) == n == len(statuses)):
        raise MetricsInputError(
            f"{len(predicted)} predictions, {n} gold labels and {len(statuses)} statuses: must be equal"
        )
    if n == 0:
        raise MetricsInputError("no items to score")
    allowed = set(labels)
    for name, seq in (("gold", gold), ("predicted", predicted)):
        bad = sorted({str(x) for x in seq if x is not None and x not in allowed})
        if bad:
            raise MetricsInputError(f"{name} labels {bad} are not among the task labels {labels}")
    bad_status = sorted({str(s) for s in statuses if s not in STATUSES})
    if bad_status:
        raise MetricsInputError(f"unknown statuses {bad_status}; expected one of {list(STATUSES)}")

    sentinel = "<unresolvable>"
    while sentinel in allowed:
        sentinel = f"<{sentinel}>"
    y_pred = [sentinel if p is None else p for p in predicted]
    used = used_labels(predicted, gold, labels)
    p_mac, r_mac, f_mac, _ = precision_recall_fscore_support(
        gold, y_pred, labels=used, average="macro", zero_division=0
    )
    _, _, f_w, _ = precision_recall_fscore_support(
        gold, y_pred, labels=used, average="weighted", zero_division=0
    )
    binary: dict[str, float] = {}
    if positive is not None:
        p_pos, r_pos, f_pos, _ = precision_recall_fscore_support(
            gold, y_pred, labels=[positive], average=None, zero_division=0
        )
        binary = {"precision": float(p_pos[0]), "recall": float(r_pos[0]), "f1": float(f_pos[0])}
    return {
        **binary,
        "accuracy": float(accuracy_score(gold, y_pred)),
        "precision_macro": float(p_mac),
        "recall_macro": float(r_mac),
        "f1_macro": float(f_mac),
        "f1_weighted": float(f_w),
        **{f"{s}_rate": statuses.count(s) / n for s in STATUSES},
    }
