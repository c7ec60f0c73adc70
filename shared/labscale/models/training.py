"""The LoRA / QLoRA SFT recipe as trl objects: what the train stage and the GPU benchmark both run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labscale.models.loading import compute_dtype, has_cuda


def sft_trainer(model: Any, tokenizer: Any, dataset: Any, model_cfg: dict[str, Any], recipe: dict[str, Any],
                output_dir: Path, seed: int, callbacks: list[Any] = (), report_to: str | list[str] = "none",
                run_name: str | None = None) -> Any:
    """A trl `SFTTrainer` for `recipe` (a TrainConfig dict) on prompt/completion rows; `report_to` /
    `run_name`: where transformers sends the training logs (see labscale.tracking).

    With CUDA and a 4-bit model: paged 8-bit AdamW (QLoRA); bf16 where the GPU has it, else fp16.
    """
    from trl import SFTConfig, SFTTrainer

    config = SFTConfig(**trainer_args(model_cfg, recipe, output_dir, seed, report_to, run_name),
                       max_length=min(recipe["max_length"], model_cfg["max_length"]))
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                      peft_config=lora_config(recipe), callbacks=list(callbacks))


def trainer_args(model_cfg: dict[str, Any], recipe: dict[str, Any], output_dir: Path, seed: int,
                 report_to: str | list[str] = "none", run_name: str | None = None) -> dict[str, Any]:
    """The transformers TrainingArguments of a LoRA recipe (a TrainConfig dict), shared by SFT and DPO."""
    cuda, dtype = has_cuda(), compute_dtype()
    return dict(
        output_dir=str(output_dir),
        num_train_epochs=recipe["epochs"],
        max_steps=recipe["max_steps"],
        per_device_train_batch_size=recipe["batch_size"],
        gradient_accumulation_steps=recipe["grad_accum"],
        learning_rate=recipe["learning_rate"],
        warmup_steps=recipe["warmup_steps"],
        gradient_checkpointing=recipe["gradient_checkpointing"],
        optim="paged_adamw_8bit" if cuda and model_cfg["quantization"] == "4bit" else "adamw_torch",
        bf16=cuda and str(dtype) == "torch.bfloat16",
        fp16=cuda and str(dtype) == "torch.float16",
        use_cpu=not cuda,
        save_strategy="steps",
        save_steps=recipe["save_steps"],
        save_total_limit=1,
        logging_steps=max(1, recipe["save_steps"] // 5),
        seed=seed,
        data_seed=seed,
        report_to=report_to,
        run_name=run_name,
        disable_tqdm=False,
    )


def lora_config(recipe: dict[str, Any]) -> Any:
    """The recipe's peft LoRA config: every linear layer but lm_head."""
    from peft import LoraConfig

    return LoraConfig(r=recipe["r"], lora_alpha=recipe["alpha"], lora_dropout=recipe["dropout"],
                      target_modules="all-linear", task_type="CAUSAL_LM")
