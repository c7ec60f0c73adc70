"""What every stage entrypoint shares: read the RunSpec, skip if committed, run, commit last.

A stage module defines `run(ctx) -> dict` (its metrics; its code version is in labscale.spec) and calls
`stage_main(STAGE, run)` from `main()`. Exit codes: 0 ok, 2 bad input (no retry), 1 transient.

Every attempt of a run records what it spends in the run's attempts journal (labscale.store.attempts):
at its start, every `HEARTBEAT_S` seconds, at each checkpoint (`ctx.attempt.save()`) and at its end. The
committed manifest's `duration_s`, `cost_usd`, `energy_kwh` and `kg_co2e` are the sums over all attempts
(`attempts` says how many), so a run resumed after kill -9 still costs what it really cost.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labscale.cost import compute_cost_usd
from labscale.energy import EnergyMeter, Footprint
from labscale.errors import EXIT_OK, EXIT_TRANSIENT, BadInputError, LabscaleError
from labscale.params import FileRef, ModelParams, StageParams
from labscale.spec import RunSpec, code_version
from labscale.store import ArtifactStore, MissingArtifact, open_store
from labscale.store.attempts import (
    AttemptRecord, AttemptStatus, AttemptTotals, new_attempt_key, now_iso, read_attempts,
)
from labscale.telemetry import StageOutcome, publish_quietly, stage_registry

_VERSIONED = ("labscale", "torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "opacus")
HEARTBEAT_S = float(os.environ.get("LABSCALE_HEARTBEAT_S") or 30.0)
"""How often a running attempt rewrites its record: at most this much of a killed attempt goes unrecorded."""


def spec_uri(store: ArtifactStore, spec: RunSpec) -> str:
    """The `--spec` URI of a run: its store's URI + the spec's key."""
    return f"{store.uri}/{spec.spec_key}"


def load_spec(uri: str) -> tuple[RunSpec, ArtifactStore]:
    """Read a RunSpec from `<store-uri>/specs/<stage>/<key>.json` and open its store."""
    store_uri, sep, rest = uri.rpartition("/specs/")
    if not sep:
        raise BadInputError(f"--spec {uri}: not a spec URI — fix: pass <store-uri>/specs/<stage>/<key>.json")
    store = open_store(store_uri)
    try:
        spec = RunSpec.model_validate_json(store.backend.get_bytes(f"specs/{rest}"))
    except FileNotFoundError:
        raise BadInputError(f"--spec {uri}: no such spec in the store — fix: plan/run the study first") from None
    return spec, store


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class Attempt:
    """This attempt of a run: what the attempts before it spent (`earlier`), and its own record in the
    journal, rewritten by `save()` (a heartbeat thread calls it every HEARTBEAT_S; trainers before each
    checkpoint) and by `finish()`."""

    def __init__(self, spec: RunSpec, store: ArtifactStore, meter: EnergyMeter | None = None):
        self.spec, self.store, self.meter = spec, store, meter
        self.started, started_at, self.cpu_started = time.perf_counter(), now_iso(), _cpu_seconds()
        previous = read_attempts(store, spec.prefix)
        self.earlier = AttemptTotals.of(previous)
        self.record = AttemptRecord(number=max((r.number for r in previous), default=0) + 1,
                                    started_at=started_at, updated_at=started_at, host=socket.gethostname())
        self.key = new_attempt_key(spec.prefix, self.record.number)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self.footprint: Footprint | None = None
        """The attempt's final energy and CO2e (set by `finish`)."""

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def cpu_seconds(self) -> float:
        return _cpu_seconds() - self.cpu_started

    def spent_usd(self) -> float:
        """Compute dollars of the run so far: every earlier attempt plus this one until now."""
        return self.earlier.compute_usd + compute_cost_usd(self.seconds(), self.spec.usd_per_hour)

    def save(self, status: AttemptStatus = "running", footprint: Footprint | None = None) -> AttemptRecord:
        """Write this attempt's record as of now (energy so far unless `footprint` is the final one)."""
        with self._lock:
            seconds = round(self.seconds(), 3)
            if footprint is None:
                footprint = self.meter.footprint(seconds, stop=False) if self.meter else Footprint(0.0, 0.0, "none")
            self.record = self.record.model_copy(update=dict(
                status=status, updated_at=now_iso(), seconds=seconds, cpu_seconds=round(self.cpu_seconds(), 3),
                compute_usd=compute_cost_usd(seconds, self.spec.usd_per_hour),
                energy_kwh=footprint.kwh, kg_co2e=footprint.kg_co2e))
            self.store.backend.put_bytes(self.key, self.record.model_dump_json(indent=2).encode())
            return self.record

    def start(self) -> Attempt:
        """Write the record and start the heartbeat."""
        self.save()
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="labscale-attempt")
        self._heartbeat.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.save()
            except Exception as exc:  # noqa: BLE001 — a missed beat loses at most one interval; the work goes on
                logging.getLogger("labscale.stage").warning("attempt record not updated: %s", exc)

    def finish(self, status: AttemptStatus) -> AttemptTotals:
        """Stop the heartbeat and the energy meter, write the final record; the run's totals over every
        attempt, this one included. (A second call, after a failed commit, rewrites the status.)"""
        self._stop.set()
        if self._heartbeat is not None:
            self._heartbeat.join()
        if self.footprint is None:
            self.footprint = self.meter.footprint(self.seconds()) if self.meter else Footprint(0.0, 0.0, "none")
        record = self.save(status, self.footprint)
        return AttemptTotals.of([self.earlier, record])


@dataclass
class StageContext:
    """A running stage: its spec, store, a scratch dir, and the dir whose files get committed."""

    spec: RunSpec
    store: ArtifactStore
    scratch: Path
    out_dir: Path
    log: logging.Logger
    attempt: Attempt | None = field(default=None)
    """This attempt of the run (None outside `run_stage`)."""

    @property
    def params(self) -> StageParams:
        """What the run computes: its stage's typed params (labscale.params)."""
        return self.spec.params

    def fetch(self, role: str) -> Path:
        """Download the committed input artifact `role` (verified) and return its local dir."""
        dest = self.scratch / "inputs" / role
        self.store.fetch(self.spec.inputs[role], dest)
        return dest

    def fetch_upload(self, ref: FileRef, local: Path) -> Path:
        """Download a local file the planner uploaded (see the planner's `upload`) to `local`, verified;
        returns `local`."""
        manifest = self.store.require(ref.prefix)
        return self.store.fetch_file(ref.prefix, next(iter(manifest.files)), local, manifest)

    def progress(self, total: int, desc: str, unit: str = "it") -> tqdm:
        """A progress bar on stderr for long work; call `.update(n)` and `.close()`."""
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0, dynamic_ncols=True)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def require_inputs(spec: RunSpec, store: ArtifactStore) -> None:
    """Fail as bad input (exit 2), before anything is written, when an input artifact is not committed."""
    for role, prefix in spec.inputs.items():
        if not store.is_committed(prefix):
            raise MissingArtifact(
                f"{spec.stage} {spec.key} ({spec.title.strip()}): its {role} input {store.uri}/{prefix} is not "
                f"committed — fix: run that {prefix.split('/', 1)[0]} run first (`labscale run STUDY` runs every "
                "missing one)")


def run_stage(spec: RunSpec, store: ArtifactStore, work: Callable[[StageContext], dict[str, Any]]) -> bool:
    """Run one stage unless its artifact is committed; commit the outputs last. True if it ran.

    The attempt's record in the run's attempts journal is written first and kept current; the manifest
    records the sums over every attempt. Success or failure, the attempt's metrics are published
    (Pushgateway, else a textfile in the store).
    """
    log = logging.getLogger(f"labscale.{spec.stage}")
    if store.is_committed(spec.prefix):
        log.info("%s already committed — nothing to do", spec.prefix)
        return False
    require_inputs(spec, store)
    meter = EnergyMeter(spec.pool, **spec.carbon.model_dump()).start()
    attempt = Attempt(spec, store, meter).start()
    if attempt.earlier.attempts:
        log.info("attempt %d of %s (%d before it spent %.1fs, $%.4g)", attempt.record.number, spec.prefix,
                 attempt.earlier.attempts, attempt.earlier.seconds, attempt.earlier.compute_usd)
    metrics: dict[str, Any] = {}
    succeeded = False
    try:
        with tempfile.TemporaryDirectory(prefix=f"labscale-{spec.stage}-") as tmp:
            ctx = StageContext(spec, store, Path(tmp) / "scratch", Path(tmp) / "out", log, attempt)
            ctx.scratch.mkdir()
            ctx.out_dir.mkdir()
            metrics = work(ctx)
            totals = attempt.finish("committed")
            meta = {
                "stage": spec.stage, "key": spec.key, "study": spec.study, "labels": spec.labels,
                "inputs": spec.inputs, "code_version": code_version(spec.stage), "versions": library_versions(),
                "duration_s": round(totals.seconds, 3), "cpu_s": round(totals.cpu_seconds, 3),
                "cost_usd": totals.compute_usd + metrics.get("api_usd", 0.0),
                "energy_kwh": totals.energy_kwh, "kg_co2e": totals.kg_co2e,
                "gpu_energy": attempt.footprint.gpu_method if attempt.footprint else "none",
                "attempts": totals.attempts, "attempt_log": [r.model_dump() for r in read_attempts(store, spec.prefix)],
                "metrics": metrics,
            }
            store.commit(spec.prefix, ctx.out_dir, meta)
        succeeded = True
    finally:
        if not succeeded:
            try:
                attempt.finish("failed")
            except Exception as exc:  # noqa: BLE001 — the store may be what failed; the original error matters
                log.warning("could not record the failed attempt: %s", exc)
        seconds = attempt.seconds()
        footprint = attempt.footprint or meter.footprint(seconds)
        outcome = StageOutcome(succeeded, seconds, run_cost_usd(seconds, spec, metrics), footprint.kwh,
                               footprint.kg_co2e, metrics if succeeded else {})
        publish_quietly(log, stage_registry(spec, outcome), {"run_key": spec.key}, store,
                        f"metrics/{spec.stage}/{spec.key}.prom", spec.pushgateway)
    log.info("committed %s in %.1fs (%s)", spec.prefix, seconds,
             f"{totals.attempts} attempts, {totals.seconds:.1f}s in all" if totals.attempts > 1 else "1 attempt")
    return True


def run_cost_usd(seconds: float, spec: RunSpec, metrics: dict[str, Any]) -> float:
    """An attempt's estimated $: its compute (wall-hours × pool price) plus what it paid an API."""
    return compute_cost_usd(seconds, spec.usd_per_hour) + metrics.get("api_usd", 0.0)


def quiet_libraries(spec: RunSpec) -> None:
    """Keep a stage's log to what a study's user can act on: no library FutureWarnings (unless warnings
    were asked for with -W / PYTHONWARNINGS), no `datasets` progress bars over its own quick steps (one
    bar at a time: the stage's own), and bitsandbytes' "pip install kernels" hint only on 4-bit runs,
    the only ones its CPU kernels serve."""
    if not sys.warnoptions:
        warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    if (datasets := sys.modules.get("datasets")) is not None:
        datasets.disable_progress_bars()
    model = getattr(spec.params, "model", None)
    if not (isinstance(model, ModelParams) and model.quantization == "4bit"):
        logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def stage_main(stage: str, work: Callable[[StageContext], dict[str, Any]], argv: list[str] | None = None,
               after: Callable[[RunSpec, ArtifactStore], None] | None = None) -> int:
    """Entrypoint shared by `python -m labscale.jobs.<stage>` and `labscale stage <stage>`.

    Several `--spec`s run one after the other in this process (a generate group: the cells of one model
    share its vLLM engine), each as its own run: a committed one is skipped, a failing one fails alone
    and the rest still run. Exit code: 0 when every run is committed, else 1 if any failure may be
    transient (a retry reruns only what is not committed), else 2.
    `after` runs once a run's artifact is committed, whether by this call or an earlier one.
    """
    parser = argparse.ArgumentParser(prog=f"labscale stage {stage}", description=f"Run the {stage} stage of RunSpecs.")
    parser.add_argument("--spec", required=True, action="append",
                        help="URI of a RunSpec: <store-uri>/specs/<stage>/<key>.json (repeat for a group of runs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{stage}] %(message)s", datefmt="%H:%M:%S")
    codes = [_run_one(stage, uri, work, after) for uri in args.spec]
    failed = [code for code in codes if code != EXIT_OK]
    if len(codes) > 1 and failed:
        print(f"labscale {stage}: {len(failed)} of {len(codes)} runs failed", file=sys.stderr)
    return EXIT_OK if not failed else EXIT_TRANSIENT if EXIT_TRANSIENT in failed else max(failed)


def _run_one(stage: str, uri: str, work: Callable[[StageContext], dict[str, Any]],
             after: Callable[[RunSpec, ArtifactStore], None] | None) -> int:
    """One run of `stage_main`: its exit code."""
    try:
        spec, store = load_spec(uri)
        if spec.stage != stage:
            raise BadInputError(f"--spec {uri}: is a {spec.stage} spec, not {stage} — fix: run `labscale stage {spec.stage}`")
        quiet_libraries(spec)
        run_stage(spec, store, work)
        if after is not None:
            after(spec, store)
        return EXIT_OK
    except LabscaleError as exc:  # bad input, a corrupted artifact: retrying cannot help (exit 2)
        print(f"labscale {stage}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # anything else may be transient: exit 1 so a Job retries
        traceback.print_exc()
        print(f"labscale {stage}: failed: {exc}", file=sys.stderr)
        return EXIT_TRANSIENT

