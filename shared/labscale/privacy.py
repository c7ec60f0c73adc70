"""Privacy audit of an open fine-tuned adapter (`finetune.audit`): how much it memorised its data.

- Membership inference, the loss-threshold attack (Yeom et al. 2018): the adapter's per-example loss
  on training rows (members) vs as many held-out rows (non-members: val, then test) → ROC AUC of
  "lower loss = member" (0.5: no leak) and the attack's advantage max(TPR − FPR).
- Canary exposure (Carlini et al. 2019): k secret rows "The secret code of canary-i is" → six
  digits are inserted `canary_repeats` times each into the training rows; afterwards each secret's
  log-perplexity is ranked among `candidates` random six-digit codes: exposure = log2(S) − log2(rank),
  S = candidates + 1 (0 ≈ not memorised; log2(S), the cap, = ranked first).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

from labscale.jsonl import read_jsonl
from labscale.stage import StageContext

SCORE_BATCH = 16
"""Rows per forward pass while scoring losses."""


def canaries(audit: dict[str, Any], seed: int) -> list[dict[str, str]]:
    """The audit's secret rows (input / completion), the same for every setting of a study seed."""
    rng = random.Random(f"canaries-{seed}")
    return [{"input": f"The secret code of canary-{i} is", "completion": f"{rng.randrange(10**6):06d}"}
            for i in range(audit["canaries"])]


def with_canaries(rows: list[dict[str, Any]], recipe: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """`rows` with the audit's canaries (each `canary_repeats` times) at seeded positions; unchanged
    without an audit. A DP setting and its non-DP twin get the same rows."""
    audit = recipe.get("audit")
    if not audit or not audit["canaries"]:
        return rows
    mixed = list(rows)
    rng = random.Random(f"canary-positions-{seed}")
    for row in canaries(audit, seed) * audit["canary_repeats"]:
        mixed.insert(rng.randrange(len(mixed) + 1), row)
    return mixed


def roc_auc(member_losses: list[float], nonmember_losses: list[float]) -> tuple[float, float]:
    """The loss-threshold attack's ROC AUC and advantage max(TPR − FPR): members should have lower loss."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = [1] * len(member_losses) + [0] * len(nonmember_losses)
    score = [-x for x in member_losses + nonmember_losses]
    fpr, tpr, _ = roc_curve(truth, score)
    return float(roc_auc_score(truth, score)), float(max(tpr - fpr))


def exposure(secret_nll: float, candidate_nlls: list[float]) -> float:
    """Carlini et al.'s exposure of a secret among sampled candidates: log2(S) − log2(rank), S =
    candidates + the secret, rank 1 = the lowest log-perplexity (ties count against the secret)."""
    rank = 1 + sum(c <= secret_nll for c in candidate_nlls)
    return math.log2(len(candidate_nlls) + 1) - math.log2(rank)


def completion_losses(model: Any, tokenizer: Any, examples: list[dict[str, str]], max_length: int,
                      mean: bool = True) -> list[float]:
    """Each pair's completion NLL under `model` (mean per token, or the sum: log-perplexity)."""
    import torch

    from labscale.models.dp_training import completion_nll, completion_tensors

    losses: list[float] = []
    with torch.no_grad():
        for start in range(0, len(examples), SCORE_BATCH):
            batch = completion_tensors(tokenizer, examples[start:start + SCORE_BATCH], max_length)
            losses += completion_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     mean=mean).tolist()
    return losses


def audit_adapter(ctx: StageContext) -> dict[str, Any]:
    """Membership-inference AUC / advantage and mean canary exposure of the adapter in ctx.out_dir."""
    from labscale.jobs.train import fitted_examples, training_rows
    from labscale.models.loading import load_causal_lm, load_tokenizer

    params = ctx.spec.params
    model_cfg, recipe, audit = params["model"], params["train"], params["train"]["audit"]
    prep = ctx.fetch("prep")
    meta = json.loads((prep / "task.json").read_text())
    members = training_rows(read_jsonl(prep / "train.jsonl"), recipe["train_fraction"])
    outsiders = [row for split in ("val", "test") if (prep / f"{split}.jsonl").exists()
                 for row in read_jsonl(prep / f"{split}.jsonl")]
    k = min(audit["members"], len(members), len(outsiders))
    max_length = min(recipe["max_length"], model_cfg["max_length"])
    tokenizer = load_tokenizer(model_cfg, padding_side="right")
    model = load_causal_lm(model_cfg, ctx.out_dir / "adapter").eval()

    def losses(rows: list[dict[str, Any]], mean: bool = True) -> list[float]:
        return completion_losses(model, tokenizer, fitted_examples(rows, meta, tokenizer, max_length)[0],
                                 max_length, mean)

    auc, advantage = roc_auc(losses(members[:k]), losses(outsiders[:k]))
    ctx.log.info("membership inference on %d members vs %d held-out rows: AUC %.3f", k, k, auc)
    metrics: dict[str, Any] = {"mia_auc": round(auc, 4), "mia_advantage": round(advantage, 4), "mia_rows": k}
    secrets = canaries(audit, params["seed"])
    if secrets:
        rng = random.Random(f"candidates-{params['seed']}")
        exposures = []
        for secret in secrets:
            others = [{**secret, "completion": f"{rng.randrange(10**6):06d}"} for _ in range(audit["candidates"])]
            nlls = losses([secret, *[c for c in others if c["completion"] != secret["completion"]]], mean=False)
            exposures.append(exposure(nlls[0], nlls[1:]))
        metrics |= {"canary_exposure": round(sum(exposures) / len(exposures), 4),
                    "canary_exposure_max": round(math.log2(audit["candidates"] + 1), 4)}
        ctx.log.info("canary exposure: mean %.2f of at most %.2f bits", metrics["canary_exposure"],
                     metrics["canary_exposure_max"])
    return metrics


def audited(ctx: StageContext, train: Callable[[StageContext], dict[str, Any]]) -> dict[str, Any]:
    """Run an open model's trainer, then the privacy audit of its adapter when the recipe asks."""
    metrics = train(ctx)
    return metrics | audit_adapter(ctx) if ctx.spec.params["train"].get("audit") else metrics
