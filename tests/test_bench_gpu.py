"""bench/gpu.py's CPU dry run: the same code path as on a GPU (random-init model saved and reloaded
in 4-bit by the project's loader, QLoRA steps through the train stage's trainer, batched decode at
batch 1, --batch and the `auto` batch, the vLLM engine on the same prompts)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow


def test_dry_run_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--shape", "tiny", "--steps", "2",
                             "--batch", "4", "--json", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert [t["length"] for t in figures["training"]] == [64, 128]
    assert all(t["tokens_per_s"] > 0 and t["peak_bytes"] is None for t in figures["training"])  # no CUDA here
    assert all(d["tokens_per_s"] > 0 and d["ttft_s"] > 0 for d in figures["decode"])
    assert [d["engine"] for d in figures["decode"]] == ["hf", "hf", "hf", "vllm"]
    hf, vllm = figures["decode"][:3], figures["decode"][3]
    # batch 1, --batch, and auto: the cpu plan's 16 (labscale.models.memory.CPU_BATCH), flagged as such
    assert [d["batch"] for d in hf] == [1, 4, 16] and figures["batch_auto"] == 16
    assert [d.get("batch_auto", False) for d in hf] == [False, False, True]
    assert figures["batch_plan"].startswith("batch 16 (cpu")
    # vLLM: as many prompts as the largest HF batch, all at once, start-up apart, float32 and unquantized
    # here (vLLM 0.32 has no bitsandbytes quantization; the HF rows are 4-bit)
    assert vllm["batch"] == 16 and vllm["max_num_seqs"] == 16 and vllm["startup_s"] > 0
    assert vllm["dtype"] == "float32" and vllm["gpu_memory_utilization"] is None
    assert vllm["quantization"] == "none" and "bitsandbytes" in vllm["quantization_note"]
    assert figures["vllm"] and figures["vllm_skipped"] is None
    assert "QLoRA step, seq   128" in result.stdout and "decode, hf   batch   4" in result.stdout
    assert "decode, hf   batch  16 auto" in result.stdout and "decode, vllm batch  16" in result.stdout


def test_refuses_the_7b_shape_without_a_gpu() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py")], capture_output=True, text=True)
    assert result.returncode == 2 and "no CUDA device" in result.stderr


def test_bandwidth_bound_and_planner_arithmetic() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    from labscale.k8s.memory import weight_bytes
    from labscale.models.shapes import MISTRAL_7B

    assert gpu.bandwidth_bound("7b", "NVIDIA H200") == pytest.approx(4.8e12 / weight_bytes(MISTRAL_7B, "4bit"))
    assert gpu.bandwidth_bound("7b", "Tesla T4") == pytest.approx(3.2e11 / weight_bytes(MISTRAL_7B, "4bit"))
    assert gpu.planner_prediction("7b", 974) < 15e9  # the T4 promise, per the planner


def test_vllm_row_is_unquantized_only_where_vllm_lacks_bitsandbytes() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    from labscale.params import ModelParams

    nf4 = ModelParams(path="m", quantization="4bit", max_length=512)
    assert gpu.vllm_params(nf4, takes_bitsandbytes=True) == (nf4, None)
    params, note = gpu.vllm_params(nf4, takes_bitsandbytes=False)
    assert params.quantization == "none" and params.path == "m" and params.max_length == 512
    assert note is not None and "bitsandbytes" in note
    plain = ModelParams(path="m", quantization="none")
    assert gpu.vllm_params(plain, takes_bitsandbytes=False) == (plain, None)
