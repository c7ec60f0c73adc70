"""What a model call takes and gives, whatever the model: a `Prompt` in, one `Reply` per item out.

An open model (labscale.models.generation) and an API model (labscale.models.api) both answer with
`Reply`; labscale.models.client is the one way to get a client that asks either.
"""

from __future__ import annotations

from dataclasses import dataclass

from labscale.prompts import Turn


@dataclass(frozen=True)
class Prompt:
    """What a cell's prompt is made of (an open model's family preset, or an API model's chat
    messages, renders it around each item's input)."""

    instruction: str
    demos: tuple[Turn, ...] = ()
    cot: bool = False


@dataclass(frozen=True)
class Reply:
    """One model's answer to one item, with what it cost."""

    text: str
    tokens_in: int
    tokens_out: int
    latency_s: float = 0.0
    """An API call's wall seconds (its retries included); an open model's batch seconds divided by
    the batch size (amortised per-item latency)."""
    attempts: int = 1
    """Requests it took (an API model's retries; 1 for an open model)."""
    usd: float = 0.0
    """What an API model charged for it (labscale.prices); 0 for an open model."""
