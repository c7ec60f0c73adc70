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


def _run_subprocess(spec: RunSpec, store: ArtifactStore, out: TextIO) -> None:
    cmd = [sys.executable, "-m", f"labscale.jobs.{spec.stage}", "--spec", spec_uri(store, spec)]
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
    store.backend.put_file(f"logs/{spec.stage}/{spec.key}.log", Path(log.name))
    Path(log.name).unlink(missing_ok=True)
    if code != 0:
        raise StageFailed(spec, code, list(tail))


def execute(plan: Plan, store: ArtifactStore, out: TextIO = sys.stderr,
            after_prep: Callable[[], None] | None = None) -> RunReport:
    """Run every uncommitted run of the plan in dependency order; stop at the first failure.

    The prep runs (no inputs, cheap) go first; then `after_prep` (e.g. a budget check that may raise).
    """
    report = RunReport()
    started = time.perf_counter()
    upload_sources(plan, store)
    write_specs(plan, store)
    preps = [s for s in plan.runs if s.stage == "prep"]
    rest = [s for s in plan.runs if s.stage != "prep"]
    width = len(str(len(plan.runs)))
    for number, spec in enumerate(preps, 1):
        _run_unless_committed(spec, store, out, f"[{number:>{width}}/{len(plan.runs)}]", report)
    if after_prep is not None:
        after_prep()
    for number, spec in enumerate(rest, len(preps) + 1):
        _run_unless_committed(spec, store, out, f"[{number:>{width}}/{len(plan.runs)}]", report)
    report.seconds = time.perf_counter() - started
    return report


def _run_unless_committed(spec: RunSpec, store: ArtifactStore, out: TextIO, head: str, report: RunReport) -> None:
    if store.is_committed(spec.prefix):
        report.cached.append(spec.prefix)
        print(f"{head} cached   {spec.title}  ({spec.key})", file=out)
        return
    print(f"{head} running  {spec.title}  ({spec.key})", file=out, flush=True)
    t0 = time.perf_counter()
    _run_subprocess(spec, store, out)
    report.executed.append(spec.prefix)
    print(f"{head} done     {spec.title}  in {time.perf_counter() - t0:.1f}s", file=out, flush=True)
