"""The one way to call a model, open or API: `model_client(...)` gives a `ModelClient` that renders a
`Prompt` around each item's input (`requests`) and answers requests with one `Reply` each
(`answer`, or `ask` for both steps). The generate stage, the prompt compilation search
(labscale.compile) and the judge (labscale.judge) all call models through it.

- An open model (± a LoRA adapter): its family's prompt preset, batched greedy generation (or
  contrastive search), replies reported batch by batch. Tokenizer and model load on first use, so a
  run whose answers are all journaled never loads them.
- An API model (OpenAI-compatible): chat messages, concurrent requests with retries
  (labscale.models.api), each reply priced as it lands (the study's `price`, else labscale.prices). The client (and its key)
  is made on first use.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any

from labscale.config.study import DecodingConfig
from labscale.models.api import ChatApi, Messages, chat_api
from labscale.models.calls import Prompt, Reply
from labscale.models.decoding import decoder_for
from labscale.models.generation import encode_prompts, generate_batches
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.models.prompt_fit import fit_prompts
from labscale.models.vllm_engine import EngineSettings, VllmEngine, adapter_rank, engine_replies, shared_engine
from labscale.params import ApiRuntime, Engine, EngineRuntime, ModelParams
from labscale.prices import TokenPrice
from labscale.prompts import chat_messages, prompt_renderer

Request = str | Messages
"""One item as the model is asked it: an open model's prompt text, an API model's chat messages."""
OnReply = Callable[[str, Reply], None]
"""(request id, reply): called as each reply lands."""


def request_text(request: Request) -> str:
    """A request as text (predictions.jsonl's `prompt`): an API model's messages as JSON."""
    return request if isinstance(request, str) else json.dumps(request, ensure_ascii=False)


class ModelClient(ABC):
    """One model, open or API, asked with at most `max_new_tokens` new tokens per item."""

    model: ModelParams
    max_new_tokens: int

    @abstractmethod
    def requests(self, prompt: Prompt, inputs: Sequence[str], fit: bool = True) -> tuple[list[Request], int]:
        """Each input inside the prompt, as this model is asked it, and how many inputs were cut to
        fit the model's context (`fit`: an open model's too long inputs are cut at their end, keeping
        instruction, demonstrations and answer slot; otherwise generation cuts the prompt's start)."""

    @abstractmethod
    def answer(self, requests: Sequence[tuple[str, Request]], on_reply: OnReply) -> None:
        """Answer `(id, request)` pairs; `on_reply(id, reply)` runs in this thread as each reply lands."""

    def load(self) -> None:
        """Load what answering needs up front (an open model's weights), so loading is not inside a
        progress bar; an API client has nothing to load."""

    @property
    def unpriced(self) -> bool:
        """An API model priced neither by the study (`models[].price`) nor by labscale.prices (its calls
        count as $0; validate refuses such a study)."""
        return False

    def ask(self, prompt: Prompt, inputs: Sequence[str]) -> list[Reply]:
        """The replies to `inputs` inside `prompt`, in order (nothing journaled)."""
        requests, _ = self.requests(prompt, inputs)
        replies: dict[str, Reply] = {}
        self.answer([(str(i), r) for i, r in enumerate(requests)], replies.__setitem__)
        return [replies[str(i)] for i in range(len(requests))]


class OpenClient(ModelClient):
    """An open model (± a LoRA adapter), answered in length-sorted batches of `batch_size`."""

    def __init__(self, model: ModelParams, max_new_tokens: int, *, adapter_dir: Path | None = None,
                 min_new_tokens: int = 0, batch_size: int = 8, decoding: DecodingConfig | None = None):
        self.model, self.max_new_tokens, self.adapter_dir = model, max_new_tokens, adapter_dir
        self.min_new_tokens, self.batch_size, self.decoding = min_new_tokens, batch_size, decoding

    @cached_property
    def tokenizer(self) -> Any:
        return load_tokenizer(self.model)

    @cached_property
    def lm(self) -> Any:
        return load_causal_lm(self.model, self.adapter_dir).eval()

    def load(self) -> None:
        self.lm  # noqa: B018 — load the weights now

    def requests(self, prompt: Prompt, inputs: Sequence[str], fit: bool = True) -> tuple[list[Request], int]:
        render = prompt_renderer(self.model.family, prompt.instruction, prompt.demos, prompt.cot, self.tokenizer)
        if not fit:
            return [render(text) for text in inputs], 0
        prompts, cut = fit_prompts(self.tokenizer, render, list(inputs), self.model.max_length - self.max_new_tokens)
        return list(prompts), cut

    def answer(self, requests: Sequence[tuple[str, Request]], on_reply: OnReply) -> None:
        texts = [text for _, text in requests]
        assert all(isinstance(t, str) for t in texts), "an open model is asked with prompt texts"
        for batch, replies in generate_batches(self.lm, self.tokenizer, texts, self.max_new_tokens,
                                               self.model.max_length, self.batch_size, self.min_new_tokens,
                                               decoder_for(self.decoding)):
            for index, reply in zip(batch, replies):
                on_reply(requests[index][0], reply)


class VllmClient(OpenClient):
    """An open model (± a LoRA adapter) answered by a vLLM engine (labscale.models.vllm_engine): the
    same prompts, token ids and greedy decoding as `OpenClient`, the engine batching on its own. The
    engine is the process's shared one for its settings (`rank`: the largest LoRA rank it must serve, at
    least the adapter's own)."""

    def __init__(self, model: ModelParams, max_new_tokens: int, *, adapter_dir: Path | None = None,
                 min_new_tokens: int = 0, rank: int = 0, gpu_memory_utilization: float = 0.9):
        super().__init__(model, max_new_tokens, adapter_dir=adapter_dir, min_new_tokens=min_new_tokens)
        # the engine serves the study's largest rank; an adapter above it (a task's own `finetune.r`) gets
        # an engine of its own
        rank = max(rank, adapter_rank(adapter_dir) if adapter_dir else 0)
        self.settings = EngineSettings(model, model.max_length, rank, gpu_memory_utilization)

    @cached_property
    def engine(self) -> VllmEngine:
        return shared_engine(self.settings)

    def load(self) -> None:
        self.engine  # noqa: B018 — start the engine now

    def answer(self, requests: Sequence[tuple[str, Request]], on_reply: OnReply) -> None:
        texts = [text for _, text in requests]
        assert all(isinstance(t, str) for t in texts), "an open model is asked with prompt texts"
        rows = encode_prompts(self.tokenizer, texts, self.max_new_tokens, self.model.max_length)
        replies = engine_replies(self.engine, self.tokenizer, rows, self.max_new_tokens, self.min_new_tokens,
                                 self.adapter_dir)
        for (request_id, _), reply in zip(requests, replies):
            on_reply(request_id, reply)


class ApiClient(ModelClient):
    """A model behind an OpenAI-compatible API, each reply priced per token (the study's `price`, else
    labscale.prices)."""

    def __init__(self, model: ModelParams, max_new_tokens: int, runtime: ApiRuntime | None = None):
        self.model, self.max_new_tokens, self.runtime = model, max_new_tokens, runtime
        self.price: TokenPrice | None = model.token_price

    @cached_property
    def api(self) -> ChatApi:
        """Made on first use: a run whose answers are all journaled needs neither it nor a key."""
        return chat_api(self.model, self.runtime)

    @property
    def unpriced(self) -> bool:
        return self.price is None

    def usd(self, reply: Reply) -> float:
        return self.price.usd(reply.tokens_in, reply.tokens_out) if self.price else 0.0

    def requests(self, prompt: Prompt, inputs: Sequence[str], fit: bool = True) -> tuple[list[Request], int]:
        """Chat messages; nothing is cut (an API enforces its own context limit)."""
        return [chat_messages(prompt.instruction, text, prompt.demos, prompt.cot) for text in inputs], 0

    def answer(self, requests: Sequence[tuple[str, Request]], on_reply: OnReply) -> None:
        items = [(item_id, messages) for item_id, messages in requests if not isinstance(messages, str)]
        assert len(items) == len(requests), "an API model is asked with chat messages"
        self.api.answer_all(items, self.max_new_tokens,
                            lambda item_id, reply: on_reply(item_id, replace(reply, usd=self.usd(reply))))


def model_client(model: ModelParams, max_new_tokens: int, *, runtime: ApiRuntime | None = None,
                 adapter_dir: Path | None = None, min_new_tokens: int = 0, batch_size: int = 8,
                 decoding: DecodingConfig | None = None, engine: Engine = "hf",
                 engine_runtime: EngineRuntime | None = None) -> ModelClient:
    """The client of a model, open or API. `runtime`: how hard to call an API model (None → the
    defaults); `adapter_dir`, `min_new_tokens`, `batch_size`, `decoding` (None → greedy) and `engine`
    (hf: labscale's own batched loop; vllm: a vLLM engine, greedy only, started as `engine_runtime`
    says) apply to an open model only."""
    if model.is_api:
        return ApiClient(model, max_new_tokens, runtime)
    if engine == "vllm":
        started = engine_runtime or EngineRuntime()
        return VllmClient(model, max_new_tokens, adapter_dir=adapter_dir, min_new_tokens=min_new_tokens,
                          rank=started.max_lora_rank, gpu_memory_utilization=started.gpu_memory_utilization)
    return OpenClient(model, max_new_tokens, adapter_dir=adapter_dir, min_new_tokens=min_new_tokens,
                      batch_size=batch_size, decoding=decoding)
