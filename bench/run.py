"""`make bench`: side-by-side measurements in one run, printed as ratios.

1. Batched generation vs a per-item `generate` loop (what the seeds did), on the project's tiny
   Llama, 64 prompts x 32 new tokens: items/s of each, the speed-up, and whether the outputs are
   identical. The per-item side is `model.generate` on one prompt at a time with default settings
   (greedy, its default dynamic KV cache; the same tokenizer, arguments and inference mode as the
   project's generation used before batching). The batched side is the generate stage's own code,
   `labscale.models.generation.generate_all` at batch 16: length-sorted, left-padded batches, the
   prompts' shared prefix (instruction) computed once per batch, and a lean greedy loop over the
   model's forward with a preallocated KV cache (it gives `generate`'s tokens; tests/test_generation.py).
   Nothing is tuned for the bench: both sides run with torch's default threads and both timings
   include tokenizing and detokenizing. Both sides are warmed up, then timed in 3 interleaved rounds
   (loop, batched, loop, batched, ...); the speed-up is best time over best time (other load on the
   machine only ever adds time), and the range of the per-round ratios is printed beside it.
2. A cached rerun of a small study vs its cold run (same store): wall time of each, the ratio.
3. The generate stage of a 6-cell grid on the two engines (bench/engines.py): HF loop, vLLM per cell and
   vLLM one engine per model, for the tiny model and a ~136M-parameter Llama: wall time with start-up,
   tok/s, the ratios and the agreement of the greedy replies. `--quick`: a small grid, tiny model only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engines import bench_engines

REPO = Path(__file__).resolve().parent.parent


def generate_one(model, tokenizer, prompt: str, max_new_tokens: int) -> tuple[str, int]:
    """What the seeds did: `model.generate` on one prompt, default settings, greedy."""
    import torch

    enc = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    new = new[:new.index(tokenizer.eos_token_id) + 1] if tokenizer.eos_token_id in new else new
    return tokenizer.decode(new, skip_special_tokens=True).strip(), len(new)


def bench_generation(n_items: int = 64, batch_size: int = 16, max_new_tokens: int = 32, rounds: int = 3) -> None:
    import torch

    from labscale.demo.data import make_dialogue_summaries
    from labscale.models.generation import generate_all
    from labscale.models.loading import load_causal_lm, load_tokenizer
    from labscale.params import ModelParams
    from labscale.prompts import render_prompt
    from labscale.tasks import get_task

    torch.manual_seed(0)
    model_cfg = ModelParams(path="tiny-llama", build="tiny-llama", quantization="none", max_length=1024)
    model, tokenizer = load_causal_lm(model_cfg).eval(), load_tokenizer(model_cfg)
    task = get_task("clinical-summary")
    prompts = [render_prompt("plain", task.instruction, task.render_input(row))
               for row in make_dialogue_summaries(n_items, seed=123)]
    for p in prompts[:4]:  # warm-up, both sides
        generate_one(model, tokenizer, p, max_new_tokens)
    generate_all(model, tokenizer, prompts[:batch_size], max_new_tokens, 1024, batch_size)

    loop_times, batched_times, identical = [], [], n_items
    for _ in range(rounds):
        started = time.perf_counter()
        loop = [generate_one(model, tokenizer, p, max_new_tokens) for p in prompts]
        loop_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        batched = generate_all(model, tokenizer, prompts, max_new_tokens, 1024, batch_size)
        batched_times.append(time.perf_counter() - started)
        identical = min(identical, sum((b.text, b.tokens_out) == a for a, b in zip(loop, batched)))

    loop_s, batched_s = min(loop_times), min(batched_times)
    ratios = sorted(a / b for a, b in zip(loop_times, batched_times))
    print(f"generation, tiny Llama, {n_items} items, {max_new_tokens} new tokens, {torch.get_num_threads()} threads, "
          f"best of {rounds} interleaved rounds")
    print(f"  per-item generate    {n_items / loop_s:8.2f} items/s  ({loop_s:.2f} s)")
    print(f"  batched (batch {batch_size:>2})   {n_items / batched_s:8.2f} items/s  ({batched_s:.2f} s)")
    spread = f"; rounds {ratios[0]:.2f}-{ratios[-1]:.2f}x" if rounds > 1 else ""
    print(f"  speed-up             {loop_s / batched_s:8.2f}x   (target >= 8x{spread})")
    print(f"  identical outputs    {identical}/{n_items} (text and token count, every round)")


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
    parser = argparse.ArgumentParser(description="labscale's side-by-side benchmarks")
    parser.add_argument("--quick", action="store_true", help="the engines section on its small grid (tiny model only)")
    args = parser.parse_args()
    bench_generation()
    bench_cache()
    bench_engines(quick=args.quick)
