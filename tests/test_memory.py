"""`generation.batch_size: auto`: the memory model (labscale.models.memory) against hand arithmetic for
Mistral-7B on a T4 and an A100, the out-of-memory halving of the generate loop (injected on CPU), and
`auto` through the study file, the planner, `labscale plan` and the generate stage."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, run_in_process, small_study

from labscale.config import load_study
from labscale.config.study import GenerationConfig
from labscale.demo.data import make_dialogue_summaries
from labscale.errors import BadInputError
from labscale.jobs import generate as generate_stage
from labscale.models import memory
from labscale.models.generation import generate_all, generate_batches, greedy_decode
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.models.memory import auto_batch, plan_batch, vllm_memory
from labscale.models.shapes import GIB, KNOWN_SHAPES, DecoderShape, read_shape
from labscale.params import ModelParams, OpenGenerateParams
from labscale.plan import build_plan
from labscale.prompts import render_prompt
from labscale.tasks import get_task

MISTRAL_CONFIG = {"model_type": "mistral", "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                  "hidden_size": 4096, "intermediate_size": 14336, "vocab_size": 32000, "tie_word_embeddings": False}
"""mistralai/Mistral-7B-v0.1's config.json (the fields the memory model reads; head_dim = 4096 / 32 = 128)."""
MISTRAL = DecoderShape.from_config(MISTRAL_CONFIG)

# Mistral-7B, by hand:
#   linear params per layer: q, o 2·4096·4096 = 33,554,432; k, v 2·4096·1024 = 8,388,608;
#     MLP 3·4096·14336 = 176,160,768 → 218,103,808; × 32 layers = 6,979,321,856
#   other params: embeddings + lm_head 2·32000·4096 = 262,144,000; norms (2·32 + 1)·4096 = 266,240 → 262,410,240
#   P = 7,241,732,096 (the published 7.24B)
#   weights NF4: 6,979,321,856 × 0.515 + 262,410,240 × 2 = 3,594,350,755.84 + 524,820,480 = 4,119,171,235.84 B
#   weights bf16: 7,241,732,096 × 2 = 14,483,464,192 B
#   KV per token: 2 · 32 layers · 8 KV heads · 128 · 2 B = 131,072 B
#   activations per prompt token: (2·4096 + 2·32·128 + 2·8·128 + 3·14336) · 2 B = 61,440 · 2 = 122,880 B
#   logits per sequence: 32000 · (2 + 4) = 192,000 B
#   per sequence at 512 + 64:  576 · 131,072 + 512 · 122,880 + 192,000 = 75,497,472 + 62,914,560 + 192,000 = 138,604,032
#   per sequence at 2048 + 64: 2112 · 131,072 + 2048 · 122,880 + 192,000 = 276,824,064 + 251,658,240 + 192,000 = 528,674,304
#   T4, 15 GiB = 16,106,127,360 B; headroom 1 GiB + 10 % = 2,684,354,560 → 13,421,772,800 B for weights and sequences
#     NF4: 13,421,772,800 − 4,119,171,235.84 = 9,302,601,564.16 → ÷ 138,604,032 = 67.1 → 67; ÷ 528,674,304 = 17.6 → 17
#     bf16: 13,421,772,800 − 14,483,464,192 < 0 → does not fit
#   A100, 40 GiB = 42,949,672,960 B; headroom 1 GiB + 4 GiB = 5,368,709,120 → 37,580,963,840 B
#     NF4: 33,461,792,604.16 → ÷ 138,604,032 = 241.4 → 241; ÷ 528,674,304 = 63.3 → 63
#     bf16: 23,097,499,648 → ÷ 138,604,032 = 166.6 → 166; ÷ 528,674,304 = 43.7 → 43
EXPECTED = [("t4", 15.0, "nf4", 512, 67), ("t4", 15.0, "nf4", 2048, 17),
            ("a100", 40.0, "nf4", 512, 241), ("a100", 40.0, "nf4", 2048, 63),
            ("a100", 40.0, "bf16", 512, 166), ("a100", 40.0, "bf16", 2048, 43)]


def test_mistral_shape_and_terms_match_the_hand_arithmetic() -> None:
    assert MISTRAL == KNOWN_SHAPES["mistralai/mistral-7b-v0.1"]
    assert (MISTRAL.head_dim, MISTRAL.kv_heads) == (128, 8)
    assert MISTRAL.params == 7_241_732_096
    assert MISTRAL.weight_bytes("nf4") == pytest.approx(4_119_171_235.84)
    assert MISTRAL.weight_bytes("bf16") == 14_483_464_192
    assert MISTRAL.kv_bytes_per_token(2) == 131_072
    assert MISTRAL.activation_bytes_per_token(2) == 122_880


@pytest.mark.parametrize(("pool", "gib", "weights", "prompt", "batch"), EXPECTED, ids=[f"{p}-{w}-{n}" for p, _, w, n, _ in EXPECTED])
def test_auto_batch_for_mistral_7b(pool: str, gib: float, weights: str, prompt: int, batch: int) -> None:
    plan = plan_batch(MISTRAL, weights=weights, prompt_tokens=prompt, max_new_tokens=64,  # type: ignore[arg-type]
                      gpu_memory_gib=memory.pool_gpu_memory_gib(pool))
    assert memory.pool_gpu_memory_gib(pool) == gib
    assert plan.batch == batch and plan.limited_by == "memory"
    assert plan.planned_bytes <= gib * GIB < plan.planned_bytes + plan.per_seq_bytes  # the largest that fits
    # The same through a study's model: Hub id (offline: the known shapes), quantization, max_length.
    model = ModelParams(path="mistralai/Mistral-7B-v0.1", quantization="4bit" if weights == "nf4" else "none",
                        max_length=prompt + 64)
    assert auto_batch(model, gpu_memory_gib=gib, prompt_tokens=prompt, max_new_tokens=64) == plan
    assert f"batch {batch} (memory)" in plan.describe()


def test_bf16_mistral_on_a_t4_does_not_fit_one_line_with_the_fix() -> None:
    model = ModelParams(path="mistralai/Mistral-7B-v0.1")
    with pytest.raises(BadInputError) as caught:
        auto_batch(model, gpu_memory_gib=15.0, prompt_tokens=512, max_new_tokens=64)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("mistralai/Mistral-7B-v0.1: bf16 weights 13.5 GiB")
    assert "do not fit a 15 GiB GPU — fix: set models[].quantization: 4bit" in message


def test_caps_cpu_and_the_prompt_bound() -> None:
    # A small model on an A100 is capped at 256, and at the run's items.
    tiny = ModelParams(path="tiny-llama", build="tiny-llama", max_length=512)
    assert auto_batch(tiny, gpu_memory_gib=40.0, prompt_tokens=400, max_new_tokens=64).batch == 256
    capped = auto_batch(tiny, gpu_memory_gib=40.0, prompt_tokens=400, max_new_tokens=64, items=10)
    assert (capped.batch, capped.limited_by) == (10, "items")
    # No GPU: 16 (the demo's batch), at most the items.
    assert auto_batch(tiny, gpu_memory_gib=None, prompt_tokens=400, max_new_tokens=64).batch == 16
    assert auto_batch(tiny, gpu_memory_gib=None, prompt_tokens=400, max_new_tokens=64, items=5).batch == 5
    # A prompt longer than the model takes is cut at max_length − max_new_tokens (as generation cuts it).
    model = ModelParams(path="mistralai/Mistral-7B-v0.1", quantization="4bit", max_length=576)
    assert auto_batch(model, gpu_memory_gib=15.0, prompt_tokens=5000, max_new_tokens=64).batch == 67


def test_shapes_from_a_local_config_with_fallbacks(tmp_path) -> None:
    # No num_key_value_heads (→ the attention heads), no head_dim (→ hidden ÷ heads), tied embeddings.
    (tmp_path / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 2, "num_attention_heads": 4, '
                                          '"hidden_size": 64, "intermediate_size": 128, "vocab_size": 100, '
                                          '"tie_word_embeddings": true}')
    shape = read_shape(ModelParams(path=str(tmp_path)))
    assert (shape.kv_heads, shape.head_dim, shape.tied_embeddings) == (4, 16, True)
    # 2 · (2·64·64 + 2·64·64 + 3·64·128) = 2 · 40,960 = 81,920 linear; 100·64 + 5·64 = 6,720 other
    assert (shape.linear_params, shape.params) == (81_920, 88_640)
    with pytest.raises(BadInputError, match="fix: set generation.batch_size to a number"):
        read_shape(ModelParams(path="nobody/unknown-model-xyz"))


def test_vllm_memory_from_the_same_plan() -> None:
    plan = plan_batch(MISTRAL, weights="nf4", prompt_tokens=512, max_new_tokens=64, gpu_memory_gib=15.0)
    settings = vllm_memory(plan)
    # (4,119,171,235.84 + 67 · 138,604,032 + 1 GiB) ÷ 16,106,127,360 = 14,479,383,203.84 ÷ 16,106,127,360 = 0.899
    assert settings.gpu_memory_utilization == 0.899
    assert (settings.max_num_seqs, settings.max_model_len) == (67, 576)
    tiny = auto_batch(ModelParams(path="tiny-llama", build="tiny-llama"), gpu_memory_gib=40.0, prompt_tokens=100,
                      max_new_tokens=16)
    assert vllm_memory(tiny).gpu_memory_utilization == 0.5  # clamped: a tiny model needs ~1 GiB of 40


# ── out of memory → halve the batch (injected on CPU) ─────────────────────────────────────────────

TINY = ModelParams(path="tiny-llama", build="tiny-llama", max_length=512)


@pytest.fixture(scope="module")
def tiny_lm():
    return load_causal_lm(TINY).eval(), load_tokenizer(TINY)


def _prompts() -> list[str]:
    task = get_task("clinical-summary")
    return [render_prompt("plain", task.instruction, task.render_input(row)) for row in make_dialogue_summaries(11, seed=5)]


def _out_of_memory_above(fits, error=torch.OutOfMemoryError):
    """greedy_decode, raising a CUDA out-of-memory error for a batch that `fits(rows)` rejects; records each call's size."""
    calls: list[int] = []

    def decode(model, rows, *args):
        calls.append(len(rows))
        if not fits(rows):
            raise error("CUDA out of memory. Tried to allocate 2.00 GiB")
        return greedy_decode(model, rows, *args)

    return decode, calls


@pytest.mark.parametrize("error", [torch.OutOfMemoryError, torch.cuda.OutOfMemoryError])
def test_out_of_memory_halves_the_batch_nothing_lost_or_twice(tiny_lm, error) -> None:
    model, tokenizer = tiny_lm
    prompts = _prompts()
    decode, calls = _out_of_memory_above(lambda rows: len(rows) <= 2, error)
    seen: list[int] = []
    replies = {}
    for batch, batch_replies in generate_batches(model, tokenizer, prompts, 12, 512, batch_size=8, decode=decode):
        seen.extend(batch)
        replies.update(zip(batch, batch_replies))
    assert calls == [8, 4, 2, 2, 2, 2, 2, 1]  # 8 and 4 fail; 11 prompts then go 2 at a time
    assert sorted(seen) == list(range(len(prompts)))  # every prompt answered exactly once
    reference = generate_all(model, tokenizer, prompts, 12, 512, batch_size=2)  # no injected error, the same batches
    assert [(replies[i].text, replies[i].tokens_out) for i in range(len(prompts))] == \
        [(r.text, r.tokens_out) for r in reference]


def test_out_of_memory_on_the_longer_batches_only(tiny_lm) -> None:
    """Length-sorted batches grow longer: the halving happens mid-run and the later batches keep it."""
    model, tokenizer = tiny_lm
    prompts = _prompts()
    lengths = sorted(len(ids) for ids in tokenizer(prompts)["input_ids"])
    budget = 4 * lengths[3]  # tokens of a 4-prompt batch of the shortest: the first batch fits, the longer ones not
    decode, calls = _out_of_memory_above(lambda rows: len(rows) * max(map(len, rows)) <= budget)
    batches = list(generate_batches(model, tokenizer, prompts, 12, 512, batch_size=4, decode=decode))
    assert calls[0] == 4 and len(batches[0][0]) == 4 and min(calls) < 4
    assert sorted(i for batch, _ in batches for i in batch) == list(range(len(prompts)))
    for batch, replies in batches:  # each batch's replies are what that batch gives without an injected error
        direct = generate_all(model, tokenizer, [prompts[i] for i in batch], 12, 512, batch_size=len(batch))
        assert [r.text for r in replies] == [r.text for r in direct]


def test_out_of_memory_at_batch_1_is_one_line_and_other_errors_pass(tiny_lm) -> None:
    model, tokenizer = tiny_lm
    decode, calls = _out_of_memory_above(lambda rows: False)
    with pytest.raises(BadInputError) as caught:
        list(generate_batches(model, tokenizer, _prompts()[:3], 12, 512, batch_size=2, decode=decode))
    assert calls == [2, 1]
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("CUDA out of memory generating one sequence (")
    assert "fix: set models[].quantization: 4bit" in str(caught.value)

    def broken(model, rows, *args):
        calls.append(len(rows))
        raise RuntimeError("not a memory problem")

    calls.clear()
    with pytest.raises(RuntimeError, match="not a memory problem"):
        list(generate_batches(model, tokenizer, _prompts()[:3], 12, 512, batch_size=2, decode=broken))
    assert calls == [2]  # not retried


# ── `auto` in the study, the plan and the generate stage ─────────────────────────────────────────

def test_auto_is_the_default_and_a_number_still_works(tmp_path) -> None:
    assert GenerationConfig().batch_size == "auto"
    assert GenerationConfig(batch_size=3).batch_size == 3
    assert (GenerationConfig().fixed_batch_size, GenerationConfig(batch_size=3).fixed_batch_size) == (16, 3)
    auto = build_plan(load_study(small_study(tmp_path / "a", settings="  - id: zero-shot\n",
                                             generation="generation: {shard_size: 4}\n")))
    fixed = build_plan(load_study(small_study(tmp_path / "b", settings="  - id: zero-shot\n",
                                              generation="generation: {batch_size: 3, shard_size: 4}\n")))
    gen = [r.params for r in auto.runs if r.stage == "generate"] + [r.params for r in fixed.runs if r.stage == "generate"]
    assert all(isinstance(p, OpenGenerateParams) for p in gen)
    assert [p.batch_size for p in gen] == ["auto", 3]  # type: ignore[union-attr]


def test_plan_prints_the_batch_per_cell(tmp_path) -> None:
    mistral = ("  - {id: m4, path: mistralai/Mistral-7B-v0.1, quantization: 4bit, max_length: 576}\n"
               "  - {id: m16, path: mistralai/Mistral-7B-v0.1, max_length: 576}\n")
    study = small_study(tmp_path, settings="  - id: zero-shot\n", models=mistral,
                        generation="generation: {max_new_tokens: 64}\n")
    for pool, lines in (("a100", ["batch=auto→≥241 (a100 40 GiB, ≤512+64 tokens)",
                                  "batch=auto→≥166 (a100 40 GiB, ≤512+64 tokens)"]),
                        ("t4", ["batch=auto→≥67 (t4 15 GiB, ≤512+64 tokens)", "batch=auto→does not fit",
                                "batch: t4: mistralai/Mistral-7B-v0.1: bf16 weights 13.5 GiB"])):
        study.write_text(study.read_text().split("pool:")[0].rstrip("\n") + f"\npool: {pool}\n")
        result = run_cli("plan", str(study), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        for line in lines:
            assert line in result.stdout, (line, result.stdout)


def test_generate_resolves_auto_and_records_it(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = "  - id: zero-shot\n"
    # On CPU: 16, capped at the run's 6 items.
    plan = build_plan(load_study(small_study(tmp_path / "cpu", settings=settings, test_items=6,
                                             generation="generation: {shard_size: 4}\n")))
    store = run_in_process(plan, ("prep", "generate"))
    spec = next(r for r in plan.runs if r.stage == "generate")
    metrics = store.require(spec.prefix).meta["metrics"]
    assert (metrics["batch_size"], metrics["batch_limited_by"]) == (6, "items")

    # With a (pretended) GPU: the plan at the longest prompt the run sends, measured in the model's tokens.
    plan = build_plan(load_study(small_study(tmp_path / "gpu", settings=settings, test_items=6,
                                             generation="generation: {shard_size: 4}\n")))
    spec = next(r for r in plan.runs if r.stage == "generate")
    params = spec.params
    assert isinstance(params, OpenGenerateParams)
    shape = read_shape(params.model)
    prep_store = run_in_process(plan, ("prep",))
    prep_prefix = next(r for r in plan.runs if r.stage == "prep").prefix
    rows = prep_store.backend.get_bytes(f"{prep_prefix}/test.jsonl").decode().splitlines()
    task = get_task("fact-check")
    tokenizer = load_tokenizer(params.model)
    longest = max(len(tokenizer(render_prompt("plain", task.instruction, json.loads(r)["input"]))["input_ids"])
                  for r in rows)
    per_seq = ((longest + params.max_new_tokens) * shape.kv_bytes_per_token(2) + longest * shape.activation_bytes_per_token(2)
               + shape.vocab * 6)
    gib = (memory.CUDA_CONTEXT_BYTES + shape.weight_bytes("fp16") + 3.5 * per_seq) / (0.9 * GIB)  # room for 3.5 → 3
    monkeypatch.setattr(generate_stage, "device_gpu_memory_gib", lambda: gib)
    store = run_in_process(plan, ("generate",))
    metrics = store.require(spec.prefix).meta["metrics"]
    assert (metrics["batch_size"], metrics["batch_limited_by"], metrics["batch_prompt_tokens"]) == (3, "memory", longest)
    assert metrics["items"] == 6
