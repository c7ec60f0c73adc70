"""The student: a small encoder (default: the offline all-MiniLM-L6-v2) fine-tuned as a sequence
classifier on teacher labels, with early stopping on validation accuracy."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def backbone_path(backbone: str | None) -> str:
    """The encoder to start from: the study's id/path, else the offline MiniLM's local directory."""
    if backbone is not None:
        return backbone
    from labscale.metrics.text import default_bertscore_model

    return default_bertscore_model()


def device() -> str:
    """Where the student runs: "cuda" when a GPU is there, else "cpu"."""
    from labscale.models.loading import has_cuda

    return "cuda" if has_cuda() else "cpu"


def _batches(n: int, size: int) -> list[range]:
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def embed(backbone: str, texts: Sequence[str], max_length: int, batch_size: int) -> np.ndarray:
    """Frozen mean-pooled embeddings of `texts` (Confident Learning's features)."""
    from transformers import AutoModel, AutoTokenizer

    from labscale.models.embeddings import mean_pooled

    tokenizer, model = AutoTokenizer.from_pretrained(backbone), AutoModel.from_pretrained(backbone).to(device()).eval()
    return mean_pooled(model, tokenizer, texts, max_length, batch_size)


@dataclass
class Classified:
    """A classifier's answers: label index per text, the seconds each batch took, tokens read per text."""

    labels: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    """Per text: its batch's wall seconds ÷ the batch size."""
    tokens: list[int] = field(default_factory=list)


def classify(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int) -> Classified:
    """Batched argmax predictions of a sequence classifier (timed like a generate backend: per batch)."""
    import torch

    model.eval()
    out = Classified()
    with torch.no_grad():
        for batch in _batches(len(texts), batch_size):
            started = time.perf_counter()
            enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(model.device)
            out.labels.extend(model(**enc).logits.argmax(-1).tolist())
            seconds = (time.perf_counter() - started) / len(batch)
            out.seconds.extend([seconds] * len(batch))
            out.tokens.extend(enc["attention_mask"].sum(-1).tolist())
    return out


@dataclass(frozen=True)
class Recipe:
    """The study's `distill` block fields that shape training."""

    epochs: int
    learning_rate: float
    batch_size: int
    patience: int
    max_length: int

    @classmethod
    def from_params(cls, distill: dict[str, Any]) -> "Recipe":
        return cls(**{k: distill[k] for k in ("epochs", "learning_rate", "batch_size", "patience", "max_length")})


@dataclass(frozen=True)
class Trained:
    """The fine-tuned student (best validation epoch) and how training went."""

    model: Any
    tokenizer: Any
    history: list[float]
    """Validation accuracy after each epoch run."""
    best_epoch: int


def fine_tune(backbone: str, label_names: Sequence[str], texts: Sequence[str], labels: Sequence[int],
              val_texts: Sequence[str], val_labels: Sequence[int], recipe: Recipe, seed: int,
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
        for batch in _batches(len(order), recipe.batch_size):
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


def save(trained: Trained, out: Path) -> None:
    """The student as a plain HF directory (config holds the label map) + its tokenizer."""
    trained.model.save_pretrained(out)
    trained.tokenizer.save_pretrained(out)


def load(path: Path) -> tuple[Any, Any]:
    """A saved student and its tokenizer, on the fastest device here."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(path).to(device()).eval(), AutoTokenizer.from_pretrained(path)
