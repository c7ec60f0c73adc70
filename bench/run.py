"""`make bench`: side-by-side measurements in one run, printed as ratios.

1. Batched generation (length-sorted, left-padded, batch 16) vs a per-item `generate` loop (what
   the seeds did), on the project's tiny Llama: items/s of each, the speed-up, and whether the
   outputs are identical.
2. A cached rerun of a small study vs its cold run (same store): wall time of each, the ratio.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def bench_generation(n_items: int = 64, batch_size: int = 16, max_new_tokens: int = 32) -> None:
    import torch

    from labscale.demo.data import make_dialogue_summaries
    from labscale.models.generation import generate_all, generate_batch
    from labscale.models.loading import load_causal_lm, load_tokenizer
    from labscale.prompts import render_prompt
    from labscale.tasks import get_task

    torch.manual_seed(0)
    model_cfg = {"path": "tiny-llama", "build": "tiny-llama", "quantization": "none", "max_length": 1024}
    model, tokenizer = load_causal_lm(model_cfg).eval(), load_tokenizer(model_cfg)
    task = get_task("clinical-summary")
    prompts = [render_prompt("plain", task.instruction, task.render_input(row))
               for row in make_dialogue_summaries(n_items, seed=123)]
    generate_all(model, tokenizer, prompts[:4], max_new_tokens, 1024, batch_size)  # warm-up

    started = time.perf_counter()
    loop = [generate_batch(model, tokenizer, [p], max_new_tokens, 1024)[0] for p in prompts]
    loop_s = time.perf_counter() - started
    started = time.perf_counter()
    batched = generate_all(model, tokenizer, prompts, max_new_tokens, 1024, batch_size)
    batched_s = time.perf_counter() - started

    identical = sum(a.text == b.text for a, b in zip(loop, batched))
    print(f"generation, tiny Llama, {n_items} items, {max_new_tokens} new tokens, {torch.get_num_threads()} threads")
    print(f"  per-item loop        {n_items / loop_s:8.2f} items/s  ({loop_s:.2f} s)")
    print(f"  batched (batch {batch_size:>2})   {n_items / batched_s:8.2f} items/s  ({batched_s:.2f} s)")
    print(f"  speed-up             {loop_s / batched_s:8.2f}x   (target >= 8x)")
    print(f"  identical outputs    {identical}/{n_items}")


def bench_cache() -> None:
    with tempfile.TemporaryDirectory(prefix="labscale-bench-") as tmp:
        work = Path(tmp)
        shutil.copytree(REPO / "studies" / "data", work / "data")
        study = (REPO / "studies" / "demo.yaml").read_text()
        study = study.replace('test: "train[80%:]"}', 'test: "train[80%:]"}\n    max_items: {test: 16}')
        study = study.replace("max_steps: 150", "max_steps: 10")
        (work / "study.yaml").write_text(study)
        cmd = [sys.executable, "-m", "labscale.cli", "run", "study.yaml"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            subprocess.run(cmd, cwd=work, env=env, check=True, capture_output=True)
            timings.append(time.perf_counter() - started)
    cold, warm = timings
    print("study rerun, demo study (16 test items per task, 10 training steps)")
    print(f"  cold run             {cold:8.2f} s")
    print(f"  cached rerun         {warm:8.2f} s")
    print(f"  speed-up             {cold / warm:8.2f}x   (target >= 20x)")


if __name__ == "__main__":
    bench_generation()
    bench_cache()
