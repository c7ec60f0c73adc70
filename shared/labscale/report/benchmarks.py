"""The capability-regression table: each open model's lm-eval scores as it is and with each of its
adapters (value ± lm-eval's stderr), and the difference — did adaptation cost general ability?"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from labscale.params import Benchmark
from labscale.report.sections import TableSection
from labscale.report.tables import Table, fmt

HEADERS = ["model", "setting", "trained on", "benchmark", "metric", "n", "base", "adapted", "Δ"]
NOTE = ("lm-evaluation-harness scores, value ± stderr as lm-eval reports it (over the benchmark's items); "
        "Δ = adapted − base ± √(stderr²+stderr²), which ignores that both ran on the same items "
        "(conservative). Groups (e.g. mmlu) show their aggregate; benchmarks.csv has the same rows.")


def comparison_rows(benchmarks: Sequence[Benchmark],
                    results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per adapter × benchmark × metric the study named (not their subtasks): base and adapted
    value ± stderr and Δ. `benchmarks`: the aggregate's entries (setting None = the base model);
    `results`: run prefix → its results.json rows. A model without adapters gets its base rows only."""
    rows = []
    for base in (b for b in benchmarks if b.setting is None):
        adapters = [b for b in benchmarks if b.model == base.model and b.setting is not None]
        for adapter in adapters or [None]:
            adapted = {(r["task"], r["metric"]): r for r in results[adapter.run]} if adapter else {}
            for r in (r for r in results[base.run] if r["top"]):
                a = adapted.get((r["task"], r["metric"]))
                rows.append({"model": base.model, "setting": adapter and adapter.setting,
                             "trained_on": adapter and adapter.trained_on, "benchmark": r["task"],
                             "metric": r["metric"], "n": r["n"], "base": r["value"], "base_stderr": r["stderr"],
                             "adapted": a and a["value"], "adapted_stderr": a and a["stderr"],
                             **_delta(r, a)})
    return rows


def _delta(base: Mapping[str, Any], adapted: Mapping[str, Any] | None) -> dict[str, float | None]:
    if adapted is None:
        return {"delta": None, "delta_stderr": None}
    errors = (base["stderr"], adapted["stderr"])
    spread = math.hypot(*errors) if None not in errors else None
    return {"delta": adapted["value"] - base["value"], "delta_stderr": spread}


def pm(value: float | None, stderr: float | None) -> str | None:
    """'value ± stderr' (None for no value; the value alone without a stderr)."""
    if value is None:
        return None
    return fmt(value) if stderr is None else f"{fmt(value)} ± {fmt(stderr)}"


def benchmark_section(rows: Sequence[Mapping[str, Any]]) -> TableSection:
    """Base vs adapted on the study's lm-eval benchmarks (`comparison_rows`; empty without benchmarks)."""
    cells = [[r["model"], r["setting"], r["trained_on"], r["benchmark"], r["metric"], r["n"],
              pm(r["base"], r["base_stderr"]), pm(r["adapted"], r["adapted_stderr"]),
              pm(r["delta"], r["delta_stderr"])] for r in rows]
    return TableSection("Benchmarks: base vs adapted", Table(HEADERS, cells, left=5), NOTE, "benchmarks")
