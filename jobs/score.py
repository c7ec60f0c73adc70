"""score: task metrics over a cell's predictions (suites in `labscale.metrics`).

Reads: generate's predictions.jsonl (each row carries its reference `target`).
Writes: metrics.json (corpus metrics) + per_item.jsonl (per-item scores, for bootstrap/paired tests).
"""

from __future__ import annotations

import json
from typing import Any

from labscale.jsonl import read_jsonl, write_jsonl
from labscale.stage import StageContext, stage_main

CODE_VERSION = "1"
STAGE = "score"


def run(ctx: StageContext) -> dict[str, Any]:
    """Score the cell's predictions with its task's metric suite; returns the corpus metrics."""
    from labscale.metrics import compute_suite, default_bertscore_model

    params = ctx.spec.params
    predictions = read_jsonl(ctx.fetch("predictions") / "predictions.jsonl")
    options = params["options"]
    metrics, per_item = compute_suite(params["suite"], [p["prediction"] for p in predictions],
                                      [p["target"] for p in predictions], params["labels"] or None, options)
    write_jsonl(ctx.out_dir / "per_item.jsonl", ({"id": p["id"], **scores} for p, scores in zip(predictions, per_item)))
    (ctx.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    ctx.log.info("%s", ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    result: dict[str, Any] = {"items": len(predictions), "scores": metrics}
    if options.get("bertscore"):
        result["bertscore_backbone"] = options.get("bertscore_model") or default_bertscore_model()
    return result


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.score --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
