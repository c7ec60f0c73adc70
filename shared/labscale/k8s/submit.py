"""`labscale submit`: run a study's plan as Kubernetes Jobs, in dependency order, and watch them.

One Job per execution unit (labscale.plan.groups): a run, or a model's vLLM generate group whose one
pod answers every member on one started engine. Sources and specs go to the store first (as the
local executor does); runs whose artifact is committed are skipped, and dropped from their group's
Job (a group with every member committed creates nothing); a unit's Job is created once every run
its members read from has succeeded (at most `max_parallel` Jobs at a time). A Job that already
exists (an earlier submit) is adopted, not recreated: a group's Job is named after the planned
group, whatever was committed since. A Job that succeeded committed all its members. On the first
failed Job: the members it committed count as succeeded, the others are named as failed with the
Job's reason and the last lines of its pod's log, then exit 2 if the stage said bad input (exit
code 2), else 1. Other Jobs already running are left to finish.

With a Kueue queue the Jobs are created suspended; one still suspended is waiting for admission
and is shown as `queued` (once), then `admitted` when Kueue lets it start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from labscale.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, BadInputError, LabscaleError
from labscale.executors.publish import upload_sources, write_specs
from labscale.k8s.jobs import render_unit_job
from labscale.k8s.render import ClusterPlan, train_memory_notes, unit_notes
from labscale.k8s.target import CONTAINER, unit_job_name
from labscale.plan.groups import execution_units
from labscale.spec import RunSpec

if TYPE_CHECKING:
    from kubernetes import client

LOG_TAIL_LINES = 20


class JobFailed(LabscaleError):
    """A unit's Job failed: names the runs it did not commit (and, for a group, those it did), the
    Job's reason and the end of its pod's log."""

    def __init__(self, failed: list[RunSpec], name: str, reason: str, exit_code: int | None, tail: list[str],
                 committed: list[RunSpec] | None = None):
        self.exit_code = EXIT_BAD_INPUT if exit_code == EXIT_BAD_INPUT else EXIT_TRANSIENT
        self.failed = [run.prefix for run in failed]
        code = f", exit code {exit_code}" if exit_code is not None else ""
        lines = "\n".join(f"    {line}" for line in tail) or "    (no log)"
        runs = "; ".join(f"{run.stage} {run.key} ({run.title.strip()})" for run in failed)
        done = "".join(f"; committed by it: {run.stage} {run.key} ({run.title.strip()})" for run in committed or [])
        super().__init__(f"{runs}: Job {name} failed: {reason}{code}{done}; last log lines:\n{lines}")


@dataclass
class SubmitReport:
    succeeded: list[str] = field(default_factory=list)
    """Runs (prefixes) committed by this submit's Jobs."""
    cached: list[str] = field(default_factory=list)
    """Runs committed before it."""
    jobs: list[str] = field(default_factory=list)
    """Names of the Jobs that succeeded."""


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """In a pod: its service account; else the kubeconfig (`--kubeconfig`, $KUBECONFIG, ~/.kube/config)."""
    from kubernetes import client, config  # the Kubernetes client, imported by the commands that talk to a cluster

    if kubeconfig is None and context is None:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            return client.ApiClient(configuration)
        except config.ConfigException:
            pass
    try:
        return config.new_client_from_config(config_file=kubeconfig, context=context)
    except (config.ConfigException, OSError) as exc:
        raise BadInputError(f"kubeconfig {kubeconfig or '~/.kube/config'}: {exc} — "
                            "fix: pass --kubeconfig FILE (or set KUBECONFIG), or run in a pod") from None


class JobWatcher:
    """Creates Jobs and reads back their status, pods and logs."""

    def __init__(self, api: client.ApiClient, namespace: str):
        from kubernetes import client

        self.batch, self.core, self.namespace = client.BatchV1Api(api), client.CoreV1Api(api), namespace

    def create(self, manifest: dict[str, Any]) -> bool:
        """Create the Job; False if it already existed and is running or done (then it is adopted).
        A failed one (kept until its TTL) is deleted and created again: a rerun is a new attempt."""
        from kubernetes.client.exceptions import ApiException

        name = manifest["metadata"]["name"]
        try:
            self.batch.create_namespaced_job(self.namespace, manifest)
            return True
        except ApiException as exc:
            if exc.status == 409 and self.state(name)[0] == "failed":
                self.batch.delete_namespaced_job(name, self.namespace, propagation_policy="Background")
                return self.create(manifest)
            if exc.status == 409:
                return False
            raise LabscaleError(f"Kubernetes API refused Job {manifest['metadata']['name']}: {exc.status} {exc.reason} "
                                f"— fix: check the namespace exists and your identity has k8s/base/rbac.yaml's Role") from None

    def state(self, name: str) -> tuple[str, str]:
        """('succeeded' | 'failed' | 'queued' | 'running', reason); queued = suspended, waiting for Kueue."""
        job = self.batch.read_namespaced_job(name, self.namespace)
        status = job.status
        for cond in (status and status.conditions) or []:
            if cond.status == "True" and cond.type in ("Complete", "SuccessCriteriaMet"):
                return "succeeded", cond.reason or cond.type
            if cond.status == "True" and cond.type in ("Failed", "FailureTarget"):
                return "failed", f"{cond.reason or cond.type}: {cond.message or ''}".rstrip(": ")
        if job.spec and job.spec.suspend:
            return "queued", "waiting for admission"
        return "running", ""

    def last_pod(self, name: str) -> tuple[int | None, list[str]]:
        """Exit code and last log lines of the Job's newest pod (None, [] without one)."""
        from kubernetes.client.exceptions import ApiException

        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={name}").items
        if not pods:
            return None, []
        pod = max(pods, key=lambda p: p.metadata.creation_timestamp or 0)
        code = None
        for status in (pod.status and pod.status.container_statuses) or []:
            if status.name == CONTAINER and status.state and status.state.terminated:
                code = status.state.terminated.exit_code
        try:
            response = self.core.read_namespaced_pod_log(pod.metadata.name, self.namespace, container=CONTAINER,
                                                         tail_lines=LOG_TAIL_LINES, _preload_content=False)
        except ApiException as exc:
            return code, [f"(log unavailable: {exc.status} {exc.reason})"]
        # raw bytes: the client's own decoding of a text/plain log mangles it into a quoted repr
        return code, response.data.decode("utf-8", "replace").splitlines()[-LOG_TAIL_LINES:]


def submit(cp: ClusterPlan, watcher: JobWatcher, *, out: TextIO = sys.stderr, poll_seconds: float = 5.0,
           max_parallel: int = 8, after_prep: Callable[[], None] | None = None) -> SubmitReport:
    """Run every uncommitted run of the plan in its unit's Job; raise JobFailed on the first failure.

    Once every prep run is done, `after_prep` runs (a budget check that may raise) before any other Job."""
    plan, store = cp.plan, cp.store
    notes = train_memory_notes(cp)
    upload_sources(plan, store)
    write_specs(plan, store)
    report = SubmitReport()
    number = {run.prefix: i for i, run in enumerate(plan.runs, 1)}

    def head(run: RunSpec) -> str:
        return f"[{number[run.prefix]:>{len(str(len(plan.runs)))}}/{len(plan.runs)}]"

    def say(members: list[RunSpec], what: str, text: Callable[[RunSpec], str]) -> None:
        for run in members:
            print(f"{head(run)} {what} {text(run)}", file=out, flush=True)

    done: set[str] = set()
    pending: list[tuple[str, list[RunSpec]]] = []  # (Job name, members not yet committed)
    for unit in execution_units(plan.runs):
        members = []
        for run in unit:
            if store.is_committed(run.prefix):
                done.add(run.prefix)
                report.cached.append(run.prefix)
                print(f"{head(run)} cached    {run.title}  ({run.key})", file=out)
            else:
                members.append(run)
        if members:
            pending.append((unit_job_name(unit), members))
    running: dict[str, tuple[list[RunSpec], float]] = {}
    queued: set[str] = set()
    queue = cp.target.queue
    preps = {run.prefix for run in plan.runs if run.stage == "prep"}
    gate_open = after_prep is None
    while pending or running:
        if not gate_open and preps <= done:
            after_prep()
            gate_open = True
        for name, members in list(pending):
            if len(running) >= max_parallel:
                break
            ready = all(p in done for run in members for p in run.inputs.values() if p in number)
            if (gate_open or members[0].stage == "prep") and ready:
                manifest = render_unit_job(members, cp.spec_uri, cp.target, unit_notes(notes, members), name=name)
                verb = "submitted" if watcher.create(manifest) else "adopted "
                say(members, verb, lambda run, name=name: f"{run.title}  Job {name}")
                running[name] = (members, time.perf_counter())
                pending.remove((name, members))
        time.sleep(poll_seconds)
        for name, (members, started) in list(running.items()):
            state, reason = watcher.state(name)
            if state == "failed":
                committed = [run for run in members if store.is_committed(run.prefix)]
                failed = [run for run in members if run not in committed]
                del running[name]
                done.update(run.prefix for run in committed)
                report.succeeded += [run.prefix for run in committed]
                say(committed, "succeeded", lambda run, name=name: f"{run.title}  (committed before Job {name} failed)")
                if failed:
                    code, tail = watcher.last_pod(name)
                    raise JobFailed(failed, name, reason, code, tail, committed)
                report.jobs.append(name)
                continue
            if state == "queued" and name not in queued:
                queued.add(name)
                say(members, "queued   ", lambda run, name=name: f"{run.title}  Job {name} waits for admission to "
                                                                  f"LocalQueue {queue}")
            elif state == "running" and name in queued:
                queued.discard(name)
                running[name] = (members, time.perf_counter())  # its time starts at admission
                say(members, "admitted ", lambda run, name=name: f"{run.title}  Job {name}")
            if state == "succeeded":
                queued.discard(name)
                del running[name]
                done.update(run.prefix for run in members)
                report.succeeded += [run.prefix for run in members]
                report.jobs.append(name)
                seconds = time.perf_counter() - started
                say(members, "succeeded", lambda run, s=seconds: f"{run.title}  in {s:.0f}s")
    return report
