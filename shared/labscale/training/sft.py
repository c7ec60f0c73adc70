"""Supervised fine-tuning (`SftParams`): LoRA / QLoRA on an open model with peft + trl's SFTTrainer, on
prep's prompt/completion rows (loss on the completion only). The recipe as trl objects is also what the
GPU benchmark (bench/gpu.py) runs.

Reads: prep's train.jsonl and task.json. Writes: adapter/ (peft LoRA weights) + trainer_state.json.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import LoraTrainParams, SftParams
from labscale.stage import StageContext
from labscale.training.base import fit_and_save, logged_path, lora_trainer
from labscale.training.data import training_examples


def sft_trainer(model: Any, tokenizer: Any, dataset: Any, params: LoraTrainParams, output_dir: Path,
                callbacks: Sequence[Any] = (), report_to: str | list[str] = "none", run_name: str | None = None) -> Any:
    """A trl `SFTTrainer` for the params' LoRA recipe on prompt/completion rows (loss on the completion);
    `report_to` / `run_name`: where transformers sends the training logs (see labscale.tracking)."""
    from trl import SFTConfig, SFTTrainer

    return lora_trainer(SFTTrainer, SFTConfig, model, tokenizer, dataset, params, output_dir, callbacks, report_to,
                        run_name)


def train(ctx: StageContext) -> dict[str, Any]:
    """LoRA / QLoRA SFT of an open model with trl, checkpointed to the store."""
    from datasets import Dataset

    params = ctx.params
    assert isinstance(params, SftParams)
    path = logged_path(ctx)
    tokenizer = load_tokenizer(params.model, padding_side="right")
    examples = training_examples(ctx, tokenizer)
    dataset = Dataset.from_list(examples)
    model = load_causal_lm(params.model)  # fresh object: never evaluated before training (bnb trap)
    metrics = fit_and_save(ctx, lambda output_dir, callbacks, **tracker_args: sft_trainer(
        model, tokenizer, dataset, params, output_dir, callbacks, **tracker_args))
    return {"path": path, "train_rows": len(examples), **metrics}
