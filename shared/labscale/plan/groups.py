"""Execution units: the runs of a plan in the order they run, with the vLLM generate runs of one model
grouped so that one process (one started engine) answers them all.

Starting vLLM and loading a model's weights costs tens of seconds (minutes for a 7B model on a cold
node); a grid answers one model in many cells. Generate runs on the vLLM engine that share the base
model, pool and engine runtime form one group: one process runs them one after the other
(`labscale stage generate --spec A --spec B …`), each still its own run with its own key, artifacts
and manifest: a committed one is skipped, a failing one fails alone.

The order is the plan's dependency order, stage by stage where the dependencies allow (every train
run before the generate runs that do not need it), so that a group is whole when its first member is
due: the members whose inputs are then committed (or run earlier) go together.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Sequence

from labscale.params import OpenGenerateParams
from labscale.spec import STAGES, RunSpec


def engine_group(spec: RunSpec) -> Hashable | None:
    """What the runs that may share one process have in common (None: the run goes alone)."""
    params = spec.params
    if spec.stage != "generate" or not isinstance(params, OpenGenerateParams) or params.engine != "vllm":
        return None
    return params.model, spec.pool, spec.runtime.engine


def stage_order(runs: Sequence[RunSpec]) -> list[RunSpec]:
    """The runs in dependency order, earlier stages first wherever the dependencies allow (a stable
    topological sort by STAGES' order, then plan order)."""
    position = {run.prefix: i for i, run in enumerate(runs)}
    waiting = {run.prefix: {p for p in run.inputs.values() if p in position} for run in runs}
    needed_by: dict[str, list[str]] = {prefix: [] for prefix in position}
    for prefix, inputs in waiting.items():
        for needed in inputs:
            needed_by[needed].append(prefix)
    rank = {stage: i for i, stage in enumerate(STAGES)}

    def entry(prefix: str) -> tuple[int, int, str]:
        return rank[runs[position[prefix]].stage], position[prefix], prefix

    ready = [entry(prefix) for prefix, inputs in waiting.items() if not inputs]
    heapq.heapify(ready)
    ordered: list[RunSpec] = []
    while ready:
        *_, prefix = heapq.heappop(ready)
        ordered.append(runs[position[prefix]])
        for after in needed_by[prefix]:
            waiting[after].discard(prefix)
            if not waiting[after]:
                heapq.heappush(ready, entry(after))
    if len(ordered) != len(runs):
        raise ValueError("the plan's runs have a dependency cycle")
    return ordered


def execution_units(runs: Sequence[RunSpec]) -> list[list[RunSpec]]:
    """The runs as the units that run them, in order: a vLLM generate run together with the other
    members of its group whose inputs are done by then; every other run alone."""
    ordered = stage_order(runs)
    planned = {run.prefix for run in ordered}
    done: set[str] = set()
    taken: set[str] = set()
    units: list[list[RunSpec]] = []
    for run in ordered:
        if run.prefix in taken:
            continue
        group = engine_group(run)
        unit = [run]
        if group is not None:
            unit += [other for other in ordered if other.prefix not in taken and other is not run
                     and engine_group(other) == group
                     and all(p in done for p in other.inputs.values() if p in planned)]
        taken.update(r.prefix for r in unit)
        done.update(r.prefix for r in unit)
        units.append(unit)
    return units
