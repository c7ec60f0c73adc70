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
    expected_kwh = 85 * 0.5 / 1000 + 3 / 8 * 16 / 1000  # CPU at half TDP + 3 W per 8 GB, for one hour
    assert fp.kwh == pytest.approx(expected_kwh) and fp.gpu_method == "none"
    assert fp.kg_co2e == pytest.approx(expected_kwh * 1.5 * 400 / 1000)


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
