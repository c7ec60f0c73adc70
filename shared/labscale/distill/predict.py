"""The generate stage of a distilled cell: the student classifies the test split in batches.

Writes predictions.jsonl rows shaped like every generate run's (prediction = the label's text, so
score works unchanged; tokens_out 0; latency_s = the item's share of its batch's wall seconds).
"""

from __future__ import annotations

from typing import Any

from labscale.distill.student import classify, load
from labscale.jsonl import read_jsonl, write_jsonl
from labscale.params import StudentParams
from labscale.stage import StageContext


def predict_student(ctx: StageContext) -> dict[str, Any]:
    """Label every test item with the cell's student; returns generate's metrics."""
    params = ctx.params
    assert isinstance(params, StudentParams)
    prep = ctx.fetch("prep")
    model, tokenizer = load(ctx.fetch("student") / "student")
    rows = read_jsonl(prep / "test.jsonl")
    out = classify(model, tokenizer, [r["input"] for r in rows], params.distill.max_length,
                   params.distill.batch_size)
    names = model.config.id2label
    predictions = [{"id": r["id"], "prompt": r["input"], "prediction": names[label], "target": r["target"],
                    "tokens_in": tokens, "tokens_out": 0, "latency_s": round(seconds, 6)}
                   for r, label, seconds, tokens in zip(rows, out.labels, out.seconds, out.tokens)]
    write_jsonl(ctx.out_dir / "predictions.jsonl", predictions)
    seconds = sum(out.seconds)
    ctx.log.info("student labelled %d items in %.3f s", len(rows), seconds)
    return {"items": len(predictions), "generation_seconds": round(seconds, 3),
            "items_per_second": round(len(predictions) / seconds, 3) if seconds else None,
            "tokens_in": sum(out.tokens), "tokens_out": 0, "inputs_cut": 0}
