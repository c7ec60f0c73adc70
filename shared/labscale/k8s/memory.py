"""GPU memory planner for LoRA / QLoRA fine-tuning: does a recipe fit a pool, and what to use.

A training step of a decoder-only model (a labscale.models.shapes.DecoderShape: P parameters,
hidden size h, L layers, MLP width f, key/value width kv, vocabulary V) at micro-batch b and
sequence length s holds, in bytes:

  frozen weights  16-bit: P × 2; 4-bit NF4: the linear layers × 0.515 + embeddings, lm_head and
                  norms × 2 (DecoderShape.weight_bytes; for a reference shape's published P:
                  (P − 2·V·h) × 0.515 + 2·V·h × 2)
  LoRA adapters   n = L · r · (9h + 2kv + 3f) parameters (all linear layers but lm_head:
                  q, o: h+h; k, v: h+kv; gate, up: h+f; down: f+h), each 10 B:
                  fp32 weight 4 + fp32 gradient 4 + 8-bit AdamW moments 2
  activations     per layer per token ≈ 16h + 8f bytes of 16-bit tensors kept for backward
                  (norms, q/k/v/o, SwiGLU gate/up/act/down inputs, LoRA dropout inputs; SDPA /
                  flash attention, so no s×s score matrices). Gradient checkpointing keeps only
                  each layer's input (2h) and recomputes one layer at a time:
                  plain: b·s·L·(16h + 8f)     checkpointed: b·s·(2h·L + 16h + 8f)
  logits          b·s·V × 10 (16-bit logits 2 + fp32 upcast for the loss 4 + its gradient 4)
  overhead        1 GiB (CUDA context, cuBLAS workspace: labscale.models.memory.CUDA_CONTEXT_BYTES),
                  then × 1.15 for allocator fragmentation

Mistral-7B (labscale.models.shapes.MISTRAL_7B: P = 7.24e9, h = 4096, L = 32, f = 14336, kv = 1024,
V = 32000), QLoRA r = 8, b = 1, s = 2048, checkpointed: weights 4.12e9 + LoRA 21.0e6 × 10 = 0.21e9
+ activations 0.91e9 + logits 0.66e9 + overhead 1.07e9 = 6.97e9, × 1.15 = 8.0e9 B ≈ 7.5 GiB: fits
a T4 (15.0 GiB usable).
Without checkpointing the activations alone are 11.8e9 B, so a T4 needs checkpointing.

A pool's budget is 90% of its usable GPU memory (T4 13.5 GiB, A100 35.5 GiB). `plan_training`
picks per-pool defaults: 4-bit when 16-bit weights would take more than half the budget; then
the first that fits of: no checkpointing with the largest micro-batch (≤ the recipe's effective
batch, the rest by gradient accumulation), checkpointing with the largest micro-batch, then
checkpointing at batch 1 with the sequence length halved (down to 256). For 7B QLoRA at s = 2048
and effective batch 4: T4 → checkpointing, batch 4 (12.5 GiB); A100 → no checkpointing, batch 2 ×
2 accumulation (32.5 GiB — the A100 is used well, and no recompute makes each step ~30% faster).
A run's shape is :func:`labscale.models.shapes.shape_for` its model's name (7B, 13B; else no estimate).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labscale.errors import BadInputError
from labscale.models.memory import CUDA_CONTEXT_BYTES
from labscale.models.shapes import GIB, DecoderShape, weights_format

OVERHEAD_BYTES = CUDA_CONTEXT_BYTES
FRAGMENTATION = 1.15
BUDGET_SHARE = 0.9
LORA_BYTES_PER_PARAM = 10
MIN_MAX_LENGTH = 256

Quantization = Literal["none", "4bit"]


@dataclass(frozen=True)
class TrainFit:
    """The memory-relevant knobs of a LoRA training recipe."""

    quantization: Quantization
    batch_size: int
    grad_accum: int
    max_length: int
    gradient_checkpointing: bool
    lora_r: int = 8

    def describe(self) -> str:
        return (f"quantization: {self.quantization}, batch_size: {self.batch_size}, grad_accum: {self.grad_accum}, "
                f"max_length: {self.max_length}, gradient_checkpointing: {str(self.gradient_checkpointing).lower()}")


def weight_bytes(shape: DecoderShape, quantization: Quantization) -> float:
    """The frozen weights: bf16, or NF4 with 4-bit (DecoderShape.weight_bytes)."""
    return shape.weight_bytes(weights_format(quantization))


def lora_params(shape: DecoderShape, r: int) -> int:
    return shape.layers * r * (9 * shape.hidden + 2 * shape.kv_hidden + 3 * shape.intermediate)


def activation_bytes(shape: DecoderShape, batch: int, length: int, checkpointing: bool) -> float:
    per_layer = 16 * shape.hidden + 8 * shape.intermediate
    per_token = 2 * shape.hidden * shape.layers + per_layer if checkpointing else shape.layers * per_layer
    return batch * length * per_token


def training_bytes(shape: DecoderShape, fit: TrainFit) -> float:
    """Estimated peak GPU memory of one training step (see the module docstring)."""
    total = (weight_bytes(shape, fit.quantization)
             + lora_params(shape, fit.lora_r) * LORA_BYTES_PER_PARAM
             + activation_bytes(shape, fit.batch_size, fit.max_length, fit.gradient_checkpointing)
             + fit.batch_size * fit.max_length * shape.vocab * 10
             + OVERHEAD_BYTES)
    return total * FRAGMENTATION


def budget_bytes(gpu_memory_gib: float) -> float:
    return gpu_memory_gib * GIB * BUDGET_SHARE


def fits(shape: DecoderShape, fit: TrainFit, gpu_memory_gib: float) -> bool:
    return training_bytes(shape, fit) <= budget_bytes(gpu_memory_gib)


def plan_training(shape: DecoderShape, gpu_memory_gib: float, *, max_length: int = 2048, effective_batch: int = 4,
                  lora_r: int = 8, quantization: Quantization | None = None) -> TrainFit:
    """The preferred recipe that fits the GPU (see the module docstring); BadInputError if none does."""
    if quantization is None:
        quantization = "4bit" if weight_bytes(shape, "none") > budget_bytes(gpu_memory_gib) / 2 else "none"
    batches = [b for b in (16, 8, 4, 2, 1) if b <= max(1, effective_batch)]

    def fit(batch: int, checkpointing: bool, length: int = max_length) -> TrainFit:
        return TrainFit(quantization, batch, max(1, effective_batch // batch), length, checkpointing, lora_r)

    candidates = [fit(b, False) for b in batches] + [fit(b, True) for b in batches]
    length = max_length // 2
    while length >= MIN_MAX_LENGTH:
        candidates.append(fit(1, True, length))
        length //= 2
    for candidate in candidates:
        if fits(shape, candidate, gpu_memory_gib):
            return candidate
    smallest = candidates[-1]
    raise BadInputError(f"a {shape.params / 1e9:.0f}B model with quantization: {quantization} needs "
                        f"{training_bytes(shape, smallest) / GIB:.1f} GiB even at {smallest.describe()} — "
                        f"more than {budget_bytes(gpu_memory_gib) / GIB:.1f} GiB of a {gpu_memory_gib} GiB GPU; "
                        "fix: use quantization: 4bit or a larger GPU pool")
