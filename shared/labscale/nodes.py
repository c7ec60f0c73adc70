"""The node of each pool a study can name (`pool: cpu | t4 | a100`): one home for what one node is,
costs, draws and holds. Prices (labscale.cost), energy estimates (labscale.energy), memory-planned
batches (labscale.models.memory) and the Kubernetes pools (labscale.k8s.pools) all read it.

One GPU node of each pool, on GCP's on-demand list prices (2026): `cpu` an e2-standard-4 (4 vCPU,
16 GB), `t4` an n1-standard-8 with one T4 (8 vCPU, 30 GB), `a100` an a2-highgpu-1g (12 vCPU, 85 GB,
one A100 40 GB). GPU memory is the card's as nvidia-smi lists it (a T4 15360 MiB, an A100 40 GB
40960 MiB); the planners keep the CUDA context and an allocator share free of it, so the ~0.6 GiB
less that CUDA reports as usable is within what they hold back. TDP is the card's board power.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Node:
    """One node of a pool."""

    machine: str
    usd_per_hour: float
    """The default hourly price (a study's `usd_per_hour` overrides it)."""
    vcpus: int
    ram_gb: float
    gpu: str | None = None
    gpu_memory_gib: float | None = None
    """None: the node has no GPU."""
    gpu_tdp_w: float = 0.0


NODES: dict[str, Node] = {
    "cpu": Node("e2-standard-4", usd_per_hour=0.19, vcpus=4, ram_gb=16.0),
    "t4": Node("n1-standard-8", usd_per_hour=0.35, vcpus=8, ram_gb=30.0, gpu="T4", gpu_memory_gib=15.0,
               gpu_tdp_w=70.0),
    "a100": Node("a2-highgpu-1g", usd_per_hour=3.67, vcpus=12, ram_gb=85.0, gpu="A100 40 GB", gpu_memory_gib=40.0,
                 gpu_tdp_w=400.0),
}


def node(pool: str) -> Node:
    """The node of `pool` (KeyError: the study's schema admits only the pools above)."""
    return NODES[pool]
