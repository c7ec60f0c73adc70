"""Question answering: SQuAD exact match and token F1, and abstention (Qasper-style unanswerables).

Normalisation is SQuAD v1.1's: lowercase, drop punctuation, drop the articles a/an/the, collapse
whitespace. Several gold answers may be given in one reference separated by `ANSWER_SEPARATOR`
("|||"); an item scores its best match over them.

Abstention: a prediction abstains when its normalised text contains one of the (normalised)
abstention phrases. On an unanswerable question (answer type "unanswerable") abstaining is the
right answer (em = f1 = 1) and any other answer scores 0; on an answerable question an abstaining
prediction is scored like any other text against the gold answer (it almost always scores 0).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

from labscale.metrics.errors import MetricsInputError

ANSWER_SEPARATOR = "|||"
"""Separates alternative gold answers inside one reference."""
UNANSWERABLE = "unanswerable"
"""The answer type of a question the context cannot answer (Qasper's name)."""
ANSWER_TYPES: tuple[str, ...] = ("extractive", "abstractive", "yes_no", UNANSWERABLE)
"""Qasper's answer types."""
DEFAULT_ABSTENTION_PHRASES: tuple[str, ...] = (
    "unanswerable", "cannot be answered", "can't be answered", "not enough information",
    "i don't know", "i do not know", "no answer",
)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lowercase, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD token F1 of the normalised bags of words (1.0 when both are empty)."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(reference: str) -> list[str]:
    """The alternative gold answers of one reference (split on `ANSWER_SEPARATOR`)."""
    return [a.strip() for a in reference.split(ANSWER_SEPARATOR)] or [reference]


def abstains(prediction: str, phrases: Sequence[str]) -> bool:
    """Whether the prediction contains one of the abstention phrases (after normalisation)."""
    text = f" {normalize_answer(prediction)} "
    return any(f" {normalize_answer(p)} " in text for p in phrases)


def _check_phrases(phrases: Any) -> list[str]:
    if (not isinstance(phrases, list) or not phrases
            or not all(isinstance(p, str) and normalize_answer(p) for p in phrases)):
        raise MetricsInputError("metric suite 'qa': option abstention_phrases must be a non-empty list "
                                f"of phrases with at least one word each, not {phrases!r}")
    return phrases


def qa_metrics(
    predictions: list[str], references: list[str], answer_types: list[str] | None = None,
    phrases: Sequence[str] = DEFAULT_ABSTENTION_PHRASES,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Corpus exact_match, f1 and abstention_rate; per item em, f1, abstained (and answer_type).

    With `answer_types` (one per item, from `ANSWER_TYPES`), also f1/<type> and count/<type> per
    type present, abstention_rate_answerable and abstention_rate_unanswerable (each when such
    items exist), and abstaining on an unanswerable item scores em = f1 = 1.
    """
    if answer_types is not None:
        bad = sorted(set(answer_types) - set(ANSWER_TYPES))
        if bad:
            raise MetricsInputError(f"answer types {bad} are not among {list(ANSWER_TYPES)} — fix the task's "
                                    "answer_type field")
    records: list[dict[str, Any]] = []
    for i, (pred, ref) in enumerate(zip(predictions, references)):
        abstained = abstains(pred, phrases)
        kind = answer_types[i] if answer_types is not None else None
        if kind == UNANSWERABLE:
            em = f1 = float(abstained)
        else:
            golds = gold_answers(ref)
            em = max(exact_match(pred, g) for g in golds)
            f1 = max(token_f1(pred, g) for g in golds)
        record: dict[str, Any] = {"em": em, "f1": f1, "abstained": abstained}
        if kind is not None:
            record["answer_type"] = kind
        records.append(record)
    n = len(records)
    corpus = {"exact_match": sum(r["em"] for r in records) / n, "f1": sum(r["f1"] for r in records) / n,
              "abstention_rate": sum(r["abstained"] for r in records) / n}
    if answer_types is not None:
        corpus.update(_by_answer_type(records))
    return corpus, records


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _by_answer_type(records: list[dict[str, Any]]) -> dict[str, float]:
    """f1/<type>, count/<type>, and abstention rates on answerable vs unanswerable items."""
    out: dict[str, float] = {}
    for kind in ANSWER_TYPES:
        group = [r for r in records if r["answer_type"] == kind]
        if group:
            out[f"f1/{kind}"] = _mean([r["f1"] for r in group])
            out[f"count/{kind}"] = float(len(group))
    answerable = [float(r["abstained"]) for r in records if r["answer_type"] != UNANSWERABLE]
    unanswerable = [float(r["abstained"]) for r in records if r["answer_type"] == UNANSWERABLE]
    if answerable:
        out["abstention_rate_answerable"] = _mean(answerable)
    if unanswerable:
        out["abstention_rate_unanswerable"] = _mean(unanswerable)
    return out


def qa_suite_options(options: dict[str, Any]) -> list[str]:
    """The abstention phrases the `qa` suite's options ask for (the defaults when not given)."""
    if "abstention_phrases" not in options:
        return list(DEFAULT_ABSTENTION_PHRASES)
    return _check_phrases(options["abstention_phrases"])
