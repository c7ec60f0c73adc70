"""The whole plan as one Argo `Workflow` DAG, or a `CronWorkflow` that reruns it on a schedule.

One container template per stage image (parameter `spec` = the run's spec URI), one DAG task per
RunSpec depending on the tasks that produce its inputs. Exit code 1 (transient) is retried with
exponential backoff; exit code 2 (bad input) is not. A rerun skips every run whose artifact is
already committed (the stage exits 0 at once), so only missing runs do work.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from labscale.errors import BadInputError
from labscale.k8s.pod import POD_SECURITY_CONTEXT, container, volumes
from labscale.k8s.pools import TTL_SECONDS_AFTER_FINISHED
from labscale.k8s.target import ARGO_SERVICE_ACCOUNT, LABEL_PREFIX, ClusterTarget, job_name
from labscale.plan import STAGES, Plan, RunSpec

API_VERSION = "argoproj.io/v1alpha1"
RETRY_STRATEGY: dict[str, Any] = {
    "limit": 3,
    "retryPolicy": "Always",
    "expression": "asInt(lastRetry.exitCode) == 1",
    "backoff": {"duration": "1m", "factor": 2, "maxDuration": "2h"},
}
CRON = re.compile(r"^\s*(\S+\s+){4}\S+\s*$")
STARTING_DEADLINE_SECONDS = 3600


def _stage_template(target: ClusterTarget, stage: str) -> dict[str, Any]:
    return {
        "name": stage,
        "inputs": {"parameters": [{"name": "spec"}]},
        "metadata": {"labels": {f"{LABEL_PREFIX}stage": stage}},
        "retryStrategy": RETRY_STRATEGY,
        "activeDeadlineSeconds": target.pool.deadline_s(stage),
        "securityContext": POD_SECURITY_CONTEXT,
        **target.pool.placement(stage),
        "container": container(target, stage, "{{inputs.parameters.spec}}"),
        "volumes": volumes(target, stage),
    }


def workflow_spec(plan: Plan, target: ClusterTarget, spec_uri: Callable[[RunSpec], str]) -> dict[str, Any]:
    """Argo WorkflowSpec: stage templates + the `plan` DAG (`spec_uri(run)` → its --spec URI)."""
    produced = {run.prefix: job_name(run) for run in plan.runs}
    tasks = []
    for run in plan.runs:
        task: dict[str, Any] = {"name": job_name(run), "template": run.stage,
                                "arguments": {"parameters": [{"name": "spec", "value": spec_uri(run)}]}}
        deps = sorted({produced[p] for p in run.inputs.values() if p in produced})
        if deps:
            task["dependencies"] = deps
        tasks.append(task)
    used = [s for s in STAGES if any(run.stage == s for run in plan.runs)]
    return {
        "entrypoint": "plan",
        "serviceAccountName": ARGO_SERVICE_ACCOUNT,
        "ttlStrategy": {"secondsAfterCompletion": TTL_SECONDS_AFTER_FINISHED},
        "podGC": {"strategy": "OnPodSuccess"},
        "templates": [_stage_template(target, s) for s in used] + [{"name": "plan", "dag": {"tasks": tasks}}],
    }


def _metadata(plan: Plan, target: ClusterTarget) -> dict[str, Any]:
    return {"namespace": target.namespace, "labels": {f"{LABEL_PREFIX}study": plan.study.study.name}}


def render_workflow(plan: Plan, target: ClusterTarget, spec_uri: Callable[[RunSpec], str]) -> dict[str, Any]:
    """A Workflow that runs the plan once (`argo submit` it, or `kubectl create -f`)."""
    meta = {"generateName": f"labscale-{plan.study.study.name}-", **_metadata(plan, target)}
    return {"apiVersion": API_VERSION, "kind": "Workflow", "metadata": meta,
            "spec": workflow_spec(plan, target, spec_uri)}


def render_cron_workflow(plan: Plan, target: ClusterTarget, spec_uri: Callable[[RunSpec], str],
                         schedule: str) -> dict[str, Any]:
    """A CronWorkflow rerunning the plan on `schedule` (cron syntax); overlapping runs are forbidden."""
    if not CRON.match(schedule):
        raise BadInputError(f"--schedule {schedule!r}: not a cron expression — fix: give 5 fields, e.g. \"0 3 * * 1\"")
    meta = {"name": f"labscale-{plan.study.study.name}", **_metadata(plan, target)}
    spec = {"schedules": [schedule.strip()], "concurrencyPolicy": "Forbid",
            "startingDeadlineSeconds": STARTING_DEADLINE_SECONDS,
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "workflowSpec": workflow_spec(plan, target, spec_uri)}
    return {"apiVersion": API_VERSION, "kind": "CronWorkflow", "metadata": meta, "spec": spec}
