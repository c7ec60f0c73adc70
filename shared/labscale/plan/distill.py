"""The runs of a distilled cell: the teacher labels the train (± val) split, the student trains on
those labels, the student answers the test split (then score, as for every cell)."""

from __future__ import annotations

from labscale.config import ModelConfig, SettingConfig, TaskConfig
from labscale.config.study import StudentRecipe
from labscale.params import Distillation, StudentParams
from labscale.plan.builder import PlanBuilder
from labscale.spec import RunSpec


def plan_student(b: PlanBuilder, task: TaskConfig, model: ModelConfig, setting: SettingConfig, prep: RunSpec,
                 labels: dict[str, str]) -> tuple[RunSpec, RunSpec, Distillation]:
    """The student's train and generate runs, and the distillation's entry for the aggregate."""
    assert setting.distill is not None
    teacher = next(s for s in b.study.settings if s.id == setting.distill.teacher_setting)
    teacher_labels = {**labels, "setting": teacher.id}
    adapter = b.train(task, model, teacher, teacher_labels) if teacher.kind.trains else None
    inputs = {"prep": prep.prefix, "teacher_train": b.generate(task, model, teacher, prep, adapter,
                                                                {**teacher_labels, "split": "train"}, split="train").prefix}
    if setting.distill.early_stopping_on == "teacher-val":
        inputs["teacher_val"] = b.generate(task, model, teacher, prep, adapter, {**teacher_labels, "split": "val"},
                                           split="val").prefix
    params = StudentParams(distill=setting.distill.recipe(), seed=b.study.seed)
    train = b.add("train", params, inputs, **labels)
    generate = b.add("generate", params, {"prep": prep.prefix, "student": train.prefix}, **labels)
    entry = Distillation(task=task.id, model=model.id, setting=setting.id, teacher_setting=teacher.id,
                         train=train.prefix, teacher_labels=[inputs[k] for k in ("teacher_train", "teacher_val")
                                                             if k in inputs])
    return train, generate, entry


def student_seconds(stage: str, recipe: StudentRecipe, sizes: dict[str, float], throughput: dict[str, float]) -> float:
    """Budget estimate of a student run: training reads epochs × train rows × max_length tokens at the
    pool's training throughput; answering reads items × max_length tokens forward only (~⅓ of a step)."""
    if stage == "train":
        return recipe.epochs * sizes["train_rows"] * recipe.max_length / throughput["train"]
    if stage == "generate":
        return sizes["items"] * recipe.max_length / (3 * throughput["train"])
    return 0.0
