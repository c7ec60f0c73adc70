"""Committed runs as the aggregate and its report read them: each manifest's `meta` (what
labscale.stage.run_stage recorded, and the stage's own `metrics`) parsed once, here, into typed
objects. Fields a stage did not record are None (or 0 for costs), so older runs still read."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from labscale.store import ArtifactStore, Manifest


class Recorded(BaseModel):
    """Numbers a run recorded: the ones the report reads (the meta holds more; they are ignored here)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


M = TypeVar("M", bound=Recorded)


class ScoreMetrics(Recorded):
    """A score run's result: items scored and the suite's corpus metrics."""

    items: int
    scores: dict[str, float | int | None]


class GenerateMetrics(Recorded):
    """A generate run's time and tokens."""

    generation_seconds: float
    """Model time (batched; loading excluded)."""
    items_per_second: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    items: int | None = None
    engine: str = "-"
    """An open model's generation engine (hf, vllm); "-" for API models and students."""


class TrainMetrics(Recorded):
    """A train run's path and time; a DP or audited run's privacy numbers; a student's cleaning counts."""

    path: str
    train_seconds: float
    stopped_by_budget: bool = False
    # privacy (labscale.training.audit, DP-SGD): None where the run did not measure it
    epsilon: float | None = None
    delta: float | None = None
    noise_multiplier: float | None = None
    max_grad_norm: float | None = None
    mia_auc: float | None = None
    mia_advantage: float | None = None
    canary_exposure: float | None = None
    canary_exposure_max: float | None = None
    # a distilled student (labscale.distill): the teacher's labels and what Confident Learning did
    rows: int | None = None
    teacher_rows: int | None = None
    teacher_unparsed: int | None = None
    teacher_errors: int | None = None
    cleanlab: str | None = None
    cleanlab_flagged: int | None = None
    cleanlab_dropped: int | None = None
    cleanlab_relabelled: int | None = None
    cleanlab_flagged_teacher_errors: int | None = None


class CellScores(Recorded):
    """One cell's corpus metrics, as an aggregate run records them (and the next one compares for drift)."""

    task: str
    model: str
    setting: str
    scores: dict[str, float | int | None]


class AggregateMetrics(Recorded):
    """What drift reads of a previous aggregate run."""

    cell_scores: list[CellScores] = []


class RunMeta(Recorded):
    """A committed run's meta: its study, inputs, recorded cost and footprint, and its stage's metrics."""

    study: str | None = None
    inputs: dict[str, str] = {}
    """Role → the committed prefix the run was made from."""
    cost_usd: float = 0.0
    energy_kwh: float = 0.0
    kg_co2e: float = 0.0
    duration_s: float = 0.0
    """Cost, energy, CO2e and wall seconds are sums over every attempt of the run (labscale.store.attempts)."""
    attempts: int = 1
    """How many attempts the run took (a resumed run: more than 1; runs recorded before the journal: 1)."""
    metrics: dict[str, Any] = {}
    """The stage's own result; read through `metrics_as`."""

    @classmethod
    def of(cls, manifest: Manifest) -> "RunMeta":
        return cls.model_validate(manifest.meta)

    def metrics_as(self, kind: type[M]) -> M:
        """The stage's metrics as `kind` (ScoreMetrics, GenerateMetrics, TrainMetrics, AggregateMetrics)."""
        return kind.model_validate(self.metrics)


class Runs:
    """The committed runs of a store, each read (and required to be committed) once."""

    def __init__(self, store: ArtifactStore):
        self.store = store
        self._meta: dict[str, RunMeta] = {}

    def __getitem__(self, prefix: str) -> RunMeta:
        if prefix not in self._meta:
            self._meta[prefix] = RunMeta.of(self.store.require(prefix))
        return self._meta[prefix]

    def lineage(self, prefixes: list[str]) -> dict[str, RunMeta]:
        """The runs at `prefixes` and every run they were made from (each once)."""
        seen: dict[str, RunMeta] = {}
        pending = list(prefixes)
        while pending:
            prefix = pending.pop()
            if prefix not in seen:
                seen[prefix] = self[prefix]
                pending.extend(seen[prefix].inputs.values())
        return seen
