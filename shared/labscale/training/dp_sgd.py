"""Differentially private LoRA fine-tuning (`DpSgdParams`, `finetune.dp`): DP-SGD with Opacus over a
peft LoRA model.

Only the LoRA matrices are trainable, so Opacus's GradSampleModule hooks only them (plain
nn.Linear layers); the frozen base (embeddings, RMSNorm, 4-bit or full linears) needs no
per-sample gradients. Poisson sampling with an expected logical batch of batch_size × grad_accum
rows, cut into physical batches of batch_size by Opacus's BatchMemoryManager; the noise
multiplier is the smallest that keeps the whole run within target_epsilon at delta
(`get_noise_multiplier`), and the ε actually spent is read back from the accountant.
Gradient checkpointing is not used (its recomputation breaks Opacus's per-sample hooks).
Writes adapter/ and trainer_state.json like SFT.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from labscale.config.study import DPConfig, TrainConfig
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import DpSgdParams
from labscale.stage import StageContext
from labscale.training.base import BudgetClock, assert_lora_gradients, logged_path, lora_config, save_adapter
from labscale.training.data import completion_nll, completion_tensors, sequence_length, training_examples


def dp_delta(dp: DPConfig, n_train: int) -> float:
    """The study's delta, else 1/n_train (dp-transformers' default, the library the seed study used)."""
    return dp.delta if dp.delta is not None else 1.0 / n_train


def planned_steps(recipe: TrainConfig, n_train: int) -> tuple[int, float, int]:
    """The expected logical batch (batch_size × grad_accum rows), the Poisson sample rate Opacus
    derives from it (1 / batches per epoch) and the optimizer steps of the run."""
    batch = min(n_train, recipe.batch_size * recipe.grad_accum)
    per_epoch = math.ceil(n_train / batch)
    steps = recipe.max_steps if recipe.max_steps > 0 else max(1, math.ceil(recipe.epochs * per_epoch))
    return batch, 1.0 / per_epoch, steps


def zero_grad_samples(model: Any) -> None:
    """For an empty Poisson batch (rare, and a forward pass cannot take 0 rows): empty per-sample
    gradients, so the step still adds noise and is accounted for, as DP-SGD's analysis assumes."""
    import torch

    for p in model.parameters():
        if p.requires_grad and getattr(p, "grad_sample", None) is None:
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)


@dataclass
class PrivateRun:
    """A model made private by Opacus, with what the loop and the report need."""

    model: Any
    """The peft model (what gets saved)."""
    private: Any
    """Its GradSampleModule (what runs forward)."""
    optimizer: Any
    loader: Any
    engine: Any
    schedule: Any
    noise_multiplier: float
    delta: float
    sample_rate: float
    steps: int


def make_private(model: Any, data: dict[str, Any], recipe: TrainConfig, seed: int) -> PrivateRun:
    """Wrap a peft LoRA model, AdamW and a Poisson-sampled loader over `data` for DP-SGD at the
    noise multiplier that spends `recipe.dp.target_epsilon` over the run's planned steps."""
    import torch
    from opacus import PrivacyEngine
    from opacus.accountants.utils import get_noise_multiplier
    from transformers import get_linear_schedule_with_warmup

    dp, n = recipe.dp, len(data["input_ids"])
    assert dp is not None
    delta = dp_delta(dp, n)
    batch, sample_rate, steps = planned_steps(recipe, n)
    noise = get_noise_multiplier(target_epsilon=dp.target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                 steps=steps, accountant=dp.accountant)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=recipe.learning_rate)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data["input_ids"], data["attention_mask"], data["labels"]),
        batch_size=batch, generator=torch.Generator().manual_seed(seed))
    engine = PrivacyEngine(accountant=dp.accountant)
    private, optimizer, loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=noise,
        max_grad_norm=dp.max_grad_norm, poisson_sampling=True,
        noise_generator=torch.Generator(device=next(model.parameters()).device).manual_seed(seed))
    schedule = get_linear_schedule_with_warmup(optimizer, recipe.warmup_steps, steps)
    return PrivateRun(model, private, optimizer, loader, engine, schedule, noise, delta, sample_rate, steps)


def train(ctx: StageContext) -> dict[str, Any]:
    """DP-SGD LoRA of an open model, then the adapter saved like SFT's."""
    import torch
    from opacus.utils.batch_memory_manager import BatchMemoryManager
    from peft import get_peft_model

    params = ctx.params
    assert isinstance(params, DpSgdParams) and params.train.dp is not None
    recipe, dp = params.train, params.train.dp
    path = logged_path(ctx, "dp-", " (gradient checkpointing off: it conflicts with per-sample hooks)")
    torch.manual_seed(params.seed)
    tokenizer = load_tokenizer(params.model, padding_side="right")
    data = completion_tensors(tokenizer, training_examples(ctx, tokenizer), sequence_length(params))
    model = get_peft_model(load_causal_lm(params.model), lora_config(recipe)).train()
    run = make_private(model, data, recipe, params.seed)
    n = len(data["input_ids"])
    ctx.log.info("DP-SGD: %d rows, sample rate %.4g, %d steps, noise multiplier %.4g, clip %.3g, delta %.3g",
                 n, run.sample_rate, run.steps, run.noise_multiplier, dp.max_grad_norm, run.delta)
    clock = BudgetClock.of(ctx)
    history: list[dict[str, Any]] = []
    physical: list[float] = []
    bar = ctx.progress(run.steps, "dp-sgd", unit="step")
    while len(history) < run.steps and not clock.exhausted:
        with BatchMemoryManager(data_loader=run.loader, max_physical_batch_size=recipe.batch_size,
                                optimizer=run.optimizer) as batches:
            for input_ids, attention_mask, labels in batches:
                if len(input_ids):
                    loss = completion_nll(run.private, input_ids, attention_mask, labels).mean()
                    loss.backward()
                    physical.append(loss.item())
                    if not history:
                        assert_lora_gradients(run.model)
                else:
                    zero_grad_samples(run.model)
                run.optimizer.step()
                run.optimizer.zero_grad()
                if run.optimizer._is_last_step_skipped:
                    continue  # not the last physical batch of a logical one: per-sample gradients accumulate
                run.schedule.step()
                bar.update(1)
                history.append({"step": len(history) + 1, "epsilon": round(run.engine.get_epsilon(run.delta), 4),
                                "loss": round(sum(physical) / len(physical), 4) if physical else None})
                physical.clear()
                if len(history) >= run.steps or clock.check():
                    break
    bar.close()
    if clock.exhausted:
        clock.warn_stopped(ctx, len(history), run.steps)
    losses = save_adapter(ctx, run.model.save_pretrained, history)
    return {
        "path": path, "steps": len(history), "train_rows": n,
        "train_loss": round(sum(losses) / len(losses), 4) if losses else None,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "train_seconds": round(time.perf_counter() - clock.started, 2), "stopped_by_budget": clock.exhausted,
        "epsilon": round(run.engine.get_epsilon(run.delta), 4), "delta": run.delta,
        "noise_multiplier": round(run.noise_multiplier, 4), "max_grad_norm": dp.max_grad_norm,
        "sample_rate": round(run.sample_rate, 6), "target_epsilon": dp.target_epsilon,
        "accountant": dp.accountant,
    }
