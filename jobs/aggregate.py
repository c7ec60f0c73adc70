"""aggregate: one results row per task × model × setting, from the committed runs of a study.

Reads: every cell's score manifest (+ its generate and train manifests for time and tokens).
Writes: results.csv and results.md.
"""

from __future__ import annotations

import logging
from typing import Any

from labscale.plan.runspec import RunSpec
from labscale.stage import StageContext, stage_main
from labscale.store import ArtifactStore, Manifest
from labscale.telemetry import publish_quietly, study_registry

CODE_VERSION = "1"
STAGE = "aggregate"

LEAD_METRICS = ("rouge1", "rouge2", "rougeL", "rougeLsum", "bleu", "bertscore_f1",
                "accuracy", "f1_macro", "f1_weighted", "valid_rate", "resolvable_rate", "unresolvable_rate")
"""Metric columns shown first (in this order) when present; others follow alphabetically."""


def lineage(store: ArtifactStore, prefixes: list[str]) -> dict[str, Manifest]:
    """The committed manifests of `prefixes` and of every input they were made from (each once)."""
    seen: dict[str, Manifest] = {}
    pending = list(prefixes)
    while pending:
        prefix = pending.pop()
        if prefix not in seen:
            seen[prefix] = store.require(prefix)
            pending.extend(seen[prefix].meta.get("inputs", {}).values())
    return seen


def cell_row(ctx: StageContext, cell: dict[str, Any]) -> dict[str, Any]:
    """One results row: the cell's labels, its scores, its time and token counts, and its $.

    A cell's $ counts its own train/generate/score runs; prep is shared between cells (study total only).
    """
    manifests = {p: ctx.store.require(p) for p in (cell["score"], cell["generate"], cell["train"]) if p}
    score = manifests[cell["score"]].meta["metrics"]
    gen = manifests[cell["generate"]].meta["metrics"]
    row: dict[str, Any] = {"task": cell["task"], "model": cell["model"], "setting": cell["setting"],
                           "n": score["items"]}
    row.update(score["scores"])
    train_seconds = 0.0
    if cell["train"]:
        train = ctx.store.require(cell["train"]).meta["metrics"]
        train_seconds = train["train_seconds"]
        row["train_path"] = train["path"] + (" (budget stop)" if train.get("stopped_by_budget") else "")
    else:
        row["train_path"] = "-"
    row.update({
        "train_s": round(train_seconds, 1),
        "generate_s": round(gen["generation_seconds"], 1),
        "items_per_s": gen["items_per_second"],
        "tokens_in": gen["tokens_in"],
        "tokens_out": gen["tokens_out"],
        "usd": round(sum(m.meta["cost_usd"] for m in manifests.values()), 6),
    })
    return row


def results_frame(rows: list[dict[str, Any]]) -> Any:
    """Rows as a DataFrame with labels first, the usual metrics next, costs last."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    head = ["task", "model", "setting", "n"]
    tail = ["train_path", "train_s", "generate_s", "items_per_s", "tokens_in", "tokens_out", "usd"]
    metrics = [m for m in LEAD_METRICS if m in frame.columns]
    rest = sorted(c for c in frame.columns if c not in {*head, *tail, *metrics})
    return frame[head + metrics + rest + [c for c in tail if c in frame.columns]]


def markdown_tables(frame: Any, title: str) -> str:
    """One table per task (tasks have different metrics), without columns empty for that task."""
    parts = [f"# Results: {title}\n"]
    for task, rows in frame.groupby("task", sort=False):
        rows = rows.dropna(axis=1, how="all").drop(columns=["task"])
        parts.append(f"## {task}\n\n{rows.to_markdown(index=False, floatfmt='.4g')}\n")
    return "\n".join(parts)


def run(ctx: StageContext) -> dict[str, Any]:
    params = ctx.spec.params
    frame = results_frame([cell_row(ctx, cell) for cell in params["cells"]])
    frame.to_csv(ctx.out_dir / "results.csv", index=False)
    (ctx.out_dir / "results.md").write_text(markdown_tables(frame, params["study"]))
    study_cost = sum(m.meta["cost_usd"] for m in lineage(ctx.store, [c["score"] for c in params["cells"]]).values())
    ctx.log.info("%d cells aggregated; estimated compute cost $%.4f", len(frame), study_cost)
    cell_scores = [{**{k: cell[k] for k in ("task", "model", "setting")},
                    "scores": ctx.store.require(cell["score"]).meta["metrics"]["scores"]} for cell in params["cells"]]
    return {"cells": len(frame), "cost_usd": study_cost, "budget_usd": params["budget_usd"], "cell_scores": cell_scores}


def publish_study_metrics(spec: RunSpec, store: ArtifactStore) -> None:
    """Publish the study's totals and latest cell scores — on every invocation, so each scheduled
    rerun refreshes them even when every stage was cached."""
    summary = store.require(spec.prefix).meta["metrics"]
    publish_quietly(logging.getLogger("labscale.aggregate"), study_registry(spec, summary), {"study": spec.study},
                    store, f"metrics/study/{spec.study}.prom", spec.pushgateway)


def main(argv: list[str] | None = None) -> int:
    return stage_main(STAGE, run, argv, after=publish_study_metrics)


if __name__ == "__main__":
    raise SystemExit(main())
