"""Contrastive search (Su et al. 2022, "A Contrastive Framework for Neural Text Generation").

At each step the `top_k` most probable next tokens are candidates; each candidate v is scored

    (1 − α) · p(v | context) − α · max_j cos(h_v, h_j)

where h_v is the last hidden state the model gives v and h_j are the hidden states of the tokens
already in the context (prompt and generated). The best-scoring candidate is emitted: α trades
model confidence against degeneration (repeating what is already there). α = 0 is greedy search.

Transformers 5 moved contrastive search out of `generate` into a Hub repository (unreachable
offline), so labscale runs it itself: one prompt at a time, its `top_k` candidates as one batch
over a copy of the prompt's KV cache. :func:`contrastive_decoder` returns a decoder with
:func:`labscale.models.generation.greedy_decode`'s signature, which `generate_all` takes as `decode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from labscale.config.study import DecodingConfig

Decoder = Callable[..., list[list[int]]]
"""(model, rows, max_new_tokens, pad_token_id, eos_token_id, min_new_tokens) → new tokens per row."""


def contrastive_decoder(penalty_alpha: float, top_k: int) -> Decoder:
    """A decoder running contrastive search with degeneration penalty α and `top_k` candidates."""
    if not 0.0 <= penalty_alpha <= 1.0 or top_k < 1:
        raise ValueError(f"contrastive search needs 0 ≤ penalty_alpha ≤ 1 and top_k ≥ 1, "
                         f"not {penalty_alpha} and {top_k}")

    def decode(model: Any, rows: Sequence[Sequence[int]], max_new_tokens: int, pad_token_id: int,
               eos_token_id: int | None, min_new_tokens: int = 0) -> list[list[int]]:
        return [contrastive_search(model, row, max_new_tokens, eos_token_id, penalty_alpha, top_k, min_new_tokens)
                for row in rows]

    return decode


def contrastive_search(model: Any, prompt: Sequence[int], max_new_tokens: int, eos_token_id: int | None,
                       penalty_alpha: float, top_k: int, min_new_tokens: int = 0) -> list[int]:
    """New tokens for one prompt (token ids), up to and including the first end-of-sequence."""
    import torch
    from transformers import DynamicCache

    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        out = model(input_ids=torch.tensor([list(prompt)], device=model.device), past_key_values=cache,
                    use_cache=True, output_hidden_states=True)
        context = _unit(out.hidden_states[-1][0].float())  # (tokens so far, hidden): normalised
        logits = out.logits[0, -1].float()
        new: list[int] = []
        for step in range(max_new_tokens):
            if step < min_new_tokens and eos_token_id is not None:
                logits[eos_token_id] = -float("inf")
            probs, candidates = logits.softmax(-1).topk(top_k)
            cache.batch_repeat_interleave(top_k)
            out = model(input_ids=candidates[:, None], past_key_values=cache, use_cache=True, output_hidden_states=True)
            hidden = _unit(out.hidden_states[-1][:, -1].float())  # (top_k, hidden)
            degeneration = (hidden @ context.T).max(-1).values
            best = int(((1 - penalty_alpha) * probs - penalty_alpha * degeneration).argmax())
            cache.batch_select_indices(torch.tensor([best], device=model.device))
            token = int(candidates[best])
            new.append(token)
            if token == eos_token_id:
                break
            context = torch.cat([context, hidden[best:best + 1]])
            logits = out.logits[best, -1].float()
    return new


def _unit(vectors: Any) -> Any:
    """Rows scaled to unit length (cosine similarity becomes a dot product)."""
    return vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def decoder_for(decoding: DecodingConfig | None) -> Decoder | None:
    """The decoder a generate run's `decoding` asks for; None → greedy (the default path)."""
    if decoding is None or decoding.strategy == "greedy":
        return None
    return contrastive_decoder(decoding.penalty_alpha, decoding.top_k)
