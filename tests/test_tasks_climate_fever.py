"""The fact-check task on the real Climate-FEVER JSON Lines (../shared/data), prep → score, with a
majority-class baseline, written as prose, standing in for a model's predictions."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import REPO, run_prep

DATA = REPO.parent / "shared" / "data" / "climate-fever" / "climate-fever.jsonl"
pytestmark = pytest.mark.skipif(not DATA.is_file(), reason="../shared/data/climate-fever is not present")


def test_prep_and_score_on_climate_fever(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: climate-fever
store: file://{tmp_path / 'store'}
tasks:
  - id: climate-fever
    task: fact-check
    source: {{files: {{train: {DATA}}}}}
    columns: {{claim_label: label, evidences: evidence}}
    splits: {{train: "train[:80%]", test: "train[80%:]"}}
models: [{{id: tiny, path: tiny-llama, build: tiny-llama}}]
settings: [{{id: zero-shot}}]
""")
    prepped = run_prep(study, tmp_path)
    test_rows, out = prepped.test_rows, prepped.prep_dir

    # 1,535 claims, 154 of them DISPUTED (not a label of the task): those are dropped
    claims = [json.loads(line) for line in DATA.read_text().splitlines()]
    disputed = sum(c["claim_label"] == "DISPUTED" for c in claims)
    stats = json.loads((out / "stats.json").read_text())["splits"]
    assert stats["train"]["rows"] + stats["test"]["rows"] + sum(s["dropped"] for s in stats.values()) \
        + stats["test"]["removed_overlapping_train"] == len(claims)
    assert sum(s["dropped"] for s in stats.values()) >= disputed
    assert 250 < len(test_rows) < 307
    by_id = {c["claim_id"]: c for c in claims}
    for row in test_rows[:20]:  # each evidence sentence on its own line, as text (no record syntax)
        claim = by_id[row["id"]]
        assert row["input"] == f"Claim: {claim['claim']}\nEvidence: " + "\n".join(
            e["evidence"].strip() for e in claim["evidences"])
        assert row["target"] == claim["claim_label"]

    # Stand in for generate: "The evidence SUPPORTS the claim." for every item, then score it.
    scores = prepped.score([{"id": r["id"], "prediction": "The evidence SUPPORTS the claim.", "target": r["target"]}
                            for r in test_rows], tmp_path)
    share = Counter(r["target"] for r in test_rows)["SUPPORTS"] / len(test_rows)
    assert 0.35 < share < 0.6  # the claim-level label balance of Climate-FEVER
    # majority baseline: accuracy = its share; F1 of SUPPORTS = 2p/(1+p), weighted by p; others 0
    assert scores["accuracy"] == pytest.approx(share)
    assert scores["f1_weighted"] == pytest.approx(share * 2 * share / (1 + share))
    assert scores["recall_macro"] == pytest.approx(1 / 3)
    assert scores["resolvable_rate"] == 1.0 and scores["valid_rate"] == 0.0
    assert prepped.scored_items() == len(test_rows)
