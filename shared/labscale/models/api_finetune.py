"""Fine-tuning a closed model through an OpenAI-compatible API (seed 001): upload the chat JSONL,
create the job, poll it with backoff, and hand back the fine-tuned model's id.

Resumable: the job id is journaled in the store the moment the job exists, so a rerun re-attaches
to it (no second upload, no second bill) instead of starting another.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labscale.models.api import ChatApi

log = logging.getLogger("labscale.api")
DONE, FAILED = "succeeded", ("failed", "cancelled")


class JobFailed(RuntimeError):
    """The provider ended the fine-tuning job as failed or cancelled."""


@dataclass(frozen=True)
class FineTuneResult:
    """The fine-tuned model, its job, and the tokens the provider billed for training."""

    model_id: str
    job_id: str
    trained_tokens: int


def chat_training_rows(rows: list[dict[str, Any]], instruction: str) -> list[dict[str, Any]]:
    """Prep's train rows as OpenAI chat fine-tuning examples: system, user input, assistant target."""
    from labscale.prompts import chat_messages

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
            raise JobFailed(f"fine-tuning job {job_id} {job.status}: {reason}")
        time.sleep(delay)
        delay = min(max_poll_s, delay * 1.5)
