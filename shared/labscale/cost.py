"""Estimated compute cost of a stage run: wall-hours × the node pool's hourly price.

The defaults are on-demand list prices of one GPU node of each pool (GCP, 2026; `cpu` is a
4-vCPU node) and only an estimate: a study overrides them with `usd_per_hour`. Storage and egress
are not counted.
"""

from __future__ import annotations

POOL_USD_PER_HOUR: dict[str, float] = {"cpu": 0.19, "t4": 0.35, "a100": 3.67}


def pool_usd_per_hour(pool: str, override: float | None = None) -> float:
    """The hourly price used for a pool: the study's override, else the default table."""
    return override if override is not None else POOL_USD_PER_HOUR[pool]


def compute_cost_usd(seconds: float, usd_per_hour: float) -> float:
    """Dollars for `seconds` of wall time at `usd_per_hour`."""
    return seconds / 3600.0 * usd_per_hour
