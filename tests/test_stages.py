"""Each stage on tiny data, in-process through the same `run_stage` the entrypoints use."""

from __future__ import annotations

import csv
import errno
import json
import time
from pathlib import Path

import pytest
from conftest import run_cli, small_study

from labscale import cli
from labscale.budget import PlanCosts
from labscale.config import load_study
from labscale.executors.publish import upload_sources, write_specs
from labscale.jobs import aggregate, generate, prep, score, train
from labscale.jsonl import read_jsonl
from labscale.plan import build_plan
from labscale.report.runs import RunMeta
from labscale.stage import StageContext, run_stage, spec_uri
from labscale.store import MANIFEST, ArtifactStore, open_store
from labscale.store.attempts import new_attempt_key, read_attempts
from labscale.training.base import BudgetClock

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


def _prep_plan(tmp_path: Path):
    plan = build_plan(load_study(small_study(tmp_path, settings="  - id: zero-shot\n", test_items=6)))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    return plan, store


def test_a_missing_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path) -> None:
    """`labscale stage generate` after the prep manifest was removed: bad input, not a traceback."""
    plan, store = _prep_plan(tmp_path)
    prep_spec, gen = _runs(plan, "prep")[0], _runs(plan, "generate")[0]
    run_stage(prep_spec, store, prep.run)
    store.backend.delete(f"{prep_spec.prefix}/{MANIFEST}")
    before = store.backend.list("")
    result = run_cli("stage", "generate", "--spec", spec_uri(store, gen), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "FileNotFoundError" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("labscale generate: error:")]
    assert len(errors) == 1, result.stderr
    assert f"its prep input {store.uri}/{prep_spec.prefix} is not committed — fix:" in errors[0]
    assert store.backend.list("") == before  # no attempt record, no log, nothing


def test_every_attempt_records_its_cost_and_the_manifest_sums_them(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed attempt, a killed one (its record stays "running") and the committing one: the manifest's
    cost, time, energy and CO2e are the sums over all three, and so is the study's spent total."""
    plan, store = _prep_plan(tmp_path)
    spec = _runs(plan, "prep")[0]
    assert spec.usd_per_hour > 0

    def fails(ctx: StageContext) -> dict:
        time.sleep(0.3)
        raise RuntimeError("preempted")

    with pytest.raises(RuntimeError, match="preempted"):
        run_stage(spec, store, fails)
    [failed] = read_attempts(store, spec.prefix)
    assert failed.status == "failed" and failed.number == 1 and failed.seconds >= 0.3
    assert failed.compute_usd == pytest.approx(failed.seconds / 3600 * spec.usd_per_hour, rel=1e-3)
    assert PlanCosts(plan, store).check().spent_usd == pytest.approx(failed.compute_usd)  # spent, not committed
    # what kill -9 leaves: a record written at the last heartbeat, still "running"
    killed = failed.model_copy(update={"number": 2, "status": "running", "seconds": 12.5,
                                       "compute_usd": 12.5 / 3600 * spec.usd_per_hour, "energy_kwh": 0.01,
                                       "kg_co2e": 0.005})
    store.backend.put_bytes(new_attempt_key(spec.prefix, 2), killed.model_dump_json().encode())
    clocks = []

    def works(ctx: StageContext) -> dict:
        assert ctx.attempt is not None and ctx.attempt.earlier.attempts == 2
        clocks.append(BudgetClock.of(ctx).spent_usd())
        (ctx.out_dir / "x.txt").write_text("x")
        return {"items": 6, "train_rows": 80, "test_prompt_chars_mean": 100.0}  # the sizes prep measures

    assert run_stage(spec, store, works) is True
    records = read_attempts(store, spec.prefix)
    assert [(r.number, r.status) for r in records] == [(1, "failed"), (2, "running"), (3, "committed")]
    meta = store.require(spec.prefix).meta
    assert meta["attempts"] == 3 and [a["number"] for a in meta["attempt_log"]] == [1, 2, 3]
    assert meta["duration_s"] == pytest.approx(sum(r.seconds for r in records), abs=1e-3)
    assert meta["duration_s"] > 12.5 + 0.3
    assert meta["cost_usd"] == pytest.approx(sum(r.compute_usd for r in records))
    assert meta["energy_kwh"] == pytest.approx(sum(r.energy_kwh for r in records))
    assert meta["kg_co2e"] == pytest.approx(sum(r.kg_co2e for r in records))
    assert RunMeta.of(store.require(spec.prefix)).attempts == 3
    # the budget clock of the third attempt started from what the first two spent
    assert clocks[0] >= failed.compute_usd + killed.compute_usd
    # the study's spent total: the committed run's sums (no double count of its attempts)
    assert PlanCosts(plan, store).check().spent_usd == pytest.approx(meta["cost_usd"])


class ReadOnly:
    """A backend whose every write fails as a read-only file system does."""

    def __init__(self, backend) -> None:
        self.inner, self.uri = backend, backend.uri

    def __getattr__(self, name: str):
        if name in ("put_file", "put_bytes", "delete"):
            def refuse(*args, **kwargs):
                raise OSError(errno.EROFS, "Read-only file system", args[0])
            return refuse
        return getattr(self.inner, name)


def test_a_fully_cached_run_works_on_a_read_only_store(executed, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    plan, store = executed
    read_only = ArtifactStore(ReadOnly(store.backend))
    monkeypatch.setattr(cli, "open_store", lambda uri: read_only)
    assert cli.main(["run", str(plan.study.path)]) == 0
    out, err = capsys.readouterr()
    assert f"0 runs executed, {len(plan.runs)} cached" in err
    assert out.startswith("# Results: small")
