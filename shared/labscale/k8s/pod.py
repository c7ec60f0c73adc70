"""The pod a stage runs in, shared by Jobs and Argo templates.

Non-root (uid 10001, as in the images), read-only root filesystem, no capabilities, seccomp
RuntimeDefault; writable scratch (TMPDIR, HOME) and model cache (HF_HOME, LABSCALE_CACHE) are
emptyDirs. Study-wide settings come from the `labscale-config` ConfigMap, credentials from the
`labscale-credentials` Secret, both by envFrom.
"""

from __future__ import annotations

from typing import Any

from labscale.k8s.target import CONFIG_MAP, CONTAINER, SECRET, ClusterTarget

UID = 10001
SCRATCH = "/tmp"
CACHE = "/cache"
ENV = {"HOME": SCRATCH, "TMPDIR": SCRATCH, "HF_HOME": f"{CACHE}/hf", "LABSCALE_CACHE": f"{CACHE}/labscale",
       "PYTHONUNBUFFERED": "1"}

POD_SECURITY_CONTEXT: dict[str, Any] = {
    "runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID, "fsGroup": UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT: dict[str, Any] = {
    "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
}


def volumes(target: ClusterTarget, stage: str) -> list[dict[str, Any]]:
    """Scratch and cache emptyDirs, sized within the stage's ephemeral-storage request."""
    size = target.pool.resources(stage).ephemeral_storage
    return [{"name": "scratch", "emptyDir": {"sizeLimit": size}},
            {"name": "cache", "emptyDir": {"sizeLimit": size}}]


def container(target: ClusterTarget, stage: str, spec_uri: str) -> dict[str, Any]:
    """The stage container: its image's entrypoint with `--spec URI`."""
    return {
        "name": CONTAINER,
        "image": target.image(stage),
        "args": ["--spec", spec_uri],
        "env": [{"name": k, "value": v} for k, v in ENV.items()],
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}, {"secretRef": {"name": SECRET}}],
        "resources": target.pool.resources(stage).manifest(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, {"name": "cache", "mountPath": CACHE}],
    }
