"""Planner: keys are stable, and a change re-keys exactly the runs that depend on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import REPO

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


def _runs(study: Path) -> dict[tuple[str, str, str], object]:
    return {(r.stage, r.labels.get("task", ""), r.labels.get("setting", "")): r for r in build_plan(load_study(study)).runs}


def test_train_fraction_rekeys_only_that_train_and_what_follows(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    before = _runs(study)
    study.write_text(study.read_text().replace("max_steps: 5}", "max_steps: 5, train_fraction: 0.2}"))
    after = _runs(study)
    changed = sorted(k for k in before if before[k].key != after[k].key)
    assert changed == [("aggregate", "", ""), ("generate", "claims", "ft"), ("generate", "notes", "ft"),
                       ("score", "claims", "ft"), ("score", "notes", "ft"), ("train", "claims", "ft"),
                       ("train", "notes", "ft")]
    assert after["train", "claims", "ft"].params.train.train_fraction == 0.2


def test_per_task_recipe_overrides_apply_to_that_task_only(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.write_text(study.read_text().replace('    splits: {train: "train[:50%]", test: "train[50%:]"}\n  - id: notes',
                                               '    splits: {train: "train[:50%]", test: "train[50%:]"}\n'
                                               '    finetune: {r: 32}\n  - id: notes'))
    runs = _runs(study)
    assert runs["train", "claims", "ft"].params.train.r == 32
    assert runs["train", "notes", "ft"].params.train.r == 8


def test_cross_task_adapter_trains_on_one_task_and_is_evaluated_on_every_task(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.write_text(study.read_text() + "  - id: ft-on-claims\n    train_task: claims\n"
                     "    finetune: {learning_rate: 0.001, max_steps: 5}\n")
    plan = build_plan(load_study(study))
    gens = {(r.labels["task"], r.labels["setting"]): r for r in plan.runs if r.stage == "generate"}
    claims_adapter = gens["claims", "ft"].inputs["adapter"]
    assert gens["notes", "ft-on-claims"].inputs["adapter"] == claims_adapter  # the same adapter, trained once
    assert gens["notes", "ft"].inputs["adapter"] != claims_adapter
    (train,) = [r for r in plan.runs if r.prefix == claims_adapter]
    claims_prep = gens["claims", "ft"].inputs["prep"]
    assert train.inputs == {"prep": claims_prep} and gens["notes", "ft-on-claims"].inputs["prep"] != claims_prep


def test_budget_and_api_batching_do_not_rekey_anything_but_the_aggregate(tmp_path: Path) -> None:
    study = make_study(tmp_path)
    study.write_text(study.read_text().replace("models:\n", "models:\n  - {id: gpt, kind: openai, path: gpt-4o-mini}\n"))
    before = _runs(study)
    study.write_text(study.read_text() + "budget: {usd: 10}\ngeneration: {batch_size: 3, shard_size: 5}\n")
    after = _runs(study)
    changed = {k for k in before if before[k].key != after[k].key}
    api_runs = {k for k in changed if after[k].on_api}
    assert not api_runs  # an API's answers do not depend on how we batch them
    assert all(k[0] in ("generate", "score", "aggregate") for k in changed)  # open models re-batch; no retraining
    train = next(r for r in build_plan(load_study(study)).runs if r.stage == "train")
    assert train.runtime.budget_usd == pytest.approx(10 / 4)  # 2 tasks × 2 models × 1 fine-tuned setting


def with_benchmarks(tmp_path: Path, tasks: str = "labscale_tiny_mc", settings: str = "") -> Path:
    """The study plus an API model, `settings` and a `benchmarks:` block on a copy of studies/benchmarks."""
    shutil.copytree(REPO / "studies" / "benchmarks", tmp_path / "bench", dirs_exist_ok=True)
    study = make_study(tmp_path)
    api_model = "models:\n  - {id: gpt, kind: openai, path: gpt-4o-mini}\n"
    study.write_text(study.read_text().replace("models:\n", api_model)
                     + settings + f"benchmarks: {{tasks: [{tasks}], include_path: bench, limit: 5}}\n")
    return study


def test_benchmark_runs_for_each_open_model_and_each_of_its_adapters(tmp_path: Path) -> None:
    cross_task = "  - id: ft-on-claims\n    train_task: claims\n    finetune: {learning_rate: 0.001, max_steps: 5}\n"
    plan = build_plan(load_study(with_benchmarks(tmp_path, settings=cross_task)))
    runs = {(r.labels.get("task", ""), r.labels["model"], r.labels.get("setting", "")): r
            for r in plan.runs if r.stage == "benchmark"}
    assert set(runs) == {("", "tiny", ""), ("claims", "tiny", "ft"), ("notes", "tiny", "ft")}  # API model skipped
    trains = {r.labels["task"]: r.prefix for r in plan.runs if r.stage == "train" and r.labels["model"] == "tiny"}
    assert runs["", "tiny", ""].inputs == {}
    assert {key[0]: run.inputs for key, run in runs.items() if key[0]} == {t: {"adapter": p} for t, p in trains.items()}
    files = runs["", "tiny", ""].params.task_files
    assert set(files) == {"tiny_mc.yaml", "tiny_mc.json"} and all(f.prefix in plan.uploads for f in files.values())
    roles = [b.role for b in plan.benchmarks]
    assert roles == ["tiny:benchmark", "claims/tiny/ft:benchmark", "notes/tiny/ft:benchmark"]
    assert {b.role: b.run for b in plan.benchmarks}.items() <= plan.aggregate.inputs.items()
    position = {r.prefix: i for i, r in enumerate(plan.runs)}
    assert all(position[p] < position[r.prefix] for r in runs.values() for p in r.inputs.values())


def test_changing_the_benchmarks_rekeys_only_the_benchmark_runs_and_the_aggregate(tmp_path: Path) -> None:
    before = keys(with_benchmarks(tmp_path))
    rerun = {k for k in before if k[0] in ("benchmark", "aggregate")}
    after = keys(with_benchmarks(tmp_path, tasks="labscale_tiny_mc, mmlu"))
    assert changed(before, after) == rerun
    data = tmp_path / "bench" / "tiny_mc.json"
    data.write_text(data.read_text().replace("seven", "7"))  # editing the local task's data
    assert changed(after, keys(tmp_path / "study.yaml")) == rerun
