"""Sentence embeddings from an encoder: token states mean-pooled over the attention mask, as
sentence-transformers pools all-MiniLM-L6-v2 (the judge's reward and the distillation's cleanlab
features both use it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def mean_pooled(model: Any, tokenizer: Any, texts: Sequence[str], max_length: int, batch_size: int) -> np.ndarray:
    """One float32 row per text: `model`'s last hidden states averaged over the text's tokens."""
    import torch

    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(model.device)
            tokens = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)
            rows.append(((tokens * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).float().cpu().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), dtype=np.float32)
