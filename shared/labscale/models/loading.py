"""Load a study's model (Hub id, local dir, or project-built tiny model) for training or generation.

The same code loads the demo's tiny Llama and Mistral-7B: both are plain Hugging Face model dirs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from labscale.models.tiny import ensure_tiny_llama
from labscale.params import ModelParams

log = logging.getLogger("labscale.models")


def cache_dir() -> Path:
    """Where project-built models are cached (`LABSCALE_CACHE`, default ~/.cache/labscale)."""
    return Path(os.environ.get("LABSCALE_CACHE", Path.home() / ".cache" / "labscale"))


def resolve_model_path(model: ModelParams) -> str:
    """A `from_pretrained`-able path or Hub id for a model's params (builds the tiny model if asked)."""
    if model.build == "tiny-llama":
        return str(ensure_tiny_llama(cache_dir() / "models"))
    return model.path


def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def compute_dtype() -> Any:
    """bf16 where the GPU supports it, fp16 on older GPUs (T4), float32 on CPU."""
    import torch

    if not torch.cuda.is_available():
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def quantization_config(model: ModelParams) -> Any | None:
    """bitsandbytes 4-bit NF4 + double quantization (QLoRA) when the model asks for it."""
    if model.quantization != "4bit":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    dtype = compute_dtype() if has_cuda() else torch.bfloat16  # bnb's CPU 4-bit kernels want bf16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, llm_int8_skip_modules=["lm_head"])


def load_tokenizer(model: ModelParams, padding_side: str = "left") -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path(model), revision=model.revision,
                                        padding_side=padding_side)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(model: ModelParams, adapter_dir: Path | None = None) -> Any:
    """The base model (quantized if configured), with a LoRA adapter on top when given."""
    from transformers import AutoModelForCausalLM

    quant = quantization_config(model)
    kwargs: dict[str, Any] = {"revision": model.revision}
    if quant is not None:
        kwargs["quantization_config"] = quant
        kwargs["device_map"] = {"": 0} if has_cuda() else {"": "cpu"}
    else:
        kwargs["dtype"] = compute_dtype()
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), **kwargs)
    if quant is None and has_cuda():
        lm = lm.to("cuda")
    if adapter_dir is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(adapter_dir))
    log.info("loaded %s (%s%s) on %s", model.path, "4-bit NF4" if quant else str(kwargs.get("dtype")),
             " + LoRA adapter" if adapter_dir else "", "cuda" if has_cuda() else "cpu")
    return lm
