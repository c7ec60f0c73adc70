"""generate: predictions for a cell's test items, from an open model (± the fine-tuned LoRA adapter)
or from a closed model behind an OpenAI-compatible API.

Reads: prep's test.jsonl, fewshot.jsonl and task.json (+ train's adapter for fine-tuned cells).
Writes: predictions.jsonl (id, prompt, prediction, target, tokens_in, tokens_out, latency_s; API
cells also usd and attempts).
Resume: an open model's items are length-sorted and cut into shards, each committed to the store
as soon as it is done (generate/<key>/shards/NNNNN); an API cell journals every answered item
(generate/<key>/items/…), so a rerun never re-requests (or re-pays) an item it already has.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from labscale.errors import BadInputError
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.stage import StageContext, stage_main

CODE_VERSION = "1"
STAGE = "generate"


def demonstrations(pool: list[dict], shots: int) -> list[tuple[str, str]]:
    """The first `shots` (input, target) pairs of the few-shot pool."""
    if len(pool) < shots:
        raise BadInputError(f"{shots}-shot setting: the few-shot pool has only {len(pool)} items — "
                            "fix: raise tasks[].fewshot_pool or lower shots")
    return [(p["input"], p["target"]) for p in pool[:shots]]


def build_prompts(rows: list[dict], pool: list[dict], meta: dict, params: dict, tokenizer: Any) -> tuple[list[str], int]:
    """Each item's prompt in its model family's preset (zero-/k-shot, CoT), fitted to the model's
    context: an input too long is cut at its end, keeping instruction, demonstrations and answer slot.
    Returns the prompts and how many inputs were cut."""
    from labscale.models.prompt_fit import fit_prompts
    from labscale.prompts import prompt_renderer

    render = prompt_renderer(meta["family"], meta["task"]["instruction"], demonstrations(pool, params["shots"]),
                             params["cot"], tokenizer)
    budget = params["model"]["max_length"] - params["max_new_tokens"]
    return fit_prompts(tokenizer, render, [r["input"] for r in rows], budget)


class _Model:
    """Loads the model on first use, so a fully-resumed run never loads it."""

    def __init__(self, ctx: StageContext):
        self.ctx, self._loaded = ctx, None

    def get(self) -> Any:
        if self._loaded is None:
            from labscale.models.loading import load_causal_lm

            params = self.ctx.spec.params
            adapter = self.ctx.fetch("adapter") / "adapter" if "adapter" in self.ctx.spec.inputs else None
            self._loaded = load_causal_lm(params["model"], adapter).eval()
        return self._loaded


def generate_open(ctx: StageContext, rows: list[dict], pool: list[dict], meta: dict) -> tuple[list[dict], float, int]:
    """Batched greedy generation, committed shard by shard: (predictions, generation seconds, inputs cut)."""
    from labscale.models.generation import generate_all
    from labscale.models.loading import load_tokenizer

    params = ctx.spec.params
    tokenizer = load_tokenizer(params["model"])
    prompts, cut = build_prompts(rows, pool, meta, params, tokenizer)
    if cut:
        ctx.log.warning("%d of %d inputs were too long for the model: cut at their end", cut, len(rows))
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
        gens = generate_all(model.get(), tokenizer, [prompts[i] for i in shard], params["max_new_tokens"],
                            params["model"]["max_length"], params["batch_size"],
                            on_batch=bar.update, min_new_tokens=params.get("min_new_tokens", 0))
        shard_dir = ctx.scratch / "shards" / f"{number:05d}"
        write_jsonl(shard_dir / "predictions.jsonl", (
            {"id": rows[i]["id"], "prompt": prompts[i], "prediction": g.text, "target": rows[i]["target"],
             "tokens_in": g.tokens_in, "tokens_out": g.tokens_out, "latency_s": round(g.latency_s, 6)}
            for i, g in zip(shard, gens)))
        ctx.store.commit(shard_prefix, shard_dir, {"items": len(shard), "seconds": sum(g.latency_s for g in gens)})
    bar.close()
    by_id: dict[str, dict] = {}
    seconds = 0.0
    for number in range(len(shards)):
        shard_prefix = f"{ctx.spec.prefix}/shards/{number:05d}"
        local = ctx.scratch / "merged" / f"{number:05d}.jsonl"
        manifest = ctx.store.require(shard_prefix)
        seconds += manifest.meta["seconds"]
        for pred in read_jsonl(ctx.store.fetch_file(shard_prefix, "predictions.jsonl", local, manifest)):
            by_id[pred["id"]] = pred
    return [by_id[r["id"]] for r in rows], seconds, cut


def _journal_key(prefix: str, item_id: str) -> str:
    return f"{prefix}/items/{hashlib.sha256(item_id.encode()).hexdigest()[:24]}.json"


def generate_api(ctx: StageContext, rows: list[dict], pool: list[dict], meta: dict) -> tuple[list[dict], float, int]:
    """Chat completions from an API model, each answered item journaled in the store at once:
    (predictions, wall seconds, 0 — an API enforces its own context limit)."""
    from labscale.models.api import ChatApi
    from labscale.prices import PRICE_TABLE_VERSION, api_price
    from labscale.prompts import chat_messages

    params, model, runtime = ctx.spec.params, ctx.spec.params["model"], ctx.spec.runtime
    if "adapter" in ctx.spec.inputs:  # a fine-tuned cell: the API's new model, recorded by train
        model = {**model, "path": json.loads((ctx.fetch("adapter") / "model.json").read_text())["model_id"]}
    price = api_price(model["path"])
    if price is None:
        ctx.log.warning("%s is not in the price table (%s): its cost counts as $0 — fix: add it to "
                        "labscale/prices.py", model["path"], PRICE_TABLE_VERSION)
    demos = demonstrations(pool, params["shots"])
    messages = {r["id"]: chat_messages(meta["task"]["instruction"], r["input"], demos, params["cot"]) for r in rows}
    by_id = {}
    for key in ctx.store.backend.list(f"{ctx.spec.prefix}/items/"):
        row = json.loads(ctx.store.backend.get_bytes(key))
        by_id[row["id"]] = row
    targets = {r["id"]: r["target"] for r in rows}
    todo = [(r["id"], messages[r["id"]]) for r in rows if r["id"] not in by_id]
    ctx.log.info("%s via %s: %d items answered before, %d to request", model["path"],
                 model.get("base_url") or "the default endpoint", len(by_id), len(todo))
    bar = ctx.progress(total=len(rows), desc="generate", unit="item")
    bar.update(len(by_id))

    def record(item_id: str, reply: Any) -> None:
        row = {"id": item_id, "prompt": json.dumps(messages[item_id], ensure_ascii=False), "prediction": reply.text,
               "target": targets[item_id], "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out,
               "latency_s": round(reply.latency_s, 6), "attempts": reply.attempts,
               "usd": price.usd(reply.tokens_in, reply.tokens_out) if price else 0.0}
        ctx.store.backend.put_bytes(_journal_key(ctx.spec.prefix, item_id), json.dumps(row).encode())
        by_id[item_id] = row
        bar.update(1)

    started = time.perf_counter()
    if todo:
        api = ChatApi(model["path"], model.get("base_url"), timeout_s=runtime["timeout_s"],
                      max_retries=runtime["max_retries"], requests_per_minute=runtime["requests_per_minute"],
                      concurrency=runtime["concurrency"])
        api.answer_all(todo, params["max_new_tokens"], record)
    bar.close()
    return [by_id[r["id"]] for r in rows], time.perf_counter() - started, 0


def run(ctx: StageContext) -> dict[str, Any]:
    """Predict every test item of the cell; returns the run's metrics (items, tokens, seconds, $)."""
    params = ctx.spec.params
    prep = ctx.fetch("prep")
    rows, pool = read_jsonl(prep / "test.jsonl"), read_jsonl(prep / "fewshot.jsonl")
    meta = json.loads((prep / "task.json").read_text())
    is_api = params["model"]["kind"] == "openai"
    predictions, seconds, cut = (generate_api if is_api else generate_open)(ctx, rows, pool, meta)
    write_jsonl(ctx.out_dir / "predictions.jsonl", predictions)
    result = {
        "items": len(predictions),
        "generation_seconds": round(seconds, 3),
        "items_per_second": round(len(predictions) / seconds, 3) if seconds else None,
        "tokens_in": sum(p["tokens_in"] for p in predictions),
        "tokens_out": sum(p["tokens_out"] for p in predictions),
        "inputs_cut": cut,
    }
    if is_api:
        from labscale.prices import PRICE_TABLE_VERSION

        result.update(api_usd=sum(p["usd"] for p in predictions), price_table=PRICE_TABLE_VERSION,
                      api_attempts=sum(p["attempts"] for p in predictions))
    return result


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.generate --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
