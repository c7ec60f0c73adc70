"""The QLoRA path on CPU: bitsandbytes NF4 + LoRA trains (non-zero LoRA gradients), and the
repacking trap from ml-stack.md is caught by the train stage's gradient guard."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import ModelParams
from labscale.training.base import assert_lora_gradients, training_path

MODEL = ModelParams(path="tiny-llama", build="tiny-llama", quantization="4bit", max_length=256)
AVX512_BF16 = "avx512_bf16" in Path("/proc/cpuinfo").read_text()


def _peft(model):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))


def _backward(model) -> None:
    tok = load_tokenizer(MODEL)
    batch = tok(["Claim: ice melts.\nEvidence: ice melts.\n### Response:\nSUPPORTS"], return_tensors="pt")
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()


def test_4bit_base_is_quantized_and_lora_gradients_are_nonzero() -> None:
    import bitsandbytes as bnb

    base = load_causal_lm(MODEL)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in base.modules())
    assert not isinstance(base.lm_head, bnb.nn.Linear4bit)  # lm_head stays in full precision
    model = _peft(base)
    _backward(model)
    assert_lora_gradients(model)  # raises if all zero
    grads = [p.grad.abs().sum().item() for n, p in model.named_parameters() if "lora_B" in n]
    assert sum(g > 0 for g in grads) == len(grads)
    assert training_path(MODEL, cuda=False) == "qlora-4bit-cpu"


@pytest.mark.skipif(not AVX512_BF16, reason="the repacking trap needs a CPU with avx512_bf16")
def test_guard_catches_the_repacking_trap() -> None:
    base = load_causal_lm(MODEL)
    tok = load_tokenizer(MODEL)
    with torch.no_grad():  # an eval forward before training repacks the 4-bit weights
        base.eval()(**tok(["hello"], return_tensors="pt"))
    model = _peft(base)
    with pytest.warns(UserWarning):
        _backward(model)
    with pytest.raises(RuntimeError, match="LoRA layers got a zero gradient"):
        assert_lora_gradients(model)
