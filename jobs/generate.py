"""generate: batched greedy predictions from an open model (± the fine-tuned LoRA adapter).

Reads: prep's test.jsonl, fewshot.jsonl and task.json (+ train's adapter for fine-tuned cells).
Writes: predictions.jsonl (id, prompt, prediction, target, tokens_in, tokens_out, latency_s).
Items are length-sorted and cut into shards; each shard is committed to the store as soon as it is
done (generate/<key>/shards/NNNNN), so a rerun after a crash resumes after the last shard.
"""

from __future__ import annotations

import json
from typing import Any

from labscale.errors import BadInputError
from labscale.stage import StageContext, read_jsonl, stage_main, write_jsonl

CODE_VERSION = "1"
STAGE = "generate"


def build_prompts(rows: list[dict], pool: list[dict], task: dict, family: str, shots: int, cot: bool) -> list[str]:
    """Zero-shot prompts come from prep; k-shot and CoT prompts are rendered with the same presets."""
    from labscale.prompts import render_prompt

    if shots == 0 and not cot:
        return [r["prompt"] for r in rows]
    if len(pool) < shots:
        raise BadInputError(f"{shots}-shot setting: the few-shot pool has only {len(pool)} items — "
                            "fix: raise tasks[].fewshot_pool or lower shots")
    demos = [(p["input"], p["target"]) for p in pool[:shots]]
    return [render_prompt(family, task["instruction"], r["input"], demos, cot) for r in rows]


class _Model:
    """Loads the model on first use, so a fully-resumed run never loads it."""

    def __init__(self, ctx: StageContext):
        self.ctx, self._loaded = ctx, None

    def get(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from labscale.models.loading import load_causal_lm, load_tokenizer

            params = self.ctx.spec.params
            adapter = self.ctx.fetch("adapter") / "adapter" if "adapter" in self.ctx.spec.inputs else None
            self._loaded = (load_causal_lm(params["model"], adapter).eval(), load_tokenizer(params["model"]))
        return self._loaded


def run(ctx: StageContext) -> dict[str, Any]:
    from labscale.models.generation import generate_all

    params = ctx.spec.params
    prep = ctx.fetch("prep")
    rows, pool = read_jsonl(prep / "test.jsonl"), read_jsonl(prep / "fewshot.jsonl")
    meta = json.loads((prep / "task.json").read_text())
    prompts = build_prompts(rows, pool, meta["task"], meta["family"], params["shots"], params["cot"])
    # Shard by prompt length so each shard's batches pad little; a shard is the unit of resume.
    order = sorted(range(len(rows)), key=lambda i: (len(prompts[i]), i))
    size = params["shard_size"]
    shards = [order[s:s + size] for s in range(0, len(order), size)]
    done = set(ctx.store.committed_children(f"{ctx.spec.prefix}/shards"))
    model = _Model(ctx)
    bar = ctx.progress(total=len(rows), desc="generate", unit="item")
    for number, shard in enumerate(shards):
        shard_prefix = f"{ctx.spec.prefix}/shards/{number:05d}"
        if shard_prefix in done:
            ctx.log.info("shard %d already committed — skipping %d items", number, len(shard))
            bar.update(len(shard))
            continue
        lm, tokenizer = model.get()
        gens = generate_all(lm, tokenizer, [prompts[i] for i in shard], params["max_new_tokens"],
                            params["model"]["max_length"], params["batch_size"],
                            on_batch=bar.update)
        shard_dir = ctx.scratch / "shards" / f"{number:05d}"
        write_jsonl(shard_dir / "predictions.jsonl", (
            {"id": rows[i]["id"], "prompt": prompts[i], "prediction": g.text, "target": rows[i]["target"],
             "tokens_in": g.tokens_in, "tokens_out": g.tokens_out, "latency_s": round(g.latency_s, 6)}
            for i, g in zip(shard, gens)))
        ctx.store.commit(shard_prefix, shard_dir, {"items": len(shard), "seconds": sum(g.latency_s for g in gens)})
    bar.close()
    by_id: dict[str, dict] = {}
    generation_seconds = 0.0
    for number in range(len(shards)):
        shard_prefix = f"{ctx.spec.prefix}/shards/{number:05d}"
        local = ctx.scratch / "merged" / f"{number:05d}.jsonl"
        manifest = ctx.store.require(shard_prefix)
        generation_seconds += manifest.meta["seconds"]
        for pred in read_jsonl(ctx.store.fetch_file(shard_prefix, "predictions.jsonl", local, manifest)):
            by_id[pred["id"]] = pred
    predictions = [by_id[r["id"]] for r in rows]
    write_jsonl(ctx.out_dir / "predictions.jsonl", predictions)
    tokens_in = sum(p["tokens_in"] for p in predictions)
    tokens_out = sum(p["tokens_out"] for p in predictions)
    return {
        "items": len(predictions),
        "generation_seconds": round(generation_seconds, 3),
        "items_per_second": round(len(predictions) / generation_seconds, 3) if generation_seconds else None,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
    }


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
