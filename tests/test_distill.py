"""Distillation (seed 002): study checks, the plan of a distilled cell, Confident Learning on injected
label noise, and a whole study with the tiny Llama as teacher and the offline MiniLM as student."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, run_in_process

from labscale.config import load_study
from labscale.errors import StudyError
from labscale.jsonl import write_jsonl
from labscale.plan import build_plan

TINY = "  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 1024}\n"
TEACHER = ("  - id: teacher\n    finetune: {r: 16, learning_rate: 0.003, max_steps: 60, batch_size: 8, "
           "grad_accum: 1, warmup_steps: 0, gradient_checkpointing: false, save_steps: 60, max_length: 256}\n")
STUDENT = "  - id: student\n    distill: {teacher_setting: teacher, epochs: 3, batch_size: 32, max_length: 64}\n"


def claims_study(tmp_path: Path, settings: str, *, task: str = "fact-check", val: bool = True, n: int = 200,
                 extra: str = "") -> Path:
    """A study on generated demo claims (train / val / test) with the given settings; `extra`: more
    YAML lines of the task entry."""
    from labscale.demo.data import make_claim_checks, make_dialogue_summaries

    rows = make_claim_checks(n, seed=7) if task == "fact-check" else make_dialogue_summaries(n, seed=7)
    write_jsonl(tmp_path / "rows.jsonl", rows)
    splits = ('{train: "train[:45%]", val: "train[45%:55%]", test: "train[55%:]"}' if val
              else '{train: "train[:50%]", test: "train[50%:]"}')
    study = tmp_path / "study.yaml"
    study.write_text(f"name: distill-test\nstore: file://{tmp_path / 'store'}\ntasks:\n  - id: t\n    task: {task}\n"
                     f"    source: {{files: {{train: rows.jsonl}}}}\n    splits: {splits}\n{extra}"
                     f"models:\n{TINY}settings:\n{settings}generation: {{batch_size: 8, shard_size: 64}}\n")
    return study


@pytest.mark.parametrize(("settings", "kwargs", "field", "words"), [
    (TEACHER + STUDENT, {"task": "clinical-summary"}, "settings[1].distill", "not a label task"),
    (TEACHER + STUDENT, {"val": False}, "settings[1].distill", "no 'val' split"),
    (TEACHER + STUDENT.replace("teacher_setting: teacher", "teacher_setting: nope"), {},
     "settings[1].distill.teacher_setting", "not another setting"),
    (TEACHER + STUDENT + STUDENT.replace("id: student", "id: grand").replace("teacher_setting: teacher",
                                                                             "teacher_setting: student"), {},
     "settings[2].distill.teacher_setting", "itself distilled"),
    (TEACHER + STUDENT.replace("distill:", "shots: 0\n    compile: {}\n    distill:"), {}, "settings[1].compile",
     "not `compile`"),
])
def test_bad_distill_settings_are_one_line_errors(tmp_path: Path, settings: str, kwargs: dict, field: str,
                                                  words: str) -> None:
    with pytest.raises(StudyError) as err:
        load_study(claims_study(tmp_path, settings, **kwargs))
    assert err.value.field == field
    assert words in str(err.value)


def test_a_distilled_cell_is_planned_from_its_teachers_labels(tmp_path: Path) -> None:
    plan = build_plan(load_study(claims_study(tmp_path, TEACHER + STUDENT.replace(
        "max_length: 64}", "max_length: 64, early_stopping_on: teacher-val}"))))
    runs = {r.prefix: r for r in plan.runs}
    teacher_cell, student_cell = plan.cells
    student_train = runs[student_cell.train]
    teacher_train_labels = runs[student_train.inputs["teacher_train"]]
    teacher_test = runs[teacher_cell.generate]
    # The teacher labels train and val exactly as it answers test: same params but the split, same adapter.
    assert teacher_train_labels.params.model_copy(update={"split": "test"}) == teacher_test.params
    assert teacher_train_labels.params.split == "train"
    assert teacher_train_labels.title.endswith("(train split)") and "split" not in teacher_test.title
    assert runs[student_train.inputs["teacher_val"]].params.split == "val"
    assert teacher_train_labels.inputs["adapter"] == teacher_cell.train
    assert teacher_test.params.split == "test"  # a cell's own generate run answers the test split
    recipe = student_train.params.distill
    assert recipe.cleanlab == "drop" and "teacher_setting" not in recipe.model_dump()
    assert runs[student_cell.generate].inputs == {"prep": teacher_test.inputs["prep"], "student": student_cell.train}
    assert [d.model_dump() for d in plan.aggregate.params.distill] == [{
        "task": "t", "model": "tiny", "setting": "student", "teacher_setting": "teacher", "train": student_cell.train,
        "teacher_labels": [student_train.inputs["teacher_train"], student_train.inputs["teacher_val"]]}]
    without = build_plan(load_study(claims_study(tmp_path / "plain", TEACHER)))
    assert without.aggregate.params.distill == []


def test_budget_counts_the_teachers_labelling_and_the_student(tmp_path: Path) -> None:
    from labscale.budget import PlanCosts
    from labscale.store import open_store

    plan = build_plan(load_study(claims_study(tmp_path, TEACHER + STUDENT)))
    costs = PlanCosts(plan, open_store(plan.study.study.store))
    runs = {r.prefix: r for r in plan.runs}
    teacher_cell, student_cell = plan.cells
    labelling = costs.estimate(runs[runs[student_cell.train].inputs["teacher_train"]])
    answering = costs.estimate(runs[teacher_cell.generate])
    # Before prep runs: the sizes read from the source file; the teacher answers every train row, not the
    # test items (the run's start-up and model load once).
    sizes, _ = costs.task_sizes(runs[teacher_cell.generate])
    assert labelling.seconds - labelling.startup_s == pytest.approx(
        (answering.seconds - answering.startup_s) * sizes["train_rows"] / sizes["items"])
    assert costs.estimate(runs[student_cell.train]).seconds > costs.estimate(runs[student_cell.generate]).seconds > 0
    assert set(costs.gpu_hours_by_pool()) == {"t4", "a100"}


def test_shipped_distill_study_plans_a_student_per_teacher() -> None:
    """(test_tasks_studies validates and plans every shipped study through the CLI.)"""
    plan = build_plan(load_study(REPO / "studies" / "distill.yaml"))
    entries = plan.aggregate.params.distill
    assert [(e.model, e.teacher_setting) for e in entries] == [("gpt-4o-mini", "few-shot"),
                                                                ("nous-hermes-13b", "few-shot")]


def topic_texts(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """A separable 3-class fixture: sentences about sport, weather or cooking."""
    words = [["goal", "match", "striker", "league", "referee", "stadium", "coach"],
             ["rain", "storm", "forecast", "sunshine", "wind", "cloudy", "temperature"],
             ["recipe", "oven", "garlic", "soup", "bake", "flour", "kitchen"]]
    frames = ["Yesterday the {} and the {} were in the news.", "People talked about the {} near the {} all day.",
              "A short note on the {}, then the {}."]
    rng = random.Random(seed)
    labels = np.array([i % 3 for i in range(n)])
    texts = [rng.choice(frames).format(*rng.sample(words[y], 2)) for y in labels]
    return texts, labels


def test_cleanlab_flags_injected_label_noise() -> None:
    from labscale.distill.cleaning import clean_labels
    from labscale.distill.student import backbone_path, embed

    texts, gold = topic_texts(150, seed=3)
    rng = np.random.default_rng(0)
    flipped = np.zeros(len(gold), bool)
    flipped[rng.choice(len(gold), size=30, replace=False)] = True  # 20 % of the labels flipped
    noisy = np.where(flipped, (gold + rng.integers(1, 3, len(gold))) % 3, gold)
    features = embed(backbone_path(None), texts, max_length=32, batch_size=32)

    dropped = clean_labels(features, noisy, "drop", folds=5, seed=0)
    flagged_share = dropped.flagged.mean()
    recall = (dropped.flagged & flipped).sum() / flipped.sum()
    print(f"cleanlab: flagged {dropped.flagged.sum()} of {len(gold)} ({flagged_share:.2f}); "
          f"recall of flipped labels {recall:.2f}")
    assert recall > flagged_share  # better than flagging at random
    assert recall >= 0.6
    assert dropped.counts()["cleanlab_dropped"] == dropped.flagged.sum()
    assert (noisy[dropped.keep] == gold[dropped.keep]).mean() > (noisy == gold).mean()  # cleaner than before

    relabelled = clean_labels(features, noisy, "relabel", folds=5, seed=0)
    assert relabelled.keep.all() and relabelled.relabelled > 0
    assert (relabelled.labels == gold).mean() > (noisy == gold).mean()
    assert clean_labels(features, noisy, "off", folds=5, seed=0).flagged.sum() == 0


def test_the_student_stage_filters_a_noisy_teacher(tmp_path: Path) -> None:
    """The real train stage on teacher answers with known errors (gold labels, 20 % rotated to another
    label, committed where the teacher's labelling run would put them)."""
    from labscale.jobs import train
    from labscale.jsonl import read_jsonl
    from labscale.stage import run_stage

    plan = build_plan(load_study(claims_study(tmp_path, TEACHER + STUDENT.replace("epochs: 3", "epochs: 1"))))
    store = run_in_process(plan, ("prep",))
    runs = {r.prefix: r for r in plan.runs}
    student = runs[plan.cells[1].train]
    rows = read_jsonl(store.fetch_file(student.inputs["prep"], "train.jsonl", tmp_path / "train.jsonl"))
    labels = ["SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO"]
    wrong = {r["id"] for r in random.Random(0).sample(rows, len(rows) // 5)}
    answers = [{"id": r["id"], "prediction": labels[(labels.index(r["target"]) + 1) % 3] if r["id"] in wrong
                else f"{r['target']}."} for r in rows]
    write_jsonl(tmp_path / "teacher" / "predictions.jsonl", answers)
    store.commit(student.inputs["teacher_train"], tmp_path / "teacher")
    assert run_stage(student, store, train.run) is True
    metrics = store.require(student.prefix).meta["metrics"]
    print("student stage:", metrics)
    assert metrics["teacher_errors"] == len(wrong) and metrics["teacher_unparsed"] == 0
    assert metrics["cleanlab_dropped"] == metrics["cleanlab_flagged"] > 0
    assert metrics["rows"] == len(rows) - metrics["cleanlab_dropped"]
    recall = metrics["cleanlab_flagged_teacher_errors"] / len(wrong)
    assert recall > metrics["cleanlab_flagged"] / len(rows)  # flagged teacher errors beyond chance
    kept = [json.loads(line) for line in store.backend.get_bytes(f"{student.prefix}/cleanlab.jsonl").splitlines()]
    assert sum(k["kept"] for k in kept) == metrics["rows"] and {k["id"] for k in kept} == {r["id"] for r in rows}


@pytest.mark.slow
def test_distillation_end_to_end_with_the_tiny_teacher(tmp_path: Path) -> None:
    """The generous fixture: the tiny Llama (1.4M parameters, smaller than MiniLM's 22M) answers in
    about as many seconds per item as the student when it stops after its label, so here it writes at
    least 320 tokens per answer (min_new_tokens; the label comes first), standing in for the cost of a
    real LLM teacher."""
    study = claims_study(tmp_path, TEACHER + STUDENT, n=160,
                         extra="    define: {min_new_tokens: 320, max_new_tokens: 352}\n")
    plan = build_plan(load_study(study))
    store = run_in_process(plan, ("prep", "train", "generate", "score", "aggregate"))
    teacher_cell, student_cell = plan.cells
    sizes = store.require(next(r for r in plan.runs if r.stage == "prep").prefix).meta["metrics"]
    train = store.require(student_cell.train).meta["metrics"]
    print("student training:", {k: train[k] for k in ("rows", "teacher_unparsed", "teacher_train_accuracy",
                                                       "cleanlab_flagged", "cleanlab_skipped", "val_accuracy")})
    assert train["path"].startswith("distill-") and train["rows"] > 0
    assert train["cleanlab"] == "drop" and train["cleanlab_dropped"] == train["cleanlab_flagged"]
    assert train["teacher_rows"] == sizes["train_rows"] and train["val_rows"] == sizes["val_rows"]
    assert (store.backend.get_bytes(f"{student_cell.train}/student/config.json") and
            len(store.backend.get_bytes(f"{student_cell.train}/cleanlab.jsonl").splitlines()) == train["teacher_rows"]
            - train["teacher_unparsed"])
    predictions = [json.loads(line) for line in store.backend.get_bytes(
        f"{student_cell.generate}/predictions.jsonl").splitlines()]
    assert len(predictions) == sizes["items"]
    assert {p["prediction"] for p in predictions} <= {"SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO"}

    aggregate = store.require(plan.aggregate.prefix).meta["metrics"]
    (row,) = aggregate["distill"]
    print("distillation:", {k: row[k] for k in ("teacher_score", "student_score", "quality_ratio",
                                                "teacher_s_per_item", "student_s_per_item", "speedup",
                                                "teacher_usd_per_1k", "student_usd_per_1k", "cleanlab_flagged")})
    assert row["metric"] == "accuracy"
    assert row["student_lo"] <= row["student_score"] <= row["student_hi"]  # the aggregate's bootstrap CI
    assert row["speedup"] >= 10, row  # the acceptance ratio, measured in this run
    assert row["student_usd_per_1k"] < row["teacher_usd_per_1k"]
    with open(store.fetch_file(plan.aggregate.prefix, "results.csv", tmp_path / "results.csv")) as handle:
        student = next(r for r in csv.DictReader(handle) if r["setting"] == "student")
    assert float(student["accuracy_lo"]) <= float(student["accuracy"]) <= float(student["accuracy_hi"])
    assert student["train_path"] == train["path"]
    results_md = store.backend.get_bytes(f"{plan.aggregate.prefix}/results.md").decode()
    assert "## Distillation: teacher vs student" in results_md
    assert "Distillation: teacher vs student" in store.backend.get_bytes(f"{plan.aggregate.prefix}/report.html").decode()
