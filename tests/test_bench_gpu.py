"""bench/gpu.py's CPU dry run: the same code path as on a GPU (random-init model saved and reloaded
in 4-bit by the project's loader, QLoRA steps through the train stage's trainer, batched decode)."""

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
    assert [d["batch"] for d in figures["decode"]] == [1, 4]
    assert all(d["tokens_per_s"] > 0 and d["ttft_s"] > 0 for d in figures["decode"])
    assert "QLoRA step, seq   128" in result.stdout and "decode, batch  4" in result.stdout


def test_refuses_the_7b_shape_without_a_gpu() -> None:
    result = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py")], capture_output=True, text=True)
    assert result.returncode == 2 and "no CUDA device" in result.stderr


def test_bandwidth_bound_and_planner_arithmetic() -> None:
    sys.path.insert(0, str(REPO / "bench"))
    import gpu

    from labscale.k8s.memory import MISTRAL_7B, weight_bytes

    assert gpu.bandwidth_bound("7b", "NVIDIA H200") == pytest.approx(4.8e12 / weight_bytes(MISTRAL_7B, "4bit"))
    assert gpu.bandwidth_bound("7b", "Tesla T4") == pytest.approx(3.2e11 / weight_bytes(MISTRAL_7B, "4bit"))
    assert gpu.planner_prediction("7b", 974) < 15e9  # the T4 promise, per the planner
