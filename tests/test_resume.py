"""kill -9 during train or generate, then rerun: it resumes and ends where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, small_study

pytestmark = pytest.mark.slow

SETTINGS = """\
  - id: ft
    finetune: {r: 8, learning_rate: 0.003, max_steps: 12, batch_size: 4, grad_accum: 1, warmup_steps: 0,
               gradient_checkpointing: false, save_steps: 4, max_length: 256}
"""
GENERATION = "generation: {batch_size: 1, shard_size: 2}\n"


def _kill_when(study: Path, cwd: Path, pattern: str, timeout: float = 300) -> None:
    """Start `labscale run`, SIGKILL its whole process group once a file matching `pattern` appears."""
    proc = subprocess.Popen([sys.executable, "-m", "labscale.cli", "run", str(study)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    store = cwd / "store"
    deadline = time.monotonic() + timeout
    try:
        while not list(store.glob(pattern)):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, f"nothing matched {pattern}"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _outputs(store: Path) -> tuple[dict, dict]:
    """Predictions (without timings) and scores of the single cell, by artifact."""
    preds = {p.parent.name: [{k: v for k, v in json.loads(line).items() if k != "latency_s"}
                             for line in p.read_text().splitlines()]
             for p in store.glob("generate/*/predictions.jsonl")}
    scores = {m.parent.name: json.loads(m.read_text())["meta"]["metrics"]["scores"]
              for m in store.glob("score/*/_MANIFEST.json")}
    return preds, scores


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    tmp = tmp_path_factory.mktemp("uninterrupted")
    run_cli("run", str(small_study(tmp, settings=SETTINGS, tasks=("notes",), test_items=24, generation=GENERATION)),
            cwd=tmp, check=True)
    return _outputs(tmp / "store")


def test_kill_during_train_resumes_from_the_stored_checkpoint(tmp_path: Path, reference) -> None:
    study = small_study(tmp_path, settings=SETTINGS, tasks=("notes",), test_items=24, generation=GENERATION)
    _kill_when(study, tmp_path, "train/*/checkpoints/*/_MANIFEST.json")
    assert not list((tmp_path / "store").glob("train/*/_MANIFEST.json")), "train finished before the kill"
    result = run_cli("run", str(study), cwd=tmp_path, check=True)
    assert "resuming from train/" in result.stderr
    assert _outputs(tmp_path / "store") == reference


def test_kill_during_generate_resumes_after_the_committed_shards(tmp_path: Path, reference) -> None:
    study = small_study(tmp_path, settings=SETTINGS, tasks=("notes",), test_items=24, generation=GENERATION)
    _kill_when(study, tmp_path, "generate/*/shards/*/_MANIFEST.json")
    store = tmp_path / "store"
    committed = len(list(store.glob("generate/*/shards/*/_MANIFEST.json")))
    assert 0 < committed < 12 and not list(store.glob("generate/*/_MANIFEST.json"))
    result = run_cli("run", str(study), cwd=tmp_path, check=True)
    assert result.stderr.count("already committed — skipping") == committed
    assert _outputs(store) == reference
