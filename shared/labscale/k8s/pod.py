"""The pod a stage runs in, shared by Jobs and Argo templates.

Non-root (uid 10001, as in the images), read-only root filesystem, no capabilities, seccomp
RuntimeDefault; writable scratch (TMPDIR, HOME) and model cache (HF_HOME, LABSCALE_CACHE) are
emptyDirs whose sizes add up to less than the pod's ephemeral-storage limit. Study-wide settings
come from the `labscale-config` ConfigMap (envFrom).

Credentials come from the `labscale-credentials` Secret key by key (secretKeyRef, optional: a key
the Secret lacks is simply unset): every pod gets the store's (`STORE_KEYS`), only a run that calls
an API model — an API model's generate, benchmark or fine-tuning, an API judge in score or DPO —
gets the API key (`API_KEYS`), and only a run that logs to W&B / MLflow (train, aggregate) gets the
tracker's
(`TRACKING_KEYS`). No pod sees a key it has no use for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from labscale.k8s.target import CONFIG_MAP, CONTAINER, SECRET, ClusterTarget
from labscale.params import AggregateParams, ModelParams
from labscale.spec import RunSpec

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
STORE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL")
API_KEYS = ("OPENAI_API_KEY",)
TRACKING_KEYS = ("WANDB_API_KEY", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


def _has_api_model(value: Any) -> bool:
    if isinstance(value, ModelParams):
        return value.is_api
    if isinstance(value, BaseModel):
        return any(_has_api_model(getattr(value, name)) for name in type(value).model_fields)
    if isinstance(value, dict):
        return any(_has_api_model(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_api_model(v) for v in value)
    return False


def calls_api(spec: RunSpec) -> bool:
    """Does the run call an API model (its own model, a judge, a teacher)?"""
    return spec.on_api or spec.runtime.api is not None or spec.runtime.judge is not None or _has_api_model(spec.params)


@dataclass(frozen=True)
class Credentials:
    """Which groups of `labscale-credentials` keys a pod gets (the store's always)."""

    api: bool = False
    tracking: bool = False

    @classmethod
    def of(cls, spec: RunSpec) -> Credentials:
        logs = spec.runtime.tracking is not None or (isinstance(spec.params, AggregateParams)
                                                     and spec.params.tracking is not None)
        return cls(api=calls_api(spec), tracking=logs)

    @classmethod
    def of_all(cls, specs: Sequence[RunSpec]) -> Credentials:
        """What a pod running all of `specs` needs: the union of theirs."""
        each = [cls.of(spec) for spec in specs]
        return cls(api=any(c.api for c in each), tracking=any(c.tracking for c in each))

    @property
    def keys(self) -> tuple[str, ...]:
        return STORE_KEYS + (API_KEYS if self.api else ()) + (TRACKING_KEYS if self.tracking else ())

    def env(self) -> list[dict[str, Any]]:
        return [{"name": key, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": key, "optional": True}}}
                for key in self.keys]


def volumes(target: ClusterTarget, stage: str) -> list[dict[str, Any]]:
    """Scratch and cache emptyDirs, together within the stage's ephemeral-storage limit."""
    resources = target.pool.resources(stage)
    return [{"name": "scratch", "emptyDir": {"sizeLimit": resources.scratch}},
            {"name": "cache", "emptyDir": {"sizeLimit": resources.cache}}]


def container(target: ClusterTarget, stage: str, spec_uris: Sequence[str], credentials: Credentials) -> dict[str, Any]:
    """The stage container: its image's entrypoint with `--spec URI` per run it runs (several for a
    generate group: one process, one engine), and the credentials it needs."""
    return {
        "name": CONTAINER,
        "image": target.image(stage),
        "imagePullPolicy": target.pull_policy(stage),
        "args": [arg for uri in spec_uris for arg in ("--spec", uri)],
        "env": [{"name": k, "value": v} for k, v in ENV.items()] + credentials.env(),
        "envFrom": [{"configMapRef": {"name": CONFIG_MAP}}],
        "resources": target.pool.resources(stage).manifest(),
        "securityContext": CONTAINER_SECURITY_CONTEXT,
        "volumeMounts": [{"name": "scratch", "mountPath": SCRATCH}, {"name": "cache", "mountPath": CACHE}],
    }
