"""score: task metrics over a cell's predictions (suites in `labscale.metrics`).

Reads: generate's predictions.jsonl (each row carries its reference `target`); prep's test.jsonl for
the items' attributes (group, answer type) when the task maps any.
Writes: metrics.json (corpus metrics) + per_item.jsonl (per-item scores, for bootstrap/paired tests).
With a study `judge:` (`judge` in its params), each response is also judged ("what is missing",
labscale.judge): judge_* per item and corpus metrics; an API judge's $ count as the run's api_usd.
"""

from __future__ import annotations

import json
from typing import Any

from labscale.judge import judge_predictions
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.metrics import SUITE_ATTRIBUTES, compute_suite, default_bertscore_model
from labscale.params import ScoreParams
from labscale.stage import StageContext, stage_main

STAGE = "score"


def _item_attributes(ctx: StageContext, suite: str, predictions: list[dict]) -> list[dict[str, str]] | None:
    """Each prediction's item attributes (group, answer type) from prep's test rows, for the suites
    that read attributes; None for the others."""
    if suite not in SUITE_ATTRIBUTES:
        return None
    rows = {r["id"]: r.get("attributes") or {} for r in read_jsonl(ctx.fetch("prep") / "test.jsonl")}
    return [rows.get(p["id"], {}) for p in predictions]


def run(ctx: StageContext) -> dict[str, Any]:
    """Score the cell's predictions with its task's metric suite; returns the corpus metrics."""
    params = ctx.params
    assert isinstance(params, ScoreParams)
    predictions = read_jsonl(ctx.fetch("predictions") / "predictions.jsonl")
    options = params.options
    metrics, per_item = compute_suite(params.suite, [p["prediction"] for p in predictions],
                                      [p["target"] for p in predictions], params.labels or None, options.as_kwargs(),
                                      attributes=_item_attributes(ctx, params.suite, predictions))
    judge_cost: dict[str, Any] = {}
    if params.judge is not None:  # the study's "what is missing" judge (labscale.judge)
        judge_metrics, judged, judge_cost = judge_predictions(ctx, predictions)
        metrics.update(judge_metrics)
        per_item = [{**scores, **fields} for scores, fields in zip(per_item, judged)]
    write_jsonl(ctx.out_dir / "per_item.jsonl", ({"id": p["id"], **scores} for p, scores in zip(predictions, per_item)))
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    ctx.log.info("%s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    result: dict[str, Any] = {"items": len(predictions), "scores": metrics}
    if options.bertscore:
        result["bertscore_backbone"] = options.bertscore_model or default_bertscore_model()
    if judge_cost:  # an API judge's $ count in the cell's cost
        result.update(judge_cost, api_usd=judge_cost["judge_usd"])
    return result


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.score --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
