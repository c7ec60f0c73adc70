"""Judge-driven preference tuning (`DpoParams`, seed 004), the train path of a `preference` setting.

1. Sample `candidates` responses per train prompt from the base model (temperature / top-p); the
   candidates are journaled in the store (train/<key>/candidates.json), so a rerun reuses them.
2. Judge each with the "what is missing" judge (labscale.judge; its replies journaled too, so a
   rerun does not re-pay an API judge) and reward it.
3. Per prompt: chosen = the highest reward, rejected = the lowest; prompts with fewer than two valid
   judgements or a tie are skipped.
4. Train a LoRA adapter with trl's DPOTrainer on those pairs (the reference policy is the base model:
   the adapter disabled), checkpointed to the store like SFT; adapter/ is saved exactly like SFT's,
   so generate, score and benchmark treat the cell like any fine-tuned one. pairs.jsonl keeps the pairs.

Why offline DPO on judge-ranked pairs and not trl's OnlineDPOTrainer: OnlineDPO (trl.experimental in
trl 1.16) samples from the policy inside the training loop, which on a 4-bit model repacks the
weights for inference (zero LoRA gradients, ml-stack.md) and asks the judge mid-training, where its
replies could not be journaled and resumed. One round of sampling → judging → DPO keeps every paid
judgement in the store and trains the same LoRA recipe as SFT.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labscale.errors import BadInputError
from labscale.judge import JudgeClient, cost, judge_responses
from labscale.models.loading import has_cuda, load_causal_lm, load_tokenizer
from labscale.models.prompt_fit import fit_prompts
from labscale.params import DpoParams
from labscale.prompts import prompt_renderer
from labscale.stage import StageContext
from labscale.training.base import fit_and_save, lora_trainer, training_path
from labscale.training.data import prep_training_rows, sequence_length, task_meta


def sample_candidates(model: Any, tokenizer: Any, prompts: Sequence[str], n: int, temperature: float, top_p: float,
                      max_new_tokens: int, batch_size: int, seed: int,
                      on_batch: Callable[[int], Any] | None = None) -> list[list[str]]:
    """`n` sampled responses per prompt (left-padded batches, seeded); `on_batch(prompts done)` after each batch."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    tokenizer.padding_side = "left"
    out: list[list[str]] = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            batch = tokenizer(list(prompts[start:start + batch_size]), return_tensors="pt", padding=True).to(model.device)
            generated = model.generate(**batch, do_sample=True, temperature=temperature, top_p=top_p, top_k=0,
                                       num_return_sequences=n, max_new_tokens=max_new_tokens,
                                       pad_token_id=tokenizer.pad_token_id)
            texts = tokenizer.batch_decode(generated[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
            out += [[t.strip() for t in texts[i:i + n]] for i in range(0, len(texts), n)]
            if on_batch:
                on_batch(len(texts) // n)
    return out


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str
    rejected: str
    chosen_reward: float
    rejected_reward: float


def preference_pairs(prompts: Sequence[str], candidates: Sequence[Sequence[str]],
                     rewards: Sequence[Sequence[float | None]]) -> list[Pair]:
    """(highest, lowest) reward pair per prompt; skipped: fewer than two valid rewards, or a tie."""
    pairs = []
    for prompt, texts, scores in zip(prompts, candidates, rewards):
        valid = [(s, t) for s, t in zip(scores, texts) if s is not None]
        if len(valid) < 2:
            continue
        best, worst = max(valid, key=lambda v: v[0]), min(valid, key=lambda v: v[0])
        if best[0] > worst[0] and best[1] != worst[1]:
            pairs.append(Pair(prompt, best[1], worst[1], best[0], worst[0]))
    return pairs


def candidates(ctx: StageContext, prompts: list[str]) -> list[list[str]]:
    """The sampled candidates, from the store's journal when an earlier attempt sampled them."""
    params = ctx.params
    assert isinstance(params, DpoParams)
    config = params.preference
    key = f"{ctx.spec.prefix}/candidates.json"
    backend = ctx.store.backend
    if backend.exists(key):
        ctx.log.info("reusing the candidates sampled by an earlier attempt")
        return json.loads(backend.get_bytes(key))
    tokenizer = load_tokenizer(params.model)
    sampler = load_causal_lm(params.model).eval()  # its own object: training loads a fresh one (bnb trap)
    bar = ctx.progress(len(prompts), "sample candidates", unit="prompt")
    sampled = sample_candidates(sampler, tokenizer, prompts, config.candidates, config.temperature, config.top_p,
                                config.max_new_tokens, config.batch_size, params.seed, on_batch=bar.update)
    bar.close()
    del sampler
    backend.put_bytes(key, json.dumps(sampled).encode())
    return sampled


def dpo_trainer(model: Any, tokenizer: Any, dataset: Any, params: DpoParams, output_dir: Path,
                callbacks: Sequence[Any] = (), report_to: str | list[str] = "none", run_name: str | None = None) -> Any:
    """A trl `DPOTrainer` on prompt/chosen/rejected rows with the recipe's LoRA (the reference policy is
    the base model, i.e. the adapter switched off)."""
    from trl import DPOConfig, DPOTrainer

    return lora_trainer(DPOTrainer, DPOConfig, model, tokenizer, dataset, params, output_dir, callbacks, report_to,
                        run_name, beta=params.preference.beta)


def train(ctx: StageContext) -> dict[str, Any]:
    """Sample, judge, pair, then DPO with LoRA."""
    from datasets import Dataset

    params = ctx.params
    assert isinstance(params, DpoParams)
    config = params.preference
    prep = ctx.fetch("prep")
    meta = task_meta(prep)
    instruction = meta["task"]["instruction"]
    rows = prep_training_rows(prep, params)
    tokenizer = load_tokenizer(params.model)
    prompts, cut = fit_prompts(tokenizer, prompt_renderer(meta["family"], instruction, tokenizer=tokenizer),
                               [r["input"] for r in rows], sequence_length(params) - config.max_new_tokens)
    if cut:
        ctx.log.warning("%d of %d train inputs were too long: cut at their end", cut, len(rows))
    sampled = candidates(ctx, prompts)
    flat = [(i, text) for i, texts in enumerate(sampled) for text in texts]
    client = JudgeClient(ctx, config.judge, ctx.spec.runtime.judge, config.judge_max_new_tokens, config.batch_size)
    judged = judge_responses(client, instruction, [rows[i]["input"] for i, _ in flat], [t for _, t in flat],
                             config.zeta)
    rewards: list[list[float | None]] = [[] for _ in prompts]
    for (i, _), item in zip(flat, judged):
        rewards[i].append(item.reward)
    pairs = preference_pairs(prompts, sampled, rewards)
    invalid_rate = sum(not j.judgement.valid for j in judged) / len(judged)
    ctx.log.info("%d preference pairs from %d prompts × %d candidates (judge invalid rate %.2f)",
                 len(pairs), len(prompts), config.candidates, invalid_rate)
    if not pairs:
        raise BadInputError(f"no preference pairs: the judge found no reward gap on any of {len(prompts)} train "
                            f"prompts (invalid rate {invalid_rate:.0%}) — fix: raise preference.candidates or "
                            "temperature, or use a stronger judge model")
    dataset = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    tokenizer = load_tokenizer(params.model, padding_side="right")
    model = load_causal_lm(params.model)  # fresh object: never evaluated before training (bnb trap)
    metrics = fit_and_save(ctx, lambda output_dir, callbacks, **tracker_args: dpo_trainer(
        model, tokenizer, dataset, params, output_dir, callbacks, **tracker_args))
    (ctx.out_dir / "pairs.jsonl").write_text("".join(json.dumps(p.__dict__) + "\n" for p in pairs))
    judge_usd = cost(judged)["judge_usd"]
    return {
        "path": "dpo-" + training_path(params.model, has_cuda()),
        "train_rows": len(rows),
        "pairs": len(pairs),
        "candidates": len(flat),
        "judge_invalid_rate": round(invalid_rate, 4),
        "reward_chosen_mean": round(sum(p.chosen_reward for p in pairs) / len(pairs), 4),
        "reward_rejected_mean": round(sum(p.rejected_reward for p in pairs) / len(pairs), 4),
        "dpo_loss": metrics.pop("train_loss"),
        "judge_usd": judge_usd,
        "api_usd": judge_usd,
        **metrics,
    }
