"""RunSpec: one stage run, content-addressed by its key."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel

STAGES = ("prep", "train", "generate", "score", "benchmark", "aggregate")


def run_key(stage: str, params: dict[str, Any], inputs: dict[str, str], code_version: str) -> str:
    """Hash of (stage, parameters, input keys, the stage's code version): same key ⇒ same artifact."""
    payload = json.dumps(
        {"stage": stage, "params": params, "inputs": inputs, "code_version": code_version},
        sort_keys=True, separators=(",", ":"), default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spec_key(prefix: str) -> str:
    """Where the spec of the run committed at `prefix` (`<stage>/<key>`) is written in the store."""
    return f"specs/{prefix}.json"


class RunSpec(BaseModel):
    """Everything a stage needs to run, written to the store and handed over as `--spec URI`."""

    stage: str
    key: str
    study: str
    labels: dict[str, str] = {}
    """task / model / setting of the cell this run belongs to (for logs, metrics, tables)."""
    params: dict[str, Any]
    inputs: dict[str, str] = {}
    """Role → store prefix of a committed input artifact (e.g. {"prep": "prep/ab12…"})."""
    store: str
    runtime: dict[str, Any] = {}
    """How to run, not what to compute (e.g. API concurrency): not part of the key."""
    pool: str = "cpu"
    usd_per_hour: float = 0.0
    """Price of the pool's node, for the run's cost estimate (not part of the key)."""
    pushgateway: str | None = None
    """Where the run pushes its metrics (`LABSCALE_PUSHGATEWAY` overrides); None: a textfile in the store."""
    carbon: dict[str, float] = {}
    """PUE, grid intensity and CPU TDP for the run's energy and CO2e estimate (not part of the key)."""

    @property
    def prefix(self) -> str:
        """Where this run's artifact is committed."""
        return f"{self.stage}/{self.key}"

    @property
    def spec_key(self) -> str:
        """Where this spec itself is written in the store."""
        return spec_key(self.prefix)

    @property
    def title(self) -> str:
        """"stage task × model × setting" (a distillation teacher's labelling run adds its split)."""
        cell = " × ".join(self.labels[k] for k in ("task", "model", "setting") if k in self.labels)
        split = f" ({self.labels['split']} split)" if "split" in self.labels else ""
        return f"{self.stage:<9} {cell or self.study}{split}"
