"""generate: predictions for a cell's test items, from an open model (± the fine-tuned LoRA adapter)
or from a closed model behind an OpenAI-compatible API.

Reads: prep's test.jsonl, fewshot.jsonl and task.json (+ train's adapter for fine-tuned cells).
Writes: predictions.jsonl (id, prompt, prediction, target, tokens_in, tokens_out, latency_s; API
cells also usd and attempts); a compiled cell also prompt.json (the chosen prompt and its search).
Resume: an open model's items are length-sorted and cut into shards, each committed to the store
as soon as it is done (generate/<key>/shards/NNNNN); an API cell journals every answered item
(generate/<key>/items/…), so a rerun never re-requests (or re-pays) an item it already has.
Compiled cells (`compile` set) first search their prompt on the validation split
(labscale.compile), journaling each trial (generate/<key>/compile/…); test rows are read only after
the prompt is fixed.
Distillation (labscale.distill): a teacher answers its params' `split` instead of test; a student's
params (`kind: student`) have the distilled classifier answer (same predictions.jsonl rows).
The models are called through labscale.models.client (open or API alike).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from labscale.compile import PromptSearch, SearchResult, Trial
from labscale.distill.predict import predict_student
from labscale.errors import BadInputError
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.models.calls import Prompt, Reply
from labscale.models.client import ModelClient, Request, VllmClient, model_client, request_text
from labscale.models.loading import dtype_name, load_tokenizer
from labscale.models.memory import BatchPlan, auto_batch, device_gpu_memory_gib, device_has_bf16
from labscale.params import ApiGenerateParams, ModelGenerateParams, OpenGenerateParams, StudentParams
from labscale.prices import PRICE_TABLE_VERSION
from labscale.prompts import prompt_renderer
from labscale.stage import StageContext, stage_main
from labscale.tasks.base import TaskDef

STAGE = "generate"
LONGEST_MEASURED = 8
"""`auto` batch: how many of the longest inputs (in characters) are rendered and tokenized to find
the longest prompt."""


def demonstrations(pool: list[dict], shots: int) -> tuple[tuple[str, str], ...]:
    """The first `shots` (input, target) pairs of the few-shot pool."""
    if len(pool) < shots:
        raise BadInputError(f"{shots}-shot setting: the few-shot pool has only {len(pool)} items (the first "
                            "tasks[].fewshot_pool rows of the train split) — fix: lower shots to "
                            f"{len(pool)} or fewer, or raise tasks[].fewshot_pool if it is below {shots}, "
                            "else give the train split more rows")
    return tuple((p["input"], p["target"]) for p in pool[:shots])


def open_batch(ctx: StageContext, params: OpenGenerateParams, rows: list[dict], prompt: Prompt) -> BatchPlan | None:
    """`batch_size: auto` → the memory plan (labscale.models.memory) on this machine's GPU at the longest
    prompt the run sends: the split's longest inputs rendered in the cell's prompt, in the model's
    tokens (a compiled cell's prompt is not known yet: the model's max_length). Without CUDA: 16.
    None when the study gives a number."""
    if not isinstance(params.batch_size, str):
        return None
    gpu = device_gpu_memory_gib()
    prompt_tokens = params.model.max_length - params.max_new_tokens
    if gpu is not None and params.compile is None:
        tokenizer = load_tokenizer(params.model)
        render = prompt_renderer(params.model.family, prompt.instruction, prompt.demos, prompt.cot, tokenizer)
        longest = sorted(rows, key=lambda r: len(r["input"]), reverse=True)[:LONGEST_MEASURED]
        prompt_tokens = max(len(ids) for ids in tokenizer([render(r["input"]) for r in longest])["input_ids"])
    plan = auto_batch(params.model, gpu_memory_gib=gpu, prompt_tokens=prompt_tokens,
                      max_new_tokens=params.max_new_tokens, items=len(rows), bf16=device_has_bf16(), download=True)
    ctx.log.info("batch_size auto → %s", plan.describe())
    return plan


def cell_client(ctx: StageContext, params: ModelGenerateParams, batch: BatchPlan | None = None) -> ModelClient:
    """The cell's model: an open model with the cell's LoRA adapter if it has one (batches of the study's
    size, or `batch`'s for auto); an API model, or the API's fine-tuned model that train recorded (its
    cost from labscale.prices)."""
    adapter = ctx.fetch("adapter") if "adapter" in ctx.spec.inputs else None
    if isinstance(params, OpenGenerateParams):
        batch_size = batch.batch if batch is not None else params.batch_size
        assert isinstance(batch_size, int), "batch_size auto is resolved by open_batch"
        return model_client(params.model, params.max_new_tokens, adapter_dir=adapter / "adapter" if adapter else None,
                            min_new_tokens=params.min_new_tokens, batch_size=batch_size,
                            decoding=params.decoding, engine=params.engine, engine_runtime=ctx.spec.runtime.engine)
    model = params.model
    if adapter is not None:
        model = model.model_copy(update={"path": json.loads((adapter / "model.json").read_text())["model_id"]})
    client = model_client(model, params.max_new_tokens, runtime=ctx.spec.runtime.api)
    if client.unpriced:
        ctx.log.warning("%s is not in the price table (%s): its cost counts as $0 — fix: give "
                        "models[].price in the study (or add it to labscale/prices.py)", model.path, PRICE_TABLE_VERSION)
    return client


def prediction(row: dict, request: Request, reply: Reply, api: bool) -> dict[str, Any]:
    """One predictions.jsonl row (an API model's also with its attempts and dollars)."""
    out = {"id": row["id"], "prompt": request_text(request), "prediction": reply.text, "target": row["target"],
           "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out, "latency_s": round(reply.latency_s, 6)}
    if api:
        out.update(attempts=reply.attempts, usd=reply.usd)
    return out


def predict_open(ctx: StageContext, client: ModelClient, rows: list[dict], prompt: Prompt, shard_size: int
                 ) -> tuple[list[dict], float, int]:
    """An open model's predictions, committed shard by shard: (predictions, generation seconds, inputs cut)."""
    requests, cut = client.requests(prompt, [r["input"] for r in rows])
    if cut:
        ctx.log.warning("%d of %d inputs were too long for the model: cut at their end", cut, len(rows))
    # Shard by prompt length so each shard's batches pad little; a shard is the unit of resume.
    order = sorted(range(len(rows)), key=lambda i: (len(requests[i]), i))
    shards = [order[s:s + shard_size] for s in range(0, len(order), shard_size)]
    done = set(ctx.store.committed_children(f"{ctx.spec.prefix}/shards"))
    if len(done) < len(shards):
        client.load()  # before the bar: one progress bar at a time
    bar = ctx.progress(total=len(rows), desc="generate", unit="item")
    for number, shard in enumerate(shards):
        shard_prefix = f"{ctx.spec.prefix}/shards/{number:05d}"
        if shard_prefix in done:
            ctx.log.info("shard %d already committed — skipping %d items", number, len(shard))
            bar.update(len(shard))
            continue
        replies: dict[str, Reply] = {}

        def record(index: str, reply: Reply) -> None:
            replies[index] = reply
            bar.update(1)

        client.answer([(str(i), requests[i]) for i in shard], record)
        shard_dir = ctx.scratch / "shards" / f"{number:05d}"
        write_jsonl(shard_dir / "predictions.jsonl",
                    (prediction(rows[i], requests[i], replies[str(i)], api=False) for i in shard))
        ctx.store.commit(shard_prefix, shard_dir, {"items": len(shard),
                                                   "seconds": sum(r.latency_s for r in replies.values())})
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


def predict_api(ctx: StageContext, client: ModelClient, rows: list[dict], prompt: Prompt
                ) -> tuple[list[dict], float, int]:
    """An API model's predictions, each answered item journaled in the store at once: (predictions,
    wall seconds, 0 — an API enforces its own context limit)."""
    requests, _ = client.requests(prompt, [r["input"] for r in rows])
    by_row = {r["id"]: (r, request) for r, request in zip(rows, requests)}
    by_id = {}
    for key in ctx.store.backend.list(f"{ctx.spec.prefix}/items/"):
        row = json.loads(ctx.store.backend.get_bytes(key))
        by_id[row["id"]] = row
    todo = [(r["id"], by_row[r["id"]][1]) for r in rows if r["id"] not in by_id]
    ctx.log.info("%s via %s: %d items answered before, %d to request", client.model.path,
                 client.model.base_url or "the default endpoint", len(by_id), len(todo))
    bar = ctx.progress(total=len(rows), desc="generate", unit="item")
    bar.update(len(by_id))

    def record(item_id: str, reply: Reply) -> None:
        row = prediction(*by_row[item_id], reply, api=True)
        ctx.store.backend.put_bytes(_journal_key(ctx.spec.prefix, item_id), json.dumps(row).encode())
        by_id[item_id] = row
        bar.update(1)

    started = time.perf_counter()
    if todo:
        client.answer(todo, record)
    bar.close()
    return [by_id[r["id"]] for r in rows], time.perf_counter() - started, 0


def compile_prompt(ctx: StageContext, client: ModelClient, params: ModelGenerateParams, task: TaskDef,
                   pool: list[dict], val_rows: list[dict]) -> SearchResult:
    """A compiled cell's prompt, searched on validation rows only; each trial is journaled in the
    store (generate/<key>/compile/NNN.json), so a rerun after an interruption does not pay twice."""
    config = params.compile
    assert config is not None
    journal_prefix = f"{ctx.spec.prefix}/compile/"
    journal = {int(key.rsplit("/", 1)[1].split(".")[0]): Trial.from_json(json.loads(ctx.store.backend.get_bytes(key)))
               for key in ctx.store.backend.list(journal_prefix)}
    bar = ctx.progress(total=config.max_calls, desc="compile", unit="call")

    def on_trial(number: int, trial: Trial) -> None:
        ctx.store.backend.put_bytes(f"{journal_prefix}{number:03d}.json", json.dumps(trial.to_json()).encode())
        ctx.log.info("candidate %d: %s = %.4f (%d demonstrations)", number, search.metric, trial.score,
                     len(trial.candidate.demo_ids))

    def answer(prompt: Prompt, rows: Sequence[dict]) -> list[Reply]:
        replies = client.ask(prompt, [r["input"] for r in rows])
        bar.update(len(rows))
        return replies

    search = PromptSearch(config, task, pool, params.cot, params.seed, journal, on_trial)
    result = search.run(answer, val_rows)
    bar.close()
    ctx.log.info("compiled prompt: %s %.4f on %d validation items (task's own prompt %.4f); %d candidates tried, "
                 "%d skipped by the budget", result.metric, result.best_score, config.val_items,
                 result.baseline_score, len(result.trials), result.skipped)
    return result


def run(ctx: StageContext) -> dict[str, Any]:
    """Predict every item of the cell's split; returns the run's metrics (items, tokens, seconds, $)."""
    params = ctx.params
    if isinstance(params, StudentParams):  # a distilled cell: the student classifier answers (labscale.distill)
        return predict_student(ctx)
    assert isinstance(params, OpenGenerateParams | ApiGenerateParams)
    prep = ctx.fetch("prep")
    pool = read_jsonl(prep / "fewshot.jsonl")
    task = TaskDef.model_validate(json.loads((prep / "task.json").read_text())["task"])
    prompt = Prompt(task.instruction, demonstrations(pool, params.shots), params.cot)
    batch = None
    # hf: sized by the split's lengths (no item reaches the prompt); vllm batches on its own
    if isinstance(params, OpenGenerateParams) and params.engine == "hf":
        batch = open_batch(ctx, params, read_jsonl(prep / f"{params.split}.jsonl"), prompt)
    client = cell_client(ctx, params, batch)
    search = None
    if params.compile is not None:
        search = compile_prompt(ctx, client, params, task, pool, read_jsonl(prep / "val.jsonl"))
        prompt = search.prompt
        (ctx.out_dir / "prompt.json").write_text(json.dumps(search.to_json(), indent=2, ensure_ascii=False))
    # Only now: no test item can influence the prompt. A teacher labelling a distilled cell's data answers another split.
    rows = read_jsonl(prep / f"{params.split}.jsonl")
    engine: dict[str, Any] = {}
    if isinstance(params, OpenGenerateParams):
        predictions, seconds, cut = predict_open(ctx, client, rows, prompt, params.shard_size)
        engine.update(engine=params.engine, dtype=dtype_name(params.model))
        if isinstance(client, VllmClient) and "engine" in client.__dict__:  # it answered something
            engine["engine_startup_s"] = round(client.engine.startup_once(), 3)
    else:
        predictions, seconds, cut = predict_api(ctx, client, rows, prompt)
    write_jsonl(ctx.out_dir / "predictions.jsonl", predictions)
    result: dict[str, Any] = {
        "items": len(predictions),
        "generation_seconds": round(seconds, 3),
        "items_per_second": round(len(predictions) / seconds, 3) if seconds else None,
        "tokens_in": sum(p["tokens_in"] for p in predictions),
        "tokens_out": sum(p["tokens_out"] for p in predictions),
        "inputs_cut": cut,
        **engine,
        **(batch.metrics() if batch is not None else {}),
    }
    is_api = isinstance(params, ApiGenerateParams)
    if is_api:
        result.update(api_usd=sum(p["usd"] for p in predictions), price_table=PRICE_TABLE_VERSION,
                      api_attempts=sum(p["attempts"] for p in predictions))
    if search is not None:  # the search's calls count in the cell's tokens and $
        cost = search.cost()
        result.update(cost, compiled_val_score=search.best_score, baseline_val_score=search.baseline_score)
        result["tokens_in"] += cost["search_tokens_in"]
        result["tokens_out"] += cost["search_tokens_out"]
        if is_api:
            result["api_usd"] += cost["search_usd"]
    return result


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.generate --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
