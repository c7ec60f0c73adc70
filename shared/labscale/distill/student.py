"""The student model: a small encoder (default: the offline all-MiniLM-L6-v2) as a sequence classifier —
where it starts from, its frozen embeddings, batched classification, save and load. Its training on the
teacher's labels is labscale.training.student; its answering of the test split, labscale.distill.predict."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labscale.metrics.text import default_bertscore_model
from labscale.models.embeddings import mean_pooled
from labscale.models.loading import has_cuda


def backbone_path(backbone: str | None) -> str:
    """The encoder to start from: the study's id/path, else the offline MiniLM's local directory."""
    if backbone is not None:
        return backbone
    return default_bertscore_model()


def device() -> str:
    """Where the student runs: "cuda" when a GPU is there, else "cpu"."""
    return "cuda" if has_cuda() else "cpu"


def batches(n: int, size: int) -> list[range]:
    """Index ranges of consecutive batches of `size` over `n` items (the last one may be shorter)."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def embed(backbone: str, texts: Sequence[str], max_length: int, batch_size: int) -> np.ndarray:
    """Frozen mean-pooled embeddings of `texts` (Confident Learning's features)."""
    from transformers import AutoModel, AutoTokenizer

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
        for batch in batches(len(texts), batch_size):
            started = time.perf_counter()
            enc = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt").to(model.device)
            out.labels.extend(model(**enc).logits.argmax(-1).tolist())
            seconds = (time.perf_counter() - started) / len(batch)
            out.seconds.extend([seconds] * len(batch))
            out.tokens.extend(enc["attention_mask"].sum(-1).tolist())
    return out


def save(model: Any, tokenizer: Any, out: Path) -> None:
    """The student as a plain HF directory (config holds the label map) + its tokenizer."""
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def load(path: Path) -> tuple[Any, Any]:
    """A saved student and its tokenizer, on the fastest device here."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    return AutoModelForSequenceClassification.from_pretrained(path).to(device()).eval(), AutoTokenizer.from_pretrained(path)
