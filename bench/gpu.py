"""`make bench-gpu`: the GPU path, measured on a model with the shapes of Mistral-7B and random weights.

Builds the model (no download: random init, saved as an ordinary Hugging Face directory with the
project's tokenizer), loads it with the project's loader in 4-bit NF4 + double quantization, and runs
the project's own training (`labscale.training.sft.sft_trainer`, QLoRA, gradient checkpointing,
paged 8-bit AdamW) and generation (`labscale.models.generation`) code on synthetic text. Reports:
peak GPU memory of a QLoRA step at the seeds' sequence lengths, next to the memory planner's
prediction (`labscale.k8s.memory`); training tokens/s next to LLaMA-Factory's published 2,415
tokens/s/GPU (7B, 4-bit QLoRA, A100 40 GB); decode tokens/s and time to first token of the
project's HF loop (engine `hf`) at batch 1, `--batch` and the `auto` batch (labscale.models.memory's
plan for this GPU's memory at the bench's prompt length + 64 new tokens; 16 without CUDA), batch 1
as a fraction of the memory-bandwidth bound (bandwidth ÷ bytes of weights read per token); and the
vLLM engine (engine `vllm`, labscale.models.vllm_engine) on the same prompts as token ids, as many
as the largest HF batch, with its start-up seconds apart. vLLM runs the checkpoint's bf16 on a GPU
(its memory share from labscale.models.memory.vllm_memory) and float32 on a CPU, unquantized where
the installed vLLM has no bitsandbytes quantization (0.32 has none; the row's `quantization` says
which). `--shape tiny` is a CPU dry run of the same script (figures meaningless, code path real).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from labscale.config.study import TrainConfig
from labscale.errors import BadInputError
from labscale.models.memory import BatchPlan
from labscale.params import ModelParams, SftParams

SHAPES: dict[str, dict[str, Any]] = {
    "7b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000, "max_position_embeddings": 4096},
    "tiny": {"hidden_size": 128, "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024, "max_position_embeddings": 1024},
}
SEQUENCE_LENGTHS = {"7b": (974, 2048), "tiny": (64, 128)}
PROMPT_WORDS, NEW_TOKENS = 200, 64
"""Decode rows: prompts of a quarter of 200 filler words (synthetic_rows), 64 new tokens."""
AUTO_ITEMS = 256
"""The items the `auto` batch is planned for (its cap)."""
ANCHOR_TRAIN_TOKENS_PER_S = 2415.0
"""LLaMA-Factory's benchmark: 7B, 4-bit QLoRA, A100 40 GB, tokens/s per GPU."""
GPU_BANDWIDTH_BYTES_PER_S = {"H200": 4.8e12, "H100": 3.35e12, "A100-SXM4-80GB": 2.04e12, "A100 80GB": 1.94e12,
                             "A100": 1.555e12, "L4": 3.0e11, "T4": 3.2e11}
"""Peak HBM/GDDR bandwidth by device-name substring (first match wins; order matters)."""


def build_model(shape: str, out: Path) -> Path:
    """Random-init a Llama-architecture model of `shape` (bf16) into `out`, with the project's tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from labscale.models.loading import cache_dir
    from labscale.models.tiny import ensure_tiny_llama

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    with torch.device(device):
        config = LlamaConfig(**SHAPES[shape], bos_token_id=0, eos_token_id=1, pad_token_id=2)  # the tokenizer's ids
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(out, max_shard_size="4GB")
    del model
    tokenizer_dir = ensure_tiny_llama(cache_dir())  # ids < 1024 index any vocabulary: shapes are what count
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, out / name)
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def synthetic_rows(n: int, words: int) -> list[dict[str, str]]:
    """Prompt/completion rows of deterministic filler text: `words` words in all (≥ as many tokens),
    a quarter of them prompt, so a row truncated to `words` tokens still has completion to learn."""
    vocab = "patient reports mild pain since monday denies fever takes ibuprofen twice daily".split()
    text = lambda k, i: " ".join(vocab[(i + j) % len(vocab)] for j in range(k))  # noqa: E731
    return [{"prompt": text(words // 4, i), "completion": text(words - words // 4, i + 1)} for i in range(n)]


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def measure_training(model_params: ModelParams, length: int, steps: int, out: Path) -> dict[str, Any]:
    """Peak memory and tokens/s of QLoRA steps at `length` tokens (batch 1, checkpointing)."""
    import torch
    from datasets import Dataset

    from labscale.models.loading import load_causal_lm, load_tokenizer
    from labscale.training.sft import sft_trainer

    recipe = TrainConfig(epochs=1, max_steps=steps, batch_size=1, grad_accum=1, learning_rate=2e-4, warmup_steps=0,
                         gradient_checkpointing=True, max_length=length, save_steps=10_000, r=8, alpha=32, dropout=0.05)
    params = SftParams(model=model_params.model_copy(update={"max_length": length}), train=recipe, seed=0)
    model = load_causal_lm(model_params)
    tokenizer = load_tokenizer(model_params, padding_side="right")
    dataset = Dataset.from_list(synthetic_rows(steps, length))  # every row is truncated to `length`
    trainer = sft_trainer(model, tokenizer, dataset, params, out)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    del trainer, model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"length": length, "steps": steps, "peak_bytes": peak,
            "tokens_per_s": steps * length / result.metrics["train_runtime"]}


def measure_decode(model_params: ModelParams, batch: int, prompt_words: int, new_tokens: int) -> dict[str, Any]:
    """Decode tokens/s at `batch` and time to first token, with the project's batched generation."""
    from labscale.models.generation import generate_batch
    from labscale.models.loading import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(model_params).eval(), load_tokenizer(model_params)
    prompts = [r["prompt"] for r in synthetic_rows(batch, prompt_words)]
    generate_batch(model, tokenizer, prompts, 2, model_params.max_length)  # warm-up
    started = time.perf_counter()
    generate_batch(model, tokenizer, prompts, 1, model_params.max_length)
    ttft = time.perf_counter() - started
    started = time.perf_counter()
    gens = generate_batch(model, tokenizer, prompts, new_tokens, model_params.max_length)
    seconds = time.perf_counter() - started
    decoded = sum(g.tokens_out for g in gens)
    del model
    _free_cuda()
    return {"engine": "hf", "batch": batch, "ttft_s": ttft, "tokens_per_s": decoded / max(seconds - ttft, 1e-9)}


def _free_cuda() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def auto_plan(model_params: ModelParams, prompt_words: int, new_tokens: int, items: int) -> BatchPlan:
    """`generation.batch_size: auto` for this bench's prompts on this device (labscale.models.memory): the
    plan for the GPU's memory at the prompts' token length + `new_tokens`; without CUDA the cpu plan (16)."""
    from labscale.models.generation import encode_prompts
    from labscale.models.loading import load_tokenizer
    from labscale.models.memory import auto_batch, device_gpu_memory_gib, device_has_bf16

    rows = encode_prompts(load_tokenizer(model_params), [r["prompt"] for r in synthetic_rows(items, prompt_words)],
                          new_tokens, model_params.max_length)
    return auto_batch(model_params, gpu_memory_gib=device_gpu_memory_gib(), prompt_tokens=max(len(r) for r in rows),
                      max_new_tokens=new_tokens, items=items, bf16=device_has_bf16())


def vllm_takes_bitsandbytes() -> bool:
    """Whether the installed vLLM knows the `bitsandbytes` quantization (labscale's 4-bit NF4). vLLM 0.32,
    the pinned version (CUDA and CPU builds alike), no longer does (vLLM's RFC #39583 deprecated it)."""
    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS

    return "bitsandbytes" in QUANTIZATION_METHODS


def vllm_params(model_params: ModelParams, takes_bitsandbytes: bool) -> tuple[ModelParams, str | None]:
    """The model as the vLLM row loads it, and why it differs from the HF rows' (None: it does not): 4-bit
    NF4 as the HF rows where vLLM takes bitsandbytes, else unquantized (the checkpoint's bf16 on a GPU,
    float32 on a CPU)."""
    if model_params.quantization != "4bit" or takes_bitsandbytes:
        return model_params, None
    return (model_params.model_copy(update={"quantization": "none"}),
            "unquantized: this vLLM has no bitsandbytes quantization (the HF rows are 4-bit NF4)")


def measure_vllm(model_params: ModelParams, prompts_n: int, prompt_words: int, new_tokens: int) -> dict[str, Any]:
    """The vLLM engine (labscale.models.vllm_engine) on the HF rows' prompts as token ids, greedily: start-up
    seconds, time to first token and decode tokens/s over all `prompts_n` prompts at once. On a GPU in the
    checkpoint's bf16, with the gpu_memory_utilization and max_num_seqs that labscale.models.memory.vllm_memory
    derives from the `auto` plan of the weights vLLM loads; on a CPU in float32. The prefix cache is emptied
    before each timed call (the warm-up and the first-token call would otherwise have cached every prompt).
    BadInputError where the weights vLLM loads do not fit the GPU."""
    from labscale.models.generation import encode_prompts
    from labscale.models.loading import has_cuda, load_tokenizer
    from labscale.models.memory import vllm_memory
    from labscale.models.vllm_engine import EngineSettings, VllmEngine

    cuda = has_cuda()
    params, note = vllm_params(model_params, vllm_takes_bitsandbytes())
    prompts = [r["prompt"] for r in synthetic_rows(prompts_n, prompt_words)]
    rows = encode_prompts(load_tokenizer(params), prompts, new_tokens, params.max_length)
    max_model_len = max(len(r) for r in rows) + new_tokens
    memory = vllm_memory(auto_plan(params, prompt_words, new_tokens, AUTO_ITEMS)) if cuda else None
    settings = EngineSettings(params, max_model_len,
                              gpu_memory_utilization=memory.gpu_memory_utilization if memory else 0.9,
                              max_num_seqs=memory.max_num_seqs if memory else prompts_n)
    engine = VllmEngine(settings)
    startup = engine.startup_s
    engine.generate(rows, 2)  # warm-up
    engine.llm.reset_prefix_cache()
    started = time.perf_counter()
    engine.generate(rows, 1)
    ttft = time.perf_counter() - started
    engine.llm.reset_prefix_cache()
    started = time.perf_counter()
    new = engine.generate(rows, new_tokens)
    seconds = time.perf_counter() - started
    engine.llm = None  # the engine's memory goes back before anything else runs
    del engine
    _free_cuda()
    return {"engine": "vllm", "batch": prompts_n, "ttft_s": ttft,
            "tokens_per_s": sum(len(n) for n in new) / max(seconds - ttft, 1e-9), "startup_s": startup,
            "quantization": params.quantization, "quantization_note": note,
            "dtype": "bfloat16 (the checkpoint's)" if cuda else "float32",
            "gpu_memory_utilization": memory.gpu_memory_utilization if memory else None,
            "max_num_seqs": settings.max_num_seqs, "max_model_len": max_model_len}


def bandwidth_bound(shape: str, gpu: str | None) -> float | None:
    """Decode tokens/s at batch 1 if every step only had to read the 4-bit weights once."""
    from labscale.k8s.memory import weight_bytes
    from labscale.models.shapes import MISTRAL_7B

    bandwidth = next((bw for name, bw in GPU_BANDWIDTH_BYTES_PER_S.items() if gpu and name in gpu), None)
    if bandwidth is None or shape != "7b":
        return None
    return bandwidth / weight_bytes(MISTRAL_7B, "4bit")


def planner_prediction(shape: str, length: int) -> float | None:
    """The memory planner's peak for this benchmark's QLoRA step (only the 7B shape is in its table)."""
    from labscale.k8s.memory import TrainFit, training_bytes
    from labscale.models.shapes import MISTRAL_7B

    return training_bytes(MISTRAL_7B, TrainFit("4bit", 1, 1, length, True)) if shape == "7b" else None


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    for name in (package, f"{package}-cpu"):
        try:
            return version(name)
        except PackageNotFoundError:
            continue
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b")
    parser.add_argument("--steps", type=int, default=6, help="QLoRA steps per sequence length")
    parser.add_argument("--batch", type=int, default=4, help="the planner's decode batch (T4 default: 4)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    gpu = _gpu_name()
    if gpu is None and args.shape != "tiny":
        print("bench-gpu: no CUDA device — fix: run on a GPU machine, or `--shape tiny` for a CPU dry run",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="labscale-bench-gpu-") as tmp:
        model_dir = build_model(args.shape, Path(tmp) / "model")
        model_params = ModelParams(path=str(model_dir), quantization="4bit", max_length=4096)
        training = [measure_training(model_params, n, args.steps, Path(tmp) / f"trainer-{n}")
                    for n in SEQUENCE_LENGTHS[args.shape]]
        plan = auto_plan(model_params, PROMPT_WORDS, NEW_TOKENS, items=AUTO_ITEMS)
        decode = [measure_decode(model_params, b, PROMPT_WORDS, NEW_TOKENS)
                  | ({"batch_auto": True} if b == plan.batch else {}) for b in sorted({1, args.batch, plan.batch})]
        vllm_skipped = None if importlib.util.find_spec("vllm") else "vLLM is not installed in this environment"
        try:
            if not vllm_skipped:
                decode.append(measure_vllm(model_params, max(d["batch"] for d in decode), PROMPT_WORDS, NEW_TOKENS))
        except BadInputError as exc:  # e.g. a 7B model unquantized on a 16 GB GPU
            vllm_skipped = str(exc)
    bound = bandwidth_bound(args.shape, gpu)
    figures = {"device": gpu or "cpu (dry run)", "shape": args.shape, "date": time.strftime("%Y-%m-%d"),
               "torch": torch.__version__, "transformers": transformers.__version__,
               "training": training, "decode": decode, "bandwidth_bound_tokens_per_s": bound,
               "batch_auto": plan.batch, "batch_plan": plan.describe(), "vllm": _version("vllm"),
               "vllm_skipped": vllm_skipped}
    print(f"bench-gpu: {figures['device']}, shape {args.shape}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}, {figures['date']}")
    for t in training:
        predicted = planner_prediction(args.shape, t["length"])
        t["planner_bytes"] = predicted
        peak = f"{t['peak_bytes'] / 2**30:.2f} GiB" if t["peak_bytes"] else "n/a (no CUDA)"
        planned = f"{predicted / 2**30:.2f} GiB" if predicted else "n/a"
        ratio = f"{t['peak_bytes'] / predicted:.2f}" if t["peak_bytes"] and predicted else "n/a"
        print(f"  QLoRA step, seq {t['length']:>5}: peak {peak:>14}  planner {planned:>9} (measured/planned "
              f"{ratio})  train {t['tokens_per_s']:8.1f} tok/s ({t['tokens_per_s'] / ANCHOR_TRAIN_TOKENS_PER_S:.0%} of "
              f"LLaMA-Factory's {ANCHOR_TRAIN_TOKENS_PER_S:.0f})")
    print(f"  auto batch: {plan.describe()}")
    for d in decode:
        share = f"{d['tokens_per_s'] / bound:.0%} of the {bound:.0f} tok/s bandwidth bound" if bound and d["batch"] == 1 \
            and d["engine"] == "hf" else ""
        if d["engine"] == "vllm":
            weights = "unquantized" if d["quantization"] == "none" else d["quantization"]
            share = (f"start-up {d['startup_s']:.1f} s, {weights} {d['dtype']}"
                     + (f", gpu_memory_utilization {d['gpu_memory_utilization']}" if d["gpu_memory_utilization"] else ""))
        label = f"{d['engine']:<4} batch {d['batch']:>3}{' auto' if d.get('batch_auto') else '':<5}"
        print(f"  decode, {label}: {d['tokens_per_s']:8.1f} tok/s  TTFT {d['ttft_s'] * 1000:7.1f} ms  {share}")
    if vllm_skipped:
        print(f"  decode, vllm: not run — {vllm_skipped}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
