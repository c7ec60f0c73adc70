"""Energy and carbon: the documented formulas, the NVML integration, and the numbers in manifests."""

from __future__ import annotations

import sys
import time
import types

import pytest

from labscale import energy
from labscale.energy import EnergyMeter


@pytest.fixture(autouse=True)
def fixed_ram(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(energy, "total_ram_gb", lambda: 16.0)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # no NVML unless a test provides one


def test_cpu_pool_follows_codecarbon_constant_mode() -> None:
    fp = EnergyMeter("cpu", pue=1.5, grid_gco2_per_kwh=400.0).start().footprint(3600.0)
    device_kwh = 85 * 0.5 / 1000 + 3 / 8 * 16 / 1000  # CPU at half TDP + 3 W per 8 GB, for one hour
    assert fp.gpu_method == "none" and fp.device_kwh == pytest.approx(device_kwh)
    assert fp.kwh == pytest.approx(device_kwh * 1.5)  # at the wall: × PUE, as CodeCarbon reports it
    assert fp.kg_co2e == pytest.approx(fp.kwh * 400 / 1000) == pytest.approx(0.0485 * 1.5 * 0.4)


def test_energy_is_reported_at_the_wall_with_pue_and_carbon_follows_it() -> None:
    # a100 pool, no NVML, 2 h: GPU 400 W × 0.7, CPU 42.5 W, RAM 6 W → 328.5 W × 2 h = 0.657 kWh at the devices
    plain = EnergyMeter("a100", pue=1.0, grid_gco2_per_kwh=500.0).start().footprint(7200.0)
    wall = EnergyMeter("a100", pue=1.2, grid_gco2_per_kwh=500.0).start().footprint(7200.0)
    assert plain.kwh == pytest.approx(0.657) and wall.kwh == pytest.approx(0.657 * 1.2)
    assert wall.kg_co2e == pytest.approx(0.657 * 1.2 * 0.5) and wall.kg_co2e / wall.kwh == pytest.approx(0.5)


def test_gpu_pool_without_nvml_estimates_from_tdp() -> None:
    t4 = EnergyMeter("t4", pue=1.0, grid_gco2_per_kwh=0.0).start().footprint(1800.0)
    cpu = EnergyMeter("cpu", pue=1.0, grid_gco2_per_kwh=0.0).start().footprint(1800.0)
    assert t4.gpu_method == "tdp-estimate" and t4.kg_co2e == 0.0
    assert t4.kwh - cpu.kwh == pytest.approx(70 * 0.7 * 0.5 / 1000)


def test_nvml_power_is_sampled_and_integrated(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the NVML library (no GPU here): two boards drawing 100 W and 50 W.
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: i, nvmlDeviceGetPowerUsage=lambda h: (100_000, 50_000)[h])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(energy, "SAMPLE_S", 0.02)
    meter = EnergyMeter("a100", pue=1.0, grid_gco2_per_kwh=0.0).start()
    time.sleep(0.5)
    fp = meter.footprint(0.5)
    gpu_kwh = fp.kwh - EnergyMeter("cpu", 1.0, 0.0).start().footprint(0.5).kwh
    assert fp.gpu_method == "nvml"
    assert gpu_kwh * 3.6e6 == pytest.approx(150 * 0.5, rel=0.2)  # ~75 J, not the 400 W TDP estimate
