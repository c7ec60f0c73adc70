"""Load a study's model (Hub id, local dir, or project-built tiny model) for training or generation.

The same code loads the demo's tiny Llama and Mistral-7B: both are plain Hugging Face model dirs.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from labscale.config.study import Dtype
from labscale.errors import BadInputError
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


def compute_dtype(dtype: Dtype = "auto") -> Any:
    """The torch dtype of a model's `dtype`: auto = bf16 where the GPU supports it, fp16 on older GPUs
    (T4), float32 on CPU; float32 / bfloat16 = that (BadInputError for bfloat16 on a GPU without it)."""
    import torch

    cuda = torch.cuda.is_available()
    if dtype == "float32":
        return torch.float32
    if dtype == "bfloat16":
        if cuda and not torch.cuda.is_bf16_supported():
            raise BadInputError(f"models[].dtype: bfloat16, but this GPU ({torch.cuda.get_device_name(0)}) has no "
                                "bf16 — fix: dtype: auto (fp16 here) or float32")
        return torch.bfloat16
    if not cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def model_dtype(model: ModelParams) -> Any:
    """What a model computes in: :func:`compute_dtype` of its `dtype`, but bf16 for a 4-bit model on a CPU
    at auto (bitsandbytes' CPU 4-bit kernels want bf16)."""
    import torch

    if model.quantization == "4bit" and model.dtype == "auto" and not has_cuda():
        return torch.bfloat16
    return compute_dtype(model.dtype)


def dtype_name(model: ModelParams) -> str:
    """:func:`model_dtype`'s name: float32, bfloat16 or float16 (vLLM's `dtype`; the generate metrics)."""
    return str(model_dtype(model)).removeprefix("torch.")


def quantization_config(model: ModelParams) -> Any | None:
    """bitsandbytes 4-bit NF4 + double quantization (QLoRA) when the model asks for it."""
    if model.quantization != "4bit":
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=model_dtype(model), llm_int8_skip_modules=["lm_head"])


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
        kwargs["dtype"] = model_dtype(model)
    lm = AutoModelForCausalLM.from_pretrained(resolve_model_path(model), **kwargs)
    if quant is None and has_cuda():
        lm = lm.to("cuda")
    if adapter_dir is not None:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, str(adapter_dir))
    log.info("loaded %s (%s%s) on %s", model.path, "4-bit NF4" if quant else str(kwargs.get("dtype")),
             " + LoRA adapter" if adapter_dir else "", "cuda" if has_cuda() else "cpu")
    return lm
