"""train: fine-tune the cell's model, or train a distilled cell's student — one method per kind of
params (labscale.params), each a module of labscale.training:

- `sft`: LoRA / QLoRA supervised fine-tuning with peft + trl's SFTTrainer (training.sft);
- `dp_sgd`: the same LoRA with DP-SGD through Opacus (training.dp_sgd);
- `dpo`: judge-ranked preference pairs, then trl's DPOTrainer (training.dpo);
- `student`: Confident Learning on the teacher's labels, then a small encoder classifier (training.student);
- `api_finetune`: a closed model through its provider's fine-tuning API (training.api_finetune).
An SFT or DP-SGD adapter's privacy audit (`train.audit`) follows its training (training.audit).

Reads: prep's train.jsonl (prompt/completion rows; loss on the completion only) and task.json.
Writes: adapter/ (peft LoRA weights) + trainer_state.json; student/ + cleanlab.jsonl; or model.json
(the fine-tuned API model's id). Checkpoints go to the store under train/<key>/checkpoints/ while
training, so an interrupted run (a preempted pod) resumes there. With CUDA and `quantization: 4bit`:
NF4 + double quant (bitsandbytes) and paged 8-bit AdamW. With a study budget, training stops cleanly
when this run's share of it is spent (the row says so). With a `tracking:` block, the trainer's logs
also go to W&B or MLflow (labscale.tracking).
"""

from __future__ import annotations

from typing import Any

from labscale.params import ApiFinetuneParams, DpoParams, DpSgdParams, SftParams, StudentParams
from labscale.stage import StageContext, stage_main
from labscale.training import api_finetune, dp_sgd, dpo, sft, student
from labscale.training.audit import audited

STAGE = "train"


def run(ctx: StageContext) -> dict[str, Any]:
    """Train with the method the params' kind names; SFT and DP-SGD adapters are audited when asked."""
    match ctx.params:
        case SftParams():
            return audited(ctx, sft.train)
        case DpSgdParams():
            return audited(ctx, dp_sgd.train)
        case DpoParams():
            return dpo.train(ctx)
        case StudentParams():
            return student.train(ctx)
        case ApiFinetuneParams():
            return api_finetune.train(ctx)
    raise TypeError(f"train: no method for {type(ctx.params).__name__}")


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.train --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
