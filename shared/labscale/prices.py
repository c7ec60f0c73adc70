"""Versioned API price table: USD per million tokens, input and output, per model name.

List prices of the providers' public pages on the table's date; a model not listed costs nothing
in the results (and the generate stage warns). Bump `PRICE_TABLE_VERSION` with any change: it is
recorded with every priced run.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def api_price(model: str) -> TokenPrice | None:
    """The price of `model`, also for dated snapshots (`gpt-4o-2024-08-06` → `gpt-4o`)."""
    for name in sorted(API_PRICES, key=len, reverse=True):
        if model == name or model.startswith(f"{name}-20"):
            return API_PRICES[name]
    return None
