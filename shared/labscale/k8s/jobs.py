"""One `batch/v1` Job per RunSpec.

Failed pods are retried up to `backoffLimit` times, except: exit code 2 (bad input) fails the Job
at once, and pods evicted by node preemption or drain (condition DisruptionTarget) are retried
without counting against the limit. With a Kueue queue (ClusterTarget.queue) the Job carries
`kueue.x-k8s.io/queue-name` (and `kueue.x-k8s.io/priority-class`) and is created suspended: Kueue
unsuspends it once the queue admits it.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from labscale.errors import EXIT_BAD_INPUT
from labscale.k8s.pod import POD_SECURITY_CONTEXT, Credentials, container, volumes
from labscale.k8s.pools import BACKOFF_LIMIT, POOLS, TTL_SECONDS_AFTER_FINISHED
from labscale.k8s.target import CONTAINER, LABEL_PREFIX, SERVICE_ACCOUNT, ClusterTarget, job_labels, job_name
from labscale.spec import RunSpec

POD_FAILURE_POLICY: dict[str, Any] = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [EXIT_BAD_INPUT]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
]}


def render_job(spec: RunSpec, spec_uri: str, target: ClusterTarget,
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    """The Job that runs `spec` (whose RunSpec is stored at `spec_uri`). An API model's runs only
    wait on the API: they get CPU placement whatever the target pool."""
    if spec.on_api:
        target = replace(target, pool=POOLS["cpu"])
    labels = job_labels(spec)
    notes = {f"{LABEL_PREFIX}run-key": spec.key, f"{LABEL_PREFIX}spec": spec_uri,
             f"{LABEL_PREFIX}inputs": json.dumps(spec.inputs, sort_keys=True), **(annotations or {})}
    pool = target.pool
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name(spec), "namespace": target.namespace, "labels": labels | target.kueue_labels(),
                     "annotations": notes},
        "spec": {
            **({"suspend": True} if target.queue else {}),
            "backoffLimit": BACKOFF_LIMIT,
            "activeDeadlineSeconds": pool.deadline_s(spec.stage),
            "ttlSecondsAfterFinished": TTL_SECONDS_AFTER_FINISHED,
            "podFailurePolicy": POD_FAILURE_POLICY,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": SERVICE_ACCOUNT,
                    "automountServiceAccountToken": False,
                    "securityContext": POD_SECURITY_CONTEXT,
                    **pool.placement(spec.stage),
                    "containers": [container(target, spec.stage, spec_uri, Credentials.of(spec))],
                    "volumes": volumes(target, spec.stage),
                },
            },
        },
    }
