"""Each stage on tiny data, in-process through the same `run_stage` the entrypoints use."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import small_study

from labscale.config import load_study
from labscale.executors.publish import upload_sources, write_specs
from labscale.jobs import aggregate, generate, prep, score, train
from labscale.jsonl import read_jsonl
from labscale.plan import build_plan
from labscale.stage import run_stage
from labscale.store import open_store

MODULES = {"prep": prep, "train": train, "generate": generate, "score": score, "aggregate": aggregate}

SETTINGS = """\
  - id: zero-shot
  - id: two-shot
    shots: 2
  - id: ft
    finetune: {r: 8, learning_rate: 0.003, max_steps: 4, batch_size: 4, grad_accum: 1, warmup_steps: 0,
               gradient_checkpointing: false, save_steps: 2, max_length: 256}
"""


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    tmp = tmp_path_factory.mktemp("stages")
    plan = build_plan(load_study(small_study(tmp, settings=SETTINGS, tasks=("claims", "notes"), test_items=6)))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    for spec in plan.runs:
        assert run_stage(spec, store, MODULES[spec.stage].run) is True
    return plan, store


def _runs(plan, stage: str) -> list:
    return [r for r in plan.runs if r.stage == stage]


def test_prep_splits_formats_and_is_deterministic(executed, tmp_path: Path) -> None:
    plan, store = executed
    for spec in _runs(plan, "prep"):
        out = tmp_path / spec.key
        manifest = store.fetch(spec.prefix, out)
        train_rows, test_rows = read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl")
        assert len(test_rows) == 6 and 50 < len(train_rows) <= 90
        assert not {r["input"] for r in train_rows} & {r["input"] for r in test_rows}
        assert all(r["prompt"].startswith("### Instruction:") and r["prompt"].endswith("### Response:\n") for r in test_rows)
        assert all(r["input"] in r["prompt"] and r["completion"] == r["target"] for r in train_rows)
        assert len(read_jsonl(out / "fewshot.jsonl")) == 16
        assert manifest.meta["metrics"]["test_rows"] == 6
        # same spec, fresh store: byte-identical outputs
        other = open_store(f"file://{tmp_path / 'again'}")
        for ref in spec.params.source.files.values():
            store.fetch(ref.prefix, tmp_path / ref.prefix)
            other.commit(ref.prefix, tmp_path / ref.prefix)
        run_stage(spec, other, prep.run)
        assert other.manifest(spec.prefix).files == manifest.files


def test_train_commits_an_adapter_and_checkpoints(executed, tmp_path: Path) -> None:
    plan, store = executed
    for spec in _runs(plan, "train"):
        manifest = store.require(spec.prefix)
        assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "trainer_state.json"} <= set(manifest.files)
        metrics = manifest.meta["metrics"]
        assert metrics["path"] == "lora-cpu" and metrics["steps"] == 4
        assert store.committed_children(f"{spec.prefix}/checkpoints") == [f"{spec.prefix}/checkpoints/00000004"]
        config = json.loads(store.backend.get_bytes(f"{spec.prefix}/adapter/adapter_config.json"))
        assert config["r"] == 8 and "lm_head" not in config["target_modules"]


def test_generate_writes_every_item_in_shards(executed) -> None:
    plan, store = executed
    for spec in _runs(plan, "generate"):
        manifest = store.require(spec.prefix)
        assert manifest.meta["metrics"]["items"] == 6
        assert len(store.committed_children(f"{spec.prefix}/shards")) == 2  # 6 items, shards of 4
        preds = [json.loads(line) for line in store.backend.get_bytes(f"{spec.prefix}/predictions.jsonl").splitlines()]
        assert [p["id"] for p in preds] == [p["id"] for p in preds if p["tokens_in"] > 0]
        assert all(0 < p["tokens_out"] <= spec.params.max_new_tokens for p in preds)
        shots = spec.params.shots
        assert all(p["prompt"].count("### Input:") == shots + 1 for p in preds)


def test_score_and_aggregate_tables(executed, tmp_path: Path) -> None:
    plan, store = executed
    for spec in _runs(plan, "score"):
        scores = store.require(spec.prefix).meta["metrics"]["scores"]
        expected = {"accuracy", "f1_macro", "valid_rate"} if spec.params.suite == "classification" else {"rouge1", "rougeL", "bleu", "bertscore_f1"}
        assert expected <= set(scores)
    agg = plan.aggregate
    store.fetch(agg.prefix, tmp_path / "agg")
    rows = list(csv.DictReader(open(tmp_path / "agg" / "results.csv")))
    assert [(r["task"], r["setting"]) for r in rows] == [(t, s) for t in ("claims", "notes") for s in ("zero-shot", "two-shot", "ft")]
    assert all(r["n"] == "6" for r in rows)
    md = (tmp_path / "agg" / "results.md").read_text()
    assert "## claims" in md and "## notes" in md and "| tiny" in md


def test_a_committed_stage_is_skipped(executed) -> None:
    plan, store = executed
    assert all(run_stage(spec, store, MODULES[spec.stage].run) is False for spec in plan.runs)
