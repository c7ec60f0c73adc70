"""Energy and carbon of a stage run.

GPU: measured with NVML (`nvidia-ml-py`) when a GPU is visible — board power sampled every
`SAMPLE_S` seconds and integrated; otherwise, on a GPU pool, estimated as TDP × utilisation
(the pool's node's TDP, labscale.nodes, × `GPU_UTILISATION`). CPU and RAM follow CodeCarbon's
conventions for machines whose CPU power cannot be read: CPU = 50 % of its TDP (CodeCarbon's
fallback TDP, 85 W, unless the study sets one) and RAM = 3 W per 8 GB. Energy is reported at the
wall, as CodeCarbon does: the devices' kWh × the data centre's PUE (cooling, power delivery); carbon
= that kWh × the grid's intensity (gCO2e/kWh). Both are set per study (defaults: PUE 1.2, the
world-average 475 g/kWh CodeCarbon falls back to).
CodeCarbon itself is not used: it looks its grid data up online and starts trackers we can't
test here; the formulas are the same and stated above.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from labscale.nodes import node

GPU_UTILISATION = 0.7
CPU_TDP_W = 85.0
DEFAULT_PUE = 1.2
DEFAULT_GRID_GCO2_PER_KWH = 475.0
CPU_LOAD = 0.5
RAM_W_PER_GB = 3.0 / 8.0
SAMPLE_S = 1.0

log = logging.getLogger("labscale.energy")


@dataclass(frozen=True)
class Footprint:
    kwh: float
    """Energy at the wall: the devices' (GPU + CPU + RAM) kWh × PUE (CodeCarbon's convention)."""
    kg_co2e: float
    """`kwh` × the grid's carbon intensity."""
    gpu_method: str
    """nvml (measured), tdp-estimate, or none (a CPU pool)."""
    pue: float = 1.0

    @property
    def device_kwh(self) -> float:
        """What the GPU, CPU and RAM drew themselves (before the data centre's overhead)."""
        return self.kwh / self.pue


def total_ram_gb() -> float:
    """The memory this process may use: the machine's, or its container's cgroup limit if lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        limit = int(open("/sys/fs/cgroup/memory.max").read().strip())
    except (OSError, ValueError):  # no cgroup v2 limit ("max") or not Linux
        limit = physical
    return min(physical, limit) / 1e9


class _NvmlSampler:
    """Integrates the summed board power of all visible GPUs on a background thread."""

    def __init__(self, nvml: Any):
        self.nvml = nvml
        self.handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml.nvmlDeviceGetCount())]
        self.joules = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="nvml-power")
        self._thread.start()

    def _watts(self) -> float:
        return sum(self.nvml.nvmlDeviceGetPowerUsage(h) for h in self.handles) / 1000.0  # milliwatts

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(SAMPLE_S):
            now = time.monotonic()
            self.joules += self._watts() * (now - last)
            last = now

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self.nvml.nvmlShutdown()
        return self.joules


def _start_nvml() -> _NvmlSampler | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            pynvml.nvmlShutdown()
            return None
        return _NvmlSampler(pynvml)
    except Exception:  # noqa: BLE001 — no library, no driver or no GPU: estimate instead
        return None


class EnergyMeter:
    """Measure (or estimate) a run's energy: `start()` before the work, `footprint(seconds)` after."""

    def __init__(self, pool: str, pue: float = DEFAULT_PUE, grid_gco2_per_kwh: float = DEFAULT_GRID_GCO2_PER_KWH,
                 cpu_tdp_w: float = CPU_TDP_W, ram_gb: float | None = None):
        """`ram_gb`: the memory counted (None: this process's, `total_ram_gb()`, for a running stage;
        an estimate made elsewhere passes the pool node's, `labscale.nodes`)."""
        self.pool, self.pue, self.intensity, self.cpu_tdp_w = pool, pue, grid_gco2_per_kwh, cpu_tdp_w
        self.ram_gb = ram_gb
        self._sampler: _NvmlSampler | None = None

    def start(self) -> EnergyMeter:
        self._sampler = _start_nvml()
        return self

    def footprint(self, seconds: float, stop: bool = True) -> Footprint:
        """kWh (at the wall) and kg CO2e of `seconds` of this run; `stop=False` reads it so far and keeps
        measuring."""
        hours = seconds / 3600.0
        if self._sampler is not None:
            gpu_kwh, method = (self._sampler.stop() if stop else self._sampler.joules) / 3.6e6, "nvml"
            if stop:
                self._sampler = None
        elif node(self.pool).gpu_tdp_w:
            gpu_kwh, method = node(self.pool).gpu_tdp_w * GPU_UTILISATION * hours / 1000.0, "tdp-estimate"
        else:
            gpu_kwh, method = 0.0, "none"
        cpu_kwh = self.cpu_tdp_w * CPU_LOAD * hours / 1000.0
        ram_kwh = RAM_W_PER_GB * (total_ram_gb() if self.ram_gb is None else self.ram_gb) * hours / 1000.0
        wall_kwh = (gpu_kwh + cpu_kwh + ram_kwh) * self.pue
        return Footprint(wall_kwh, wall_kwh * self.intensity / 1000.0, method, self.pue)
