"""Every registered task, and an inline one, end to end on its fixture through the CLI: prep →
generate (the tiny local model, zero-shot) → score → aggregate, in one `labscale run`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli

from labscale.config import load_study
from labscale.plan import build_plan
from labscale.store import open_store
from labscale.tasks import REGISTRY
from labscale.tasks.fixtures import write_fixture

TEST_ITEMS = 3
SUITE_KEYS = {  # a metric each suite must report, beyond the parse-status rates
    "summarization": {"rouge1", "rougeL", "bleu"},
    "classification": {"accuracy", "f1_weighted", "valid_rate", "unresolvable_rate"},
    "binary_classification": {"precision", "recall", "f1", "accuracy", "unresolvable_rate"},
    "tool_call": {"exact_match", "name_accuracy", "arg_f1", "valid_rate", "unresolvable_rate"},
    "group_classification": {"accuracy", "f1", "worst_group_accuracy", "unresolvable_rate"},
    "qa": {"exact_match", "f1", "abstention_rate"},
}
STATUS_RATES = ("valid_rate", "resolvable_rate", "unresolvable_rate")
INLINE = """\
  - id: inline-stance
    define: {kind: label, instruction: "Which party does the text support?", input_template: "Text: {text}",
             target_field: partisanship, labels: [DEMOCRAT, REPUBLICAN, NEUTRAL], metric_suite: classification,
             max_new_tokens: 4}
    source: {files: {train: partisanship.csv}}
    splits: {train: "train[:75%]", test: "train[75%:]"}
    max_items: {test: TEST_ITEMS}
""".replace("TEST_ITEMS", str(TEST_ITEMS))


def _study(tmp: Path) -> Path:
    blocks = []
    for name in REGISTRY:
        suffix = ".csv" if name in ("partisanship", "topic") else ".jsonl"  # both local formats
        columns = write_fixture(name, tmp / f"{name}{suffix}", n=40)
        blocks.append(f"  - id: {name}\n    task: {name}\n    source: {{files: {{train: {name}{suffix}}}}}\n"
                      f"    columns: {json.dumps(columns)}\n"
                      f"    splits: {{train: \"train[:75%]\", test: \"train[75%:]\"}}\n"
                      f"    max_items: {{test: {TEST_ITEMS}}}\n")
    study = tmp / "study.yaml"
    study.write_text(
        f"name: all-tasks\nstore: file://{tmp / 'store'}\ntasks:\n{''.join(blocks)}{INLINE}"
        "models:\n  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512}\n"
        "settings:\n  - id: zero-shot\n"
        "generation: {batch_size: 4, shard_size: 4, max_new_tokens: 8}\nscoring: {bertscore: false}\n")
    return study


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    tmp = tmp_path_factory.mktemp("all-tasks")
    study = _study(tmp)
    result = run_cli("run", str(study), cwd=tmp, check=True)
    assert "inline-stance" in result.stdout and "tool-call" in result.stdout  # the results table
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    scores = {r.labels["task"]: store.require(r.prefix) for r in plan.runs if r.stage == "score"}
    rows = store.backend.get_bytes(f"{plan.aggregate.prefix}/results.csv").decode()
    return study, {"scores": {t: m.meta["metrics"] for t, m in scores.items()},
                   "rows": {r["task"]: r for r in csv.DictReader(rows.splitlines())},
                   "plan": plan, "store": store}


@pytest.mark.slow
@pytest.mark.parametrize("task", [*REGISTRY, "inline-stance"])
def test_task_runs_end_to_end(ran: tuple[Path, dict], task: str) -> None:
    _, out = ran
    suite = REGISTRY[task].metric_suite if task in REGISTRY else "classification"
    metrics = out["scores"][task]
    assert metrics["items"] == TEST_ITEMS
    assert SUITE_KEYS[suite] <= set(metrics["scores"])
    assert all(0.0 <= v <= 1.0 for k, v in metrics["scores"].items() if k != "bleu" and "count/" not in k)
    rates = [v for k, v in metrics["scores"].items() if k in STATUS_RATES]
    assert not rates or sum(rates) == pytest.approx(1.0)
    row = out["rows"][task]
    assert row["setting"] == "zero-shot" and int(row["n"]) == TEST_ITEMS and float(row["tokens_out"]) > 0
