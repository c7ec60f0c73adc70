"""What every stage entrypoint shares: read the RunSpec, skip if committed, run, commit last.

A stage module defines `run(ctx) -> dict` (its metrics; its code version is in labscale.spec) and calls
`stage_main(STAGE, run)` from `main()`. Exit codes: 0 ok, 2 bad input (no retry), 1 transient.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from tqdm import tqdm

from labscale.cost import compute_cost_usd
from labscale.energy import EnergyMeter, Footprint
from labscale.errors import EXIT_OK, EXIT_TRANSIENT, BadInputError, LabscaleError
from labscale.params import FileRef, StageParams
from labscale.spec import RunSpec, code_version
from labscale.store import ArtifactStore, open_store
from labscale.telemetry import StageOutcome, publish_quietly, stage_registry

_VERSIONED = ("labscale", "torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "opacus")


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


@dataclass
class StageContext:
    """A running stage: its spec, store, a scratch dir, and the dir whose files get committed."""

    spec: RunSpec
    store: ArtifactStore
    scratch: Path
    out_dir: Path
    log: logging.Logger

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


def run_stage(spec: RunSpec, store: ArtifactStore, work: Callable[[StageContext], dict[str, Any]]) -> bool:
    """Run one stage unless its artifact is committed; commit the outputs last. True if it ran.

    Success or failure, the run's metrics are published (Pushgateway, else a textfile in the store).
    """
    log = logging.getLogger(f"labscale.{spec.stage}")
    if store.is_committed(spec.prefix):
        log.info("%s already committed — nothing to do", spec.prefix)
        return False
    started = time.perf_counter()
    meter = EnergyMeter(spec.pool, **spec.carbon.model_dump()).start()
    footprint: Footprint | None = None
    metrics: dict[str, Any] = {}
    succeeded = False
    try:
        with tempfile.TemporaryDirectory(prefix=f"labscale-{spec.stage}-") as tmp:
            ctx = StageContext(spec, store, Path(tmp) / "scratch", Path(tmp) / "out", log)
            ctx.scratch.mkdir()
            ctx.out_dir.mkdir()
            metrics = work(ctx)
            seconds = time.perf_counter() - started
            footprint = meter.footprint(seconds)
            meta = {
                "stage": spec.stage, "key": spec.key, "study": spec.study, "labels": spec.labels,
                "inputs": spec.inputs, "code_version": code_version(spec.stage), "versions": library_versions(),
                "duration_s": round(seconds, 3), "cost_usd": run_cost_usd(seconds, spec, metrics),
                "energy_kwh": footprint.kwh, "kg_co2e": footprint.kg_co2e, "gpu_energy": footprint.gpu_method,
                "metrics": metrics,
            }
            store.commit(spec.prefix, ctx.out_dir, meta)
        succeeded = True
    finally:
        seconds = time.perf_counter() - started
        footprint = footprint or meter.footprint(seconds)
        outcome = StageOutcome(succeeded, seconds, run_cost_usd(seconds, spec, metrics), footprint.kwh,
                               footprint.kg_co2e, metrics if succeeded else {})
        publish_quietly(log, stage_registry(spec, outcome), {"run_key": spec.key}, store,
                        f"metrics/{spec.stage}/{spec.key}.prom", spec.pushgateway)
    log.info("committed %s in %.1fs", spec.prefix, seconds)
    return True


def run_cost_usd(seconds: float, spec: RunSpec, metrics: dict[str, Any]) -> float:
    """A run's estimated $: its compute (wall-hours × pool price) plus what it paid an API."""
    return compute_cost_usd(seconds, spec.usd_per_hour) + metrics.get("api_usd", 0.0)


def stage_main(stage: str, work: Callable[[StageContext], dict[str, Any]], argv: list[str] | None = None,
               after: Callable[[RunSpec, ArtifactStore], None] | None = None) -> int:
    """Entrypoint shared by `python -m labscale.jobs.<stage>` and `labscale stage <stage>`.

    `after` runs once the artifact is committed, whether by this call or an earlier one.
    """
    parser = argparse.ArgumentParser(prog=f"labscale stage {stage}", description=f"Run the {stage} stage of one RunSpec.")
    parser.add_argument("--spec", required=True, help="URI of the RunSpec: <store-uri>/specs/<stage>/<key>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s [{stage}] %(message)s", datefmt="%H:%M:%S")
    try:
        spec, store = load_spec(args.spec)
        if spec.stage != stage:
            raise BadInputError(f"--spec {args.spec}: is a {spec.stage} spec, not {stage} — fix: run `labscale stage {spec.stage}`")
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
