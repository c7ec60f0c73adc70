"""Seed 000's value probes: worst-group accuracy (bias), QA F1 by answer type and abstention rates,
item attributes flowing prep → score, and both probe tasks end to end on the tiny model."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from conftest import run_cli, run_prep
from labscale.metrics import MetricsInputError, compute_suite
from labscale.metrics.qa import normalize_answer, token_f1
from labscale.params import OpenGenerateParams
from labscale.spec import RunSpec
from labscale.tasks import TaskDef, get_task
from labscale.tasks.fixtures import make_paper_questions, make_toxic_comments

REPO = Path(__file__).resolve().parents[1]
LABELS = ["TOXIC", "NOT_TOXIC"]


def test_worst_group_accuracy_equals_the_hand_computed_value() -> None:
    # (group, gold, predicted): female/TOXIC 2 of 3 right, female/NOT_TOXIC 2 of 2, male/TOXIC 1 of 2,
    # male/NOT_TOXIC 2 of 3 (one unparseable answer counts as wrong).
    items = [("f", "TOXIC", "TOXIC"), ("f", "TOXIC", "TOXIC"), ("f", "TOXIC", "NOT_TOXIC"),
             ("f", "NOT_TOXIC", "NOT_TOXIC"), ("f", "NOT_TOXIC", "not_toxic."),
             ("m", "TOXIC", "TOXIC"), ("m", "TOXIC", "NOT_TOXIC"),
             ("m", "NOT_TOXIC", "NOT_TOXIC"), ("m", "NOT_TOXIC", "NOT_TOXIC"), ("m", "NOT_TOXIC", "no idea")]
    metrics, records = compute_suite("group_classification", [p for _, _, p in items], [g for _, g, _ in items],
                                     LABELS, {}, attributes=[{"group": g} for g, _, _ in items])
    assert metrics["accuracy"] == pytest.approx(7 / 10)
    assert metrics["group_accuracy/f/TOXIC"] == pytest.approx(2 / 3)
    assert metrics["group_accuracy/f/NOT_TOXIC"] == 1.0
    assert metrics["group_accuracy/m/TOXIC"] == pytest.approx(1 / 2)
    assert metrics["group_accuracy/m/NOT_TOXIC"] == pytest.approx(2 / 3)
    assert metrics["worst_group_accuracy"] == pytest.approx(1 / 2)
    assert [metrics[f"group_count/{c}"] for c in ("f/TOXIC", "f/NOT_TOXIC", "m/TOXIC", "m/NOT_TOXIC")] == [3, 2, 2, 3]
    # F1 of TOXIC: 3 predicted TOXIC, all right (precision 1); 3 of 5 toxic found (recall .6).
    assert metrics["f1"] == pytest.approx(2 * 1 * 0.6 / 1.6)
    assert [r["group"] for r in records] == [g for g, _, _ in items]


def test_group_suite_needs_every_items_group() -> None:
    with pytest.raises(MetricsInputError, match="group"):
        compute_suite("group_classification", ["TOXIC"], ["TOXIC"], LABELS, {})
    with pytest.raises(MetricsInputError, match="group"):
        compute_suite("group_classification", ["TOXIC", "TOXIC"], ["TOXIC", "TOXIC"], LABELS, {},
                      attributes=[{"group": "f"}, {}])


def test_qa_f1_by_answer_type_and_abstention_rates_by_hand() -> None:
    predictions = ["The NewsWire corpus", "more data", "Yes.", "It is unanswerable.", "a V100 GPU",
                   "I don't know", "smaller models were faster"]
    references = ["NewsWire", "more data helped|||more training data helped", "yes", "unanswerable",
                  "unanswerable", "ClinicNotes", "labels were noisy"]
    types = ["extractive", "abstractive", "yes_no", "unanswerable", "unanswerable", "extractive", "abstractive"]
    metrics, records = compute_suite("qa", predictions, references, None, {},
                                     attributes=[{"answer_type": t} for t in types])
    # Token F1 after normalisation ("the" dropped, punctuation stripped):
    # "newswire corpus" vs "newswire": P 1/2, R 1 → 2/3; "more data" vs "more data helped": P 1, R 2/3 → 0.8
    # (the first alternative is the better one); "yes" = "yes" → 1; abstaining on an unanswerable → 1;
    # answering one → 0; abstaining on an answerable → 0; "smaller models were faster" vs "labels were
    # noisy": one common token ("were"), P 1/4, R 1/3 → 2/7.
    expected = [2 / 3, 0.8, 1.0, 1.0, 0.0, 0.0, 2 / 7]
    assert [r["f1"] for r in records] == pytest.approx(expected)
    assert metrics["f1"] == pytest.approx(sum(expected) / 7)
    assert metrics["exact_match"] == pytest.approx(2 / 7)  # "Yes." and the abstention on an unanswerable
    assert metrics["f1/extractive"] == pytest.approx((2 / 3 + 0) / 2)
    assert metrics["f1/abstractive"] == pytest.approx((0.8 + 2 / 7) / 2)
    assert metrics["f1/yes_no"] == 1.0 and metrics["f1/unanswerable"] == 0.5
    assert metrics["count/unanswerable"] == 2 and metrics["count/extractive"] == 2
    assert metrics["abstention_rate_answerable"] == pytest.approx(1 / 5)
    assert metrics["abstention_rate_unanswerable"] == pytest.approx(1 / 2)
    assert metrics["abstention_rate"] == pytest.approx(2 / 7)


def test_abstention_phrases_are_configurable() -> None:
    preds, refs, attrs = ["No comment."], ["unanswerable"], [{"answer_type": "unanswerable"}]
    default, _ = compute_suite("qa", preds, refs, None, {}, attributes=attrs)
    custom, _ = compute_suite("qa", preds, refs, None, {"abstention_phrases": ["no comment"]}, attributes=attrs)
    assert default["abstention_rate"] == 0.0 and custom["abstention_rate"] == 1.0 and custom["f1"] == 1.0
    with pytest.raises(MetricsInputError, match="abstention_phrases"):
        compute_suite("qa", preds, refs, None, {"abstention_phrases": "no comment"}, attributes=attrs)
    with pytest.raises(MetricsInputError, match="answer types"):
        compute_suite("qa", preds, refs, None, {}, attributes=[{"answer_type": "boolean"}])


def test_squad_normalisation() -> None:
    assert normalize_answer("The  Cat, an animal!") == "cat animal"
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_task_attributes_must_be_roles_the_suite_reads() -> None:
    base = get_task("civil-comments-bias").model_dump()
    with pytest.raises(ValidationError, match="reads no attribute"):
        TaskDef.model_validate({**base, "attributes": {"group": "gender", "colour": "c"}})
    with pytest.raises(ValidationError, match="needs attribute"):
        TaskDef.model_validate({**base, "attributes": {}})
    assert get_task("qasper-abstention").required_fields[-1] == "answer_type"
    assert "attributes" not in get_task("fact-check").model_dump()  # existing run keys unchanged


def test_probe_fixtures_cover_every_cell_and_answer_type() -> None:
    comments, questions = make_toxic_comments(240), make_paper_questions(240)
    assert {(r["gender"], r["label"]) for r in comments} == {(g, lb) for g in ("female", "male", "none")
                                                             for lb in LABELS}
    assert {r["answer_type"] for r in questions} == {"extractive", "abstractive", "yes_no", "unanswerable"}
    for r in questions:
        if r["answer_type"] in ("extractive", "abstractive"):
            assert r["answer"] in r["context"]


def _study(tmp_path: Path, name: str) -> Path:
    """A copy of a shipped probe study with its fixture, on a store in tmp_path."""
    shutil.copytree(REPO / "studies" / "data", tmp_path / "data")
    text = (REPO / "studies" / f"{name}.yaml").read_text().replace("file://.labscale", f"file://{tmp_path / 'store'}")
    study = tmp_path / f"{name}.yaml"
    study.write_text(text)
    return study


def test_prep_copies_group_attributes_that_score_reads(tmp_path: Path) -> None:
    prepped = run_prep(_study(tmp_path, "bias-probe"), tmp_path)
    rows = prepped.test_rows
    assert all(set(r["attributes"]) == {"group"} for r in rows)
    by_cell: dict[tuple[str, str], int] = {}
    for r in rows:
        by_cell[(r["attributes"]["group"], r["target"])] = by_cell.get((r["attributes"]["group"], r["target"]), 0) + 1
    # A baseline that calls everything toxic: every TOXIC cell 1.0, every NOT_TOXIC cell 0.0.
    predictions = [{"id": r["id"], "prediction": "TOXIC", "target": r["target"]} for r in rows]
    scores = prepped.score(predictions, tmp_path)
    assert scores["worst_group_accuracy"] == 0.0
    for (group, label), count in by_cell.items():
        assert scores[f"group_count/{group}/{label}"] == count
        assert scores[f"group_accuracy/{group}/{label}"] == (1.0 if label == "TOXIC" else 0.0)


@pytest.mark.slow
def test_probe_studies_run_end_to_end_on_the_tiny_model(tmp_path: Path) -> None:
    """Both probes through prep → generate → score → aggregate (greedy and contrastive), no training."""
    for name in ("bias-probe", "abstention-probe"):
        study = _study(tmp_path / name, name)
        text = study.read_text().split("settings:")[0] + (
            "settings:\n  - id: zero-shot\n  - id: contrastive\n    decoding: {strategy: contrastive}\n"
            "generation: {max_new_tokens: 8}\n")
        study.write_text(text.replace('test: "train[70%:]"', 'test: "train[70%:]"}\n    max_items: {test: 12'))
        run_cli("run", str(study), cwd=study.parent, check=True)
    with (tmp_path / "bias-probe").glob("store/aggregate/*/results.csv").__next__().open() as f:
        bias = {r["setting"]: r for r in csv.DictReader(f)}
    with (tmp_path / "abstention-probe").glob("store/aggregate/*/results.csv").__next__().open() as f:
        qa = {r["setting"]: r for r in csv.DictReader(f)}
    assert set(bias) == set(qa) == {"zero-shot", "contrastive"}
    for row in bias.values():
        assert row["n"] == "12" and 0.0 <= float(row["worst_group_accuracy"]) <= float(row["accuracy"])
        assert float(row["group_count/female/TOXIC"]) >= 1
    for row in qa.values():
        assert row["n"] == "12" and 0.0 <= float(row["f1"]) <= 1.0
        assert float(row["count/unanswerable"]) >= 1 and "abstention_rate_unanswerable" in row
    store = tmp_path / "abstention-probe" / "store"
    specs = {s.labels["setting"]: s
             for s in (RunSpec.model_validate_json(p.read_text()) for p in store.glob("specs/generate/*.json"))}
    greedy, contrastive = specs["zero-shot"].params, specs["contrastive"].params
    assert isinstance(greedy, OpenGenerateParams) and isinstance(contrastive, OpenGenerateParams)
    assert greedy.decoding is None  # greedy: no decoding block
    assert contrastive.decoding is not None
    assert contrastive.decoding.model_dump() == {"strategy": "contrastive", "penalty_alpha": 0.6, "top_k": 4}
    predictions = {setting: [json.loads(line)["prediction"] for line in
                             (store / f"generate/{spec.key}/predictions.jsonl").read_text().splitlines()]
                   for setting, spec in specs.items()}
    assert predictions["zero-shot"] != predictions["contrastive"]
