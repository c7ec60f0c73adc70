"""RunSpec: one stage run, content-addressed by its key, with its typed params (labscale.params)."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, get_args

from pydantic import BaseModel, TypeAdapter, ValidationInfo, field_validator

from labscale.config.study import Carbon
from labscale.params import STAGE_PARAMS, LoraTrainParams, ModelGenerateParams, Runtime, StageParams

Stage = Literal["prep", "train", "generate", "score", "benchmark", "aggregate"]
STAGES: tuple[str, ...] = get_args(Stage)
CELL_LABELS = ("task", "model", "setting")
"""The labels naming the cell (a row of the results table) a run belongs to."""

CODE_VERSIONS: dict[str, str] = {"prep": "2", "train": "2", "generate": "2", "score": "2", "benchmark": "2",
                                 "aggregate": "4"}
"""Each stage's code version, part of its runs' keys: bump a stage's when its behaviour changes (not on every
commit). Read here, so the planner never imports a stage module. (All moved once together when the params
became typed objects: their canonical dumps, hence every key, changed.)"""


def code_version(stage: str) -> str:
    """The stage's code version (`CODE_VERSIONS`)."""
    return CODE_VERSIONS[stage]


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces: the same object always dumps to the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def run_key(stage: str, params: BaseModel | dict[str, Any], inputs: dict[str, str], code_version: str) -> str:
    """Hash of (stage, parameters, input keys, the stage's code version): same key ⇒ same artifact."""
    dumped = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    payload = canonical_json({"stage": stage, "params": dumped, "inputs": inputs, "code_version": code_version})
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def spec_key(prefix: str) -> str:
    """Where the spec of the run committed at `prefix` (`<stage>/<key>`) is written in the store."""
    return f"specs/{prefix}.json"


class RunSpec(BaseModel):
    """Everything a stage needs to run, written to the store and handed over as `--spec URI`."""

    stage: Stage
    key: str
    study: str
    labels: dict[str, str] = {}
    """task / model / setting of the cell this run belongs to (for logs, metrics, tables)."""
    params: StageParams
    """What the run computes: the stage's params type (labscale.params.STAGE_PARAMS); part of the key."""
    inputs: dict[str, str] = {}
    """Role → store prefix of a committed input artifact (e.g. {"prep": "prep/ab12…"})."""
    store: str
    runtime: Runtime = Runtime()
    """How to run, not what to compute (e.g. API concurrency): not part of the key."""
    pool: str = "cpu"
    usd_per_hour: float = 0.0
    """Price of the pool's node, for the run's cost estimate (not part of the key)."""
    pushgateway: str | None = None
    """Where the run pushes its metrics (`LABSCALE_PUSHGATEWAY` overrides); None: a textfile in the store."""
    carbon: Carbon = Carbon()
    """PUE, grid intensity and CPU TDP for the run's energy and CO2e estimate (not part of the key)."""

    @field_validator("params", mode="before")
    @classmethod
    def _params_of_its_stage(cls, value: Any, info: ValidationInfo) -> Any:
        """Parse the params as the stage's own type (a train spec's params are never read as generate's)."""
        stage = info.data.get("stage")
        if stage is None or isinstance(value, BaseModel):
            return value
        return TypeAdapter(STAGE_PARAMS[stage]).validate_python(value)

    @property
    def on_api(self) -> bool:
        """The run's model is an API's: it waits on the API (priced per token, run on CPU)."""
        return isinstance(self.params, ModelGenerateParams | LoraTrainParams) and self.params.model.is_api

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
        cell = " × ".join(self.labels[k] for k in CELL_LABELS if k in self.labels)
        split = f" ({self.labels['split']} split)" if "split" in self.labels else ""
        return f"{self.stage:<9} {cell or self.study}{split}"


RUN_LABELS = ("study", "task", "model", "setting", "stage", "pool", "run_key")
"""What a run is labelled with wherever it shows up: its metric series, its Kubernetes Job and pod."""


def run_labels(spec: RunSpec) -> dict[str, str]:
    """A run's labels (`RUN_LABELS`): study, its cell (task, model, setting; "" where the run has none, e.g.
    a prep run's setting), stage, pool and run key."""
    labels = {"study": spec.study, "stage": spec.stage, "pool": spec.pool, "run_key": spec.key}
    return {name: labels.get(name, spec.labels.get(name, "")) for name in RUN_LABELS}
