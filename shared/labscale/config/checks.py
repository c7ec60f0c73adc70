"""Study-level checks the loader runs after the schema (each failure: one line naming field and fix):
a distilled setting's teacher and task, the judge's and preference settings' models, every API
model's price, and the generation engines and dtypes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from labscale.config.study import SettingKind, Study, resolve_task
from labscale.prices import PRICE_TABLE_VERSION, api_price, fine_tuned_price, training_price_per_mtok

Fail = Callable[[tuple[Any, ...], str, str], NoReturn]


def check_distill(study: Study, i: int, fail: Fail) -> None:
    """Setting `i` distils a student: its teacher is another, non-distilled setting; every task is a
    label task with a val split (early stopping); nothing else trains or searches in that setting."""
    setting = study.settings[i]
    config = setting.distill
    assert config is not None
    settings = {s.id: s for s in study.settings}
    teacher = settings.get(config.teacher_setting)
    if teacher is None or teacher.id == setting.id:
        others = [s for s in settings if s != setting.id]
        fail(("settings", i, "distill", "teacher_setting"), f"{config.teacher_setting!r} is not another setting of the study",
             f"use one of {', '.join(others) or '(add the teacher setting first)'}")
    if teacher.distill is not None:
        fail(("settings", i, "distill", "teacher_setting"), f"{teacher.id!r} is itself distilled",
             "name a setting whose model answers itself (zero/few-shot, compiled or fine-tuned)")
    for field in ("finetune", "compile", "train_task"):
        if getattr(setting, field) is not None:
            fail(("settings", i, field), f"a distilled setting trains its student with `distill`, not `{field}`",
                 f"remove {field} (put it on the teacher setting {teacher.id!r})")
    for task in study.tasks:
        if resolve_task(task).kind != "label":
            fail(("settings", i, "distill"), f"task {task.id!r} is not a label task: only label tasks can be distilled "
                 "into a classifier", "remove the task from the study or the distill setting")
        if "val" not in task.splits:
            fail(("settings", i, "distill"), f"task {task.id!r} has no 'val' split for the student's early stopping",
                 f"add splits.val to task {task.id!r} (never the test split)")


def check_judges(study: Study, fail: Fail) -> None:
    """Study-file checks (called by the loader): each judge is a model of the study, the judged
    settings exist, and preference tuning is plain LoRA on the cell's own task."""
    models = {m.id: m for m in study.models}
    settings = [s.id for s in study.settings]
    if study.judge is not None:
        if study.judge.model not in models:
            fail(("judge", "model"), f"{study.judge.model!r} is not a model of the study", f"use one of {', '.join(models)}")
        for value in study.judge.settings or []:
            if value not in settings:
                fail(("judge", "settings"), f"{value!r} is not a setting of the study", f"use some of {', '.join(settings)}")
    for i, setting in enumerate(study.settings):
        preference = setting.preference
        if preference is None:
            continue
        if preference.judge not in models:
            fail(("settings", i, "preference", "judge"), f"{preference.judge!r} is not a model of the study",
                 f"use one of {', '.join(models)}")
        clashes = [name for name, value in (("finetune.dp", getattr(setting.finetune, "dp", None)),
                                            ("finetune.audit", getattr(setting.finetune, "audit", None)),
                                            ("distill", setting.distill), ("train_task", setting.train_task))
                   if value is not None]
        if clashes:
            fail(("settings", i, "preference"), f"preference tuning cannot be combined with {clashes[0]}",
                 f"remove {clashes[0]} or use a separate setting")


def check_prices(study: Study, fail: Fail) -> None:
    """Every API model has a price, never a silent $0: labscale.prices' (by exact name) or the study's
    `price`; one an API fine-tuned setting trains also a training and a fine-tuned price."""
    table = f"labscale/prices.py, {PRICE_TABLE_VERSION}"
    for i, model in enumerate(study.models):
        if model.kind != "openai":
            continue
        given = model.price
        if given is None and api_price(model.path) is None:
            fail(("models", i, "price"), f"API model {model.path!r} is not in the price table ({table}): "
                 "its calls would count as $0", "give its list price, price: {input_per_1m: …, output_per_1m: …} "
                 "(USD per 1M tokens; 0 for a free self-hosted server)")
        tuned = next((s.id for s in study.settings if s.kind_for(model) is SettingKind.API_FINETUNED), None)
        if tuned is None:
            continue
        if training_price_per_mtok(model.path, given.training_per_1m if given else None) is None:
            fail(("models", i, "price", "training_per_1m"), f"setting {tuned!r} fine-tunes {model.path!r}, which "
                 f"has no fine-tuning price in the table ({table})", "add price.training_per_1m (USD per 1M trained tokens)")
        if fine_tuned_price(model.path, given.fine_tuned.token_price() if given and given.fine_tuned else None) is None:
            fail(("models", i, "price", "fine_tuned"), f"setting {tuned!r} fine-tunes {model.path!r}, whose fine-tuned "
                 f"model has no price in the table ({table})",
                 "add price.fine_tuned: {input_per_1m: …, output_per_1m: …} (USD per 1M tokens)")


def check_engines(study: Study, fail: Fail) -> None:
    """`engine: vllm` names an open model's engine and decodes greedily: not for an API model, not for a
    4-bit one (vLLM 0.32 dropped bitsandbytes loading), not with a setting's contrastive search. A
    model's `dtype: bfloat16` needs a GPU with bf16: not the t4 pool's."""
    for i, model in enumerate(study.models):
        if model.dtype == "bfloat16" and study.pool == "t4":
            fail(("models", i, "dtype"), f"{model.id!r} asks for bfloat16, which the t4 pool's GPU (Turing) does not "
                 "compute", "use dtype: auto (fp16 on a T4) or float32, or pool: a100")
        if model.engine is not None and model.kind == "openai":
            fail(("models", i, "engine"), f"{model.id!r} is an API model: the engine of open models does not apply",
                 "remove engine from this model")
        if model.engine == "vllm" and model.quantization == "4bit":
            fail(("models", i, "engine"), f"{model.id!r} is loaded 4-bit (bitsandbytes NF4), which vLLM 0.32 no longer "
                 "loads", "use engine: hf for this model (its default), or quantization: none to serve bf16 weights")
    for i, setting in enumerate(study.settings):
        if setting.decoding is None or setting.decoding.strategy == "greedy":
            continue
        vllm = [m.id for m in study.models if m.kind != "openai" and (m.engine or (
            None if m.quantization == "4bit" else study.generation.engine)) == "vllm"]
        if vllm:
            fail(("settings", i, "decoding", "strategy"), f"{setting.decoding.strategy} search runs on the hf engine; "
                 f"model {vllm[0]!r} asks for engine: vllm", "set engine: hf on that model (or generation.engine), "
                 "or use greedy decoding in this setting")
