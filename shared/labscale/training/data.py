"""What the trainers learn from: the recipe's share of prep's train rows, the privacy audit's canaries,
prompt/completion pairs fitted to the model's length, and their completion-only loss tensors (also
what the audit scores its losses with)."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from labscale.config.study import AuditConfig
from labscale.jsonl import read_jsonl
from labscale.models.prompt_fit import fit_prompt, token_count
from labscale.params import LoraTrainParams
from labscale.prompts import prompt_renderer
from labscale.stage import StageContext

IGNORE = -100
"""Label of a token the loss skips (prompt and padding)."""


def task_meta(prep: Path) -> dict[str, Any]:
    """prep's task.json (as written to disk): the task definition (`task`) and the prompt `family`."""
    return json.loads((prep / "task.json").read_text())


def training_rows(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The first `fraction` of the (prep-shuffled) train rows, at least one."""
    return rows[:max(1, math.ceil(len(rows) * fraction))]


def prep_training_rows(prep: Path, params: LoraTrainParams) -> list[dict[str, Any]]:
    """The recipe's share (`train.train_fraction`) of prep's train rows."""
    return training_rows(read_jsonl(prep / "train.jsonl"), params.train.train_fraction)


def sequence_length(params: LoraTrainParams) -> int:
    """The longest training sequence: the recipe's `max_length`, capped by the model's."""
    return min(params.train.max_length, params.model.max_length)


def canaries(audit: AuditConfig, seed: int) -> list[dict[str, str]]:
    """The audit's secret rows (input / completion), the same for every setting of a study seed."""
    rng = random.Random(f"canaries-{seed}")
    return [{"input": f"The secret code of canary-{i} is", "completion": f"{rng.randrange(10**6):06d}"}
            for i in range(audit.canaries)]


def with_canaries(rows: list[dict[str, Any]], audit: AuditConfig | None, seed: int) -> list[dict[str, Any]]:
    """`rows` with the audit's canaries (each `canary_repeats` times) at seeded positions; unchanged
    without an audit. A DP setting and its non-DP twin get the same rows."""
    if audit is None or not audit.canaries:
        return rows
    mixed = list(rows)
    rng = random.Random(f"canary-positions-{seed}")
    for row in canaries(audit, seed) * audit.canary_repeats:
        mixed.insert(rng.randrange(len(mixed) + 1), row)
    return mixed


def fitted_examples(rows: list[dict[str, Any]], meta: dict[str, Any], tokenizer: Any,
                    max_length: int) -> tuple[list[dict[str, str]], int]:
    """Prompt/completion pairs whose prompt leaves room for the completion (the trainer would cut the
    completion — the part the loss is on — otherwise); returns them and how many inputs were cut."""
    render = prompt_renderer(meta["family"], meta["task"]["instruction"], tokenizer=tokenizer)
    examples, cut = [], 0
    for row in rows:
        room = max_length - min(token_count(tokenizer, row["completion"]) + 1, max_length // 2)
        prompt, was_cut = fit_prompt(tokenizer, render, row["input"], room)
        examples.append({"prompt": prompt, "completion": row["completion"]})
        cut += was_cut
    return examples, cut


def training_examples(ctx: StageContext, tokenizer: Any) -> list[dict[str, str]]:
    """The run's prompt/completion training pairs: the recipe's share of prep's train rows (with the
    privacy audit's canaries when audited), each prompt fitted to leave room for its completion."""
    params = ctx.params
    assert isinstance(params, LoraTrainParams)
    prep = ctx.fetch("prep")
    rows = with_canaries(prep_training_rows(prep, params), params.train.audit, params.seed)
    ctx.log.info("training on %d rows (%.0f%% of the train split)", len(rows), 100 * params.train.train_fraction)
    examples, cut = fitted_examples(rows, task_meta(prep), tokenizer, sequence_length(params))
    if cut:
        ctx.log.warning("%d of %d training inputs were too long: cut at their end, keeping the answer", cut, len(rows))
    return examples


def completion_tensors(tokenizer: Any, examples: list[dict[str, str]], max_length: int) -> dict[str, Any]:
    """Right-padded input_ids / attention_mask / labels for prompt/completion pairs, the labels
    masked (-100) outside the completion (+ EOS) — the loss SFT's completion-only mode computes."""
    import torch

    rows = []
    for ex in examples:
        prompt = tokenizer(ex["prompt"])["input_ids"]
        completion = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        ids = (prompt + completion)[:max_length]
        rows.append((ids, [IGNORE] * len(prompt) + completion))
    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    for i, (ids, lab) in enumerate(rows):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        attention[i, :len(ids)] = 1
        labels[i, :len(ids)] = torch.tensor(lab[:len(ids)])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def completion_nll(model: Any, input_ids: Any, attention_mask: Any, labels: Any, mean: bool = True) -> Any:
    """Per-example negative log-likelihood of the completion tokens: their mean (the training loss)
    or their sum (`mean=False`: the log-perplexity canary exposure ranks). Columns past the batch's
    longest row are dropped first."""
    import torch

    width = int(attention_mask.sum(dim=1).max())
    input_ids, attention_mask, labels = input_ids[:, :width], attention_mask[:, :width], labels[:, :width]
    device = next(model.parameters()).device
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits[:, :-1].float()
    target = labels[:, 1:].to(device)
    token_nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    mask = (target != IGNORE).float()
    total = (token_nll * mask).sum(dim=1)
    return total / mask.sum(dim=1).clamp(min=1) if mean else total
