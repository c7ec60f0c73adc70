"""Experiment trackers: a study's optional `tracking:` block puts its results on researchers' dashboards.

Weights & Biases or MLflow receive each open-model training run's logs (the train stage passes
transformers' `report_to`) and one run per cell with its final metrics, parameters and artifact URIs
(the aggregate stage). Prometheus stays the operational metrics path (labscale.telemetry).

Credentials come from the environment only (WANDB_API_KEY; MLFLOW_TRACKING_USERNAME/PASSWORD or
MLFLOW_TRACKING_TOKEN), never from the study file. wandb and mlflow are the `tracking` extra,
imported only when a study has a `tracking:` block.
"""

from __future__ import annotations

import importlib
import json
import math
import numbers
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from labscale.config.study import Tracking
from labscale.environment import temporary_env
from labscale.errors import BadInputError, LabscaleError
from labscale.telemetry.metrics import CELL_LABELS

INSTALL_FIX = "pip install 'labscale[tracking]'"
WANDB_LOCAL_MODES = ("offline", "disabled", "dryrun")
"""WANDB_MODE values that never talk to a W&B server (so need no API key)."""


class TrackerError(LabscaleError):
    """The tracker refused or failed (credentials, server, network): a retry may help."""


@dataclass(frozen=True)
class TrackedRun:
    """One tracker run to log at once: a cell's parameters and final metrics."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float]


def tracker_module(name: str) -> ModuleType:
    """The backend's package, or a one-line error naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise BadInputError(f"tracking: the {name} package is not installed — fix: {INSTALL_FIX}") from None


class Tracker(ABC):
    """A backend: the environment its transformers callback reads while training, and runs logged
    one at a time (start → log_params → log_metrics → finish)."""

    errors: tuple[type[Exception], ...]
    """The backend's own exceptions (turned into a one-line TrackerError)."""
    fix: str
    """What to check when it fails."""

    def __init__(self, config: Tracking):
        self.config = config

    def check(self) -> None:
        """Fail before any work when the backend cannot log (default: nothing to check)."""

    @abstractmethod
    def trainer_env(self, study: str) -> dict[str, str]:
        """Environment variables that point the trainer's callback at this project."""

    @abstractmethod
    def end_trainer_run(self, failed: bool) -> None:
        """End the run the trainer's callback started, if it is still open."""

    @abstractmethod
    def start(self, name: str, study: str, kind: str) -> str:
        """Open a run named `name` in the study's group; returns its id."""

    @abstractmethod
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float]) -> None: ...

    @abstractmethod
    def finish(self, failed: bool) -> None: ...


class WandbTracker(Tracker):
    """Weights & Biases: runs grouped by study, `job_type` train or cell."""

    fix = "check WANDB_API_KEY and the W&B server (WANDB_BASE_URL), or set WANDB_MODE=offline"

    def __init__(self, config: Tracking):
        super().__init__(config)
        self.wandb = tracker_module("wandb")
        self.errors = (self.wandb.errors.Error,)

    def check(self) -> None:
        if os.environ.get("WANDB_MODE", "online") not in WANDB_LOCAL_MODES and not os.environ.get("WANDB_API_KEY"):
            raise BadInputError("tracking: W&B needs WANDB_API_KEY in the environment (never in the study file) — "
                                "fix: export it (on Kubernetes: in the labscale-credentials Secret), "
                                "or set WANDB_MODE=offline to write runs locally")

    def trainer_env(self, study: str) -> dict[str, str]:
        env = {"WANDB_PROJECT": self.config.project, "WANDB_RUN_GROUP": study, "WANDB_JOB_TYPE": "train"}
        return env | ({"WANDB_ENTITY": self.config.entity} if self.config.entity else {})

    def end_trainer_run(self, failed: bool) -> None:
        if self.wandb.run is not None:
            self.wandb.run.finish(exit_code=int(failed))

    def start(self, name: str, study: str, kind: str) -> str:
        settings = self.wandb.Settings(console="off", x_disable_stats=True)  # a cell run is instant: no system stats
        self.run = self.wandb.init(project=self.config.project, entity=self.config.entity, name=name, group=study,
                                   job_type=kind, reinit="create_new", settings=settings)
        return self.run.id

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.run.config.update(dict(params))

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics))

    def finish(self, failed: bool) -> None:
        self.run.finish(exit_code=int(failed))


class MlflowTracker(Tracker):
    """MLflow: runs in the project's experiment, tagged with the study and their kind."""

    fix = "check tracking_uri (or MLFLOW_TRACKING_URI) and the MLFLOW_TRACKING_* credentials in the environment"

    def __init__(self, config: Tracking):
        super().__init__(config)
        self.mlflow = tracker_module("mlflow")
        self.errors = (self.mlflow.exceptions.MlflowException,)

    @staticmethod
    def tags(study: str, kind: str) -> dict[str, str]:
        return {"labscale.study": study, "labscale.kind": kind}

    def trainer_env(self, study: str) -> dict[str, str]:
        env = {"MLFLOW_EXPERIMENT_NAME": self.config.project, "MLFLOW_TAGS": json.dumps(self.tags(study, "train"))}
        return env | ({"MLFLOW_TRACKING_URI": self.config.tracking_uri} if self.config.tracking_uri else {})

    def end_trainer_run(self, failed: bool) -> None:
        if self.mlflow.active_run() is not None:
            self.mlflow.end_run("FAILED" if failed else "FINISHED")

    def start(self, name: str, study: str, kind: str) -> str:
        self.client = self.mlflow.MlflowClient(self.config.tracking_uri)
        experiment = self.client.get_experiment_by_name(self.config.project)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(self.config.project)
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=self.tags(study, kind)).info.run_id
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

        # MLflow caps a value's length (a long prompt list); the full params stay in the runs' specs
        items = [Param(key, str(value)[:MAX_PARAM_VAL_LENGTH]) for key, value in params.items()]
        for i in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i:i + MAX_PARAMS_TAGS_PER_BATCH])

    def log_metrics(self, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, value, now, 0) for key, value in metrics.items()])

    def finish(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


TRACKERS: dict[str, type[Tracker]] = {"wandb": WandbTracker, "mlflow": MlflowTracker}


def open_tracker(config: Tracking) -> Tracker:
    """The backend of a `tracking:` block (as planned into a spec), checked ready to log."""
    tracker = TRACKERS[config.backend](config)
    tracker.check()
    return tracker


@contextmanager
def tracker_errors(tracker: Tracker) -> Iterator[None]:
    """The backend's own exceptions in the block, as one line naming the project and the fix."""
    try:
        yield
    except tracker.errors as exc:
        problem = (str(exc).strip().splitlines() or [""])[0]
        raise TrackerError(f"tracking ({tracker.config.backend}, project {tracker.config.project!r}): "
                           f"{type(exc).__name__}: {problem} — fix: {tracker.fix}") from exc


@contextmanager
def _ended(finish: Callable[[bool], None]) -> Iterator[None]:
    """Run the block, then `finish(failed)`: failed when it raised."""
    try:
        yield
    except BaseException:
        finish(True)
        raise
    finish(False)


@contextmanager
def trainer_reporting(config: Tracking | None, study: str, run_name: str) -> Iterator[dict[str, Any]]:
    """The trainer arguments (`report_to`, `run_name`) that send its logs to the tracker, with the
    environment its callback reads set for the block; the tracker run ends with the block."""
    if config is None:
        yield {"report_to": "none"}
        return
    tracker = open_tracker(config)
    with temporary_env(tracker.trainer_env(study)), tracker_errors(tracker), _ended(tracker.end_trainer_run):
        yield {"report_to": [tracker.config.backend], "run_name": run_name}


def log_runs(config: Tracking, study: str, runs: list[TrackedRun]) -> dict[str, str]:
    """Log each cell run (parameters, then metrics) as a finished tracker run; returns name → run id."""
    tracker = open_tracker(config)
    ids = {}
    with tracker_errors(tracker):
        for run in runs:
            ids[run.name] = tracker.start(run.name, study, "cell")
            with _ended(tracker.finish):
                tracker.log_params(run.params)
                tracker.log_metrics(run.metrics)
    return ids


def cell_name(labels: Mapping[str, Any]) -> str:
    """`task/model/setting`: a cell's run name on the dashboard."""
    return "/".join(str(labels[key]) for key in CELL_LABELS)


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameters as dotted keys (`model.path`), as dashboards list them; None values left out."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{prefix}{key}."))
        elif value is not None:
            flat[f"{prefix}{key}"] = value
    return flat


def metric_values(row: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a results row (labels, text and NaN left out) as tracker metrics."""
    return {key: float(value) for key, value in row.items()
            if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)}
