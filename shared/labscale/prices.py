"""Versioned API price table: USD per million tokens, input and output, per model name.

List prices of the providers' public pages on the table's date; a model not listed costs nothing
in the results (and the generate stage warns). Bump `PRICE_TABLE_VERSION` with any change: it is
recorded with every priced run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PRICE_TABLE_VERSION = "2026-11-01"


@dataclass(frozen=True)
class TokenPrice:
    input_per_mtok: float
    output_per_mtok: float

    def usd(self, tokens_in: int, tokens_out: int) -> float:
        """Dollars for one response's usage."""
        return (tokens_in * self.input_per_mtok + tokens_out * self.output_per_mtok) / 1e6


API_PRICES: dict[str, TokenPrice] = {
    "gpt-3.5-turbo": TokenPrice(0.50, 1.50),
    "gpt-4": TokenPrice(30.00, 60.00),
    "gpt-4-turbo": TokenPrice(10.00, 30.00),
    "gpt-4o": TokenPrice(2.50, 10.00),
    "gpt-4o-mini": TokenPrice(0.15, 0.60),
    "gpt-4.1": TokenPrice(2.00, 8.00),
    "gpt-4.1-mini": TokenPrice(0.40, 1.60),
}


FINE_TUNED_PRICES: dict[str, TokenPrice] = {
    "gpt-3.5-turbo": TokenPrice(3.00, 6.00),
    "gpt-4o": TokenPrice(3.75, 15.00),
    "gpt-4o-mini": TokenPrice(0.30, 1.20),
    "gpt-4.1": TokenPrice(3.00, 12.00),
    "gpt-4.1-mini": TokenPrice(0.80, 3.20),
}
"""Inference on a fine-tuned model (`ft:<base>:…`), by base model."""

TRAINING_USD_PER_MTOK: dict[str, float] = {
    "gpt-3.5-turbo": 8.00, "gpt-4o": 25.00, "gpt-4o-mini": 3.00, "gpt-4.1": 25.00, "gpt-4.1-mini": 5.00}
"""Fine-tuning: USD per million trained tokens (examples × epochs), by base model."""


def _lookup(table: dict[str, Any], model: str) -> Any:
    """`table[model]`, also for dated snapshots (`gpt-4o-2024-08-06` → `gpt-4o`)."""
    for name in sorted(table, key=len, reverse=True):
        if model == name or model.startswith(f"{name}-20"):
            return table[name]
    return None


def api_price(model: str) -> TokenPrice | None:
    """The per-token price of `model`; fine-tuned models (`ft:gpt-4o-mini-2024-07-18:org::id`) by their base."""
    if model.startswith("ft:"):
        return _lookup(FINE_TUNED_PRICES, model[3:].split(":")[0])
    return _lookup(API_PRICES, model)


def training_price_per_mtok(model: str) -> float | None:
    """USD per million trained tokens of fine-tuning `model`, or None when not in the table."""
    return _lookup(TRAINING_USD_PER_MTOK, model)
