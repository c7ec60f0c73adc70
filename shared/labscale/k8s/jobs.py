"""One `batch/v1` Job per execution unit (labscale.plan.groups): a run, or a model's vLLM generate
group, whose one pod runs every member (`--spec A --spec B …`) on one started engine.

A group's Job is named after its first run plus a `-g<hash>` of its members' keys; it carries the
labels its members share and lists each member's run key, spec and inputs in annotations; its
deadline is the stage's times the number of members; its pod is sized as one generate run's. A
member that fails leaves the others to commit: the pod exits non-zero, the Job retries, and the
retry skips what is committed.

Failed pods are retried up to `backoffLimit` times, except: exit code 2 (bad input) fails the Job
at once, and pods evicted by node preemption or drain (condition DisruptionTarget) are retried
without counting against the limit. With a Kueue queue (ClusterTarget.queue) the Job carries
`kueue.x-k8s.io/queue-name` (and `kueue.x-k8s.io/priority-class`) and is created suspended: Kueue
unsuspends it once the queue admits it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from labscale.errors import EXIT_BAD_INPUT
from labscale.k8s.pod import POD_SECURITY_CONTEXT, Credentials, container, volumes
from labscale.k8s.pools import BACKOFF_LIMIT, POOLS, TTL_SECONDS_AFTER_FINISHED
from labscale.k8s.target import (CONTAINER, LABEL_PREFIX, SERVICE_ACCOUNT, ClusterTarget, job_labels, unit_job_name,
                                 unit_labels)
from labscale.spec import RunSpec

POD_FAILURE_POLICY: dict[str, Any] = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
]}


def render_job(spec: RunSpec, spec_uri: str, target: ClusterTarget,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job that runs `spec` alone (its RunSpec is stored at `spec_uri`)."""
    return render_unit_job([spec], lambda _: spec_uri, target, annotations)


def render_unit_job(members: Sequence[RunSpec], spec_uri: Callable[[RunSpec], str], target: ClusterTarget,
                    annotations: dict[str, str] | None = None, name: str | None = None) -> dict[str, Any]:
    """The Job whose pod runs `members` (one stage), one after the other; `spec_uri(run)` is where a
    run's RunSpec is stored. `name` defaults to `unit_job_name(members)` (submit passes the planned
    unit's, so that a rerun finds the Job it created before some members were committed). An API
    model's runs only wait on the API: they get CPU placement whatever the target pool."""
    first = members[0]
    if len({run.stage for run in members}) != 1:
        raise ValueError(f"a Job runs one stage, not {sorted({run.stage for run in members})}")
    if all(run.on_api for run in members):
        target = replace(target, pool=POOLS["cpu"])
    if len(members) == 1:
        labels = job_labels(first)
        notes = {f"{LABEL_PREFIX}run-key": first.key, f"{LABEL_PREFIX}spec": spec_uri(first),
                 f"{LABEL_PREFIX}inputs": json.dumps(first.inputs, sort_keys=True)}
    else:
        labels = unit_labels(members)
        notes = {f"{LABEL_PREFIX}run-keys": json.dumps([run.key for run in members]),
                 f"{LABEL_PREFIX}specs": json.dumps([spec_uri(run) for run in members]),
                 f"{LABEL_PREFIX}inputs": json.dumps({run.key: run.inputs for run in members}, sort_keys=True)}
    notes |= annotations or {}
    pool = target.pool
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name or unit_job_name(members), "namespace": target.namespace,
                     "labels": labels | target.kueue_labels(), "annotations": notes},
        "spec": {
            **({"suspend": True} if target.queue else {}),
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": pool.deadline_s(first.stage) * len(members),
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "podFailurePolicy": POD_FAILURE_POLICY,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    **pool.placement(first.stage),
                    "containers": [container(target, first.stage, [spec_uri(run) for run in members],
                                             Credentials.of_all(members))],
                    "volumes": volumes(target, first.stage),
                },
            },
        },
    }
