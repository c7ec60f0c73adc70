"""A distilled cell's student (`StudentParams`): teacher labels → Confident Learning → a fine-tuned small
encoder classifier (labscale.distill.student), with early stopping on validation accuracy.

Reads: prep's train/val.jsonl and task.json, the teacher's predictions on train (input
`teacher_train`) and, with `early_stopping_on: teacher-val`, on val (`teacher_val`).
Writes: student/ (HF sequence classifier + tokenizer; config.json holds the label map) and
cleanlab.jsonl (per train item: teacher label, label trained on, gold label, flagged, kept).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from labscale.config.study import StudentRecipe
from labscale.distill.cleaning import clean_labels
from labscale.distill.labels import teacher_labels
from labscale.distill.student import backbone_path, batches, classify, device, embed, save
from labscale.errors import BadInputError
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.params import StudentParams
from labscale.stage import StageContext
from labscale.training.data import task_meta


@dataclass(frozen=True)
class Trained:
    """The fine-tuned student (best validation epoch) and how training went."""

    model: Any
    tokenizer: Any
    history: list[float]
    """Validation accuracy after each epoch run."""
    best_epoch: int


def fine_tune(backbone: str, label_names: Sequence[str], texts: Sequence[str], labels: Sequence[int],
              val_texts: Sequence[str], val_labels: Sequence[int], recipe: StudentRecipe, seed: int,
              log: logging.Logger, on_step: Callable[[], Any] | None = None) -> Trained:
    """Fine-tune `backbone` + a fresh classification head; after each epoch score validation accuracy,
    keep the best epoch's weights and stop after `patience` epochs without improvement. `on_step`
    runs after each optimizer step (a progress bar)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(backbone)
    model = AutoModelForSequenceClassification.from_pretrained(
        backbone, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={name: i for i, name in enumerate(label_names)}).to(device())
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate)
    generator = torch.Generator().manual_seed(seed)
    target = torch.tensor(list(labels))
    history: list[float] = []
    best: tuple[float, int, dict[str, Any]] | None = None
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        order = torch.randperm(len(texts), generator=generator).tolist()
        for batch in batches(len(order), recipe.batch_size):
            ids = [order[i] for i in batch]
            enc = tokenizer([texts[i] for i in ids], truncation=True, max_length=recipe.max_length, padding=True,
                            return_tensors="pt").to(model.device)
            loss = model(**enc, labels=target[ids].to(model.device)).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if on_step:
                on_step()
        answers = classify(model, tokenizer, val_texts, recipe.max_length, recipe.batch_size).labels
        accuracy = float(np.mean(np.array(answers) == np.array(val_labels))) if val_labels else 0.0
        history.append(accuracy)
        log.info("student epoch %d: val accuracy %.4f (loss %.4f)", epoch, accuracy, loss.item())
        if best is None or accuracy > best[0]:
            best = (accuracy, epoch, copy.deepcopy(model.state_dict()))
        elif epoch - best[1] >= recipe.patience:
            log.info("early stop: no better val accuracy for %d epoch(s); keeping epoch %d", recipe.patience, best[1])
            break
    assert best is not None
    model.load_state_dict(best[2])
    return Trained(model, tokenizer, history, best[1])


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


def train(ctx: StageContext) -> dict[str, Any]:
    """Train the cell's student; returns the run's metrics (rows, cleanlab counts, val accuracy, seconds)."""
    params = ctx.params
    assert isinstance(params, StudentParams)
    recipe, seed = params.distill, params.seed
    prep = ctx.fetch("prep")
    label_names = list(task_meta(prep)["task"]["labels"])
    started = time.perf_counter()
    teacher = _teacher(ctx, "teacher_train", label_names)
    rows = [r for r in read_jsonl(prep / "train.jsonl") if r["id"] in teacher.by_id]
    if len(rows) < 2:
        raise BadInputError(f"the teacher gave a usable label to {len(rows)} train item(s) ({teacher.unparsed} answers "
                            "named no single label) — fix: use a teacher setting whose answers name the task's labels")
    texts = [r["input"] for r in rows]
    taught = np.array([teacher.by_id[r["id"]] for r in rows])
    gold = np.array([label_names.index(r["target"]) if r["target"] in label_names else -1 for r in rows])
    backbone = backbone_path(recipe.backbone)
    features = (embed(backbone, texts, recipe.max_length, recipe.batch_size) if recipe.cleanlab != "off"
                else np.zeros((len(rows), 0)))
    cleaning = clean_labels(features, taught, recipe.cleanlab, recipe.cleanlab_folds, seed)
    write_jsonl(ctx.out_dir / "cleanlab.jsonl", (
        {"id": r["id"], "teacher": label_names[t], "label": label_names[c], "gold": r["target"], "flagged": bool(f),
         "kept": bool(k)} for r, t, c, f, k in zip(rows, taught, cleaning.labels, cleaning.flagged, cleaning.keep)))
    keep = np.flatnonzero(cleaning.keep)
    if not keep.size:
        raise BadInputError("Confident Learning dropped every teacher label — fix: use distill.cleanlab: relabel or off")
    val_texts, val_labels = _val_set(ctx, read_jsonl(prep / "val.jsonl"), recipe.early_stopping_on, label_names)
    bar = ctx.progress(recipe.epochs * math.ceil(keep.size / recipe.batch_size), "student", unit="step")
    trained = fine_tune(backbone, label_names, [texts[i] for i in keep], cleaning.labels[keep].tolist(),
                        val_texts, val_labels, recipe, seed, ctx.log, on_step=lambda: bar.update(1))
    bar.close()  # early stopping may end it before its total
    save(trained.model, trained.tokenizer, ctx.out_dir / "student")
    wrong = taught != gold
    ctx.log.info("student trained on %d teacher labels (%d unparsed; cleanlab %s flagged %d, %d of them teacher "
                 "errors)", len(keep), teacher.unparsed, recipe.cleanlab, cleaning.flagged.sum(),
                 (cleaning.flagged & wrong).sum())
    return {"path": f"distill-{device()}", "train_seconds": round(time.perf_counter() - started, 3),
            "rows": int(len(keep)), "teacher_rows": len(rows) + teacher.unparsed, "teacher_unparsed": teacher.unparsed,
            "teacher_train_accuracy": float(np.mean(~wrong)), "teacher_errors": int(wrong.sum()),
            **cleaning.counts(), "cleanlab_flagged_teacher_errors": int((cleaning.flagged & wrong).sum()),
            "early_stopping_on": recipe.early_stopping_on, "val_rows": len(val_labels),
            "val_accuracy": trained.history, "best_epoch": trained.best_epoch, "epochs_run": len(trained.history)}
