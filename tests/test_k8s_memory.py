"""The GPU memory planner, with real numbers: 7B QLoRA fits a T4, and uses an A100 well."""

from __future__ import annotations

import pytest

from labscale.errors import BadInputError
from labscale.k8s.memory import (TrainFit, activation_bytes, budget_bytes, lora_params, plan_training, training_bytes,
                                 weight_bytes)
from labscale.models.shapes import GIB, MISTRAL_7B, shape_for
from labscale.k8s.pools import POOLS

T4 = POOLS["t4"].gpu_memory_gib
A100 = POOLS["a100"].gpu_memory_gib


def test_terms_match_the_hand_arithmetic() -> None:
    # 4-bit: (7.24e9 - 2·32000·4096) × 0.515 + 2·32000·4096 × 2 bytes
    assert weight_bytes(MISTRAL_7B, "4bit") == pytest.approx((7.24e9 - 262_144_000) * 0.515 + 262_144_000 * 2)
    assert weight_bytes(MISTRAL_7B, "none") == pytest.approx(14.48e9)
    # r=8 on q,k,v,o,gate,up,down of 32 layers: 32 · 8 · (9·4096 + 2·1024 + 3·14336)
    assert lora_params(MISTRAL_7B, 8) == 32 * 8 * 81_920 == 20_971_520
    # checkpointed, b=1, s=2048: 2048 · (2·4096·32 + 16·4096 + 8·14336)
    assert activation_bytes(MISTRAL_7B, 1, 2048, True) == 2048 * (262_144 + 65_536 + 114_688)
    assert activation_bytes(MISTRAL_7B, 1, 2048, False) == pytest.approx(11.81e9, rel=1e-3)


def test_seed_recipe_qlora_7b_fits_a_t4() -> None:
    seed = TrainFit("4bit", batch_size=1, grad_accum=4, max_length=2048, gradient_checkpointing=True)
    need = training_bytes(MISTRAL_7B, seed)
    assert need / GIB == pytest.approx(7.46, abs=0.05)
    assert need < budget_bytes(T4) < 16e9
    # without checkpointing the activations alone (11.8 GB) break the T4's 13.5 GiB budget
    plain = TrainFit("4bit", 1, 4, 2048, gradient_checkpointing=False)
    assert training_bytes(MISTRAL_7B, plain) > budget_bytes(T4)


def test_t4_defaults_for_7b_are_4bit_with_checkpointing() -> None:
    fit = plan_training(MISTRAL_7B, T4, max_length=2048, effective_batch=4)
    assert fit == TrainFit("4bit", batch_size=4, grad_accum=1, max_length=2048, gradient_checkpointing=True)
    assert 10 * GIB < training_bytes(MISTRAL_7B, fit) <= budget_bytes(T4)


def test_a100_qlora_defaults_use_the_card_without_recompute() -> None:
    fit = plan_training(MISTRAL_7B, A100, max_length=2048, effective_batch=4, quantization="4bit")
    assert fit == TrainFit("4bit", batch_size=2, grad_accum=2, max_length=2048, gradient_checkpointing=False)
    used = training_bytes(MISTRAL_7B, fit) / budget_bytes(A100)
    assert 0.8 < used <= 1.0  # most of the 40 GB card, without spilling over


def test_a100_left_to_choose_trains_7b_in_bf16() -> None:
    assert plan_training(MISTRAL_7B, A100).quantization == "none"


def test_long_sequences_shrink_max_length_on_a_t4() -> None:
    fit = plan_training(MISTRAL_7B, T4, max_length=32768, effective_batch=1)
    assert fit.gradient_checkpointing and fit.batch_size == 1 and fit.max_length < 32768
    assert training_bytes(MISTRAL_7B, fit) <= budget_bytes(T4)


def test_16bit_7b_cannot_fit_a_t4_and_says_what_to_do() -> None:
    with pytest.raises(BadInputError, match="fix: use quantization: 4bit"):
        plan_training(MISTRAL_7B, T4, quantization="none")


@pytest.mark.parametrize(("path", "layers"), [
    ("mistralai/Mistral-7B-Instruct-v0.2", 32), ("meta-llama/Llama-2-13b-hf", 40), ("tiny-llama", None),
    ("Qwen/Qwen2.5-0.5B", None),
    # published configs (KNOWN_SHAPES) before the size in the name: an 8B and a "mini" have one
    ("meta-llama/Meta-Llama-3-8B-Instruct", 32), ("microsoft/Phi-3-mini-4k-instruct", 32),
])
def test_shape_from_model_name(path: str, layers: int | None) -> None:
    shape = shape_for(path)
    assert (shape.layers if shape else None) == layers
