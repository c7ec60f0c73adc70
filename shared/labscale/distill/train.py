"""The train stage of a distilled cell: teacher labels → Confident Learning → fine-tuned student.

Reads: prep's train/val.jsonl and task.json, the teacher's predictions on train (input
`teacher_train`) and, with `early_stopping_on: teacher-val`, on val (`teacher_val`).
Writes: student/ (HF sequence classifier + tokenizer; config.json holds the label map) and
cleanlab.jsonl (per train item: teacher label, label trained on, gold label, flagged, kept).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from labscale.distill.cleaning import clean_labels
from labscale.distill.labels import teacher_labels
from labscale.distill.student import Recipe, backbone_path, device, embed, fine_tune, save
from labscale.errors import BadInputError
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.stage import StageContext


def _teacher(ctx: StageContext, role: str, label_names: list[str]) -> Any:
    return teacher_labels(read_jsonl(ctx.fetch(role) / "predictions.jsonl"), label_names)


def _val_set(ctx: StageContext, rows: list[dict], on: str, label_names: list[str]) -> tuple[list[str], list[int]]:
    """Early-stopping items: gold val labels (`val`), or the teacher's labels of val (`teacher-val`)."""
    if on == "val":
        index = {name: i for i, name in enumerate(label_names)}
        return [r["input"] for r in rows], [index[r["target"]] for r in rows]
    labelled = _teacher(ctx, "teacher_val", label_names).by_id
    kept = [r for r in rows if r["id"] in labelled]
    return [r["input"] for r in kept], [labelled[r["id"]] for r in kept]


def train_student(ctx: StageContext) -> dict[str, Any]:
    """Train the cell's student; returns the run's metrics (rows, cleanlab counts, val accuracy, seconds)."""
    params = ctx.spec.params
    config, seed = params["distill"], params["seed"]
    prep = ctx.fetch("prep")
    label_names = list(json.loads((prep / "task.json").read_text())["task"]["labels"])
    started = time.perf_counter()
    teacher = _teacher(ctx, "teacher_train", label_names)
    rows = [r for r in read_jsonl(prep / "train.jsonl") if r["id"] in teacher.by_id]
    if len(rows) < 2:
        raise BadInputError(f"the teacher gave a usable label to {len(rows)} train item(s) ({teacher.unparsed} answers "
                            "named no single label) — fix: use a teacher setting whose answers name the task's labels")
    texts = [r["input"] for r in rows]
    taught = np.array([teacher.by_id[r["id"]] for r in rows])
    gold = np.array([label_names.index(r["target"]) if r["target"] in label_names else -1 for r in rows])
    backbone = backbone_path(config["backbone"])
    features = (embed(backbone, texts, config["max_length"], config["batch_size"]) if config["cleanlab"] != "off"
                else np.zeros((len(rows), 0)))
    cleaning = clean_labels(features, taught, config["cleanlab"], config["cleanlab_folds"], seed)
    write_jsonl(ctx.out_dir / "cleanlab.jsonl", (
        {"id": r["id"], "teacher": label_names[t], "label": label_names[c], "gold": r["target"], "flagged": bool(f),
         "kept": bool(k)} for r, t, c, f, k in zip(rows, taught, cleaning.labels, cleaning.flagged, cleaning.keep)))
    keep = np.flatnonzero(cleaning.keep)
    if not keep.size:
        raise BadInputError("Confident Learning dropped every teacher label — fix: use distill.cleanlab: relabel or off")
    val_texts, val_labels = _val_set(ctx, read_jsonl(prep / "val.jsonl"), config["early_stopping_on"], label_names)
    recipe = Recipe.from_params(config)
    bar = ctx.progress(recipe.epochs * math.ceil(keep.size / recipe.batch_size), "student", unit="step")
    trained = fine_tune(backbone, label_names, [texts[i] for i in keep], cleaning.labels[keep].tolist(),
                        val_texts, val_labels, recipe, seed, ctx.log, on_step=lambda: bar.update(1))
    bar.close()  # early stopping may end it before its total
    save(trained, ctx.out_dir / "student")
    wrong = taught != gold
    ctx.log.info("student trained on %d teacher labels (%d unparsed; cleanlab %s flagged %d, %d of them teacher "
                 "errors)", len(keep), teacher.unparsed, config["cleanlab"], cleaning.flagged.sum(),
                 (cleaning.flagged & wrong).sum())
    return {"path": f"distill-{device()}", "train_seconds": round(time.perf_counter() - started, 3),
            "rows": int(len(keep)), "teacher_rows": len(rows) + teacher.unparsed, "teacher_unparsed": teacher.unparsed,
            "teacher_train_accuracy": float(np.mean(~wrong)), "teacher_errors": int(wrong.sum()),
            **cleaning.counts(), "cleanlab_flagged_teacher_errors": int((cleaning.flagged & wrong).sum()),
            "early_stopping_on": config["early_stopping_on"], "val_rows": len(val_labels),
            "val_accuracy": trained.history, "best_epoch": trained.best_epoch, "epochs_run": len(trained.history)}
