"""Local executor: run a plan's DAG on this machine, each stage in a subprocess.

Each run goes through the same entrypoint a container uses (`python -m labscale.jobs.<stage>
--spec URI`). Its output streams through to the terminal and is kept in the store under logs/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from labscale.errors import EXIT_BAD_INPUT, LabscaleError
from labscale.executors.publish import upload_sources, write_specs
from labscale.plan import Plan, RunSpec
from labscale.plan.groups import execution_units
from labscale.stage import spec_uri
from labscale.store import ArtifactStore


class StageFailed(LabscaleError):
    """A stage subprocess exited non-zero; carries its exit code and the end of its log."""

    def __init__(self, spec: RunSpec, code: int, tail: list[str]):
        self.exit_code = EXIT_BAD_INPUT if code == EXIT_BAD_INPUT else 1
        last = "\n".join(f"    {line}" for line in tail)
        super().__init__(f"{spec.stage} {spec.key} ({spec.title.strip()}) failed with exit code {code}; "
                         f"log: logs/{spec.stage}/{spec.key}.log\n{last}")


@dataclass
class RunReport:
    executed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _run_subprocess(specs: list[RunSpec], store: ArtifactStore, out: TextIO) -> None:
    """Run `specs` (one, or a group of one stage) in one stage process; each keeps its log under logs/.
    Raises StageFailed for the first run the process did not commit."""
    spec = specs[0]
    cmd = [sys.executable, "-m", f"labscale.jobs.{spec.stage}",
           *(arg for s in specs for arg in ("--spec", spec_uri(store, s)))]
    tail: deque[str] = deque(maxlen=15)
    with tempfile.NamedTemporaryFile("wb", suffix=".log", delete=False) as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert proc.stdout is not None
        pending = b""
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
            pending += chunk
            *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
            tail.extend(line.decode("utf-8", "replace") for line in lines if line.strip())
        code = proc.wait()
    for s in specs:
        store.backend.put_file(f"logs/{s.stage}/{s.key}.log", Path(log.name))
    Path(log.name).unlink(missing_ok=True)
    if code != 0:
        failed = [s for s in specs if not store.is_committed(s.prefix)] or [spec]
        raise StageFailed(failed[0], code, list(tail))


def execute(plan: Plan, store: ArtifactStore, out: TextIO = sys.stderr,
            after_prep: Callable[[], None] | None = None) -> RunReport:
    """Run every uncommitted run of the plan in dependency order; stop at the first failure.

    The prep runs (no inputs, cheap) go first; then `after_prep` (e.g. a budget check that may raise).
    """
    report = RunReport()
    started = time.perf_counter()
    upload_sources(plan, store)
    write_specs(plan, store)
    units = execution_units(plan.runs)  # prep runs first (they have no inputs), groups of vLLM cells together
    numbers = {run.prefix: i for i, run in enumerate((r for unit in units for r in unit), 1)}
    width = len(str(len(plan.runs)))

    def head(spec: RunSpec) -> str:
        return f"[{numbers[spec.prefix]:>{width}}/{len(plan.runs)}]"

    preps_done = False
    for unit in units:
        if not preps_done and unit[0].stage != "prep":
            preps_done = True
            if after_prep is not None:
                after_prep()
        _run_unit(unit, store, out, head, report)
    if not preps_done and after_prep is not None:
        after_prep()
    report.seconds = time.perf_counter() - started
    return report


def _run_unit(unit: list[RunSpec], store: ArtifactStore, out: TextIO, head: Callable[[RunSpec], str],
              report: RunReport) -> None:
    """Run the uncommitted runs of a unit (one run, or a group) in one stage process."""
    todo = []
    for spec in unit:
        if store.is_committed(spec.prefix):
            report.cached.append(spec.prefix)
            print(f"{head(spec)} cached   {spec.title}  ({spec.key})", file=out)
        else:
            todo.append(spec)
    if not todo:
        return
    together = f" (one process with {len(todo) - 1} more)" if len(todo) > 1 else ""
    for spec in todo:
        print(f"{head(spec)} running  {spec.title}  ({spec.key}){together if spec is todo[0] else ''}",
              file=out, flush=True)
    t0 = time.perf_counter()
    try:
        _run_subprocess(todo, store, out)
    finally:
        for spec in todo:
            if store.is_committed(spec.prefix):
                report.executed.append(spec.prefix)
                print(f"{head(spec)} done     {spec.title}  in {time.perf_counter() - t0:.1f}s", file=out, flush=True)
