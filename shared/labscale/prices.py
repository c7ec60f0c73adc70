"""Versioned API price table: USD per million tokens, input and output, per model name.

The snapshot table (`PRICE_TABLE_VERSION`, 2026-11-27) holds OpenAI's published list prices
(developers.openai.com/api/docs/pricing and each model's page) as read on that date; shut-down
snapshots keep the price they were last listed at. Every name is listed explicitly: a dated
snapshot is priced as itself, never as its alias by prefix (gpt-4o-2024-05-13 costs $5 / $15, its
alias gpt-4o $2.50 / $10). A model the table lacks has no price: `labscale validate` then asks the
study for one (`models[].price`), which also overrides the table where given. Bump
`PRICE_TABLE_VERSION` with any change: it is recorded with every priced run.
"""

from __future__ import annotations

from dataclasses import dataclass

PRICE_TABLE_VERSION = "2026-11-27"


@dataclass(frozen=True)
class TokenPrice:
    input_per_mtok: float
    output_per_mtok: float

    def usd(self, tokens_in: int | float, tokens_out: int | float) -> float:
        """Dollars for one response's usage."""
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6


def _same(price: TokenPrice, *names: str) -> dict[str, TokenPrice]:
    return dict.fromkeys(names, price)


API_PRICES: dict[str, TokenPrice] = {
    **_same(TokenPrice(0.50, 1.50), "gpt-3.5-turbo", "gpt-3.5-turbo-0125"),
    "gpt-3.5-turbo-1106": TokenPrice(1.00, 2.00),
    **_same(TokenPrice(1.50, 2.00), "gpt-3.5-turbo-0613", "gpt-3.5-turbo-0301"),
    **_same(TokenPrice(3.00, 4.00), "gpt-3.5-turbo-16k", "gpt-3.5-turbo-16k-0613"),
    **_same(TokenPrice(30.00, 60.00), "gpt-4", "gpt-4-0613", "gpt-4-0314"),
    **_same(TokenPrice(60.00, 120.00), "gpt-4-32k", "gpt-4-32k-0613", "gpt-4-32k-0314"),
    **_same(TokenPrice(10.00, 30.00), "gpt-4-turbo", "gpt-4-turbo-2024-04-09", "gpt-4-turbo-preview",
            "gpt-4-0125-preview", "gpt-4-1106-preview"),
    **_same(TokenPrice(2.50, 10.00), "gpt-4o", "gpt-4o-2024-08-06", "gpt-4o-2024-11-20"),
    "gpt-4o-2024-05-13": TokenPrice(5.00, 15.00),
    **_same(TokenPrice(0.15, 0.60), "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    **_same(TokenPrice(2.00, 8.00), "gpt-4.1", "gpt-4.1-2025-04-14"),
    **_same(TokenPrice(0.40, 1.60), "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    **_same(TokenPrice(0.10, 0.40), "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"),
}
"""Inference, by the exact model name the API is called with."""

FINE_TUNED_PRICES: dict[str, TokenPrice] = {
    **_same(TokenPrice(3.00, 6.00), "gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613"),
    **_same(TokenPrice(3.75, 15.00), "gpt-4o", "gpt-4o-2024-08-06"),
    **_same(TokenPrice(0.30, 1.20), "gpt-4o-mini", "gpt-4o-mini-2024-07-18"),
    **_same(TokenPrice(3.00, 12.00), "gpt-4.1", "gpt-4.1-2025-04-14"),
    **_same(TokenPrice(0.80, 3.20), "gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"),
    **_same(TokenPrice(0.20, 0.80), "gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"),
}
"""Inference on a fine-tuned model (`ft:<base>:<org>:<suffix>:<id>`), by its exact base name."""

TRAINING_USD_PER_MTOK: dict[str, float] = {
    **dict.fromkeys(("gpt-3.5-turbo", "gpt-3.5-turbo-0125", "gpt-3.5-turbo-1106", "gpt-3.5-turbo-0613"), 8.00),
    **dict.fromkeys(("gpt-4o", "gpt-4o-2024-08-06"), 25.00),
    **dict.fromkeys(("gpt-4o-mini", "gpt-4o-mini-2024-07-18"), 3.00),
    **dict.fromkeys(("gpt-4.1", "gpt-4.1-2025-04-14"), 25.00),
    **dict.fromkeys(("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14"), 5.00),
    **dict.fromkeys(("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14"), 1.50),
}
"""Fine-tuning: USD per million trained tokens (examples × epochs), by the exact base name."""


def fine_tuned_base(model: str) -> str | None:
    """The base of a fine-tuned model id (`ft:gpt-4o-mini-2024-07-18:org::id` → the snapshot); None otherwise."""
    return model[3:].split(":")[0] if model.startswith("ft:") else None


def api_price(model: str, given: TokenPrice | None = None, fine_tuned: TokenPrice | None = None) -> TokenPrice | None:
    """The per-token price of calling `model`: the study's where given (`given` for the model itself,
    `fine_tuned` for a model fine-tuned from it), else the table's by exact name; a fine-tuned model
    (`ft:<base>:…`) at its base's fine-tuned rates. None when neither prices it."""
    base = fine_tuned_base(model)
    if base is not None:
        return fine_tuned_price(base, fine_tuned)
    return given or API_PRICES.get(model)


def fine_tuned_price(base: str, given: TokenPrice | None = None) -> TokenPrice | None:
    """The per-token price of a model fine-tuned from `base`: the study's where given, else the table's."""
    return given or FINE_TUNED_PRICES.get(base)


def training_price_per_mtok(model: str, given: float | None = None) -> float | None:
    """USD per million trained tokens of fine-tuning `model`: the study's where given, else the
    table's; None when neither prices it."""
    return given if given is not None else TRAINING_USD_PER_MTOK.get(model)
