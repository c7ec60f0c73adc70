"""Privacy audit of an open fine-tuned adapter (`finetune.audit`): how much it memorised its data.

- Membership inference, the loss-threshold attack (Yeom et al. 2018): the adapter's per-example loss
  on training rows (members) vs as many held-out rows (non-members: val, then test) → ROC AUC of
  "lower loss = member" (0.5: no leak) and the attack's advantage max(TPR − FPR).
- Canary exposure (Carlini et al. 2019): k secret rows "The secret code of canary-i is" → six
  digits are inserted `canary_repeats` times each into the training rows (labscale.training.data's
  `with_canaries`); afterwards each secret's log-perplexity is ranked among `candidates` random
  six-digit codes: exposure = log2(S) − log2(rank), S = candidates + 1 (0 ≈ not memorised; log2(S),
  the cap, = ranked first).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

from labscale.jsonl import read_jsonl
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import LoraTrainParams
from labscale.stage import StageContext
from labscale.training.data import (
    canaries, completion_nll, completion_tensors, fitted_examples, prep_training_rows, sequence_length, task_meta,
)

SCORE_BATCH = 16
"""Rows per forward pass while scoring losses."""


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

    losses: list[float] = []
    with torch.no_grad():
        for start in range(0, len(examples), SCORE_BATCH):
            batch = completion_tensors(tokenizer, examples[start:start + SCORE_BATCH], max_length)
            losses += completion_nll(model, batch["input_ids"], batch["attention_mask"], batch["labels"],
                                     mean=mean).tolist()
    return losses


def audit_adapter(ctx: StageContext) -> dict[str, Any]:
    """Membership-inference AUC / advantage and mean canary exposure of the adapter in ctx.out_dir."""
    params = ctx.params
    assert isinstance(params, LoraTrainParams) and params.train.audit is not None
    audit = params.train.audit
    prep = ctx.fetch("prep")
    meta = task_meta(prep)
    members = prep_training_rows(prep, params)
    outsiders = [row for split in ("val", "test") if (prep / f"{split}.jsonl").exists()
                 for row in read_jsonl(prep / f"{split}.jsonl")]
    k = min(audit.members, len(members), len(outsiders))
    max_length = sequence_length(params)
    tokenizer = load_tokenizer(params.model, padding_side="right")
    model = load_causal_lm(params.model, ctx.out_dir / "adapter").eval()

    def losses(rows: list[dict[str, Any]], mean: bool = True) -> list[float]:
        return completion_losses(model, tokenizer, fitted_examples(rows, meta, tokenizer, max_length)[0],
                                 max_length, mean)

    auc, advantage = roc_auc(losses(members[:k]), losses(outsiders[:k]))
    ctx.log.info("membership inference on %d members vs %d held-out rows: AUC %.3f", k, k, auc)
    metrics: dict[str, Any] = {"mia_auc": round(auc, 4), "mia_advantage": round(advantage, 4), "mia_rows": k}
    secrets = canaries(audit, params.seed)
    if secrets:
        rng = random.Random(f"candidates-{params.seed}")
        exposures = []
        for secret in secrets:
            others = [{**secret, "completion": f"{rng.randrange(10**6):06d}"} for _ in range(audit.candidates)]
            nlls = losses([secret, *[c for c in others if c["completion"] != secret["completion"]]], mean=False)
            exposures.append(exposure(nlls[0], nlls[1:]))
        metrics |= {"canary_exposure": round(sum(exposures) / len(exposures), 4),
                    "canary_exposure_max": round(math.log2(audit.candidates + 1), 4)}
        ctx.log.info("canary exposure: mean %.2f of at most %.2f bits", metrics["canary_exposure"],
                     metrics["canary_exposure_max"])
    return metrics


def audited(ctx: StageContext, train: Callable[[StageContext], dict[str, Any]]) -> dict[str, Any]:
    """Run an open model's trainer, then the privacy audit of its adapter when the recipe asks."""
    metrics = train(ctx)
    params = ctx.params
    assert isinstance(params, LoraTrainParams)
    return metrics | audit_adapter(ctx) if params.train.audit is not None else metrics
