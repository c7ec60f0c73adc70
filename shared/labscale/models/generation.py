"""Batched greedy generation: length-sorted, left-padded batches (what generate and bench use)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Generation:
    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float
    """Seconds of the item's batch divided by the batch size (amortised per-item latency)."""


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                   max_length: int, min_new_tokens: int = 0) -> list[Generation]:
    """Greedy-decode one left-padded batch; prompts are left-truncated to fit `max_length`."""
    import torch

    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    enc = tokenizer(list(prompts), return_tensors="pt", padding=True, truncation=True,
                    max_length=max(8, max_length - max_new_tokens)).to(model.device)
    started = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    seconds = time.perf_counter() - started
    new_tokens = out[:, enc["input_ids"].shape[1]:]
    results = []
    for row, mask in zip(new_tokens.tolist(), enc["attention_mask"].tolist()):
        n_out = row.index(tokenizer.eos_token_id) + 1 if tokenizer.eos_token_id in row else len(row)
        text = tokenizer.decode(row[:n_out], skip_special_tokens=True).strip()
        results.append(Generation(text, int(sum(mask)), n_out, seconds / len(prompts)))
    return results


def generate_all(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, max_length: int,
                 batch_size: int, on_batch: Callable[[int], None] | None = None,
                 min_new_tokens: int = 0) -> list[Generation]:
    """Generate for every prompt in length-sorted batches; results in the prompts' order."""
    lengths = [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    results: list[Generation | None] = [None] * len(prompts)
    for start in range(0, len(order), batch_size):
        batch = order[start:start + batch_size]
        for index, gen in zip(batch, generate_batch(model, tokenizer, [prompts[i] for i in batch],
                                                    max_new_tokens, max_length, min_new_tokens)):
            results[index] = gen
        if on_batch:
            on_batch(len(batch))
    return [r for r in results if r is not None]
