"""train: LoRA / QLoRA supervised fine-tuning with peft + trl's SFTTrainer — or, for a closed
model, the provider's fine-tuning API (writes model.json with the fine-tuned model's id).

Reads: prep's train.jsonl (prompt/completion rows; loss on the completion only).
Writes: adapter/ (peft LoRA weights) + trainer_state.json. Checkpoints go to the store under
train/<key>/checkpoints/ while training, so an interrupted run (a preempted pod) resumes there.
With CUDA and `quantization: 4bit`: NF4 + double quant (bitsandbytes) and paged 8-bit AdamW.
With a study budget, training stops cleanly when this run's share of it is spent (the row says so).
With a `tracking:` block, the trainer's logs also go to W&B or MLflow (labscale.tracking).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labscale.cost import compute_cost_usd
from labscale.distill.train import train_student
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.stage import StageContext, stage_main

STAGE = "train"


def training_path(model: dict[str, Any], cuda: bool) -> str:
    """Which recipe runs, logged and recorded: qlora-4bit-{cuda,cpu} or lora-{cuda,cpu}."""
    kind = "qlora-4bit" if model.get("quantization") == "4bit" else "lora"
    return f"{kind}-{'cuda' if cuda else 'cpu'}"


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


def training_rows(rows: list[dict[str, Any]], fraction: float) -> list[dict[str, Any]]:
    """The first `fraction` of the (prep-shuffled) train rows, at least one."""
    return rows[:max(1, math.ceil(len(rows) * fraction))]


def fitted_examples(rows: list[dict[str, Any]], meta: dict[str, Any], tokenizer: Any,
                    max_length: int) -> tuple[list[dict[str, str]], int]:
    """Prompt/completion pairs whose prompt leaves room for the completion (the trainer would cut the
    completion — the part the loss is on — otherwise); returns them and how many inputs were cut."""
    from labscale.models.prompt_fit import fit_prompt, token_count
    from labscale.prompts import prompt_renderer

    render = prompt_renderer(meta["family"], meta["task"]["instruction"], tokenizer=tokenizer)
    examples, cut = [], 0
    for row in rows:
        room = max_length - min(token_count(tokenizer, row["completion"]) + 1, max_length // 2)
        prompt, was_cut = fit_prompt(tokenizer, render, row["input"], room)
        examples.append({"prompt": prompt, "completion": row["completion"]})
        cut += was_cut
    return examples, cut


class BudgetClock:
    """The run's compute dollars so far (wall-hours × pool price) against its share of the study budget."""

    def __init__(self, budget_usd: float | None, usd_per_hour: float):
        self.budget_usd, self.usd_per_hour = budget_usd, usd_per_hour
        self.started = time.perf_counter()
        self.earlier_usd = 0.0
        """Spent by interrupted attempts before the checkpoint this one resumed from."""
        self.exhausted = False

    def spent_usd(self) -> float:
        return self.earlier_usd + compute_cost_usd(time.perf_counter() - self.started, self.usd_per_hour)

    def check(self) -> bool:
        """True (and remembered) once the share is spent."""
        if self.budget_usd is not None and self.spent_usd() >= self.budget_usd:
            self.exhausted = True
        return self.exhausted


def trainer_callbacks(ctx: StageContext, clock: BudgetClock) -> list[Any]:
    """Callbacks every LoRA trainer (SFT, DPO) runs with: checkpoints committed to the store, a check
    that LoRA gradients are non-zero before each optimizer step, and a stop once the budget is spent."""
    from transformers import TrainerCallback

    class CheckpointToStore(TrainerCallback):
        """After each local checkpoint save, commit it to the store and drop older ones there."""

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001 (transformers' signature)
            local = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            prefix = f"{ctx.spec.prefix}/checkpoints/{state.global_step:08d}"
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
                ctx.log.warning("budget share $%.4g spent at step %d of %d: stopping, keeping the adapter so far",
                                clock.budget_usd, state.global_step, state.max_steps)
                control.should_training_stop = True

    return [CheckpointToStore(), LoraGradientGuard(), StopAtBudget()]


def resume_checkpoint(ctx: StageContext, output_dir: Path, clock: BudgetClock) -> str | None:
    """Download the newest committed checkpoint, if any, into the trainer's output dir; the budget
    clock carries on from what the attempts before it spent."""
    committed = ctx.store.committed_children(f"{ctx.spec.prefix}/checkpoints")
    if not committed:
        return None
    latest = committed[-1]
    local = output_dir / f"checkpoint-{int(latest.rsplit('/', 1)[1])}"
    clock.earlier_usd = ctx.store.fetch(latest, local).meta.get("spent_usd", 0.0)
    ctx.log.info("resuming from %s ($%.4g spent before)", latest, clock.earlier_usd)
    return str(local)


def run(ctx: StageContext) -> dict[str, Any]:
    """Fine-tune the cell's model: LoRA/QLoRA (or DP-SGD LoRA, `dp`) for an open model, the provider's
    API for a closed one; an open adapter's privacy audit (`audit`) follows its training."""
    if "distill" in ctx.spec.params:  # a distilled cell's student (labscale.distill)
        return train_student(ctx)
    if ctx.spec.params["model"]["kind"] == "openai":
        return train_api(ctx)
    if "preference" in ctx.spec.params:  # judge-driven DPO with LoRA (labscale.models.preference)
        from labscale.models.preference import train_preference

        return train_preference(ctx)
    from labscale.models.dp_training import train_dp
    from labscale.privacy import audited

    return audited(ctx, train_dp if ctx.spec.params["train"].get("dp") else train_open)


def train_api(ctx: StageContext) -> dict[str, Any]:
    """Fine-tune a closed model through its API; the artifact is the new model's id (model.json)."""
    from labscale.models.api import ChatApi
    from labscale.models.api_finetune import JobFailed, chat_training_rows, start_job, wait_for_job
    from labscale.prices import training_price_per_mtok

    params, runtime = ctx.spec.params, ctx.spec.runtime
    model, recipe = params["model"], params["train"]
    api = ChatApi(model["path"], model.get("base_url"), timeout_s=runtime["timeout_s"],
                  max_retries=runtime["max_retries"])
    started = time.perf_counter()
    journal = f"{ctx.spec.prefix}/api_job.json"
    if ctx.store.backend.exists(journal):
        job_id = json.loads(ctx.store.backend.get_bytes(journal))["job_id"]
        ctx.log.info("re-attaching to fine-tuning job %s", job_id)
    else:
        prep = ctx.fetch("prep")
        instruction = json.loads((prep / "task.json").read_text())["task"]["instruction"]
        examples = ctx.scratch / "train.chat.jsonl"
        rows = training_rows(read_jsonl(prep / "train.jsonl"), recipe["train_fraction"])
        write_jsonl(examples, chat_training_rows(rows, instruction))
        hyper = {"n_epochs": max(1, round(recipe["epochs"])), "batch_size": recipe["batch_size"]}
        job_id = start_job(api, examples, hyper, suffix=ctx.spec.key[:8])
        ctx.store.backend.put_bytes(journal, json.dumps({"job_id": job_id}).encode())
    try:
        result = wait_for_job(api, job_id, poll_s=runtime["fine_tune_poll_s"],
                              on_status=lambda status: ctx.log.info("job %s: %s", job_id, status))
    except JobFailed:
        ctx.store.backend.delete(journal)  # a failed job is final: the next attempt starts a new one
        raise
    (ctx.out_dir / "model.json").write_text(json.dumps(result.__dict__, indent=2))
    price = training_price_per_mtok(model["path"])
    if price is None:
        ctx.log.warning("%s has no fine-tuning price in labscale/prices.py: its training counts as $0", model["path"])
    return {"path": "api-fine-tune", "model_id": result.model_id, "job_id": job_id,
            "trained_tokens": result.trained_tokens, "api_usd": result.trained_tokens * (price or 0.0) / 1e6,
            "train_seconds": round(time.perf_counter() - started, 2), "stopped_by_budget": False}


def training_examples(ctx: StageContext, tokenizer: Any) -> list[dict[str, str]]:
    """The run's prompt/completion training pairs: the recipe's share of prep's train rows (with the
    privacy audit's canaries when audited), each prompt fitted to leave room for its completion."""
    from labscale.privacy import with_canaries

    params = ctx.spec.params
    recipe, prep = params["train"], ctx.fetch("prep")
    rows = with_canaries(training_rows(read_jsonl(prep / "train.jsonl"), recipe["train_fraction"]), recipe,
                         params["seed"])
    ctx.log.info("training on %d rows (%.0f%% of the train split)", len(rows), 100 * recipe["train_fraction"])
    examples, cut = fitted_examples(rows, json.loads((prep / "task.json").read_text()), tokenizer,
                                    min(recipe["max_length"], params["model"]["max_length"]))
    if cut:
        ctx.log.warning("%d of %d training inputs were too long: cut at their end, keeping the answer", cut, len(rows))
    return examples


def fit_and_save(ctx: StageContext, build: Callable[..., Any]) -> dict[str, Any]:
    """Run the trl trainer `build(output_dir, callbacks, **tracker_args)` makes (resuming from the store's
    newest checkpoint, stopping at the budget), save its adapter and trainer_state.json; returns the
    metrics every LoRA trainer reports (steps, train_loss, first/last loss, seconds, budget stop)."""
    from labscale.tracking import cell_name, trainer_reporting

    output_dir = ctx.scratch / "trainer"
    clock = BudgetClock(ctx.spec.runtime.get("budget_usd"), ctx.spec.usd_per_hour)
    run_name = f"train/{cell_name(ctx.spec.labels)}"
    with trainer_reporting(ctx.spec.runtime.get("tracking"), ctx.spec.study, run_name) as tracker_args:
        trainer = build(output_dir, trainer_callbacks(ctx, clock), **tracker_args)
        result = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, output_dir, clock))
    trainer.save_model(str(ctx.out_dir / "adapter"))
    history = trainer.state.log_history
    (ctx.out_dir / "trainer_state.json").write_text(json.dumps({"log_history": history}, indent=2))
    losses = [h["loss"] for h in history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "train_loss": round(result.training_loss, 4),
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 2),
        "stopped_by_budget": clock.exhausted,
    }


def train_open(ctx: StageContext) -> dict[str, Any]:
    """LoRA / QLoRA SFT of an open model with trl, checkpointed to the store."""
    from datasets import Dataset

    from labscale.models.loading import has_cuda, load_causal_lm, load_tokenizer
    from labscale.models.training import sft_trainer

    params = ctx.spec.params
    model_cfg, recipe = params["model"], params["train"]
    cuda = has_cuda()
    path = training_path(model_cfg, cuda)
    ctx.log.info("training path: %s", path)
    tokenizer = load_tokenizer(model_cfg, padding_side="right")
    examples = training_examples(ctx, tokenizer)
    dataset = Dataset.from_list(examples)
    model = load_causal_lm(model_cfg)  # fresh object: never evaluated before training (bnb trap)
    metrics = fit_and_save(ctx, lambda output_dir, callbacks, **tracker_args: sft_trainer(
        model, tokenizer, dataset, model_cfg, recipe, output_dir, params["seed"], callbacks, **tracker_args))
    return {"path": path, "train_rows": len(examples), **metrics}


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.train --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
