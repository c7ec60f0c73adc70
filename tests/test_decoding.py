"""Contrastive search (labscale.models.decoding) on the tiny local model, and as a study option."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from labscale.config.study import DecodingConfig
from labscale.models.decoding import contrastive_decoder, contrastive_search, decoder_for
from labscale.models.generation import generate_all, greedy_decode
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import ModelParams

TINY = ModelParams(path="tiny-llama", build="tiny-llama", quantization="none", max_length=512)


@pytest.fixture(scope="module")
def model():
    return load_causal_lm(TINY).eval()


def prompts(vocab: int, n: int = 4, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(5, vocab, (6 + 3 * i,), generator=g).tolist() for i in range(n)]


def repeated_bigram_rate(tokens: list[int]) -> float:
    """Share of the bigrams of `tokens` that already occurred earlier in it (degeneration)."""
    bigrams = list(zip(tokens, tokens[1:]))
    return sum(b in bigrams[:i] for i, b in enumerate(bigrams)) / max(1, len(bigrams))


def test_alpha_zero_is_greedy_token_for_token(model):
    rows = prompts(model.config.vocab_size)
    greedy = greedy_decode(model, rows, 24, pad_token_id=2, eos_token_id=None)
    contrastive = contrastive_decoder(0.0, 4)(model, rows, 24, 2, None)
    assert contrastive == greedy


def test_penalty_reduces_repetition_on_the_tiny_model(model):
    rows = prompts(model.config.vocab_size, n=6, seed=1)
    greedy = greedy_decode(model, rows, 40, pad_token_id=2, eos_token_id=None)
    contrastive = [contrastive_search(model, row, 40, None, penalty_alpha=0.6, top_k=4) for row in rows]
    assert contrastive != greedy
    greedy_rate = sum(map(repeated_bigram_rate, greedy)) / len(rows)
    contrastive_rate = sum(map(repeated_bigram_rate, contrastive)) / len(rows)
    assert contrastive_rate < greedy_rate, (contrastive_rate, greedy_rate)


def test_min_new_tokens_and_eos_are_respected(model):
    row = prompts(model.config.vocab_size, n=1, seed=2)[0]
    free = contrastive_search(model, row, 12, None, 0.6, 4)
    eos = free[2]  # a token it emits at step 3: ends the search there, unless min_new_tokens forbids it
    ended = contrastive_search(model, row, 12, eos, 0.6, 4)
    assert ended == free[:3]
    longer = contrastive_search(model, row, 12, eos, 0.6, 4, min_new_tokens=5)
    assert len(longer) >= 5 and eos not in longer[:5]


def test_generate_all_takes_the_decoder_and_keeps_prompt_order(model):
    tokenizer = load_tokenizer(TINY)
    texts = ["Summarise: the patient has a cough.", "Hi", "Claim: ice melts. Evidence: it is warm."]
    decode = decoder_for(DecodingConfig(strategy="contrastive", penalty_alpha=0.6, top_k=3))
    batched = generate_all(model, tokenizer, texts, 10, 512, batch_size=2, decode=decode)
    single = [generate_all(model, tokenizer, [t], 10, 512, batch_size=1, decode=decode)[0] for t in texts]
    assert [g.text for g in batched] == [g.text for g in single]
    assert decoder_for(None) is None and decoder_for(DecodingConfig(strategy="greedy")) is None


def test_decoding_config_bounds():
    assert DecodingConfig(strategy="contrastive").model_dump() == {"strategy": "contrastive", "penalty_alpha": 0.6,
                                                                   "top_k": 4}
    with pytest.raises(ValidationError):
        DecodingConfig(strategy="beam")
    with pytest.raises(ValidationError):
        DecodingConfig(penalty_alpha=1.5)
    with pytest.raises(ValueError, match="penalty_alpha"):
        contrastive_decoder(-0.1, 4)
