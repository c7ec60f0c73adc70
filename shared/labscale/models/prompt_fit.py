"""Prompts that fit the model: when one is too long, cut the end of the item's *input* — never the
instruction, the demonstrations or the answer slot at the end, which a plain left- or right-
truncation of the whole prompt would lose."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labscale.errors import BadInputError

ELLIPSIS = " …"


def token_count(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=True)["input_ids"])


def fit_prompt(tokenizer: Any, render: Callable[[str], str], query: str, max_tokens: int) -> tuple[str, bool]:
    """`render(query)`, with the query's tail cut (marked "…") until the prompt has at most
    `max_tokens` tokens. Returns the prompt and whether it was cut."""
    prompt = render(query)
    overflow = token_count(tokenizer, prompt) - max_tokens
    if overflow <= 0:
        return prompt, False
    ids = tokenizer(query, add_special_tokens=False)["input_ids"]
    keep = len(ids) - overflow - 2
    while keep > 0:
        prompt = render(tokenizer.decode(ids[:keep]).rstrip() + ELLIPSIS)
        excess = token_count(tokenizer, prompt) - max_tokens
        if excess <= 0:
            return prompt, True
        keep -= max(excess, 1)  # re-tokenising the cut text can merge or split a few tokens
    raise BadInputError(f"a prompt does not fit in {max_tokens} tokens even with its input cut away — fix: raise "
                        "the model's max_length, lower shots, or shorten the instruction")


def fit_prompts(tokenizer: Any, render: Callable[[str], str], queries: list[str],
                max_tokens: int) -> tuple[list[str], int]:
    """`fit_prompt` for every query; returns the prompts and how many were cut."""
    fitted = [fit_prompt(tokenizer, render, q, max_tokens) for q in queries]
    return [p for p, _ in fitted], sum(cut for _, cut in fitted)
