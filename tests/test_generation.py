"""Batched generation gives, token for token, what `model.generate` gives one prompt at a time."""

from __future__ import annotations

import collections

import pytest
import torch

from labscale.models.generation import _lean_supported, generate_all, generate_batch, greedy_decode
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import ModelParams

TINY = ModelParams(path="tiny-llama", build="tiny-llama", quantization="none", max_length=512)
PAD = 2


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(TINY)


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(TINY).eval()


def generate_one(model, row: list[int], max_new_tokens: int, eos: int | None, min_new_tokens: int = 0) -> list[int]:
    """What the seeds did: `generate` on one prompt, default settings, greedy."""
    with torch.inference_mode():
        out = model.generate(input_ids=torch.tensor([row]), attention_mask=torch.ones(1, len(row), dtype=torch.long),
                             max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=PAD, eos_token_id=eos)
    new = out[0, len(row):].tolist()
    return new[:new.index(eos) + 1] if eos in new else new


def decode(model, rows, max_new_tokens, eos, min_new_tokens=0):
    return greedy_decode(model, rows, max_new_tokens, PAD, eos, min_new_tokens)


def rows_sharing_a_prefix(seed: int, vocab: int, n: int = 7) -> list[list[int]]:
    """Prompts as a batch has them: a shared instruction, then inputs of different lengths (one
    with the pad id inside it, one that is the instruction plus a single token)."""
    g = torch.Generator().manual_seed(seed)
    prefix = [0] + torch.randint(5, vocab, (12,), generator=g).tolist()
    rows = [prefix + torch.randint(5, vocab, (3 + 2 * i,), generator=g).tolist() for i in range(n - 1)]
    rows[2][len(prefix) + 1] = PAD
    return rows + [prefix + [7]]


def an_eos_the_model_emits(model, rows, max_new_tokens) -> int:
    """A token some rows emit early and others late or never, to use as end-of-sequence: rows then
    end at different steps, and ended rows are padded while the others go on."""
    outs = decode(model, rows, max_new_tokens, None)
    first = collections.defaultdict(list)
    for out in outs:
        for token in set(out):
            first[token].append(out.index(token))
    return max(first, key=lambda t: (len(set(first[t])) + (len(first[t]) < len(outs)), -min(first[t])))


def test_batched_generation_gives_the_per_item_generate_outputs(model, tokenizer) -> None:
    from labscale.demo.data import make_dialogue_summaries
    from labscale.prompts import render_prompt
    from labscale.tasks import get_task

    task = get_task("clinical-summary")
    prompts = [render_prompt("plain", task.instruction, task.render_input(row))
               for row in make_dialogue_summaries(11, seed=5)]
    seed_loop = [generate_one(model, tokenizer(p)["input_ids"], 12, tokenizer.eos_token_id) for p in prompts]
    batched = generate_all(model, tokenizer, prompts, 12, 512, batch_size=4)  # batches of 4, 4 and 3
    assert [g.text for g in batched] == [tokenizer.decode(t, skip_special_tokens=True).strip() for t in seed_loop]
    assert [g.tokens_out for g in batched] == [len(t) for t in seed_loop]
    assert [g.tokens_in for g in batched] == [len(tokenizer(p)["input_ids"]) for p in prompts]
    assert generate_batch(model, tokenizer, prompts[:1], 12, 512)[0].text == batched[0].text  # a batch of one


def tiny_random(kind: str):
    """A small random model whose outputs depend on every position (a larger init than the
    tiny Llama's, which repeats one token whatever the prompt, so a wrong position or mask shows)."""
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Phi3Config

    dims = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                bos_token_id=0, eos_token_id=1, pad_token_id=PAD, initializer_range=0.2)
    config = {"llama": lambda: LlamaConfig(**dims),
              "mistral": lambda: MistralConfig(**dims, sliding_window=None),
              "mistral-window": lambda: MistralConfig(**dims, sliding_window=200),
              "phi3": lambda: Phi3Config(**dims)}[kind]()
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_decode_is_generate_when_rows_end_at_different_steps(attn) -> None:
    lm = tiny_random("llama")
    lm.set_attn_implementation(attn)
    rows = rows_sharing_a_prefix(0, lm.config.vocab_size)
    eos = an_eos_the_model_emits(lm, rows, 16)
    assert _lean_supported(lm, 64)
    for min_new in (0, 3):
        expected = [generate_one(lm, r, 16, eos, min_new) for r in rows]
        lengths = [len(e) for e in expected]
        assert len(set(lengths)) > 2 and max(lengths) == 16  # rows end at different steps, some never
        assert decode(lm, rows, 16, eos, min_new) == expected
        assert decode(lm, rows[:1], 16, eos, min_new) == expected[:1]  # a batch of one: nothing shared
        assert decode(lm, rows[3:] + rows[:1], 16, eos, min_new) == expected[3:] + expected[:1]


@pytest.mark.parametrize("kind", ["mistral", "mistral-window", "phi3", "lora"])
def test_greedy_decode_is_generate_on_the_other_supported_models(kind) -> None:
    if kind == "lora":  # a fine-tuned model as the generate stage loads it: PEFT around the base model
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(1)
        lm = get_peft_model(tiny_random("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False)).eval()
    else:
        lm = tiny_random(kind)
    rows = rows_sharing_a_prefix(1, lm.config.vocab_size)
    eos = an_eos_the_model_emits(lm, rows, 12)
    assert _lean_supported(lm, 64)
    assert decode(lm, rows, 12, eos, 2) == [generate_one(lm, r, 12, eos, 2) for r in rows]


def test_what_the_loop_does_not_do_goes_through_generate() -> None:
    assert not _lean_supported(tiny_random("mistral-window"), 201)  # the window would cut the context
    lm = tiny_random("llama")
    lm.generation_config.repetition_penalty = 1.5
    rows = rows_sharing_a_prefix(2, lm.config.vocab_size, n=4)
    assert not _lean_supported(lm, 64)
    assert decode(lm, rows, 10, 1) == [generate_one(lm, r, 10, 1) for r in rows]
