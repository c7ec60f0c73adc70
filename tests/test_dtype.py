"""`models[].dtype` (auto | float32 | bfloat16): what an open model computes in, on both engines and in
every stage that loads it; part of the run key only when named, in the memory plan's weight bytes,
shown by `labscale plan`. (vLLM in bf16: tests/test_vllm_engine.py; a bad dtype: test_study_errors.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_cli, small_study

from labscale.config import load_study
from labscale.errors import BadInputError
from labscale.models.loading import compute_dtype, dtype_name, load_causal_lm, model_dtype
from labscale.models.memory import auto_batch
from labscale.models.shapes import KNOWN_SHAPES, weights_format
from labscale.params import ModelParams
from labscale.plan import build_plan

TINY = ModelParams(path="tiny-llama", build="tiny-llama", max_length=512)
MISTRAL = ModelParams(path="mistralai/Mistral-7B-v0.1", max_length=576)
MODELS = """\
  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512}
  - {id: tiny-bf16, path: tiny-llama, build: tiny-llama, max_length: 512, dtype: bfloat16}
"""
SETTINGS = """\
  - id: zero-shot
  - id: ft
    finetune: {r: 8, max_steps: 2, batch_size: 2, save_steps: 2, max_length: 128}
"""


def test_auto_keeps_the_key_and_a_named_dtype_is_its_own_run() -> None:
    assert "dtype" not in TINY.model_dump()  # runs from before dtype was a choice keep their keys
    assert TINY.model_copy(update={"dtype": "bfloat16"}).model_dump()["dtype"] == "bfloat16"


def test_a_bf16_model_trains_and_answers_in_runs_of_its_own(tmp_path: Path) -> None:
    plan = build_plan(load_study(small_study(tmp_path, settings=SETTINGS, models=MODELS)))
    keys = {(r.stage, r.labels.get("model"), r.labels.get("setting")): r.key for r in plan.runs}
    for stage, setting in (("generate", "zero-shot"), ("train", "ft"), ("generate", "ft")):
        assert keys[stage, "tiny", setting] != keys[stage, "tiny-bf16", setting]


def test_plan_shows_a_named_dtype(tmp_path: Path) -> None:
    out = run_cli("plan", str(small_study(tmp_path, settings="  - id: zero-shot\n", models=MODELS)), cwd=tmp_path,
                  check=True).stdout
    lines = [line for line in out.splitlines() if "generate" in line]
    assert len(lines) == 2
    assert "dtype=" not in next(line for line in lines if "tiny × " in line)
    assert "engine=hf dtype=bfloat16" in next(line for line in lines if "tiny-bf16 × " in line)


def test_weights_follow_the_dtype() -> None:
    assert [weights_format("none", dtype=d) for d in ("auto", "float32", "bfloat16")] == ["bf16", "float32", "bf16"]
    assert [weights_format("none", gpu=False, dtype=d) for d in ("auto", "float32", "bfloat16")] == \
        ["float32", "float32", "bf16"]
    assert weights_format("none", bf16=False) == "fp16"  # the T4 at auto
    assert weights_format("4bit", dtype="float32") == "nf4"  # 4-bit weights whatever the compute dtype


def test_float32_weights_double_the_plan_and_shrink_the_batch() -> None:
    half = auto_batch(MISTRAL, gpu_memory_gib=40.0, prompt_tokens=512, max_new_tokens=64)
    full = auto_batch(MISTRAL.model_copy(update={"dtype": "float32"}), gpu_memory_gib=40.0, prompt_tokens=512,
                      max_new_tokens=64)
    assert full.weight_bytes == 2 * half.weight_bytes == 4 * KNOWN_SHAPES["mistralai/mistral-7b-v0.1"].params
    assert 0 < full.batch < half.batch
    assert full.kv_bytes_per_seq == 2 * half.kv_bytes_per_seq  # float32 activations and KV cache
    with pytest.raises(BadInputError, match="float32 weights 27 GiB .* do not fit a 15 GiB GPU"):
        auto_batch(MISTRAL.model_copy(update={"dtype": "float32"}), gpu_memory_gib=15.0, prompt_tokens=512,
                   max_new_tokens=64)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU's choices")
def test_on_a_cpu_auto_is_float32_and_bfloat16_loads_bf16() -> None:
    assert [compute_dtype(d) for d in ("auto", "float32", "bfloat16")] == \
        [torch.float32, torch.float32, torch.bfloat16]
    assert model_dtype(TINY.model_copy(update={"quantization": "4bit"})) == torch.bfloat16  # bnb's CPU kernels
    assert model_dtype(TINY.model_copy(update={"quantization": "4bit", "dtype": "float32"})) == torch.float32
    bf16 = TINY.model_copy(update={"dtype": "bfloat16"})
    assert dtype_name(bf16) == "bfloat16" and dtype_name(TINY) == "float32"
    assert {p.dtype for p in load_causal_lm(bf16).parameters()} == {torch.bfloat16}
    assert {p.dtype for p in load_causal_lm(TINY).parameters()} == {torch.float32}
