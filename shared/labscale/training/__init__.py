"""Training, one module per method (as trl has one config and one trainer per file). Each method's
`train(ctx) -> metrics` reads its typed params (labscale.params) from `ctx.params`:

- sft: LoRA / QLoRA supervised fine-tuning with trl's SFTTrainer (`SftParams`);
- dp_sgd: differentially private LoRA with Opacus (`DpSgdParams`);
- dpo: judge-ranked preference pairs, then trl's DPOTrainer (`DpoParams`);
- student: a distilled cell's small encoder classifier on the teacher's labels (`StudentParams`);
- api_finetune: a closed model fine-tuned through its provider's API (`ApiFinetuneParams`);
- audit: the privacy audit of an SFT or DP-SGD adapter (`train.audit`).

Shared plumbing: `data` (the training rows, the audit's canaries, prompt/completion examples and their
loss tensors) and `base` (the LoRA trainers' budget clock, callbacks, checkpoint/resume, save and trl
arguments). The train stage (labscale.jobs.train) only dispatches on the params' kind.
"""
