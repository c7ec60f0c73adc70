"""Estimated compute cost of a stage run: wall-hours × the node pool's hourly price.

The defaults are the prices of one node of each pool (labscale.nodes) and only an estimate: a
study overrides them with `usd_per_hour`. Storage and egress are not counted.
"""

from __future__ import annotations

from labscale.nodes import node


def pool_usd_per_hour(pool: str, override: float | None = None) -> float:
    """The hourly price used for a pool: the study's override, else its node's (labscale.nodes)."""
    return override if override is not None else node(pool).usd_per_hour


def compute_cost_usd(seconds: float, usd_per_hour: float) -> float:
    """Dollars for `seconds` of wall time at `usd_per_hour`."""
    return seconds / 3600.0 * usd_per_hour
