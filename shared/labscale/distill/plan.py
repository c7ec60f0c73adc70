"""The runs of a distilled cell: the teacher labels the train (± val) split, the student trains on
those labels, the student answers the test split (then score, as for every cell)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from labscale.config import ModelConfig, SettingConfig, TaskConfig

if TYPE_CHECKING:  # the planner imports this module
    from labscale.plan.planner import _Builder
    from labscale.plan.runspec import RunSpec


def student_params(setting: SettingConfig, seed: int) -> dict[str, Any]:
    """What identifies a student (its recipe and seed; the teacher is in its inputs)."""
    assert setting.distill is not None
    return {"distill": setting.distill.model_dump(mode="json", exclude={"teacher_setting"}), "seed": seed}


def plan_student(b: _Builder, task: TaskConfig, model: ModelConfig, setting: SettingConfig, prep: RunSpec,
                 labels: dict[str, str]) -> tuple[RunSpec, RunSpec, dict[str, Any]]:
    """The student's train and generate runs, and the distillation's entry for the aggregate."""
    assert setting.distill is not None
    teacher = next(s for s in b.study.settings if s.id == setting.distill.teacher_setting)
    teacher_labels = {**labels, "setting": teacher.id}
    adapter = b.train(task, model, teacher, teacher_labels) if teacher.finetune is not None else None
    inputs = {"prep": prep.prefix, "teacher_train": b.generate(task, model, teacher, prep, adapter,
                                                                {**teacher_labels, "split": "train"}, split="train").prefix}
    if setting.distill.early_stopping_on == "teacher-val":
        inputs["teacher_val"] = b.generate(task, model, teacher, prep, adapter, {**teacher_labels, "split": "val"},
                                           split="val").prefix
    params = student_params(setting, b.study.seed)
    train = b.add("train", params, inputs, **labels)
    generate = b.add("generate", params, {"prep": prep.prefix, "student": train.prefix}, **labels)
    entry = {"task": task.id, "model": model.id, "setting": setting.id, "teacher_setting": teacher.id,
             "train": train.prefix, "teacher_labels": [inputs[k] for k in ("teacher_train", "teacher_val") if k in inputs]}
    return train, generate, entry


def student_seconds(stage: str, distill: dict[str, Any], sizes: dict[str, Any], throughput: dict[str, float]) -> float:
    """Budget estimate of a student run: training reads epochs × train rows × max_length tokens at the
    pool's training throughput; answering reads items × max_length tokens forward only (~⅓ of a step)."""
    if stage == "train":
        return distill["epochs"] * sizes["train_rows"] * distill["max_length"] / throughput["train"]
    if stage == "generate":
        return sizes["items"] * distill["max_length"] / (3 * throughput["train"])
    return 0.0
