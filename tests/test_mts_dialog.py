"""The summarization task on the real MTS-Dialog CSVs (../shared/data), prep → score, with a
lead-sentences baseline standing in for a model's predictions."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO, run_prep

MTS = REPO.parent / "shared" / "data" / "mts-dialog"
pytestmark = pytest.mark.skipif(not MTS.is_dir(), reason="../shared/data/mts-dialog is not present")


def lead_baseline(dialogue: str, sentences: int = 2) -> str:
    """The first patient/doctor sentences without speaker tags: a trivial extractive summary."""
    text = re.sub(r"(Doctor|Patient|Guest_family|Guest_clinician)\s*:", " ", dialogue)
    parts = re.split(r"(?<=[.?!])\s+", " ".join(text.split()))
    return " ".join(parts[:sentences])


def test_prep_and_score_on_mts_dialog(tmp_path: Path) -> None:
    study = tmp_path / "study.yaml"
    study.write_text(f"""\
name: mts
store: file://{tmp_path / 'store'}
tasks:
  - id: mts
    task: clinical-summary
    source:
      files:
        train: {MTS / 'MTS-Dialog-TrainingSet.csv'}
        validation: {MTS / 'MTS-Dialog-ValidationSet.csv'}
        test: {MTS / 'MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv'}
    splits: {{train: train, val: validation, test: test}}
models: [{{id: tiny, path: tiny-llama, build: tiny-llama}}]
settings: [{{id: zero-shot}}]
""")
    prepped = run_prep(study, tmp_path)
    test_rows = prepped.test_rows
    stats = prepped.prep_metrics()
    assert stats["train_rows"] > 1100 and stats["val_rows"] > 90 and 190 <= stats["test_rows"] <= 200
    assert all(r["input"].startswith("Section: ") and "Dialogue:\n" in r["input"] for r in test_rows)

    # Stand in for generate: commit lead-2 predictions where generate would, then score them.
    scores = prepped.score([{"id": r["id"], "prediction": lead_baseline(r["input"].split("Dialogue:\n", 1)[1]),
                             "target": r["target"]} for r in test_rows], tmp_path)
    # A lead baseline on MTS-Dialog: some overlap, far from perfect.
    assert 0.05 < scores["rouge1"] < 0.5 and 0 < scores["rougeL"] <= scores["rouge1"]
    assert 0 < scores["bleu"] < 30 and 0.2 < scores["bertscore_f1"] < 0.9
    assert prepped.scored_items() == len(test_rows)
