"""Batched greedy generation: length-sorted, left-padded batches (what generate and bench use).

A batch is decoded by :func:`greedy_decode`, which gives the tokens ``model.generate(do_sample=False,
num_beams=1, ...)`` gives (``tests/test_generation.py`` checks this, token for token, against
`generate` one prompt at a time) but does less work per batch:

* **Shared prompt prefix, computed once.** Prompts of one task start with the same instruction
  (and few-shot examples); the tokens every prompt of the batch starts with are run through the
  model once, at batch size 1, and their KV cache is copied to every row. Only the rest of each
  prompt is prefilled at the batch size. Left padding goes between the prefix and the rest (the
  positions skip it, as `generate` does with a padded prompt).
* **A lean greedy loop** over the model's forward with a preallocated (static) KV cache and a 4D
  attention mask kept up to date in place, instead of `generate`'s per-step bookkeeping (logits
  processors, stopping criteria, a re-concatenated cache and a mask rebuilt every step).

A CUDA out-of-memory error halves the batch and retries its prompts (:func:`generate_batches`;
the batch itself comes from the study or labscale.models.memory's plan for `batch_size: auto`).

Rows that end (end-of-sequence) get padding until the whole batch has ended, as in `generate`.
As with any batching (`generate`'s own included), a batch's arithmetic differs from one prompt's
in the last bits; greedy choices agree unless two logits tie to within that.
Where the loop does not reproduce what `generate` would do (another architecture, another
attention implementation, a generation config with penalties or forced tokens, a sliding window
shorter than the batch) the batch goes through ``model.generate`` instead.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from labscale.errors import BadInputError
from labscale.models.calls import Reply

log = logging.getLogger("labscale.models")

LEAN_MODEL_TYPES = frozenset({"llama", "mistral", "phi3"})
"""Architectures :func:`greedy_decode` runs itself (tested against `generate` in tests/test_generation.py)."""

_GREEDY_NEUTRAL: dict[str, tuple[Any, ...]] = {
    # Generation-config fields that would add a logits processor to greedy `generate`, and their no-op values.
    "repetition_penalty": (None, 1.0), "encoder_repetition_penalty": (None, 1.0),
    "no_repeat_ngram_size": (None, 0), "encoder_no_repeat_ngram_size": (None, 0),
    "bad_words_ids": (None,), "sequence_bias": (None,), "suppress_tokens": (None,),
    "begin_suppress_tokens": (None,), "forced_bos_token_id": (None,), "forced_eos_token_id": (None,),
    "min_length": (None, 0), "exponential_decay_length_penalty": (None,), "guidance_scale": (None, 1.0),
    "watermarking_config": (None,), "forced_decoder_ids": (None,), "penalty_alpha": (None,), "dola_layers": (None,),
}


def encode_prompts(tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, max_length: int) -> list[list[int]]:
    """Token ids of each prompt, left-truncated so the prompt plus `max_new_tokens` fits `max_length`."""
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    return tokenizer(list(prompts), truncation=True, max_length=max(8, max_length - max_new_tokens))["input_ids"]


def _lean_supported(model: Any, total_length: int) -> bool:
    """Whether :func:`greedy_decode` may decode this batch itself (else it calls `model.generate`)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model wraps it
    config = base.config
    window = getattr(config, "sliding_window", None)
    gen = getattr(model, "generation_config", None)
    return (getattr(config, "model_type", None) in LEAN_MODEL_TYPES
            and getattr(config, "_attn_implementation", None) in ("sdpa", "eager")
            and (window is None or window >= total_length)
            and {"position_ids", "past_key_values", "logits_to_keep"} <= set(inspect.signature(base.forward).parameters)
            and all(getattr(gen, name, None) in neutral for name, neutral in _GREEDY_NEUTRAL.items()))


def greedy_decode(model: Any, rows: Sequence[Sequence[int]], max_new_tokens: int, pad_token_id: int,
                  eos_token_id: int | None, min_new_tokens: int = 0) -> list[list[int]]:
    """Greedy continuation of each row of token ids, as one batch: each row's new tokens, up to and
    including its first end-of-sequence. Same tokens as ``model.generate(do_sample=False, num_beams=1)``."""
    import torch

    rows = [list(r) for r in rows]
    with torch.inference_mode():
        if max_new_tokens > 0 and _lean_supported(model, max(map(len, rows)) + max_new_tokens):
            new = _decode_lean(model, rows, max_new_tokens, pad_token_id, eos_token_id, min_new_tokens)
        else:
            new = _decode_generate(model, rows, max_new_tokens, pad_token_id, eos_token_id, min_new_tokens)
    return [row[:row.index(eos_token_id) + 1] if eos_token_id in row else row for row in new]


def _decode_generate(model: Any, rows: list[list[int]], max_new_tokens: int, pad_token_id: int,
                     eos_token_id: int | None, min_new_tokens: int) -> list[list[int]]:
    """One left-padded batch through ``model.generate`` (greedy): each row's new tokens, padded."""
    import torch

    width = max(map(len, rows))
    input_ids = torch.tensor([[pad_token_id] * (width - len(r)) + r for r in rows], device=model.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                         min_new_tokens=min_new_tokens, do_sample=False, num_beams=1,
                         pad_token_id=pad_token_id, eos_token_id=eos_token_id)
    return out[:, width:].tolist()


def _decode_lean(model: Any, rows: list[list[int]], max_new_tokens: int, pad_token_id: int,
                 eos_token_id: int | None, min_new_tokens: int) -> list[list[int]]:
    """:func:`greedy_decode`'s own loop: each row's new tokens, padded after its end-of-sequence."""
    import torch
    from transformers import StaticCache

    batch, device = len(rows), model.device
    # The prefix every row starts with (at least one token of each row is left for the batched prefill).
    shared = 0
    if batch > 1:
        shortest = min(map(len, rows))
        while shared < shortest - 1 and all(r[shared] == rows[0][shared] for r in rows):
            shared += 1
    rest = max(map(len, rows)) - shared
    total = shared + rest + max_new_tokens
    # Cache slots: [shared prefix | left padding, rest of each prompt | new tokens].
    prompt_ids = torch.tensor([[pad_token_id] * (shared + rest - len(r)) + r[shared:] for r in rows], device=device)
    keep = torch.zeros(batch, total, dtype=torch.long, device=device)  # the slots each row attends to
    keep[:, :shared] = 1
    for i, r in enumerate(rows):
        keep[i, shared + rest - (len(r) - shared):shared + rest] = 1
    positions = (keep[:, :shared + rest].cumsum(-1) - 1).masked_fill(keep[:, :shared + rest] == 0, 0)  # as generate
    # A one-token step's 4D attention mask (additive, as sdpa and eager attention take it), kept up to
    # date in place instead of being rebuilt from a 2D mask every step.
    dtype = model.get_input_embeddings().weight.dtype
    step_mask = torch.full((batch, 1, 1, total), torch.finfo(dtype).min, dtype=dtype, device=device)
    step_mask.masked_fill_(keep[:, None, None, :] == 1, 0)

    cache = StaticCache(config=model.config, max_cache_len=total)
    if shared:
        model(input_ids=prompt_ids.new_tensor([rows[0][:shared]]), past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        cache.reorder_cache(torch.zeros(batch, dtype=torch.long, device=device))  # the prefix, in every row
    out = model(input_ids=prompt_ids, attention_mask=keep[:, :shared + rest], position_ids=positions[:, shared:],
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    position = positions[:, -1:]
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    new_tokens = []
    for step in range(max_new_tokens):
        logits = out.logits[:, -1].to(copy=True, dtype=torch.float32)
        if step < min_new_tokens and eos_token_id is not None:
            logits[:, eos_token_id] = -float("inf")
        token = torch.where(unfinished, logits.argmax(-1), pad_token_id)  # ended rows get padding
        new_tokens.append(token)
        if eos_token_id is not None:
            unfinished &= token != eos_token_id
        if step == max_new_tokens - 1 or not bool(unfinished.any()):
            break
        position = position + 1
        step_mask[:, :, :, shared + rest + step] = 0
        out = model(input_ids=token[:, None], attention_mask=step_mask, position_ids=position,
                    past_key_values=cache, use_cache=True)
    return torch.stack(new_tokens, 1).tolist()


def _generate_rows(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int,
                   min_new_tokens: int, decode: Callable[..., list[list[int]]] | None = None) -> list[Reply]:
    started = time.perf_counter()
    new = (decode or greedy_decode)(model, rows, max_new_tokens, tokenizer.pad_token_id, tokenizer.eos_token_id,
                                    min_new_tokens)
    return replies_of(tokenizer, rows, new, time.perf_counter() - started)


def replies_of(tokenizer: Any, rows: Sequence[Sequence[int]], new: Sequence[Sequence[int]], seconds: float
               ) -> list[Reply]:
    """The replies to one batch from its prompts' and its new tokens' ids (any engine's), each item's
    latency its share of the batch's `seconds`."""
    return [Reply(tokenizer.decode(out, skip_special_tokens=True).strip(), len(ids), len(out), seconds / len(rows))
            for ids, out in zip(rows, new)]


def generate_batch(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int,
                   max_length: int, min_new_tokens: int = 0) -> list[Reply]:
    """Greedy-decode one batch; prompts are left-truncated to fit `max_length`."""
    return _generate_rows(model, tokenizer, encode_prompts(tokenizer, prompts, max_new_tokens, max_length),
                          max_new_tokens, min_new_tokens)


def generate_batches(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, max_length: int,
                     batch_size: int, min_new_tokens: int = 0, decode: Callable[..., list[list[int]]] | None = None
                     ) -> Iterator[tuple[list[int], list[Reply]]]:
    """Generate for every prompt in length-sorted batches: yields each batch as it is done, as
    (the indices of its prompts, their replies).

    `decode` replaces :func:`greedy_decode` (same signature), e.g. labscale.models.decoding's
    contrastive search.

    On a CUDA out-of-memory error the batch's prompts are retried at half the batch size (which the
    later, longer batches keep): a batch is yielded only once it is done, so no prompt is answered
    twice or lost. Out of memory at batch size 1 raises BadInputError."""
    rows = encode_prompts(tokenizer, prompts, max_new_tokens, max_length)
    order = sorted(range(len(prompts)), key=lambda i: (len(rows[i]), i))
    start, size = 0, max(1, batch_size)
    while start < len(order):
        batch = order[start:start + size]
        try:
            replies = _generate_rows(model, tokenizer, [rows[i] for i in batch], max_new_tokens, min_new_tokens, decode)
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
            _free_cuda_cache()
            longest = max(len(rows[i]) for i in batch)
            if len(batch) == 1:
                raise BadInputError(f"CUDA out of memory generating one sequence ({longest} prompt tokens + "
                                    f"{max_new_tokens} new) — fix: set models[].quantization: 4bit, lower "
                                    "models[].max_length, or use a GPU pool with more memory") from None
            size = max(1, len(batch) // 2)
            log.warning("CUDA out of memory at batch %d (prompts up to %d tokens): retrying at batch %d",
                        len(batch), longest, size)
            continue
        yield batch, replies
        start += len(batch)


def _out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error (`torch.OutOfMemoryError`, which `torch.cuda.OutOfMemoryError` names too)."""
    import torch

    return isinstance(exc, (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError),
                            torch.cuda.OutOfMemoryError))


def _free_cuda_cache() -> None:
    """Give the failed batch's cached blocks back, so the smaller batch starts from a clean pool."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def generate_all(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int, max_length: int,
                 batch_size: int, on_batch: Callable[[int], None] | None = None,
                 min_new_tokens: int = 0, decode: Callable[..., list[list[int]]] | None = None) -> list[Reply]:
    """:func:`generate_batches` for every prompt, the replies in the prompts' order; `on_batch(n)`
    after each batch of n prompts."""
    results: list[Reply | None] = [None] * len(prompts)
    for batch, replies in generate_batches(model, tokenizer, prompts, max_new_tokens, max_length, batch_size,
                                           min_new_tokens, decode):
        for index, reply in zip(batch, replies):
            results[index] = reply
        if on_batch:
            on_batch(len(batch))
    return [r for r in results if r is not None]
