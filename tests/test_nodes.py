"""One table of the pools' nodes (labscale.nodes): every part that needs a node's price, power, RAM or
GPU memory reads it, so the parts cannot disagree (they once held the A100 at 39.4 and 40 GiB)."""

from __future__ import annotations

import typing

import pytest

from labscale.config.study import Study
from labscale.cost import pool_usd_per_hour
from labscale.energy import CPU_LOAD, CPU_TDP_W, GPU_UTILISATION, RAM_W_PER_GB, EnergyMeter
from labscale.k8s.pools import POOLS
from labscale.models.memory import pool_gpu_memory_gib
from labscale.nodes import NODES


def test_every_pool_a_study_names_has_a_node_and_a_kubernetes_pool() -> None:
    pools = set(typing.get_args(Study.model_fields["pool"].annotation))
    assert pools == set(NODES) == set(POOLS)


@pytest.mark.parametrize("pool", sorted(NODES))
def test_price_power_ram_and_gpu_memory_come_from_the_node(pool: str) -> None:
    node = NODES[pool]
    assert pool_usd_per_hour(pool) == node.usd_per_hour and pool_usd_per_hour(pool, 1.5) == 1.5
    assert pool_gpu_memory_gib(pool) == POOLS[pool].gpu_memory_gib == node.gpu_memory_gib
    assert (node.gpu is None) == (node.gpu_memory_gib is None) == (node.gpu_tdp_w == 0)
    # An hour's estimate off the GPU (no NVML here): TDP x utilisation + half the CPU's TDP + the node's RAM, x PUE.
    footprint = EnergyMeter(pool, pue=1.0, ram_gb=node.ram_gb).footprint(3600.0)
    watts = node.gpu_tdp_w * GPU_UTILISATION + CPU_TDP_W * CPU_LOAD + RAM_W_PER_GB * node.ram_gb
    assert footprint.kwh == pytest.approx(watts / 1000.0)
    assert footprint.gpu_method == ("tdp-estimate" if node.gpu else "none")
