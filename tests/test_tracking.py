"""The `tracking:` block: real W&B (offline) and MLflow (local file store) runs, checked by reading back
what each tracker wrote on disk — never a mock. Nothing leaves the machine."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import run_in_process, small_study

from labscale.config import load_study
from labscale.config.study import Tracking
from labscale.errors import BadInputError
from labscale.plan import build_plan
from labscale.tracking import TrackedRun, TrackerError, log_runs, open_tracker

SETTINGS = """\
  - id: zero-shot
  - id: ft
    finetune: {max_steps: 3, batch_size: 4, grad_accum: 1, warmup_steps: 0, gradient_checkpointing: false,
               save_steps: 5, max_length: 256}
"""
BACKENDS = ("wandb", "mlflow")
LABELS = ("task", "model", "setting")


@dataclass
class Recorded:
    """One run as its tracker stored it: params as strings, final metrics, and metric history."""

    id: str
    params: dict[str, str]
    metrics: dict[str, float]
    history: dict[str, list[float]]


@pytest.fixture
def trackers_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """W&B offline and MLflow's file store, both writing under the returned folder; no telemetry.
    W&B reads its environment once per process: it is torn down after each test."""
    for name in ("WANDB_API_KEY", "WANDB_ENTITY", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    env = {"WANDB_MODE": "offline", "WANDB_DIR": tmp_path, "WANDB_CONFIG_DIR": tmp_path / "wandb-config",
           "WANDB_CACHE_DIR": tmp_path / "wandb-cache", "WANDB_DATA_DIR": tmp_path / "wandb-data",
           "WANDB_SILENT": "true", "WANDB_ERROR_REPORTING": "false", "MLFLOW_ALLOW_FILE_STORE": "true",
           "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    yield tmp_path
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


def tracking_block(backend: str, root: Path) -> str:
    if backend == "wandb":
        return "tracking: {backend: wandb, project: labscale-tests}\n"
    return f"tracking: {{backend: mlflow, project: labscale-tests, tracking_uri: 'file://{root / 'mlruns'}'}}\n"


def with_tracking(study: Path, block: str, name: str) -> Path:
    """A copy of `study` next to it (same data files) with a `tracking:` block added."""
    tracked = study.with_name(f"{name}.yaml")
    tracked.write_text(study.read_text() + block)
    return tracked


def wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a .wandb transaction log (W&B's leveldb-style log: 7-byte file header,
    32 KiB blocks of chunks, each with a checksum/length/type header)."""
    from wandb.proto import wandb_internal_pb2

    data, pos, chunk, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last chunk of one
            records.append(wandb_internal_pb2.Record.FromString(chunk))
            chunk = b""
    return records


def _items(items: Any) -> dict[str, Any]:
    return {".".join(item.nested_key) or item.key: json.loads(item.value_json) for item in items}


def wandb_runs(root: Path, job_type: str) -> dict[str, Recorded]:
    """The offline W&B runs of `job_type` under root/wandb, by name, read back from their .wandb logs."""
    runs = {}
    for log in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        records = wandb_records(log)
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        config, summary, history = _items(run.config.update), {}, {}
        for record in records:
            kind = record.WhichOneof("record_type")
            if kind == "config":
                config.update(_items(record.config.update))
            elif kind == "summary":
                summary.update(_items(record.summary.update))
            elif kind == "history":
                for key, value in _items(record.history.item).items():
                    history.setdefault(key, []).append(value)
        if run.job_type == job_type:
            assert run.run_group == "small" and run.project == "labscale-tests"
            runs[run.display_name] = Recorded(run.run_id, {k: str(v) for k, v in config.items() if k != "_wandb"},
                                              {k: v for k, v in summary.items() if not k.startswith("_")}, history)
    return runs


def mlflow_runs(root: Path, kind: str) -> dict[str, Recorded]:
    """The MLflow runs of `kind` in the file store under root/mlruns, by name, through MLflow's own client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{root / 'mlruns'}")
    experiment = client.get_experiment_by_name("labscale-tests")
    runs = {}
    for run in client.search_runs([experiment.experiment_id], f"tags.`labscale.kind` = '{kind}'"):
        assert run.data.tags["labscale.study"] == "small" and run.info.status == "FINISHED"
        history = {key: [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]
                   for key in run.data.metrics}
        runs[run.info.run_name] = Recorded(run.info.run_id, run.data.params, run.data.metrics, history)
    return runs


READERS = {"wandb": wandb_runs, "mlflow": mlflow_runs}


@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-cell study (zero-shot, fine-tuned; no tracking) with every run but aggregate committed."""
    study = small_study(tmp_path_factory.mktemp("tracked"), settings=SETTINGS, test_items=4)
    run_in_process(build_plan(load_study(study)), ("prep", "train", "generate", "score"))
    return study


def expected_metrics(row: pd.Series) -> dict[str, float]:
    """A results row's numbers: what each cell's tracker run must hold."""
    return {k: float(v) for k, v in row.items() if k not in (*LABELS, "train_path", "engine") and pd.notna(v)}


@pytest.mark.parametrize("backend", BACKENDS)
def test_each_cell_is_a_tracker_run_with_its_results(committed: Path, trackers_dir: Path, backend: str) -> None:
    plan = build_plan(load_study(with_tracking(committed, tracking_block(backend, trackers_dir), backend)))
    store = run_in_process(plan, ("aggregate",))
    results = pd.read_csv(store.fetch_file(plan.aggregate.prefix, "results.csv", trackers_dir / "results.csv"))
    runs = READERS[backend](trackers_dir, "cell")
    assert sorted(runs) == ["claims/tiny/ft", "claims/tiny/zero-shot"]
    for cell, (_, row) in zip(plan.cells, results.iterrows(), strict=True):
        run = runs[f"{cell.task}/{cell.model}/{cell.setting}"]
        assert run.metrics == pytest.approx(expected_metrics(row)) and "accuracy" in run.metrics
        assert run.params["setting"] == cell.setting and run.params["model.path"] == "tiny-llama"
        assert run.params["shots"] == "0" and run.params["metric_suite"] == "classification"
        assert run.params["uri.score"] == f"{store.uri}/{cell.score}"
        assert run.params["uri.results"] == f"{store.uri}/{plan.aggregate.prefix}"
        assert ("train.max_steps" in run.params) == (cell.train is not None)
        assert run.params.get("uri.train") == (cell.train and f"{store.uri}/{cell.train}")
    tracker_runs = store.require(plan.aggregate.prefix).meta["metrics"]["tracker_runs"]
    assert tracker_runs == {name: run.id for name, run in runs.items()}


@pytest.mark.parametrize("backend", BACKENDS)
def test_training_logs_reach_the_tracker(tmp_path: Path, trackers_dir: Path, backend: str) -> None:
    ft = SETTINGS.split("  - id: ft\n")[1]
    study = small_study(tmp_path, settings=f"  - id: ft\n{ft}", test_items=2)
    plan = build_plan(load_study(with_tracking(study, tracking_block(backend, trackers_dir), backend)))
    store = run_in_process(plan, ("prep", "train"))
    train = next(r for r in plan.runs if r.stage == "train")
    state = json.loads(store.backend.get_bytes(f"{train.prefix}/trainer_state.json"))
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    run = READERS[backend](trackers_dir, "train")["train/claims/tiny/ft"]
    assert len(losses) == 3
    assert run.history["train/loss" if backend == "wandb" else "loss"] == pytest.approx(losses)


def test_tracking_changes_no_train_generate_or_score_key(tmp_path: Path) -> None:
    study = small_study(tmp_path, settings=SETTINGS)
    plain, tracked = (build_plan(load_study(s)) for s in (study, with_tracking(study, tracking_block("wandb", tmp_path),
                                                                              "wandb")))
    assert [r.prefix for r in plain.runs[:-1]] == [r.prefix for r in tracked.runs[:-1]]
    assert plain.aggregate.key != tracked.aggregate.key  # adding a tracker reruns only aggregate, which logs
    train = next(r for r in tracked.runs if r.stage == "train")
    assert train.runtime.tracking.model_dump() == {"backend": "wandb", "project": "labscale-tests", "entity": None,
                                                   "tracking_uri": None}


def test_online_wandb_needs_an_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(BadInputError, match="WANDB_API_KEY in the environment .* fix: "):
        open_tracker(Tracking(backend="wandb", project="p"))


def test_a_tracker_failure_is_one_line_not_silent(trackers_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")  # MLflow 3 refuses a file store without it
    config = Tracking(backend="mlflow", project="p", tracking_uri=f"file://{trackers_dir / 'mlruns'}")
    with pytest.raises(TrackerError, match=r"tracking \(mlflow, project 'p'\): MlflowException: .* fix: ") as err:
        log_runs(config, "small", [TrackedRun("a/b/c", {"shots": 0}, {"accuracy": 0.5})])
    assert "\n" not in str(err.value)


def test_a_missing_tracker_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` now raises ImportError
    with pytest.raises(BadInputError, match=r"mlflow package is not installed — fix: pip install 'labscale\[tracking\]'"):
        open_tracker(Tracking(backend="mlflow", project="p"))
