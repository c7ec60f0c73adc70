"""TEST DOUBLE of an OpenAI-compatible API — not OpenAI. An HTTP server on 127.0.0.1 that
implements `POST /v1/chat/completions` with deterministic answers, the fine-tuning endpoints
(`POST /v1/files`, `POST /v1/fine_tuning/jobs`, `GET /v1/fine_tuning/jobs/{id}`: a job succeeds on
its third poll), injects faults on request, and records every request it received, so tests can
check what the real `openai` client sent.

Faults are planned per item (keyed by the last user message, or by order of arrival): a list of what the item's first
attempts get — "429" (with Retry-After: 0), "500", "timeout" (the reply comes after `slow_s`),
"malformed" (200 with a body that is not JSON), "400" (a non-retryable refusal) — then success.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Exchange:
    item: str
    outcome: str
    """ok (billed), 429, 500, timeout, malformed, 400."""
    tokens_in: int = 0
    tokens_out: int = 0
    turns: int = 1
    """Messages in the request (tells a zero-shot from a k-shot request for the same item)."""


@dataclass
class OpenAIDouble:
    answer: Any = lambda item: "SUPPORTS"
    """item (last user message) → the assistant's reply text."""
    answer_chat: Any = None
    """When set: the request's messages → the reply text (answers that depend on the instruction)."""
    faults: dict[str, list[str]] = field(default_factory=dict)
    faults_by_arrival: list[list[str]] = field(default_factory=list)
    """Faults for the 1st, 2nd, … distinct item to arrive (when the items are not known in advance)."""
    refuse_after_ok: int | None = None
    """After this many billed replies, every request gets a 503 (an outage that outlasts the retries)."""
    slow_s: float = 1.5
    exchanges: list[Exchange] = field(default_factory=list)
    uploads: list[bytes] = field(default_factory=list)
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    polls_failing: bool = False
    """While set, job polls get 500s (a flaky or unreachable API mid-fine-tune)."""
    models_asked: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: Counter[str] = Counter()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def billed(self) -> list[Exchange]:
        return [e for e in self.exchanges if e.outcome == "ok"]

    def __enter__(self) -> OpenAIDouble:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _decide(self, item: str) -> str:
        with self._lock:
            if item not in self._attempts and len(self._attempts) < len(self.faults_by_arrival):
                self.faults.setdefault(item, self.faults_by_arrival[len(self._attempts)])
            attempt = self._attempts[item]
            self._attempts[item] += 1
            planned = self.faults.get(item, [])
            if attempt < len(planned):
                return planned[attempt]
            if self.refuse_after_ok is not None and len(self.billed()) >= self.refuse_after_ok:
                return "503"
            return "ok"

    def _create_job(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            job_id = f"ftjob-{len(self.jobs) + 1}"
            self.jobs[job_id] = {"id": job_id, "object": "fine_tuning.job", "model": request["model"],
                                 "training_file": request["training_file"], "created_at": 0, "status": "validating_files",
                                 "hyperparameters": request.get("hyperparameters", {}), "fine_tuned_model": None,
                                 "trained_tokens": None, "organization_id": "org-double", "result_files": [],
                                 "seed": 0, "error": None, "finished_at": None, "validation_file": None, "polls": 0}
            return self._public(job_id)

    def _poll(self, job_id: str) -> dict[str, Any]:
        """validating_files → running → succeeded, one step per poll; trained tokens = words × epochs."""
        with self._lock:
            job = self.jobs[job_id]
            job["polls"] += 1
            if job["polls"] >= 3:
                upload = self.uploads[int(job["training_file"].split("-")[1]) - 1]
                epochs = job["hyperparameters"].get("n_epochs", 1)
                job.update(status="succeeded", fine_tuned_model=f"ft:{job['model']}:labscale::{job_id}",
                           trained_tokens=len(upload.split()) * epochs, finished_at=1)
            elif job["polls"] == 2:
                job["status"] = "running"
            return self._public(job_id)

    def _public(self, job_id: str) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[job_id].items() if k != "polls"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                job_id = self.path.removeprefix("/v1/fine_tuning/jobs/")
                if job_id not in double.jobs:
                    return self._send(404, b'{"error": {"message": "no such job"}}')
                if double.polls_failing:
                    return self._send(500, b'{"error": {"message": "server error"}}')
                self._send(200, json.dumps(double._poll(job_id)).encode())

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path == "/v1/files":
                    double.uploads.append(body)
                    return self._send(200, json.dumps({"id": f"file-{len(double.uploads)}", "object": "file",
                                                       "bytes": len(body), "created_at": 0, "filename": "train.jsonl",
                                                       "purpose": "fine-tune", "status": "processed"}).encode())
                if self.path == "/v1/fine_tuning/jobs":
                    return self._send(200, json.dumps(double._create_job(json.loads(body))).encode())
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": {"message": "not found"}}')
                request = json.loads(body)
                double.models_asked.append(request["model"])
                item = request["messages"][-1]["content"]
                outcome = double._decide(item)
                tokens_in = sum(len(m["content"].split()) for m in request["messages"])
                if outcome == "timeout":
                    time.sleep(double.slow_s)
                text = double.answer_chat(request["messages"]) if double.answer_chat else double.answer(item)
                turns = len(request["messages"])
                exchange = Exchange(item, outcome, turns=turns)
                if outcome in ("ok", "timeout"):
                    exchange = Exchange(item, outcome, tokens_in, len(text.split()), turns)
                with double._lock:
                    double.exchanges.append(exchange)
                error = lambda msg: json.dumps({"error": {"message": msg, "type": "test_double"}}).encode()  # noqa: E731
                if outcome == "429":
                    return self._send(429, error("rate limited"), {"Retry-After": "0"})
                if outcome == "500":
                    return self._send(500, error("server error"))
                if outcome == "400":
                    return self._send(400, error("refused"))
                if outcome == "503":
                    return self._send(503, error("unavailable"))
                if outcome == "malformed":
                    return self._send(200, b'{"choices": [ this is not json')
                body = {
                    "id": "chatcmpl-double", "object": "chat.completion", "created": 0, "model": request["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": tokens_in, "completion_tokens": len(text.split()),
                              "total_tokens": tokens_in + len(text.split())},
                }
                try:
                    self._send(200, json.dumps(body).encode())
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

        return Handler
