"""A decoder model's shape and the bytes of its weights: the one home of both, for generation's batch
plan (labscale.models.memory), the training GPU memory planner (labscale.k8s.memory) and cost
estimates (labscale.budget).

A decoder-only transformer (:class:`DecoderShape`: L layers, hidden size h, H attention heads and
H_kv key/value heads of size d, MLP width f with m matrices (3 for SwiGLU models, 2 for a plain
MLP), vocabulary V) has

  linear parameters  L × (2·h·H·d + 2·h·H_kv·d + m·h·f)   (q and o, k and v, the MLP)
  other parameters   V·h (× 2 unless lm_head is tied to the embeddings) + (2L + 1)·h (norms)

and P = linear + other, unless the shape carries a published count (``published_params``: the
reference shapes :data:`MISTRAL_7B` 7.24e9 and :data:`LLAMA2_13B` 13.0e9, and shapes scaled from a
size in a Hub name), which is then P.

Its weights take, in bytes (:meth:`DecoderShape.weight_bytes`): float32 P × 4; bf16/fp16 P × 2;
4-bit NF4 (bitsandbytes, double quantization) the linear parameters × 0.515 (0.5 B + an 8-bit
absmax per 64-block + a float32 constant per 256 blocks) + the rest × 2 — embeddings, lm_head
(``llm_int8_skip_modules=["lm_head"]``) and norms stay 16-bit. With a published count the
quantized part is P less the embeddings (the norms, 0.004 % of a 7B model, are below its rounding).
A model's ``quantization`` maps to a format with :func:`weights_format`.

Where a shape comes from:

- :func:`read_shape` (generation's batch plan): the project-built tiny model's recipe, a local
  model dir's config.json, :data:`KNOWN_SHAPES` (published configs of the models the seed studies
  use), the Hugging Face cache; BadInputError when none has it.
- :func:`shape_for` (the training planner): a Hub model's published shape (:data:`KNOWN_SHAPES`),
  else the reference shape of one named with its size (``…-7B-…`` → :data:`MISTRAL_7B`, ``…13b…`` →
  :data:`LLAMA2_13B`), else None.
- :func:`estimate_shape` (cost estimates, never fails): the tiny recipe or a local config.json,
  else :func:`shape_for`, else a shape scaled from the size in the name (:func:`scaled_shape`),
  else :data:`MISTRAL_7B`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from labscale.config.study import Dtype
from labscale.errors import BadInputError
from labscale.models.tiny import TinyLlamaRecipe
from labscale.params import ModelParams

GIB = 1024**3
NF4_BYTES_PER_PARAM = 0.515

Weights = Literal["float32", "bf16", "fp16", "nf4"]
WEIGHT_BYTES: dict[str, float] = {"float32": 4.0, "bf16": 2.0, "fp16": 2.0, "nf4": NF4_BYTES_PER_PARAM}
"""Bytes per parameter of the quantizable (linear) layers; NF4 keeps the others 16-bit."""
PLAIN_MLP_TYPES = frozenset({"falcon", "gpt2", "gpt_neox", "gptj", "opt", "bloom", "phi"})
"""Architectures whose MLP has two matrices (up, down) instead of SwiGLU's three."""
_CONFIG_ERRORS = (ValueError, KeyError, TypeError, ZeroDivisionError)
"""What reading a config.json that is not a decoder's raises."""


@dataclass(frozen=True)
class DecoderShape:
    """A decoder-only transformer's shape (its config.json's fields; module docstring)."""

    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab: int
    tied_embeddings: bool = False
    mlp_matrices: int = 3
    published_params: float | None = None
    """A published parameter count (7.24e9) that replaces the one counted from the fields."""

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
    def kv_hidden(self) -> int:
        """Width of the keys (and of the values): H_kv · d."""
        return self.kv_heads * self.head_dim

    @property
    def linear_params(self) -> int:
        """Parameters of the layers' linear maps (what NF4 quantizes): q, o (h × H·d), k, v (h × H_kv·d), the MLP."""
        q, kv = self.heads * self.head_dim, self.kv_hidden
        return self.layers * (2 * self.hidden * q + 2 * self.hidden * kv + self.mlp_matrices * self.hidden * self.intermediate)

    @property
    def embedding_params(self) -> int:
        """The embeddings and lm_head (unless tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied) and norms (2 per layer + the final one): kept 16-bit by NF4."""
        return self.embedding_params + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> float:
        """P: the published count, else linear + other parameters."""
        if self.published_params is not None:
            return self.published_params
        return self.linear_params + self.other_params

    def weight_bytes(self, weights: Weights) -> float:
        """The weights' bytes held as `weights` (module docstring)."""
        if weights == "nf4":
            kept = self.other_params if self.published_params is None else self.embedding_params
            return (self.params - kept) * NF4_BYTES_PER_PARAM + kept * 2
        return self.params * WEIGHT_BYTES[weights]

    def kv_bytes_per_token(self, kv_bytes: float) -> float:
        return 2 * self.layers * self.kv_hidden * kv_bytes

    def activation_bytes_per_token(self, act_bytes: float) -> float:
        """The prefill's widest layer, per prompt token (labscale.models.memory)."""
        width = (2 * self.hidden + 2 * self.heads * self.head_dim + 2 * self.kv_hidden
                 + self.mlp_matrices * self.intermediate)
        return width * act_bytes


def weights_format(quantization: str, *, gpu: bool = True, bf16: bool = True, dtype: Dtype = "auto") -> Weights:
    """How a model's weights are held (labscale.models.loading): NF4 when 4-bit; else its `dtype` when
    it names one (float32, bfloat16); at auto bf16 (fp16 on a GPU without bf16, e.g. the T4), float32
    on CPU."""
    if quantization == "4bit":
        return "nf4"
    if dtype == "float32":
        return "float32"
    if dtype == "bfloat16":
        return "bf16"
    if not gpu:
        return "float32"
    return "bf16" if bf16 else "fp16"


_MISTRAL: dict[str, Any] = dict(layers=32, heads=32, kv_heads=8, head_dim=128, hidden=4096, intermediate=14336)
_LLAMA3: dict[str, Any] = dict(_MISTRAL, vocab=128256)
_LLAMA2_7B: dict[str, Any] = dict(layers=32, heads=32, kv_heads=32, head_dim=128, hidden=4096, intermediate=11008,
                                  vocab=32000)
_QWEN25_7B: dict[str, Any] = dict(layers=28, heads=28, kv_heads=4, head_dim=128, hidden=3584, intermediate=18944,
                                  vocab=152064)
_PHI3_MINI: dict[str, Any] = dict(layers=32, heads=32, kv_heads=32, head_dim=96, hidden=3072, intermediate=8192,
                                  vocab=32064)
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
    "meta-llama/llama-2-7b-hf": DecoderShape(**_LLAMA2_7B),
    "meta-llama/llama-2-7b-chat-hf": DecoderShape(**_LLAMA2_7B),
    "qwen/qwen2.5-7b": DecoderShape(**_QWEN25_7B),
    "qwen/qwen2.5-7b-instruct": DecoderShape(**_QWEN25_7B),
    "microsoft/phi-3-mini-4k-instruct": DecoderShape(**_PHI3_MINI),
    "microsoft/phi-3-mini-128k-instruct": DecoderShape(**_PHI3_MINI),
}
"""Hub id (lower case) → shape, for plans made before (or without) the model's download."""

MISTRAL_7B = DecoderShape(**_MISTRAL, vocab=32000, published_params=7.24e9)
"""The reference 7B of the training planner and the cost estimates: Mistral-7B's fields at its
published 7.24e9 parameters (:data:`KNOWN_SHAPES` counts 7,241,732,096)."""
LLAMA2_13B = DecoderShape(layers=40, heads=40, kv_heads=40, head_dim=128, hidden=5120, intermediate=13824, vocab=32000,
                          published_params=13.0e9)
"""The reference 13B: Llama-2-13B's fields at its published 13.0e9 parameters."""
SHAPES_BY_SIZE: dict[int, DecoderShape] = {7: MISTRAL_7B, 13: LLAMA2_13B}
"""Billions of parameters in a Hub name → the reference shape :func:`shape_for` gives it."""
_SIZE = re.compile(r"(?<![0-9.])(\d+(?:\.\d+)?)([bBmM])(?![a-zA-Z])")
"""A size in a model name: `7B`, `13b`, `0.5B`, `125m`."""


def size_in_name(model_path: str) -> float | None:
    """The parameters a Hub name gives (`…-7B-…` → 7e9, `…-125m` → 1.25e8); None without one."""
    match = _SIZE.search(model_path)
    if match is None:
        return None
    return float(match.group(1)) * (1e9 if match.group(2) in "bB" else 1e6)


def shape_for(model_path: str) -> DecoderShape | None:
    """A Hub model's published shape (:data:`KNOWN_SHAPES`), else the reference shape of one named with
    its size (`…-7B-…`, `…13b…`); None when unknown."""
    known = KNOWN_SHAPES.get(model_path.lower())
    if known is not None:
        return known
    size = size_in_name(model_path)
    if size is None or size < 1e9 or size % 1e9:
        return None
    return SHAPES_BY_SIZE.get(int(size // 1e9))


def scaled_shape(params: float) -> DecoderShape:
    """A shape of `params` parameters scaled from :data:`MISTRAL_7B`: hidden size and layers each by
    (P ÷ 7.24e9)^(1/3) (hidden a multiple of 64), MLP 3.5 × hidden, heads of 64, a quarter of them
    key/value heads, Mistral's vocabulary."""
    scale = (params / MISTRAL_7B.params) ** (1 / 3)
    hidden = max(64, round(MISTRAL_7B.hidden * scale / 64) * 64)
    heads = hidden // 64
    return DecoderShape(layers=max(1, round(MISTRAL_7B.layers * scale)), heads=heads, kv_heads=max(1, heads // 4),
                        head_dim=64, hidden=hidden, intermediate=round(3.5 * hidden), vocab=MISTRAL_7B.vocab,
                        published_params=params)


def _tiny_shape() -> DecoderShape:
    return DecoderShape.from_config({**asdict(TinyLlamaRecipe()), "tie_word_embeddings": True})


def _local_dir(model: ModelParams, base_dir: Path | None) -> Path:
    return Path(model.path) if base_dir is None else base_dir / model.path


def _own_shape(model: ModelParams, base_dir: Path | None) -> DecoderShape | None:
    """The tiny model's recipe, or a local model dir's config.json (relative to `base_dir` when given);
    None when neither; a config.json it cannot read raises one of `_CONFIG_ERRORS`."""
    if model.build == "tiny-llama":
        return _tiny_shape()
    config = _local_dir(model, base_dir) / "config.json"
    return DecoderShape.from_config(json.loads(config.read_text())) if config.is_file() else None


def read_shape(model: ModelParams, *, download: bool = False, base_dir: Path | None = None) -> DecoderShape:
    """A model's shape: the tiny model's recipe; a local model dir's config.json (relative to
    `base_dir` when given); :data:`KNOWN_SHAPES`; the Hugging Face cache's config (the Hub's too
    with `download`). BadInputError when none has it."""
    try:
        own = _own_shape(model, base_dir)
    except _CONFIG_ERRORS as exc:
        raise BadInputError(f"{_local_dir(model, base_dir) / 'config.json'}: not a decoder config this memory model "
                            f"reads ({exc.__class__.__name__}: {exc}) — fix: set generation.batch_size to a number") from None
    if own is not None:
        return own
    known = KNOWN_SHAPES.get(model.path.lower())
    if known is not None:
        return known
    try:
        from transformers import AutoConfig

        hub_config = AutoConfig.from_pretrained(model.path, revision=model.revision, local_files_only=not download)
        return DecoderShape.from_config(hub_config.to_dict())
    except (OSError, *_CONFIG_ERRORS):
        raise BadInputError(f"{model.path}: its shape (layers, KV heads, head size) is unknown here — it is not a "
                            "local model dir, not in labscale.models.shapes.KNOWN_SHAPES and its config is not in "
                            "the Hugging Face cache — fix: set generation.batch_size to a number") from None


def estimate_shape(model: ModelParams, base_dir: Path) -> DecoderShape:
    """A model's shape for estimates made offline (never raises): the tiny model's recipe, a local
    model dir's config.json, :func:`shape_for` its name, a shape scaled from the size in its name,
    else :data:`MISTRAL_7B`."""
    try:
        own = _own_shape(model, base_dir)
    except _CONFIG_ERRORS:
        own = None
    if own is not None:
        return own
    known = shape_for(model.path)
    if known is not None:
        return known
    size = size_in_name(model.path)
    return MISTRAL_7B if size is None else scaled_shape(size)
