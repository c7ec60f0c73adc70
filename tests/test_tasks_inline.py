"""Tasks defined in a study's YAML (`tasks[].define`): validated like the rest, planned like registered ones."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from conftest import run_cli

from labscale.config import load_study
from labscale.config.study import resolve_task
from labscale.plan import build_plan
from labscale.tasks import get_task
from labscale.tasks.fixtures import write_fixture

STUDY = """\
name: inline
store: file://{store}
tasks:
  - id: stance
    define:
      kind: label
      instruction: "Which party does the text support? Answer DEMOCRAT, REPUBLICAN or NEUTRAL."
      input_template: "Text: {{text}}"
      target_field: partisanship
      labels: [DEMOCRAT, REPUBLICAN, NEUTRAL]
      metric_suite: classification
      max_new_tokens: 8
    source: {{files: {{train: texts.csv}}}}
    splits: {{train: "train[:75%]", test: "train[75%:]"}}
  - id: topic-short
    task: topic
    define: {{labels: [ECONOMY, HEALTHCARE, IMMIGRATION, ENVIRONMENT, EDUCATION, CRIME, OTHER], max_new_tokens: 4}}
    columns: {{topic: label}}
    source: {{files: {{train: texts.csv}}}}
    splits: {{train: "train[:75%]", test: "train[75%:]"}}
models:
  - {{id: tiny, path: tiny-llama, build: tiny-llama}}
settings:
  - id: zero-shot
"""


def write_study(tmp_path: Path, text: str | None = None) -> Path:
    write_fixture("partisanship", tmp_path / "texts.csv")
    study = tmp_path / "study.yaml"
    study.write_text(text if text is not None else STUDY.format(store=tmp_path / "store"))
    return study


def test_an_inline_task_validates_and_plans(tmp_path: Path) -> None:
    loaded = load_study(write_study(tmp_path))
    stance, topic = (resolve_task(t) for t in loaded.study.tasks)
    assert stance.name == "stance" and stance.labels == ("DEMOCRAT", "REPUBLICAN", "NEUTRAL")
    assert stance.required_fields == ["text", "partisanship"]
    # next to `task:`, define replaces only the fields it sets
    assert topic.name == "topic" and topic.labels[-1] == "OTHER" and topic.max_new_tokens == 4
    assert topic.instruction == get_task("topic").instruction
    plan = build_plan(loaded)
    preps = {r.labels["task"]: r for r in plan.runs if r.stage == "prep"}
    assert preps["stance"].params.task.target_field == "partisanship"
    scores = {r.labels["task"]: r for r in plan.runs if r.stage == "score"}
    assert scores["stance"].params.suite == "classification"
    assert scores["topic-short"].params.labels[-1] == "OTHER"
    gens = {r.labels["task"]: r for r in plan.runs if r.stage == "generate"}
    assert gens["topic-short"].params.max_new_tokens == 4


def test_overriding_a_registered_task_rekeys_its_runs(tmp_path: Path) -> None:
    text = STUDY.format(store=tmp_path / "store")
    base = build_plan(load_study(write_study(tmp_path, text)))
    again = build_plan(load_study(write_study(tmp_path, text.replace("max_new_tokens: 4}", "max_new_tokens: 5}"))))
    keys = {(r.stage, r.labels.get("task")): r.key for r in base.runs}
    changed = {(r.stage, r.labels.get("task")) for r in again.runs if keys.get((r.stage, r.labels.get("task"))) != r.key}
    assert changed == {("prep", "topic-short"), ("generate", "topic-short"), ("score", "topic-short"),
                       ("aggregate", None)}


TOPIC_DEFINE = ("    define: {labels: [ECONOMY, HEALTHCARE, IMMIGRATION, ENVIRONMENT, EDUCATION, CRIME, OTHER], "
                "max_new_tokens: 4}\n")
# (name, replace-this, with-this, expected fragments of the one-line error)
CASES = [
    ("kind-typo", "      kind: label\n", "      kind: lable\n", ["tasks[0].define.kind", ":6:", "'generation' or 'label'",
                                                                   "use one of the allowed values"]),
    ("no-labels", "      labels: [DEMOCRAT, REPUBLICAN, NEUTRAL]\n", "", ["tasks[0].define", ":5:",
                                                                            "a label task needs labels", "labels: [A, B]"]),
    ("unknown-suite", "metric_suite: classification", "metric_suite: f1",
     ["tasks[0].define.metric_suite", ":11:", "unknown metric suite 'f1'",
      "fix: use one of: binary_classification, classification, group_classification, qa, summarization, tool_call"]),
    ("suite-misfit", "metric_suite: classification", "metric_suite: summarization",
     ["tasks[0].define", "does not fit kind 'label'", "fix: use one of: binary_classification, classification"]),
    ("missing-instruction", '      instruction: "Which party does the text support? Answer DEMOCRAT, REPUBLICAN or '
     'NEUTRAL."\n', "", ["tasks[0].define.instruction", "Field required", "add it"]),
    ("bad-template", 'input_template: "Text: {text}"', 'input_template: "Text: {text"',
     ["tasks[0].define.input_template", ":8:", "not a valid template", "literal braces as {{ }}"]),
    ("template-field-not-in-data", 'input_template: "Text: {text}"', 'input_template: "Text: {body}"',
     ["tasks[0].source.files.train", "lacks column(s) body", "tasks[].columns"]),
    ("answer-in-input", 'input_template: "Text: {text}"', 'input_template: "{text} ({partisanship})"',
     ["tasks[0].define", "target_field 'partisanship' is also in input_template",
      "fix: remove {partisanship} from input_template"]),
    ("duplicate-labels", "labels: [DEMOCRAT, REPUBLICAN, NEUTRAL]", "labels: [DEMOCRAT, Democrat]",
     ["tasks[0].define.labels", "same label up to case", "give each label once"]),
    ("zero-tokens", "max_new_tokens: 8", "max_new_tokens: 0",
     ["tasks[0].define.max_new_tokens", "greater than or equal to 1"]),
    ("unknown-field", "      max_new_tokens: 8\n", "      max_new_tokens: 8\n      lables: [A]\n",
     ["tasks[0].define.lables", "Extra inputs are not permitted", "remove it or correct its spelling"]),
    ("labels-not-a-list", "labels: [DEMOCRAT, REPUBLICAN, NEUTRAL]", "labels: DEMOCRAT",
     ["tasks[0].define.labels", "valid list", "give a list"]),
    ("neither-task-nor-define", "    task: topic\n" + TOPIC_DEFINE, "", ["tasks[1].task", "Field required", "add it"]),
    ("override-unknown-task", "    task: topic\n", "    task: topics\n",
     ["tasks[1].task", "unknown task 'topics' (did you mean 'topic'?)", "use one of: clinical-summary, fact-check"]),
]


@pytest.mark.parametrize(("name", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_inline_task_one_line_exit_2(tmp_path: Path, name: str, old: str, new: str,
                                                expected: list[str]) -> None:
    base = STUDY.format(store=tmp_path / "store")
    assert old in base, f"case {name}: {old!r} not in the base study"
    study = write_study(tmp_path, base.replace(old, new, 1))
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"labscale: error: {study}:"), result.stderr
    for fragment in [*expected, "— fix:"]:
        assert fragment in lines[0], (fragment, lines[0])
    assert not (tmp_path / "store").exists()


def test_a_hub_source_needs_the_tasks_column_mapping(tmp_path: Path) -> None:
    study = write_study(tmp_path, f"""\
name: hub
store: file://{tmp_path / 'store'}
tasks:
  - id: climate
    task: fact-check
    source: {{hf: amandakonet/climate_fever_adopted}}
    splits: {{train: train, test: test}}
models: [{{id: m, path: org/model}}]
settings: [{{id: zero-shot}}]
""")
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"labscale: error: {study}:6: tasks[0].source.hf: amandakonet/climate_fever_adopted names the task's "
        "fields differently — fix: add columns: {label: nli_label, evidence_label: label}")
    text = study.read_text()
    for columns, ok in (("{label: nli_label, evidence_label: label}", True), ("{label: nli, evidence_label: label}", True),
                        ("{evidence_label: label}", False), ("{label: claim, evidence_label: label}", False)):
        study.write_text(text.replace("    splits:", f"    columns: {columns}\n    splits:"))
        assert (run_cli("validate", str(study), cwd=tmp_path).returncode == 0) is ok, columns


def test_an_excel_csv_with_a_bom_and_a_renamed_first_column_validates(tmp_path: Path) -> None:
    """The BOM is not part of the first column's name: `body` (renamed to the task's `text`) is found."""
    study = write_study(tmp_path)
    rows = (tmp_path / "texts.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    assert rows[0] == "id,text,partisanship,topic\n"
    body_first = ["body,id,partisanship,topic\n"] + [_move_second_field_first(row) for row in rows[1:]]
    (tmp_path / "texts.csv").write_bytes(b"\xef\xbb\xbf" + "".join(body_first).encode("utf-8"))
    text = study.read_text()
    study.write_text(text.replace("    source: {files: {train: texts.csv}}\n", "    columns: {body: text}\n"
                                  "    source: {files: {train: texts.csv}}\n", 1)
                     .replace("columns: {topic: label}", "columns: {topic: label, body: text}"))
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    study.write_text(text)  # without the rename, the first column is `body`, not `\ufeffbody` or `text`
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2
    assert "tasks[0].source.files.train: 'texts.csv' lacks column(s) text (it has body, id, partisanship, topic)" \
        in result.stderr


def _move_second_field_first(row: str) -> str:
    fields = next(csv.reader(io.StringIO(row)))
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow([fields[1], fields[0], *fields[2:]])
    return out.getvalue()
