"""The task registry, task definitions' validation, input rendering and the tasks' offline fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REPO
from pydantic import ValidationError

from labscale.metrics import compute_suite
from labscale.tasks import REGISTRY, TaskDef, get_task
from labscale.tasks.base import render_value
from labscale.tasks.fixtures import FIXTURES, SHIPPED, main, make_tool_calls, rows_text

SEED_DATASETS = {  # SEEDS.md, "Tasks, data, metrics"
    "clinical-summary": "beanham/medsum",
    "fact-check": "amandakonet/climate_fever_adopted",
    "entity-match": "isaacOnline/deeds-and-voting-matching",
    "medqa": "lurosenb/medqa",
    "tool-call": "Salesforce/xlam-function-calling-60k",
}


def test_registry_has_every_seed_task_in_seed_order() -> None:
    assert list(REGISTRY) == ["clinical-summary", "fact-check", "entity-match", "civil-comments-bias",
                              "qasper-abstention", "medqa", "partisanship", "topic", "tool-call"]
    assert {name: t.hub_dataset for name, t in REGISTRY.items() if t.hub_dataset} == SEED_DATASETS
    assert get_task("entity-match").labels == ("y", "n")
    assert get_task("entity-match").metric_suite == "binary_classification"
    assert get_task("tool-call").metric_suite == "tool_call"
    with pytest.raises(KeyError, match="did you mean 'tool-call'"):
        get_task("tool-cal")


def test_hub_fields_stay_out_of_the_run_key() -> None:
    dumped = get_task("fact-check").model_dump(mode="json")
    assert "hub_dataset" not in dumped and "hub_columns" not in dumped and "item_keys" not in dumped
    assert TaskDef.model_validate(dumped) == get_task("fact-check").model_copy(update={"hub_dataset": None,
                                                                                        "hub_columns": {}})


BASE = {"name": "t", "kind": "label", "instruction": "Classify.", "input_template": "Text: {text}",
        "target_field": "label", "labels": ["A", "B"], "metric_suite": "classification", "max_new_tokens": 4}


@pytest.mark.parametrize(("change", "message"), [
    ({"input_template": "Text: {text"}, "not a valid template"),
    ({"input_template": "Text: {}"}, "plain field name"),
    ({"input_template": "Text: {row[text]}"}, "plain field name"),
    ({"input_template": "Text: {text!r}"}, "plain field name"),
    ({"input_template": "no fields"}, "names no row field"),
    ({"labels": []}, "needs labels"),
    ({"labels": ["Yes", "YES"]}, "same label up to case"),
    ({"metric_suite": "f1"}, "unknown metric suite 'f1'"),
    ({"metric_suite": "summarization"}, "does not fit kind"),
    ({"kind": "generation"}, "labels are only for kind: label"),
    ({"kind": "generation", "labels": [], "metric_suite": "classification"}, "does not fit kind"),
    ({"input_template": "{text} {label}"}, "is also in input_template"),
    ({"max_new_tokens": 0}, "greater than or equal to 1"),
])
def test_invalid_task_definitions_are_rejected(change: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TaskDef.model_validate({**BASE, **change})


def test_render_value_handles_strings_lists_records_and_messages() -> None:
    assert render_value("  a claim \n") == "a claim"
    assert render_value(3) == "3"
    assert render_value(["one", "two"]) == "one\ntwo"
    records = [{"evidence": "First.", "evidence_label": "SUPPORTS"}, {"evidence": "Second."}]
    assert render_value(records, "evidence") == "First.\nSecond."
    chat = [{"role": "user", "content": "Weather in Paris?"}, {"role": "assistant", "content": "Which unit?"}]
    assert render_value(chat) == "user: Weather in Paris?\nassistant: Which unit?"
    assert render_value({"name": "f", "x": [1]}) == '{"name": "f", "x": [1]}'


def test_a_list_of_records_renders_the_key_named_like_its_field() -> None:
    row = {"claim": "Seas rise.", "evidence": [{"evidence": "Tide gauges show a rise."}, {"evidence": "So do satellites."}]}
    assert get_task("fact-check").render_input(row) == (
        "Claim: Seas rise.\nEvidence: Tide gauges show a rise.\nSo do satellites.")


# ----------------------------------------------------------------------------- fixtures


def test_every_registered_task_has_a_fixture() -> None:
    assert set(FIXTURES) == set(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_fixture_rows_are_deterministic_and_fit_their_task(name: str) -> None:
    task, fixture = get_task(name), FIXTURES[name]
    rows = fixture.make(40, 3)
    assert rows == fixture.make(40, 3) and rows[:10] == fixture.make(10, 3) and rows != fixture.make(40, 4)
    renamed = [{fixture.columns.get(k, k): v for k, v in row.items()} for row in rows]
    inputs = [task.render_input(row) for row in renamed]
    assert len(set(inputs)) >= 38  # prep drops duplicates: a fixture must not lose many rows
    targets = [str(row[task.target_field]) for row in renamed]
    if task.kind == "label":
        assert set(targets) == set(task.labels)  # every label occurs, each exactly as the task spells it
    # The references, scored as predictions, are perfect: parsers and suites agree with the data.
    options = {"bertscore": False} if task.metric_suite == "summarization" else {}
    attributes = [{role: str(row[f]) for role, f in task.attributes.items()} for row in renamed]
    scores, _ = compute_suite(task.metric_suite, targets, targets, task.labels or None, options, attributes=attributes)
    perfect = {"summarization": "rouge1", "tool_call": "exact_match", "qa": "exact_match"}.get(task.metric_suite,
                                                                                            "accuracy")
    assert scores[perfect] == pytest.approx(1.0)


def test_tool_call_fixture_is_shaped_like_xlam() -> None:
    rows = make_tool_calls(6)
    assert all(set(r) == {"id", "query", "tools", "answers"} for r in rows)
    parallel = [json.loads(r["answers"]) for r in rows if len(json.loads(r["answers"])) == 2]
    assert len(parallel) == 2
    for row in rows:
        offered = {t["name"] for t in json.loads(row["tools"])}
        assert {a["name"] for a in json.loads(row["answers"])} <= offered


def test_shipped_fixture_files_are_what_the_generator_writes(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    for name in SHIPPED:
        assert (REPO / "studies" / "data" / name).read_bytes() == (tmp_path / name).read_bytes(), name


def test_rows_text_formats() -> None:
    rows = [{"b": "x, y", "a": 1}]
    assert rows_text(rows, ".jsonl") == '{"a": 1, "b": "x, y"}\n'
    assert rows_text(rows, ".csv") == 'b,a\n"x, y",1\n'
    with pytest.raises(ValueError, match="use .jsonl or .csv"):
        rows_text(rows, ".parquet")
