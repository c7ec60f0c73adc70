"""The capability-regression table: each open model's lm-eval scores as it is and with each of its
adapters (value ± lm-eval's stderr), and the difference — did adaptation cost general ability?"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from labscale.report.tables import fmt

HEADERS = ["model", "setting", "trained on", "benchmark", "metric", "n", "base", "adapted", "Δ"]
NOTE = ("lm-evaluation-harness scores, value ± stderr as lm-eval reports it (over the benchmark's items); "
        "Δ = adapted − base ± √(stderr²+stderr²), which ignores that both ran on the same items "
        "(conservative). Groups (e.g. mmlu) show their aggregate; benchmarks.csv has the same rows.")


def comparison_rows(benchmarks: Sequence[Mapping[str, Any]],
                    results: Mapping[str, Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per adapter × benchmark × metric the study named (not their subtasks): base and adapted
    value ± stderr and Δ. `benchmarks`: the aggregate's entries (model, run, setting, trained_on;
    setting None = the base model); `results`: run prefix → its results.json rows. A model without
    adapters gets its base rows only."""
    rows = []
    for base in (b for b in benchmarks if b["setting"] is None):
        adapters = [b for b in benchmarks if b["model"] == base["model"] and b["setting"] is not None]
        for adapter in adapters or [None]:
            adapted = {(r["task"], r["metric"]): r for r in results[adapter["run"]]} if adapter else {}
            for r in (r for r in results[base["run"]] if r["top"]):
                a = adapted.get((r["task"], r["metric"]))
                rows.append({"model": base["model"], "setting": adapter and adapter["setting"],
                             "trained_on": adapter and adapter["trained_on"], "benchmark": r["task"],
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


def pm(value: float | None, stderr: float | None) -> str:
    """'value ± stderr' ('—' for no value; the value alone without a stderr)."""
    if value is None:
        return fmt(None)
    return fmt(value) if stderr is None else f"{fmt(value)} ± {fmt(stderr)}"


def table_cells(rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """The comparison rows as table cells (see HEADERS)."""
    return [[r["model"], r["setting"] or "—", r["trained_on"] or "—", r["benchmark"], r["metric"], r["n"],
             pm(r["base"], r["base_stderr"]), pm(r["adapted"], r["adapted_stderr"]),
             pm(r["delta"], r["delta_stderr"])] for r in rows]


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The results.md section ('' for a study without benchmarks)."""
    if not rows:
        return ""
    import pandas as pd

    table = pd.DataFrame(table_cells(rows), columns=HEADERS).to_markdown(index=False, disable_numparse=True)
    return f"\n## Benchmarks: base vs adapted\n\n{table}\n\n{NOTE}\n"
