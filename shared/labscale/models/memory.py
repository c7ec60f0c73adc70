"""GPU memory model for generation: the largest batch that fits (``generation.batch_size: auto``).

Generating with a decoder-only model (P parameters, L layers, hidden size h, MLP width f with m
matrices (3 for SwiGLU models, 2 for a plain MLP), H attention heads and H_kv key/value heads of
size d, vocabulary V) at batch b, prompt length s_p and n new tokens (s = s_p + n) holds, in bytes:

  weights         16-bit (bf16/fp16): P × 2; float32: P × 4; 4-bit NF4 (bitsandbytes, double
                  quantization): the linear layers' parameters × 0.515 (0.5 B + an 8-bit absmax per
                  64-block + a float32 constant per 256 blocks, as labscale.k8s.memory) + the rest
                  × 2 — embeddings, lm_head (``llm_int8_skip_modules=["lm_head"]``) and norms stay 16-bit
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

A model's shape comes from its config.json (a local model dir, the project-built tiny model, the
Hugging Face cache), else from :data:`KNOWN_SHAPES` (published configs of the models the seed
studies use).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from labscale.errors import BadInputError
from labscale.k8s.memory import GIB, NF4_BYTES_PER_PARAM
from labscale.models.tiny import TinyLlamaRecipe
from labscale.params import ModelParams

POOL_GPU_MEMORY_GIB: dict[str, float | None] = {"cpu": None, "t4": 15.0, "a100": 40.0}
"""GPU memory of one node of each pool (GiB): a 16 GB T4 reports 15 GiB, an A100 40 GB 40 GiB;
``cpu`` has none."""
CUDA_CONTEXT_BYTES = GIB
ALLOCATOR_SHARE = 0.10
"""Share of the GPU's memory left free for allocator fragmentation and kernels' scratch space."""
MAX_AUTO_BATCH = 256
CPU_BATCH = 16
"""`auto` on the cpu pool (or without CUDA): the batch the demo always used."""
LOGITS_FLOAT32_BYTES = 4
VLLM_UTILIZATION = (0.5, 0.92)
"""The range :func:`vllm_memory` clamps vLLM's gpu_memory_utilization to."""

Weights = Literal["float32", "bf16", "fp16", "nf4"]
WEIGHT_BYTES: dict[str, float] = {"float32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": NF4_BYTES_PER_PARAM}
"""Bytes per parameter of the quantizable (linear) layers; NF4 keeps the others 16-bit."""
PLAIN_MLP_TYPES = frozenset({"falcon", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi"})
"""Architectures whose MLP has two matrices (up, down) instead of SwiGLU's three."""


@dataclass(frozen=True)
class DecoderShape:
    """What the memory model needs of a decoder-only transformer (its config.json's fields)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    mlp_matrices: int = 3

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DecoderShape":
        """From a Hugging Face config (dict): num_key_value_heads falls back to num_attention_heads
        (1 for a multi-query model), head_dim to hidden_size ÷ num_attention_heads."""
        hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        kv_heads = config.get("num_key_value_heads") or config.get("num_kv_heads")
        if kv_heads is None:
            kv_heads = 1 if config.get("multi_query") else heads
        plain = config.get("model_type") in PLAIN_MLP_TYPES
        return cls(layers=int(config["num_hidden_layers"]), heads=heads, kv_heads=int(kv_heads),
                   head_dim=int(config.get("head_dim") or hidden // heads), hidden=hidden,
                   intermediate=int(config.get("intermediate_size") or config.get("ffn_hidden_size") or 4 * hidden),
                   vocab=int(config["vocab_size"]), tied_embeddings=bool(config.get("tie_word_embeddings", False)),
                   mlp_matrices=2 if plain else 3)

    @property
    def linear_params(self) -> int:
        """Parameters of the layers' linear maps (what NF4 quantizes): q, o (h × H·d), k, v (h × H_kv·d), the MLP."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return self.layers * (2 * self.hidden * q + 2 * self.hidden * kv + self.mlp_matrices * self.hidden * self.intermediate)

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied) and norms (2 per layer + the final one): kept 16-bit by NF4."""
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params

    def weight_bytes(self, weights: Weights) -> float:
        if weights == "nf4":
            return self.linear_params * NF4_BYTES_PER_PARAM + self.other_params * 2
        return self.params * WEIGHT_BYTES[weights]

    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes

    def activation_bytes_per_token(self, act_bytes: float) -> float:
        """The prefill's widest layer, per prompt token (module docstring)."""
        width = (2 * self.hidden + 2 * self.heads * self.head_dim + 2 * self.kv_heads * self.head_dim
                 + self.mlp_matrices * self.intermediate)
        return width * act_bytes


_MISTRAL: dict[str, Any] = dict(layers=32, heads=32, kv_heads=8, head_dim=128, hidden=4096, intermediate=14336)
_LLAMA3: dict[str, Any] = dict(_MISTRAL, vocab=128256)
KNOWN_SHAPES: dict[str, DecoderShape] = {
    # Published config.json values on the Hugging Face Hub (num_hidden_layers, num_attention_heads,
    # num_key_value_heads, hidden_size / num_attention_heads, hidden_size, intermediate_size, vocab_size).
    "mistralai/mistral-7b-v0.1": DecoderShape(**_MISTRAL, vocab=32000),
    "mistralai/mistral-7b-instruct-v0.1": DecoderShape(**_MISTRAL, vocab=32000),
    "mistralai/mistral-7b-instruct-v0.2": DecoderShape(**_MISTRAL, vocab=32000),
    "mistralai/mistral-7b-v0.3": DecoderShape(**_MISTRAL, vocab=32768),
    "mistralai/mistral-7b-instruct-v0.3": DecoderShape(**_MISTRAL, vocab=32768),
    "meta-llama/llama-3.1-8b": DecoderShape(**_LLAMA3),
    "meta-llama/llama-3.1-8b-instruct": DecoderShape(**_LLAMA3),
    "meta-llama/meta-llama-3-8b": DecoderShape(**_LLAMA3),
    "meta-llama/meta-llama-3-8b-instruct": DecoderShape(**_LLAMA3),
    "meta-llama/llama-2-7b-hf": DecoderShape(layers=32, heads=32, kv_heads=32, head_dim=128, hidden=4096,
                                       intermediate=11008, vocab=32000),
    "meta-llama/llama-2-7b-chat-hf": DecoderShape(layers=32, heads=32, kv_heads=32, head_dim=128, hidden=4096,
                                            intermediate=11008, vocab=32000),
    "qwen/qwen2.5-7b": DecoderShape(layers=28, heads=28, kv_heads=4, head_dim=128, hidden=3584, intermediate=18944,
                              vocab=152064),
    "qwen/qwen2.5-7b-instruct": DecoderShape(layers=28, heads=28, kv_heads=4, head_dim=128, hidden=3584,
                                       intermediate=18944, vocab=152064),
    "microsoft/phi-3-mini-4k-instruct": DecoderShape(layers=32, heads=32, kv_heads=32, head_dim=96, hidden=3072,
                                               intermediate=8192, vocab=32064),
    "microsoft/phi-3-mini-128k-instruct": DecoderShape(layers=32, heads=32, kv_heads=32, head_dim=96, hidden=3072,
                                                 intermediate=8192, vocab=32064),
}
"""Hub id (lower case) → shape, for plans made before (or without) the model's download."""


def read_shape(model: ModelParams, *, download: bool = False, base_dir: Path | None = None) -> DecoderShape:
    """A model's shape: the tiny model's recipe; a local model dir's config.json (relative to
    `base_dir` when given); :data:`KNOWN_SHAPES`; the Hugging Face cache's config (the Hub's too
    with `download`). BadInputError when none has it."""
    if model.build == "tiny-llama":
        recipe = TinyLlamaRecipe()
        return DecoderShape.from_config({**asdict(recipe), "tie_word_embeddings": True})
    local = Path(model.path) if base_dir is None else base_dir / model.path
    if (local / "config.json").is_file():
        try:
            return DecoderShape.from_config(json.loads((local / "config.json").read_text()))
        except (ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
            raise BadInputError(f"{local / 'config.json'}: not a decoder config this memory model reads "
                                f"({exc.__class__.__name__}: {exc}) — fix: set generation.batch_size to a number") from None
    known = KNOWN_SHAPES.get(model.path.lower())
    if known is not None:
        return known
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model.path, revision=model.revision, local_files_only=not download)
        return DecoderShape.from_config(config.to_dict())
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
        raise BadInputError(f"{model.path}: its shape (layers, KV heads, head size) is unknown here — it is not a "
                            "local model dir, not in labscale.models.memory.KNOWN_SHAPES and its config is not in "
                            "the Hugging Face cache — fix: set generation.batch_size to a number") from None


def weights_format(quantization: str, *, gpu: bool = True, bf16: bool = True) -> Weights:
    """How generation holds the weights (labscale.models.loading): NF4 when 4-bit, else bf16 (fp16 on a
    GPU without bf16, e.g. the T4), float32 on CPU."""
    if quantization == "4bit":
        return "nf4"
    if not gpu:
        return "float32"
    return "bf16" if bf16 else "fp16"


def pool_gpu_memory_gib(pool: str) -> float | None:
    """The GPU memory of one node of `pool` (None: the cpu pool, or a pool this table lacks)."""
    return POOL_GPU_MEMORY_GIB.get(pool)


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
    (else fp16, e.g. the T4: the same bytes)."""
    prompt_tokens = max(1, min(prompt_tokens, max(8, model.max_length - max_new_tokens)))
    if gpu_memory_gib is None:
        return cpu_plan(prompt_tokens, max_new_tokens, items)
    shape = read_shape(model, download=download, base_dir=base_dir)
    return plan_batch(shape, weights=weights_format(model.quantization, bf16=bf16), prompt_tokens=prompt_tokens,
                      max_new_tokens=max_new_tokens, gpu_memory_gib=gpu_memory_gib, items=items, name=model.path)


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
