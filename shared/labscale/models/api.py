"""Closed models through an OpenAI-compatible chat API (OpenAI, Azure OpenAI, vLLM, TGI): the `openai`
SDK with `base_url`, bounded concurrency, a client-side rate limit, and bounded retries with
exponential backoff + jitter on 429 / 5xx / timeouts / connection errors / malformed replies.

The key is read from OPENAI_API_KEY only; it is never logged or written anywhere.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Any, TypeVar

from labscale.errors import BadInputError
from labscale.models.calls import Reply
from labscale.params import ApiRuntime, ModelParams

log = logging.getLogger("labscale.api")
for _name in ("httpx", "httpx2"):  # the SDK's HTTP client logs one INFO line per request otherwise
    logging.getLogger(_name).setLevel(logging.WARNING)
Messages = list[dict[str, str]]
T = TypeVar("T")


class MalformedReply(Exception):
    """The server answered 200 but not with a usable chat completion."""


class RateLimiter:
    """At most `per_minute` request starts per minute, spread evenly (thread-safe)."""

    def __init__(self, per_minute: float | None):
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        time.sleep(max(0.0, start - now))


def backoff_seconds(attempt: int, base_s: float, cap_s: float, retry_after: float | None = None) -> float:
    """Full-jitter exponential backoff for retry `attempt` (1, 2, …), never below the server's Retry-After."""
    delay = random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))
    return max(delay, retry_after or 0.0)


def _retry_after(exc: Exception) -> float | None:
    response = getattr(exc, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class ChatApi:
    """One API model: `complete` answers one item, `answer_all` many items concurrently."""

    def __init__(self, model: str, base_url: str | None = None, *, timeout_s: float = 60.0, max_retries: int = 6,
                 requests_per_minute: float | None = None, concurrency: int = 8,
                 backoff_base_s: float = 0.5, backoff_cap_s: float = 30.0):
        import openai

        api_key = os.environ.get("OPENAI_API_KEY")
        if not api_key:
            raise BadInputError(f"model {model!r}: OPENAI_API_KEY is not set — fix: export it (or mount the "
                                "Kubernetes Secret) before running API cells")
        self.model, self.max_retries, self.concurrency = model, max_retries, concurrency
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.limiter = RateLimiter(requests_per_minute)
        # The SDK's own retries are off: ours also cover malformed replies, and are counted.
        self.client = openai.OpenAI(api_key=api_key, base_url=base_url or os.environ.get("OPENAI_BASE_URL"),
                                    timeout=timeout_s, max_retries=0)
        self._openai = openai

    def _once(self, messages: Messages, max_tokens: int) -> tuple[str, int, int]:
        self.limiter.wait()
        try:
            reply = self.client.chat.completions.create(model=self.model, messages=messages, max_tokens=max_tokens,
                                                        temperature=0)
            text, usage = reply.choices[0].message.content, reply.usage
            if text is None or usage is None:
                raise MalformedReply("no message content or no usage in the reply")
            return text.strip(), usage.prompt_tokens, usage.completion_tokens
        except (self._openai.APIResponseValidationError, ValueError, AttributeError, IndexError, TypeError) as exc:
            raise MalformedReply(str(exc)) from exc

    def _retryable(self, exc: Exception) -> bool:
        o = self._openai
        return isinstance(exc, (MalformedReply, o.RateLimitError, o.InternalServerError, o.APITimeoutError,
                                o.APIConnectionError)) or (isinstance(exc, o.APIStatusError) and exc.status_code >= 500)

    def with_retries(self, request: Callable[[], T]) -> tuple[T, int]:
        """`request()`, retried up to `max_retries` times on transient failures; (result, attempts)."""
        for attempt in range(1, self.max_retries + 2):
            try:
                return request(), attempt
            except Exception as exc:
                if isinstance(exc, self._openai.AuthenticationError | self._openai.PermissionDeniedError):
                    raise BadInputError(f"model {self.model!r}: the API refused the key ({exc.status_code}) — "
                                        "fix: check OPENAI_API_KEY and the model's access") from exc
                if isinstance(exc, self._openai.NotFoundError | self._openai.BadRequestError):
                    raise BadInputError(f"model {self.model!r}: the API rejected the request ({exc.status_code}: "
                                        f"{exc.message}) — fix: check the model name, base_url and the prompt length"
                                        ) from exc
                if not self._retryable(exc) or attempt > self.max_retries:
                    raise
                delay = backoff_seconds(attempt, self.backoff_base_s, self.backoff_cap_s, _retry_after(exc))
                log.info("retry %d/%d in %.2fs after %s", attempt, self.max_retries, delay, type(exc).__name__)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def complete(self, messages: Messages, max_tokens: int) -> Reply:
        """One chat completion, retried on transient failures (its `usd` is left 0: labscale.prices
        prices it, see labscale.models.client)."""
        started = time.perf_counter()
        (text, tokens_in, tokens_out), attempts = self.with_retries(lambda: self._once(messages, max_tokens))
        return Reply(text, tokens_in, tokens_out, time.perf_counter() - started, attempts)

    def answer_all(self, items: Sequence[tuple[str, Messages]], max_tokens: int,
                   on_reply: Callable[[str, Reply], None]) -> None:
        """Answer `(id, messages)` items concurrently; `on_reply` runs in this thread as each one lands.

        On the first item that fails for good, nothing new is started, the requests in flight finish
        (and are handed to `on_reply`), then the error is raised.
        """
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="api")
        try:
            pending: dict[Any, str] = {pool.submit(self.complete, m, max_tokens): i for i, m in items}
            failure: BaseException | None = None
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item_id = pending.pop(future)
                    if future.exception() is not None:
                        if failure is None:
                            failure = future.exception()
                            for other in pending:
                                other.cancel()
                        continue
                    on_reply(item_id, future.result())
                pending = {f: i for f, i in pending.items() if not f.cancelled()}
            if failure is not None:
                raise failure
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def chat_api(model: ModelParams, runtime: ApiRuntime | None) -> ChatApi:
    """The one way to get an API model's client: its name and endpoint from the run's params, how hard
    to call it from the run's runtime (the defaults when a run has none)."""
    runtime = runtime or ApiRuntime()
    return ChatApi(model.path, model.base_url, timeout_s=runtime.timeout_s, max_retries=runtime.max_retries,
                   requests_per_minute=runtime.requests_per_minute, concurrency=runtime.concurrency)
