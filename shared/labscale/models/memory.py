"""GPU memory model for generation: the largest batch that fits (``generation.batch_size: auto``).

Generating with a decoder-only model (P parameters, L layers, hidden size h, MLP width f with m
matrices (3 for SwiGLU models, 2 for a plain MLP), H attention heads and H_kv key/value heads of
size d, vocabulary V) at batch b, prompt length s_p and n new tokens (s = s_p + n) holds, in bytes:

  weights         16-bit (bf16/fp16): P × 2; float32: P × 4; 4-bit NF4: the linear layers'
                  parameters × 0.515 + the rest (embeddings, lm_head, norms) × 2
                  (labscale.models.shapes: DecoderShape.weight_bytes)
  KV cache        b × s × 2 (K and V) × L × H_kv × d × kv bytes (the compute dtype: 2 on a GPU);
                  generation preallocates it for the whole sequence (a static cache)
  activations     b × s_p × (2h + 2·H·d + 2·H_kv·d + m·f) × 2: the prefill's widest layer — residual
                  stream and its normed copy, queries and attention output, keys and values, the
                  MLP's intermediates (one layer at a time; SDPA keeps no s×s score matrix)
  logits          b × V × (2 + 4): the last position's logits and their float32 copy for the argmax
                  (prefill keeps only the last position's logits, ``logits_to_keep=1``)
  headroom        1 GiB (CUDA context, cuBLAS workspace) + 10 % of the GPU's memory (allocator
                  fragmentation, kernels' scratch)

so b = ⌊(GPU memory − headroom − weights) ÷ (KV + activations + logits per sequence)⌋, at most 256
and at most the number of items. On the ``cpu`` pool there is no GPU to fill: the batch is 16.
Mistral-7B NF4 on a T4 (15 GiB) at 512 + 64 tokens: weights 3.84 GiB, 132 MiB per sequence → 67;
at 2048 + 64: 504 MiB per sequence → 17 (tests/test_memory.py has the arithmetic). Where the
estimate is short, the generate loop halves the batch on a CUDA out-of-memory error and retries
(labscale.models.generation). vLLM sizes its own KV cache: :func:`vllm_memory` turns the same plan
into its ``gpu_memory_utilization`` and ``max_num_seqs``.

A model's shape (:class:`~labscale.models.shapes.DecoderShape`) comes from
:func:`labscale.models.shapes.read_shape`: its config.json (a local model dir, the project-built tiny
model, the Hugging Face cache), else labscale.models.shapes.KNOWN_SHAPES (published configs of the
models the seed studies use). The 1 GiB CUDA context is :data:`CUDA_CONTEXT_BYTES` here, which the
training planner (labscale.k8s.memory) counts too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from labscale.errors import BadInputError
from labscale.models.shapes import GIB, DecoderShape, Weights, read_shape, weights_format
from labscale.nodes import NODES
from labscale.params import ModelParams

CUDA_CONTEXT_BYTES = GIB
"""The CUDA context and cuBLAS workspace."""
ALLOCATOR_SHARE = 0.10
"""Share of the GPU's memory left free for allocator fragmentation and kernels' scratch space."""
MAX_AUTO_BATCH = 256
CPU_BATCH = 16
"""`auto` on the cpu pool (or without CUDA): the batch the demo always used."""
LOGITS_FLOAT32_BYTES = 4
VLLM_UTILIZATION = (0.5, 0.92)
"""The range :func:`vllm_memory` clamps vLLM's gpu_memory_utilization to."""


def pool_gpu_memory_gib(pool: str) -> float | None:
    """The GPU memory of one node of `pool` (labscale.nodes; None: the cpu pool, or an unknown pool)."""
    found = NODES.get(pool)
    return found.gpu_memory_gib if found else None


@dataclass(frozen=True)
class BatchPlan:
    """The batch `auto` chose and the terms it was chosen from (bytes; None on a CPU)."""

    batch: int
    prompt_tokens: int
    max_new_tokens: int
    limited_by: Literal["memory", "cap", "items", "cpu"]
    gpu_bytes: float | None = None
    weights: Weights | None = None
    weight_bytes: float | None = None
    kv_bytes_per_seq: float | None = None
    activation_bytes_per_seq: float | None = None
    logits_bytes_per_seq: float | None = None
    headroom_bytes: float | None = None

    @property
    def seq_len(self) -> int:
        return self.prompt_tokens + self.max_new_tokens

    @property
    def per_seq_bytes(self) -> float:
        return (self.kv_bytes_per_seq or 0.0) + (self.activation_bytes_per_seq or 0.0) + (self.logits_bytes_per_seq or 0.0)

    @property
    def planned_bytes(self) -> float:
        """Weights + the batch's sequences + headroom: what the plan expects to use."""
        return (self.weight_bytes or 0.0) + self.batch * self.per_seq_bytes + (self.headroom_bytes or 0.0)

    def describe(self) -> str:
        """One line, e.g. `batch 67 (memory): 15 GiB = weights 3.84 GiB (nf4) + 67 × 132 MiB per sequence
        (KV 72 MiB, activations 60 MiB, logits 0.2 MiB at 512 + 64 tokens) + headroom 2.5 GiB`."""
        if self.gpu_bytes is None:
            return f"batch {self.batch} (cpu: fixed {CPU_BATCH}{', capped at the items' if self.limited_by == 'items' else ''})"
        mib = 1024**2
        return (f"batch {self.batch} ({self.limited_by}): {self.gpu_bytes / GIB:.3g} GiB GPU ≥ weights "
                f"{(self.weight_bytes or 0) / GIB:.3g} GiB ({self.weights}) + {self.batch} × "
                f"{self.per_seq_bytes / mib:.0f} MiB per sequence (KV {(self.kv_bytes_per_seq or 0) / mib:.0f}, "
                f"activations {(self.activation_bytes_per_seq or 0) / mib:.0f}, logits "
                f"{(self.logits_bytes_per_seq or 0) / mib:.1f} MiB at {self.prompt_tokens} + {self.max_new_tokens} "
                f"tokens) + headroom {(self.headroom_bytes or 0) / GIB:.3g} GiB")

    def metrics(self) -> dict[str, Any]:
        """What a generate run records about its `auto` batch."""
        out: dict[str, Any] = {"batch_size": self.batch, "batch_limited_by": self.limited_by,
                               "batch_prompt_tokens": self.prompt_tokens}
        if self.gpu_bytes is not None:
            out.update(batch_gpu_gib=round(self.gpu_bytes / GIB, 3), batch_weights_gib=round((self.weight_bytes or 0) / GIB, 3),
                       batch_per_seq_mib=round(self.per_seq_bytes / 1024**2, 3))
        return out


def cpu_plan(prompt_tokens: int, max_new_tokens: int, items: int | None = None) -> BatchPlan:
    """`auto` without a GPU: :data:`CPU_BATCH` (at most the items)."""
    batch = CPU_BATCH if items is None else max(1, min(CPU_BATCH, items))
    return BatchPlan(batch, prompt_tokens, max_new_tokens, "items" if batch < CPU_BATCH else "cpu")


def plan_batch(shape: DecoderShape, *, weights: Weights, prompt_tokens: int, max_new_tokens: int,
               gpu_memory_gib: float, items: int | None = None, kv_bytes: float | None = None,
               cap: int = MAX_AUTO_BATCH, name: str = "the model") -> BatchPlan:
    """The largest batch that fits `gpu_memory_gib` (module docstring), at most `cap` and `items`.
    `kv_bytes`: bytes per KV-cache element (None → the compute dtype's: 4 for float32 weights, else 2).
    BadInputError when not even one sequence fits."""
    act_bytes = 4.0 if weights == "float32" else 2.0
    kv_bytes = act_bytes if kv_bytes is None else kv_bytes
    seq = prompt_tokens + max_new_tokens
    gpu = gpu_memory_gib * GIB
    terms = dict(gpu_bytes=gpu, weights=weights, weight_bytes=shape.weight_bytes(weights),
                 kv_bytes_per_seq=seq * shape.kv_bytes_per_token(kv_bytes),
                 activation_bytes_per_seq=prompt_tokens * shape.activation_bytes_per_token(act_bytes),
                 logits_bytes_per_seq=shape.vocab * (act_bytes + LOGITS_FLOAT32_BYTES),
                 headroom_bytes=CUDA_CONTEXT_BYTES + ALLOCATOR_SHARE * gpu)
    per_seq = terms["kv_bytes_per_seq"] + terms["activation_bytes_per_seq"] + terms["logits_bytes_per_seq"]
    fits = math.floor((gpu - terms["headroom_bytes"] - terms["weight_bytes"]) / per_seq)
    if fits < 1:
        one = BatchPlan(1, prompt_tokens, max_new_tokens, "memory", **terms)  # type: ignore[arg-type]
        raise BadInputError(f"{name}: {weights} weights {one.weight_bytes / GIB:.3g} GiB + one sequence of {seq} tokens "
                            f"{per_seq / GIB:.3g} GiB + headroom {one.headroom_bytes / GIB:.3g} GiB do not fit a "
                            f"{gpu_memory_gib:g} GiB GPU — fix: set models[].quantization: 4bit, lower "
                            "models[].max_length, or use a larger GPU pool")
    limits: list[tuple[int, Literal["memory", "cap", "items"]]] = [(fits, "memory"), (cap, "cap")]
    if items is not None:
        limits.append((max(1, items), "items"))
    batch, limited_by = min(limits, key=lambda limit: limit[0])
    return BatchPlan(batch, prompt_tokens, max_new_tokens, limited_by, **terms)  # type: ignore[arg-type]


def auto_batch(model: ModelParams, *, gpu_memory_gib: float | None, prompt_tokens: int, max_new_tokens: int,
               items: int | None = None, bf16: bool = True, download: bool = False,
               base_dir: Path | None = None) -> BatchPlan:
    """`generation.batch_size: auto` for an open model: :func:`plan_batch` with the model's shape and
    weights on a GPU of `gpu_memory_gib` (None → :func:`cpu_plan`). The prompt is at most the
    model's max_length − max_new_tokens (generation cuts it there). `bf16`: the GPU computes in bf16
    (else fp16, e.g. the T4: the same bytes) at the model's `dtype: auto`; float32 doubles the bytes."""
    prompt_tokens = max(1, min(prompt_tokens, max(8, model.max_length - max_new_tokens)))
    if gpu_memory_gib is None:
        return cpu_plan(prompt_tokens, max_new_tokens, items)
    shape = read_shape(model, download=download, base_dir=base_dir)
    return plan_batch(shape, weights=weights_format(model.quantization, bf16=bf16, dtype=model.dtype),
                      prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, gpu_memory_gib=gpu_memory_gib,
                      items=items, name=model.path)


def device_gpu_memory_gib() -> float | None:
    """The memory of this process's GPU (CUDA device 0) in GiB; None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / GIB


def device_has_bf16() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass(frozen=True)
class VllmMemory:
    """vLLM's memory settings from a batch plan."""

    gpu_memory_utilization: float
    """Weights + the planned batch's KV cache + CUDA context, as a share of the GPU, clamped to :data:`VLLM_UTILIZATION`."""
    max_num_seqs: int
    max_model_len: int


def vllm_memory(plan: BatchPlan) -> VllmMemory:
    """vLLM's gpu_memory_utilization and max_num_seqs for a (GPU) plan: vLLM counts weights,
    activations and non-torch memory (CUDA context) in its share and gives the rest to its KV cache.
    ValueError for a CPU plan (vLLM's CPU build sizes its cache with VLLM_CPU_KVCACHE_SPACE)."""
    if plan.gpu_bytes is None:
        raise ValueError("a CPU batch plan has no GPU memory share")
    used = (plan.weight_bytes or 0.0) + plan.batch * plan.per_seq_bytes + CUDA_CONTEXT_BYTES
    low, high = VLLM_UTILIZATION
    return VllmMemory(gpu_memory_utilization=round(min(high, max(low, used / plan.gpu_bytes)), 3),
                      max_num_seqs=plan.batch, max_model_len=plan.seq_len)


def estimated_batch(model: ModelParams, batch_size: int | str, *, pool: str, prompt_tokens: float,
                    max_new_tokens: int, items: float | None = None, base_dir: Path | None = None) -> int:
    """The batch a generate run will use, for estimates made before it runs (never raises): the study's
    number; for auto the plan on a node of `pool` (offline shapes only), :data:`CPU_BATCH` where there
    is no plan (the cpu pool, an unknown shape, a model that does not fit)."""
    if isinstance(batch_size, int):
        return batch_size
    try:
        return auto_batch(model, gpu_memory_gib=pool_gpu_memory_gib(pool), prompt_tokens=math.ceil(prompt_tokens),
                          max_new_tokens=max_new_tokens, items=None if items is None else math.ceil(items),
                          base_dir=base_dir).batch
    except BadInputError:
        return CPU_BATCH
