"""Planner: keys are stable, and a change re-keys exactly the runs that depend on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labscale.config import load_study
from labscale.plan import build_plan, run_key
from labscale.plan import planner as planner_module

STUDY = """\
name: p
tasks:
  - id: claims
    task: fact-check
    source: {{files: {{train: claims.jsonl}}}}
    splits: {{train: "train[:50%]", test: "train[50%:]"}}
  - id: notes
    task: clinical-summary
    source: {{files: {{train: notes.jsonl}}}}
    splits: {{train: "train[:50%]", test: "train[50%:]"}}
models:
  - id: tiny
    path: tiny-llama
    build: tiny-llama
settings:
  - id: zero-shot
  - id: few
    shots: {shots}
  - id: ft
    finetune: {{learning_rate: {lr}, max_steps: 5}}
"""


def make_study(tmp_path: Path, shots: int = 3, lr: float = 0.001, claims_label: str = "SUPPORTS") -> Path:
    claims = [{"claim_id": str(i), "claim": f"c{i}", "evidence": f"e{i}", "label": claims_label} for i in range(10)]
    notes = [{"ID": str(i), "section_header": "CC", "dialogue": f"d{i}", "section_text": f"s{i}"} for i in range(10)]
    (tmp_path / "claims.jsonl").write_text("".join(json.dumps(r) + "\n" for r in claims))
    (tmp_path / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in notes))
    path = tmp_path / "study.yaml"
    path.write_text(STUDY.format(shots=shots, lr=lr))
    return path


def keys(path: Path) -> dict[tuple[str, str, str, str], str]:
    """(stage, task, model, setting) → key; prep runs have no model/setting."""
    plan = build_plan(load_study(path))
    return {(r.stage, r.labels.get("task", ""), r.labels.get("model", ""), r.labels.get("setting", "")): r.key
            for r in plan.runs}


def changed(before: dict, after: dict) -> set:
    assert before.keys() == after.keys()
    return {k for k in before if before[k] != after[k]}


def test_plan_shape_and_order(tmp_path: Path) -> None:
    plan = build_plan(load_study(make_study(tmp_path)))
    stages = [r.stage for r in plan.runs]
    assert stages.count("prep") == 2 and stages.count("train") == 2
    assert stages.count("generate") == stages.count("score") == 6
    assert stages[-1] == "aggregate"
    position = {r.prefix: i for i, r in enumerate(plan.runs)}
    for i, run in enumerate(plan.runs):
        assert all(position[p] < i for p in run.inputs.values()), run.title
    assert len(plan.cells) == 6 and len(plan.uploads) == 2


def test_keys_are_deterministic(tmp_path: Path) -> None:
    path = make_study(tmp_path)
    assert keys(path) == keys(path)
    assert all(len(k) == 16 for k in keys(path).values())


def test_changing_shots_rekeys_only_that_settings_generate_score_and_aggregate(tmp_path: Path) -> None:
    before = keys(make_study(tmp_path, shots=3))
    after = keys(make_study(tmp_path, shots=2))
    assert changed(before, after) == {
        ("generate", "claims", "tiny", "few"), ("score", "claims", "tiny", "few"),
        ("generate", "notes", "tiny", "few"), ("score", "notes", "tiny", "few"),
        ("aggregate", "", "", ""),
    }


def test_changing_learning_rate_rekeys_train_and_downstream_only(tmp_path: Path) -> None:
    before = keys(make_study(tmp_path, lr=0.001))
    after = keys(make_study(tmp_path, lr=0.002))
    expected = {(stage, task, "tiny", "ft") for stage in ("train", "generate", "score") for task in ("claims", "notes")}
    assert changed(before, after) == expected | {("aggregate", "", "", "")}


def test_changing_one_data_file_rekeys_only_that_task(tmp_path: Path) -> None:
    before = keys(make_study(tmp_path))
    after = keys(make_study(tmp_path, claims_label="REFUTES"))
    diff = changed(before, after)
    assert ("prep", "claims", "", "") in diff
    assert all(k[1] in ("claims", "") for k in diff)
    assert len(diff) == 1 + 1 + 3 + 3 + 1  # prep, train, 3 generate, 3 score, aggregate


def test_code_version_is_part_of_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = make_study(tmp_path)
    before = keys(path)
    real = planner_module.code_version
    monkeypatch.setattr(planner_module, "code_version", lambda stage: real(stage) + ("x" if stage == "score" else ""))
    diff = changed(before, keys(path))
    assert {k[0] for k in diff} == {"score", "aggregate"}
    assert run_key("s", {"a": 1}, {}, "1") != run_key("s", {"a": 1}, {}, "2")
    assert run_key("s", {"a": 1, "b": 2}, {}, "1") == run_key("s", {"b": 2, "a": 1}, {}, "1")


def test_moving_the_study_keeps_the_keys(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    assert keys(make_study(first)) == keys(make_study(second))
