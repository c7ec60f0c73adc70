"""Node pools a study runs on: where GPU stages are placed and what each stage requests.

Only `train`, `generate` and `benchmark` need a GPU; prep, score and aggregate run on the cluster's
default (CPU) nodes whatever the pool. Requests are sized for one GPU node of each pool
(labscale.nodes: `t4` = an n1-standard-8 with one T4, 8 vCPU, 30 GB RAM; `a100` = an a2-highgpu-1g,
12 vCPU, 85 GB RAM, one A100 40 GB). The kustomize overlays in k8s/overlays/ carry the same numbers
(a test checks).

A pool's ephemeral storage is split between the pod's two emptyDirs, the model cache (`cache`:
HF_HOME, LABSCALE_CACHE) and scratch (`scratch`: TMPDIR, checkpoints), with what is left for the
container's logs: the two never add up to more than the pod's ephemeral-storage limit, so the
kubelet evicts no pod that stays within its volumes.

A pool may name a Kueue LocalQueue (`queue`, and a WorkloadPriorityClass `priority_class`): its
Jobs are then created suspended and labelled for Kueue, which starts them once admitted. The
built-in pools name none (a cluster without Kueue would never start a suspended Job); `labscale
render/submit --queue` sets one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labscale.nodes import node

GPU_STAGES = ("train", "generate", "benchmark")
GPU_RESOURCE = "nvidia.com/gpu"
POOL_LABEL = "labscale.io/pool"
BACKOFF_LIMIT = 3
TTL_SECONDS_AFTER_FINISHED = 86400


@dataclass(frozen=True)
class Resources:
    """A container's requests and limits (memory limit = the OOM line; `gpus` → nvidia.com/gpu) and
    the sizes of its emptyDirs (`scratch` + `cache` < `ephemeral_storage`; all in Gi)."""

    cpu: str
    memory: str
    memory_limit: str
    ephemeral_storage: str
    scratch: str
    cache: str
    gpus: int = 0

    def manifest(self) -> dict[str, dict[str, str]]:
        requests = {"cpu": self.cpu, "memory": self.memory, "ephemeral-storage": self.ephemeral_storage}
        limits = {"memory": self.memory_limit, "ephemeral-storage": self.ephemeral_storage}
        if self.gpus:
            limits[GPU_RESOURCE] = str(self.gpus)
        return {"requests": requests, "limits": limits}


CPU_STAGE = Resources(cpu="1", memory="4Gi", memory_limit="8Gi", ephemeral_storage="10Gi", scratch="3Gi", cache="6Gi")


@dataclass(frozen=True)
class Pool:
    """A node pool (its node: labscale.nodes): GPU-stage resources and deadlines."""

    name: str
    gpu_stage: Resources = CPU_STAGE
    gpu_deadline_s: int = 2 * 3600
    cpu_deadline_s: int = 2 * 3600
    node_selector: dict[str, str] = field(default_factory=dict)
    queue: str | None = None
    """Kueue LocalQueue the pool's Jobs are submitted to (None: no Kueue)."""
    priority_class: str | None = None
    """Kueue WorkloadPriorityClass of the pool's Jobs (only with a queue)."""

    @property
    def gpu_memory_gib(self) -> float | None:
        """Its node's GPU memory (GiB; None = no GPU)."""
        return node(self.name).gpu_memory_gib

    def on_gpu(self, stage: str) -> bool:
        return self.gpu_memory_gib is not None and stage in GPU_STAGES

    def resources(self, stage: str) -> Resources:
        return self.gpu_stage if self.on_gpu(stage) else CPU_STAGE

    def deadline_s(self, stage: str) -> int:
        """activeDeadlineSeconds: a run past it is stopped (and not retried)."""
        return self.gpu_deadline_s if self.on_gpu(stage) else self.cpu_deadline_s

    def placement(self, stage: str) -> dict[str, Any]:
        """nodeSelector + tolerations of a stage's pod (GPU stages only: the GPU nodes' taint)."""
        if not self.on_gpu(stage):
            return {}
        return {"nodeSelector": dict(self.node_selector),
                "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}]}


POOLS: dict[str, Pool] = {
    "cpu": Pool("cpu"),
    "t4": Pool("t4", Resources(cpu="3", memory="20Gi", memory_limit="24Gi", ephemeral_storage="60Gi",
                              scratch="16Gi", cache="40Gi", gpus=1),
               gpu_deadline_s=24 * 3600, node_selector={POOL_LABEL: "t4"}),
    "a100": Pool("a100", Resources(cpu="8", memory="48Gi", memory_limit="64Gi", ephemeral_storage="100Gi",
                                  scratch="25Gi", cache="70Gi", gpus=1),
                 gpu_deadline_s=8 * 3600, node_selector={POOL_LABEL: "a100"}),
}
