"""Fine-tuning a closed model through an OpenAI-compatible API (`ApiFinetuneParams`, seed 001): upload
the chat JSONL, create the job, poll it with backoff, and hand back the fine-tuned model's id.

Writes: model.json (the fine-tuned model's id, its job and the tokens billed for training).
Resumable: the job id is journaled in the store the moment the job exists, so a rerun re-attaches
to it (no second upload, no second bill) instead of starting another.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from labscale.jsonl import write_jsonl
from labscale.models.api import ChatApi, chat_api
from labscale.params import ApiFinetuneParams, ApiRuntime
from labscale.prompts import chat_messages
from labscale.stage import StageContext
from labscale.training.data import prep_training_rows, task_meta

log = logging.getLogger("labscale.api")
DONE, FAILED = "succeeded", ("failed", "cancelled")


class FineTuneFailed(RuntimeError):
    """The provider ended the fine-tuning job as failed or cancelled."""


@dataclass(frozen=True)
class FineTuneResult:
    """The fine-tuned model, its job, and the tokens the provider billed for training."""

    model_id: str
    job_id: str
    trained_tokens: int


def chat_training_rows(rows: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """Prep's train rows as OpenAI chat fine-tuning examples: system, user input, assistant target."""
    return [{"messages": [*chat_messages(instruction, r["input"]), {"role": "assistant", "content": r["target"]}]}
            for r in rows]


def start_job(api: ChatApi, training_file: Path, hyperparameters: dict[str, Any], suffix: str) -> str:
    """Upload `training_file` and create the fine-tuning job; returns the job id."""
    def upload() -> Any:
        with open(training_file, "rb") as handle:  # reopened per attempt: a retry re-sends the whole file
            return api.client.files.create(file=handle, purpose="fine-tune")

    uploaded, _ = api.with_retries(upload)
    job, _ = api.with_retries(lambda: api.client.fine_tuning.jobs.create(
        model=api.model, training_file=uploaded.id, hyperparameters=hyperparameters, suffix=suffix))
    log.info("fine-tuning job %s created for %s (file %s)", job.id, api.model, uploaded.id)
    return job.id


def wait_for_job(api: ChatApi, job_id: str, poll_s: float = 10.0, max_poll_s: float = 120.0,
                 on_status: Callable[[str], None] | None = None) -> FineTuneResult:
    """Poll the job (backing off from `poll_s` to `max_poll_s`) until it succeeds; raise if it fails."""
    delay = poll_s
    while True:
        job, _ = api.with_retries(lambda: api.client.fine_tuning.jobs.retrieve(job_id))
        if on_status:
            on_status(job.status)
        if job.status == DONE:
            return FineTuneResult(job.fine_tuned_model, job.id, int(job.trained_tokens or 0))
        if job.status in FAILED:
            reason = getattr(job.error, "message", None) or "no reason given"
            raise FineTuneFailed(f"fine-tuning job {job_id} {job.status}: {reason}")
        time.sleep(delay)
        delay = min(max_poll_s, delay * 1.5)


def train(ctx: StageContext) -> dict[str, Any]:
    """Fine-tune a closed model through its API; the artifact is the new model's id (model.json)."""
    params = ctx.params
    assert isinstance(params, ApiFinetuneParams)
    runtime = ctx.spec.runtime.api or ApiRuntime()
    api = chat_api(params.model, runtime)
    started = time.perf_counter()
    journal = f"{ctx.spec.prefix}/api_job.json"
    if ctx.store.backend.exists(journal):
        job_id = json.loads(ctx.store.backend.get_bytes(journal))["job_id"]
        ctx.log.info("re-attaching to fine-tuning job %s", job_id)
    else:
        prep = ctx.fetch("prep")
        examples = ctx.scratch / "train.chat.jsonl"
        instruction = task_meta(prep)["task"]["instruction"]
        write_jsonl(examples, chat_training_rows(prep_training_rows(prep, params), instruction))
        hyper = {"n_epochs": max(1, round(params.train.epochs)), "batch_size": params.train.batch_size}
        job_id = start_job(api, examples, hyper, suffix=ctx.spec.key[:8])
        ctx.store.backend.put_bytes(journal, json.dumps({"job_id": job_id}).encode())
    try:
        result = wait_for_job(api, job_id, poll_s=runtime.fine_tune_poll_s,
                              on_status=lambda status: ctx.log.info("job %s: %s", job_id, status))
    except FineTuneFailed:
        ctx.store.backend.delete(journal)  # a failed job is final: the next attempt starts a new one
        raise
    (ctx.out_dir / "model.json").write_text(json.dumps(asdict(result), indent=2))
    price = params.model.training_price
    if price is None:
        ctx.log.warning("%s has no fine-tuning price (models[].price.training_per_1m, labscale/prices.py): "
                        "its training counts as $0", params.model.path)
    return {"path": "api-fine-tune", "model_id": result.model_id, "job_id": job_id,
            "trained_tokens": result.trained_tokens, "api_usd": result.trained_tokens * (price or 0.0) / 1e6,
            "train_seconds": round(time.perf_counter() - started, 2), "stopped_by_budget": False}
