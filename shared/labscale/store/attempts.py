"""The attempts journal of a run: one small JSON record per attempt under `<run prefix>/attempts/`.

A run may take several attempts (a preempted pod, kill -9, a crash, a deleted manifest): each records
its own compute seconds, dollars, energy and CO2e, written when it starts, rewritten while it runs
(a heartbeat, and before each checkpoint) and when it ends. A killed attempt keeps what it last wrote
(its status stays "running"). A run's cost is the sum over its attempts (`AttemptTotals`): the
manifest records it (labscale.stage.run_stage), the budget clock and the study's spent total read it.
The records are not part of the artifact (no manifest lists them), so they survive a re-commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, ValidationError

from labscale.store.artifacts import ArtifactStore

ATTEMPTS = "attempts"
AttemptStatus = Literal["running", "committed", "failed"]
"""running: in progress, or killed without a chance to say so (its numbers are from its last write)."""


class AttemptRecord(BaseModel):
    """What one attempt of a run has spent so far (compute: wall seconds × the pool's price)."""

    number: int
    status: AttemptStatus = "running"
    started_at: str
    updated_at: str
    seconds: float = 0.0
    """Wall seconds: what the pool's node is paid for."""
    cpu_seconds: float = 0.0
    """CPU seconds (user + system) of the stage process: the work done, whatever else the node ran."""
    compute_usd: float = 0.0
    energy_kwh: float = 0.0
    kg_co2e: float = 0.0
    host: str = ""


@dataclass(frozen=True)
class AttemptTotals:
    """The sums over a run's attempts."""

    attempts: int = 0
    seconds: float = 0.0
    compute_usd: float = 0.0
    energy_kwh: float = 0.0
    kg_co2e: float = 0.0
    cpu_seconds: float = 0.0

    @classmethod
    def of(cls, parts: Iterable[AttemptRecord | AttemptTotals]) -> AttemptTotals:
        """The sums over attempt records (or over totals of earlier attempts and further records)."""
        parts = list(parts)
        return cls(sum(p.attempts if isinstance(p, AttemptTotals) else 1 for p in parts),
                   sum(p.seconds for p in parts), sum(p.compute_usd for p in parts),
                   sum(p.energy_kwh for p in parts), sum(p.kg_co2e for p in parts), sum(p.cpu_seconds for p in parts))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def attempts_prefix(prefix: str) -> str:
    return f"{prefix}/{ATTEMPTS}"


def read_attempts(store: ArtifactStore, prefix: str) -> list[AttemptRecord]:
    """The attempt records of the run at `prefix`, oldest first (unreadable ones are skipped)."""
    records = []
    for key in store.backend.list(attempts_prefix(prefix) + "/"):
        if not key.endswith(".json"):
            continue
        try:
            records.append(AttemptRecord.model_validate_json(store.backend.get_bytes(key)))
        except (FileNotFoundError, ValidationError):
            continue
    return sorted(records, key=lambda r: (r.number, r.started_at))


def new_attempt_key(prefix: str, number: int) -> str:
    """Where attempt `number` of the run at `prefix` writes its record (unique even if two start at once)."""
    return f"{attempts_prefix(prefix)}/{number:04d}-{uuid.uuid4().hex[:8]}.json"
