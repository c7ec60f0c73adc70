"""The LoRA trainers' plumbing (SFT, DP-SGD, DPO): which path runs, the LoRA gradient guard, the budget
clock, the trainer callbacks (checkpoints to the store, stop at the budget), resuming from the store's
newest checkpoint, the save, and the trl/transformers arguments of a LoRA recipe.

Checkpoints go to the store under train/<key>/checkpoints/ while training, so an interrupted run (a
preempted pod) resumes there. With CUDA and `quantization: 4bit`: NF4 + double quant (bitsandbytes)
and paged 8-bit AdamW. With a study budget, training stops cleanly when the run's share of it is
spent (its metrics say so). With a `tracking:` block, the trainer's logs also go to W&B or MLflow.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labscale.config.study import TrainConfig
from labscale.cost import compute_cost_usd
from labscale.models.loading import has_cuda, model_dtype
from labscale.params import LoraTrainParams, ModelParams
from labscale.stage import Attempt, StageContext
from labscale.tracking import cell_name, trainer_reporting
from labscale.training.data import sequence_length


def training_path(model: ModelParams, cuda: bool) -> str:
    """Which recipe runs, logged and recorded: qlora-4bit-{cuda,cpu} or lora-{cuda,cpu}."""
    kind = "qlora-4bit" if model.quantization == "4bit" else "lora"
    return f"{kind}-{'cuda' if cuda else 'cpu'}"


def logged_path(ctx: StageContext, method: str = "", note: str = "") -> str:
    """The run's training path (`method` + `training_path`, e.g. dp-lora-cpu), logged once."""
    params = ctx.params
    assert isinstance(params, LoraTrainParams)
    path = method + training_path(params.model, has_cuda())
    ctx.log.info("training path: %s%s", path, note)
    return path


def assert_lora_gradients(model: Any) -> None:
    """Fail loudly if any LoRA layer got no gradient (the bitsandbytes CPU repacking trap, ml-stack.md).

    lora_B starts at zero and every linear layer lies on the loss path, so after a backward pass
    every lora_B gradient is non-zero; after the trap, the layers below the last one get exactly 0.
    """
    grads = {n: p.grad for n, p in model.named_parameters() if "lora_B" in n}
    dead = [n for n, g in grads.items() if g is None or not bool(g.abs().sum() > 0)]
    if not grads or dead:
        raise RuntimeError(f"{len(dead)} of {len(grads)} LoRA layers got a zero gradient: the 4-bit base model was "
                           "probably repacked for inference (a no-grad forward before training); "
                           "load a fresh model for training")


class BudgetClock:
    """The run's compute dollars so far against its share of the study budget: the same sum the manifest
    records (labscale.stage.Attempt): every earlier attempt of the run, plus this attempt from its start."""

    def __init__(self, budget_usd: float | None, usd_per_hour: float, attempt: Attempt | None = None):
        self.budget_usd, self.usd_per_hour, self.attempt = budget_usd, usd_per_hour, attempt
        self.started = time.perf_counter()
        """When training started in this attempt (model loading excluded)."""
        self.exhausted = False

    @classmethod
    def of(cls, ctx: StageContext) -> "BudgetClock":
        """The clock of the running train run: its budget share (runtime) at its pool's price."""
        return cls(ctx.spec.runtime.budget_usd, ctx.spec.usd_per_hour, ctx.attempt)

    def spent_usd(self) -> float:
        if self.attempt is not None:
            return self.attempt.spent_usd()
        return compute_cost_usd(time.perf_counter() - self.started, self.usd_per_hour)

    def check(self) -> bool:
        """True (and remembered) once the share is spent."""
        if self.budget_usd is not None and self.spent_usd() >= self.budget_usd:
            self.exhausted = True
        return self.exhausted

    def warn_stopped(self, ctx: StageContext, step: int, steps: int) -> None:
        """The one warning a trainer logs when the budget share stopped it."""
        ctx.log.warning("budget share $%.4g spent at step %d of %d: stopping, keeping the adapter so far",
                        self.budget_usd, step, steps)


def trainer_callbacks(ctx: StageContext, clock: BudgetClock) -> list[Any]:
    """Callbacks every trl LoRA trainer (SFT, DPO) runs with: checkpoints committed to the store, a check
    that LoRA gradients are non-zero before each optimizer step, and a stop once the budget is spent."""
    from transformers import TrainerCallback

    class CheckpointToStore(TrainerCallback):
        """After each local checkpoint save, commit it to the store and drop older ones there."""

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 (transformers' signature)
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            prefix = f"{ctx.spec.prefix}/checkpoints/{state.global_step:08d}"
            if ctx.attempt is not None:  # the attempt's record is at least as recent as its newest checkpoint
                ctx.attempt.save()
            ctx.store.commit(prefix, local, {"step": state.global_step, "spent_usd": clock.spent_usd()})
            for old in ctx.store.committed_children(f"{ctx.spec.prefix}/checkpoints"):
                if old != prefix:
                    ctx.store.delete(old)
            ctx.log.info("checkpoint at step %d committed to the store", state.global_step)

    class LoraGradientGuard(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            assert_lora_gradients(model)

    class StopAtBudget(TrainerCallback):
        """Stop cleanly (the adapter trained so far is saved) once the run's budget share is spent."""

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if not control.should_training_stop and clock.check():
                clock.warn_stopped(ctx, state.global_step, state.max_steps)
                control.should_training_stop = True

    return [CheckpointToStore(), LoraGradientGuard(), StopAtBudget()]


def resume_checkpoint(ctx: StageContext, output_dir: Path) -> str | None:
    """Download the newest committed checkpoint, if any, into the trainer's output dir. (What the attempts
    before it spent is in the run's attempts journal, which the budget clock and the manifest sum.)"""
    committed = ctx.store.committed_children(f"{ctx.spec.prefix}/checkpoints")
    if not committed:
        return None
    latest = committed[-1]
    local = output_dir / f"checkpoint-{int(latest.rsplit('/', 1)[1])}"
    ctx.store.fetch(latest, local)
    earlier = ctx.attempt.earlier if ctx.attempt is not None else None
    ctx.log.info("resuming from %s (%d earlier attempts spent %.1fs, $%.4g)", latest,
                 earlier.attempts if earlier else 0, earlier.seconds if earlier else 0.0,
                 earlier.compute_usd if earlier else 0.0)
    return str(local)


def earlier_seconds(ctx: StageContext) -> float:
    """Wall seconds the run's earlier attempts spent (killed ones included): what a resumed run's
    `train_seconds` adds to its own, so the time reported is the time the run took."""
    return ctx.attempt.earlier.seconds if ctx.attempt is not None else 0.0


def save_adapter(ctx: StageContext, save: Callable[[str], Any], history: list[dict[str, Any]]) -> list[float]:
    """adapter/ (`save(dir)`: the peft LoRA weights) and trainer_state.json (the log history) into the
    run's output; returns the logged losses, in order."""
    save(str(ctx.out_dir / "adapter"))
    (ctx.out_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}, indent=2))
    return [h["loss"] for h in history if h.get("loss") is not None]


def fit_and_save(ctx: StageContext, build: Callable[..., Any]) -> dict[str, Any]:
    """Run the trl trainer `build(output_dir, callbacks, **tracker_args)` makes (resuming from the store's
    newest checkpoint, stopping at the budget), save its adapter and trainer_state.json; returns the
    metrics every LoRA trainer reports (steps, train_loss, first/last loss, seconds — this attempt's
    training plus the earlier attempts' wall time —, budget stop)."""
    output_dir = ctx.scratch / "trainer"
    clock = BudgetClock.of(ctx)
    run_name = f"train/{cell_name(ctx.spec.labels)}"
    with trainer_reporting(ctx.spec.runtime.tracking, ctx.spec.study, run_name) as tracker_args:
        trainer = build(output_dir, trainer_callbacks(ctx, clock), **tracker_args)
        result = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, output_dir))
    losses = save_adapter(ctx, trainer.save_model, trainer.state.log_history)
    return {
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0) + earlier_seconds(ctx), 2),
        "stopped_by_budget": clock.exhausted,
    }


def trainer_args(params: LoraTrainParams, output_dir: Path, report_to: str | list[str] = "none",
                 run_name: str | None = None) -> dict[str, Any]:
    """The transformers TrainingArguments of a LoRA recipe on its model, shared by SFT and DPO; `report_to`
    / `run_name`: where transformers sends the training logs (see labscale.tracking).

    With CUDA and a 4-bit model: paged 8-bit AdamW (QLoRA); bf16 where the GPU has it, else fp16.
    """
    recipe, cuda, dtype = params.train, has_cuda(), model_dtype(params.model)
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        warmup_steps=recipe.warmup_steps,
        gradient_checkpointing=recipe.gradient_checkpointing,
        optim="paged_adamw_8bit" if cuda and params.model.quantization == "4bit" else "adamw_torch",
        bf16=cuda and str(dtype) == "torch.bfloat16",
        fp16=cuda and str(dtype) == "torch.float16",
        use_cpu=not cuda,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=1,
        logging_steps=max(1, recipe.save_steps // 5),
        seed=params.seed,
        data_seed=params.seed,
        report_to=report_to,
        run_name=run_name,
        disable_tqdm=False,
    )


def lora_trainer(trainer: type, config: type, model: Any, tokenizer: Any, dataset: Any, params: LoraTrainParams,
                 output_dir: Path, callbacks: Sequence[Any] = (), report_to: str | list[str] = "none",
                 run_name: str | None = None, **options: Any) -> Any:
    """A trl trainer class (`SFTTrainer`, `DPOTrainer`) with its config class on `dataset`, for the params'
    LoRA recipe at its sequence length; `options`: the method's own config fields (DPO's `beta`)."""
    args = config(**trainer_args(params, output_dir, report_to, run_name), max_length=sequence_length(params),
                  **options)
    return trainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                   peft_config=lora_config(params.train), callbacks=list(callbacks))


def lora_config(recipe: TrainConfig) -> Any:
    """The recipe's peft LoRA config: every linear layer but lm_head."""
    from peft import LoraConfig

    return LoraConfig(r=recipe.r, lora_alpha=recipe.alpha, lora_dropout=recipe.dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
