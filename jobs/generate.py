"""generate: predictions for a cell's test items, from an open model (± the fine-tuned LoRA adapter)
or from a closed model behind an OpenAI-compatible API.

Reads: prep's test.jsonl, fewshot.jsonl and task.json (+ train's adapter for fine-tuned cells).
Writes: predictions.jsonl (id, prompt, prediction, target, tokens_in, tokens_out, latency_s; API
cells also usd and attempts); a compiled cell also prompt.json (the chosen prompt and its search).
Resume: an open model's items are length-sorted and cut into shards, each committed to the store
as soon as it is done (generate/<key>/shards/NNNNN); an API cell journals every answered item
(generate/<key>/items/…), so a rerun never re-requests (or re-pays) an item it already has.
Compiled cells (`compile` in params) first search their prompt on the validation split
(labscale.compile), journaling each trial (generate/<key>/compile/…); test rows are read only after
the prompt is fixed.
Distillation (labscale.distill): with `split` in params a teacher answers that prep split instead of
test; with a `student` input, the distilled classifier answers (same predictions.jsonl rows).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

from labscale.compile import Answer, Prompt, PromptSearch, SearchResult, Trial
from labscale.distill.predict import predict_student
from labscale.errors import BadInputError
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.stage import StageContext, stage_main

STAGE = "generate"


def demonstrations(pool: list[dict], shots: int) -> tuple[tuple[str, str], ...]:
    """The first `shots` (input, target) pairs of the few-shot pool."""
    if len(pool) < shots:
        raise BadInputError(f"{shots}-shot setting: the few-shot pool has only {len(pool)} items — "
                            "fix: raise tasks[].fewshot_pool or lower shots")
    return tuple((p["input"], p["target"]) for p in pool[:shots])


class OpenBackend:
    """An open model (± the cell's LoRA adapter): prompts in its family's preset, fitted to its
    context, answered by batched greedy generation (or the setting's contrastive search). The model
    loads on first use, so a fully resumed run never loads it."""

    def __init__(self, ctx: StageContext, meta: dict):
        from labscale.models.loading import load_tokenizer

        self.ctx, self.meta, self.params = ctx, meta, ctx.spec.params
        self.tokenizer = load_tokenizer(self.params["model"])
        self._model: Any = None

    def model(self) -> Any:
        if self._model is None:
            from labscale.models.loading import load_causal_lm

            adapter = self.ctx.fetch("adapter") / "adapter" if "adapter" in self.ctx.spec.inputs else None
            self._model = load_causal_lm(self.params["model"], adapter).eval()
        return self._model

    def prompts(self, rows: Sequence[dict], prompt: Prompt) -> tuple[list[str], int]:
        """Each row's prompt, an input too long for the context cut at its end (keeping instruction,
        demonstrations and answer slot); also how many inputs were cut."""
        from labscale.models.prompt_fit import fit_prompts
        from labscale.prompts import prompt_renderer

        render = prompt_renderer(self.meta["family"], prompt.instruction, prompt.demos, prompt.cot, self.tokenizer)
        budget = self.params["model"]["max_length"] - self.params["max_new_tokens"]
        return fit_prompts(self.tokenizer, render, [r["input"] for r in rows], budget)

    def _generate(self, prompts: list[str], on_batch: Any = None) -> list[Any]:
        from labscale.models.decoding import decoder_for
        from labscale.models.generation import generate_all

        params = self.params
        return generate_all(self.model(), self.tokenizer, prompts, params["max_new_tokens"],
                            params["model"]["max_length"], params["batch_size"], on_batch=on_batch,
                            min_new_tokens=params.get("min_new_tokens", 0), decode=decoder_for(params.get("decoding")))

    def answer(self, prompt: Prompt, rows: Sequence[dict]) -> list[Answer]:
        """Answers to `rows` (a prompt search's validation items); nothing is committed."""
        prompts, _ = self.prompts(rows, prompt)
        return [Answer(g.text, g.tokens_in, g.tokens_out) for g in self._generate(prompts)]

    def predict(self, rows: list[dict], prompt: Prompt) -> tuple[list[dict], float, int]:
        """Predictions committed shard by shard: (predictions, generation seconds, inputs cut)."""
        ctx = self.ctx
        prompts, cut = self.prompts(rows, prompt)
        if cut:
            ctx.log.warning("%d of %d inputs were too long for the model: cut at their end", cut, len(rows))
        # Shard by prompt length so each shard's batches pad little; a shard is the unit of resume.
        order = sorted(range(len(rows)), key=lambda i: (len(prompts[i]), i))
        size = self.params["shard_size"]
        shards = [order[s:s + size] for s in range(0, len(order), size)]
        done = set(ctx.store.committed_children(f"{ctx.spec.prefix}/shards"))
        bar = ctx.progress(total=len(rows), desc="generate", unit="item")
        for number, shard in enumerate(shards):
            shard_prefix = f"{ctx.spec.prefix}/shards/{number:05d}"
            if shard_prefix in done:
                ctx.log.info("shard %d already committed — skipping %d items", number, len(shard))
                bar.update(len(shard))
                continue
            gens = self._generate([prompts[i] for i in shard], on_batch=bar.update)
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


class ApiBackend:
    """A closed model behind an OpenAI-compatible API (a fine-tuned cell: the API's new model,
    recorded by train), priced per token from labscale.prices."""

    def __init__(self, ctx: StageContext, meta: dict):
        from labscale.prices import PRICE_TABLE_VERSION, api_price

        self.ctx, self.params = ctx, ctx.spec.params
        model = self.params["model"]
        if "adapter" in ctx.spec.inputs:
            model = {**model, "path": json.loads((ctx.fetch("adapter") / "model.json").read_text())["model_id"]}
        self.model = model
        self.price = api_price(model["path"])
        if self.price is None:
            ctx.log.warning("%s is not in the price table (%s): its cost counts as $0 — fix: add it to "
                            "labscale/prices.py", model["path"], PRICE_TABLE_VERSION)
        self._api: Any = None

    @property
    def api(self) -> Any:
        """The API client, made on first use (a fully journaled run needs neither it nor a key)."""
        if self._api is None:
            from labscale.models.api import ChatApi

            model, runtime = self.model, self.ctx.spec.runtime
            self._api = ChatApi(model["path"], model.get("base_url"), timeout_s=runtime["timeout_s"],
                                max_retries=runtime["max_retries"], requests_per_minute=runtime["requests_per_minute"],
                                concurrency=runtime["concurrency"])
        return self._api

    def usd(self, reply: Any) -> float:
        return self.price.usd(reply.tokens_in, reply.tokens_out) if self.price else 0.0

    @staticmethod
    def messages(rows: Sequence[dict], prompt: Prompt) -> dict[str, list[dict[str, str]]]:
        from labscale.prompts import chat_messages

        return {r["id"]: chat_messages(prompt.instruction, r["input"], prompt.demos, prompt.cot) for r in rows}

    def answer(self, prompt: Prompt, rows: Sequence[dict]) -> list[Answer]:
        """Answers to `rows` (a prompt search's validation items); nothing is journaled per item."""
        replies: dict[str, Answer] = {}

        def record(item_id: str, reply: Any) -> None:
            replies[item_id] = Answer(reply.text, reply.tokens_in, reply.tokens_out, self.usd(reply))

        self.api.answer_all(list(self.messages(rows, prompt).items()), self.params["max_new_tokens"], record)
        return [replies[r["id"]] for r in rows]

    def predict(self, rows: list[dict], prompt: Prompt) -> tuple[list[dict], float, int]:
        """Each answered item journaled in the store at once: (predictions, wall seconds, 0 — an API
        enforces its own context limit)."""
        ctx = self.ctx
        messages = self.messages(rows, prompt)
        by_id = {}
        for key in ctx.store.backend.list(f"{ctx.spec.prefix}/items/"):
            row = json.loads(ctx.store.backend.get_bytes(key))
            by_id[row["id"]] = row
        targets = {r["id"]: r["target"] for r in rows}
        todo = [(r["id"], messages[r["id"]]) for r in rows if r["id"] not in by_id]
        ctx.log.info("%s via %s: %d items answered before, %d to request", self.model["path"],
                     self.model.get("base_url") or "the default endpoint", len(by_id), len(todo))
        bar = ctx.progress(total=len(rows), desc="generate", unit="item")
        bar.update(len(by_id))

        def record(item_id: str, reply: Any) -> None:
            row = {"id": item_id, "prompt": json.dumps(messages[item_id], ensure_ascii=False), "prediction": reply.text,
                   "target": targets[item_id], "tokens_in": reply.tokens_in, "tokens_out": reply.tokens_out,
                   "latency_s": round(reply.latency_s, 6), "attempts": reply.attempts, "usd": self.usd(reply)}
            ctx.store.backend.put_bytes(_journal_key(ctx.spec.prefix, item_id), json.dumps(row).encode())
            by_id[item_id] = row
            bar.update(1)

        started = time.perf_counter()
        if todo:
            self.api.answer_all(todo, self.params["max_new_tokens"], record)
        bar.close()
        return [by_id[r["id"]] for r in rows], time.perf_counter() - started, 0


Backend = OpenBackend | ApiBackend


def compile_prompt(ctx: StageContext, backend: Backend, meta: dict, pool: list[dict], val_rows: list[dict]) -> SearchResult:
    """A compiled cell's prompt, searched on validation rows only; each trial is journaled in the
    store (generate/<key>/compile/NNN.json), so a rerun after an interruption does not pay twice."""
    params = ctx.spec.params
    journal_prefix = f"{ctx.spec.prefix}/compile/"
    journal = {int(key.rsplit("/", 1)[1].split(".")[0]): Trial.from_json(json.loads(ctx.store.backend.get_bytes(key)))
               for key in ctx.store.backend.list(journal_prefix)}
    bar = ctx.progress(total=params["compile"]["max_calls"], desc="compile", unit="call")

    def on_trial(number: int, trial: Trial) -> None:
        ctx.store.backend.put_bytes(f"{journal_prefix}{number:03d}.json", json.dumps(trial.to_json()).encode())
        ctx.log.info("candidate %d: %s = %.4f (%d demonstrations)", number, search.metric, trial.score,
                     len(trial.candidate.demo_ids))

    def answer(prompt: Prompt, rows: Sequence[dict]) -> list[Answer]:
        answers = backend.answer(prompt, rows)
        bar.update(len(rows))
        return answers

    search = PromptSearch(params["compile"], meta["task"], pool, params["cot"], params["seed"], journal, on_trial)
    result = search.run(answer, val_rows)
    bar.close()
    ctx.log.info("compiled prompt: %s %.4f on %d validation items (task's own prompt %.4f); %d candidates tried, "
                 "%d skipped by the budget", result.metric, result.best_score, params["compile"]["val_items"],
                 result.baseline_score, len(result.trials), result.skipped)
    return result


def run(ctx: StageContext) -> dict[str, Any]:
    """Predict every test item of the cell; returns the run's metrics (items, tokens, seconds, $)."""
    if "student" in ctx.spec.inputs:  # a distilled cell: the student classifier answers (labscale.distill)
        return predict_student(ctx)
    params = ctx.spec.params
    prep = ctx.fetch("prep")
    pool = read_jsonl(prep / "fewshot.jsonl")
    meta = json.loads((prep / "task.json").read_text())
    is_api = params["model"]["kind"] == "openai"
    backend: Backend = (ApiBackend if is_api else OpenBackend)(ctx, meta)
    prompt = Prompt(meta["task"]["instruction"], demonstrations(pool, params["shots"]), params["cot"])
    search = None
    if params.get("compile"):
        search = compile_prompt(ctx, backend, meta, pool, read_jsonl(prep / "val.jsonl"))
        prompt = search.prompt
        (ctx.out_dir / "prompt.json").write_text(json.dumps(search.to_json(), indent=2, ensure_ascii=False))
    # Only now: no test item can influence the prompt. A teacher labelling a distilled cell's data answers another split.
    rows = read_jsonl(prep / f"{params.get('split', 'test')}.jsonl")
    predictions, seconds, cut = backend.predict(rows, prompt)
    write_jsonl(ctx.out_dir / "predictions.jsonl", predictions)
    result: dict[str, Any] = {
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
