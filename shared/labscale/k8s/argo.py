"""The whole plan as one Argo `Workflow` DAG, or a `CronWorkflow` that reruns it on a schedule.

One container template per stage image and pod variant (parameter `spec` = the run's spec URI), one
DAG task per execution unit (labscale.plan.groups) depending on the tasks that produce its inputs: a
run, or a model's vLLM generate group, whose one pod answers every member on one started engine. A
stage's runs share a template unless their pods differ: `<stage>-api-model` (an API model's run: CPU
placement and the API key, as its Job gets), `<stage>-api-key` (a run that calls an API judge or
model on its own pod), `-tracking` (a run that logs to W&B / MLflow gets the tracker's keys).

Retries follow the plain Jobs (labscale.k8s.jobs): every failure is retried except exit code 2
(bad input) and a pod stopped at its deadline, and a pod that is preempted, evicted or deleted
(Argo marks it Error, exit code -1) is retried too — `retryPolicy: Always` retries Error as well as
Failed. Argo counts a preemption as a retry where a Job's podFailurePolicy does not, so the limit is
the Jobs' backoffLimit plus PREEMPTION_RETRIES. The backoff has no `maxDuration`: Argo would
replace a retried pod's activeDeadlineSeconds with what is left of it, so each attempt keeps the
stage's own deadline. A rerun skips every run whose artifact is already committed (the stage exits
0 at once), so only missing runs do work. With a Kueue queue, each pod carries the queue label
(Kueue's pod integration admits Argo's pods one by one).

A group's task is named as its Job would be (`unit_job_name`) and runs a template of its own, named
after its pod variant plus the `-g<hash>` of the Job name, whose container args list each member's
`--spec` (Argo substitutes a parameter into one argument, so a list cannot travel as one); its
deadline is the stage's times the number of members, as for the Job. A task that reads a member's
output depends on the group's task. A member that fails leaves the others to commit, but the group's
task fails, so the downstream tasks of its members wait for the next run (which skips every member
already committed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from labscale.errors import EXIT_BAD_INPUT, BadInputError
from labscale.k8s.pod import POD_SECURITY_CONTEXT, Credentials, container, volumes
from labscale.k8s.pools import BACKOFF_LIMIT, POOLS, TTL_SECONDS_AFTER_FINISHED
from labscale.k8s.target import ARGO_SERVICE_ACCOUNT, LABEL_PREFIX, ClusterTarget, unit_job_name
from labscale.plan import STAGES, Plan, RunSpec
from labscale.plan.groups import execution_units

API_VERSION = "argoproj.io/v1alpha1"
PREEMPTION_RETRIES = 3
RETRY_EXPRESSION = f'asInt(lastRetry.exitCode) != {EXIT_BAD_INPUT} && !(lastRetry.message contains "deadline")'
"""Retry unless the stage said bad input or the pod ran past its activeDeadlineSeconds (the kubelet's
message: "Pod was active on the node longer than the specified deadline")."""
RETRY_STRATEGY: dict[str, Any] = {
    "limit": BACKOFF_LIMIT + PREEMPTION_RETRIES,
    "retryPolicy": "Always",
    "expression": RETRY_EXPRESSION,
    "backoff": {"duration": "30s", "factor": 2},
}
CRON = re.compile(r"^\s*(\S+\s+){4}\S+\s*$")
STARTING_DEADLINE_SECONDS = 3600


@dataclass(frozen=True)
class PodVariant:
    """What a run's pod depends on besides its spec: stage, API-model placement, credentials."""

    stage: str
    api_model: bool
    credentials: Credentials

    @classmethod
    def of(cls, run: RunSpec) -> PodVariant:
        return cls(run.stage, run.on_api, Credentials.of(run))

    @property
    def name(self) -> str:
        api = "-api-model" if self.api_model else "-api-key" if self.credentials.api else ""
        return self.stage + api + ("-tracking" if self.credentials.tracking else "")


def _stage_template(target: ClusterTarget, variant: PodVariant, group: tuple[str, list[str]] | None = None
                    ) -> dict[str, Any]:
    """The template of a variant's runs (parameter `spec`), or of one group: (its name, its members' spec
    URIs), written into the container's args."""
    stage = variant.stage
    if variant.api_model:  # an API model's run waits on the API: CPU placement, as its Job
        target = replace(target, pool=POOLS["cpu"])
    name, uris = group or (variant.name, ["{{inputs.parameters.spec}}"])
    return {
        "name": name,
        **({} if group else {"inputs": {"parameters": [{"name": "spec"}]}}),
        "metadata": {"labels": {f"{LABEL_PREFIX}stage": stage, **target.kueue_labels()}},
        "retryStrategy": RETRY_STRATEGY,
        "activeDeadlineSeconds": target.pool.deadline_s(stage) * len(uris),
        "securityContext": POD_SECURITY_CONTEXT,
        **target.pool.placement(stage),
        "container": container(target, stage, uris, variant.credentials),
        "volumes": volumes(target, stage),
    }


def workflow_spec(plan: Plan, target: ClusterTarget, spec_uri: Callable[[RunSpec], str]) -> dict[str, Any]:
    """Argo WorkflowSpec: stage templates + the `plan` DAG (`spec_uri(run)` → its --spec URI), one task per
    execution unit."""
    units = execution_units(plan.runs)
    produced = {run.prefix: unit_job_name(unit) for unit in units for run in unit}
    order = {stage: i for i, stage in enumerate(STAGES)}
    shared: set[PodVariant] = set()
    own: list[dict[str, Any]] = []
    tasks = []
    for unit in units:
        name = unit_job_name(unit)
        task: dict[str, Any] = {"name": name}
        if len(unit) == 1:
            variant = PodVariant.of(unit[0])
            shared.add(variant)
            task |= {"template": variant.name,
                     "arguments": {"parameters": [{"name": "spec", "value": spec_uri(unit[0])}]}}
        else:
            variant = PodVariant(unit[0].stage, all(run.on_api for run in unit), Credentials.of_all(unit))
            template = f"{variant.name}-{name.rsplit('-', 1)[1]}"
            own.append(_stage_template(target, variant, (template, [spec_uri(run) for run in unit])))
            task["template"] = template
        deps = sorted({produced[p] for run in unit for p in run.inputs.values() if p in produced} - {name})
        if deps:
            task["dependencies"] = deps
        tasks.append(task)
    used = sorted(shared, key=lambda v: (order[v.stage], v.name))
    return {
        "entrypoint": "plan",
        "serviceAccountName": ARGO_SERVICE_ACCOUNT,
        "ttlStrategy": {"secondsAfterCompletion": TTL_SECONDS_AFTER_FINISHED},
        "podGC": {"strategy": "OnPodSuccess"},
        "templates": [_stage_template(target, v) for v in used] + own + [{"name": "plan", "dag": {"tasks": tasks}}],
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
