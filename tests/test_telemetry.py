"""Stage-run metrics: names pass promtool, they reach a real Pushgateway or a textfile in the store,
failures are reported too, and an unreachable gateway costs one warning and nothing else."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import require_binaries
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from promservers import Pushgateway, binaries_missing, free_port

from labscale.config.study import ReportReference
from labscale.params import AggregateParams, ModelParams, OpenGenerateParams, ReportParams, ScoreParams, StageParams
from labscale.spec import RunSpec
from labscale.stage import StageContext, run_stage
from labscale.store import ArtifactStore, open_store
from labscale.telemetry import StageOutcome, stage_registry, study_registry

SCORE_RESULT = {"items": 12, "scores": {"accuracy": 0.75, "f1_macro": 0.5}}
GENERATE_RESULT = {"items": 12, "tokens_in": 900, "tokens_out": 120, "generation_seconds": 2.0}


PARAMS: dict[str, StageParams] = {
    "score": ScoreParams(suite="classification"),
    "generate": OpenGenerateParams(model=ModelParams(path="m"), seed=0, max_new_tokens=8, batch_size=1, shard_size=1),
    "aggregate": AggregateParams(study="unit", pool="t4", cells=[],
                                 report=ReportParams(reference=ReportReference(model="tiny", setting="zero-shot"))),
}


def _spec(stage: str = "score", key: str = "0123456789abcdef", gateway: str | None = None) -> RunSpec:
    return RunSpec(stage=stage, key=key, study="unit", labels={"task": "claims", "model": "tiny", "setting": "zero-shot"},
                   params=PARAMS[stage], store="file://unused", pool="t4", usd_per_hour=0.36, pushgateway=gateway)


def _samples(text: str) -> dict[str, list[Any]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ArtifactStore:
    monkeypatch.delenv("LABSCALE_PUSHGATEWAY", raising=False)
    return open_store(f"file://{tmp_path / 'store'}")


def _work(result: dict[str, Any]):
    def work(ctx: StageContext) -> dict[str, Any]:
        (ctx.out_dir / "out.txt").write_text("done")
        return result
    return work


def test_metric_names_and_labels_follow_prometheus_conventions() -> None:
    require_binaries(binaries_missing(), "apt-get install prometheus (make test does)")
    registries = [
        stage_registry(_spec("generate"), StageOutcome(True, 3.5, 0.00035, metrics=GENERATE_RESULT)),
        stage_registry(_spec(), StageOutcome(True, 1.0, 0.0001, 0.002, 0.001, SCORE_RESULT)),
        study_registry(_spec("aggregate"), {"cost_usd": 0.2, "budget_usd": 25.0, "cell_scores": [
            {"task": "claims", "model": "tiny", "setting": "zero-shot", "scores": {"accuracy": 0.5}}]}),
    ]
    for registry in registries:  # each is one push: check them one at a time
        exposition = generate_latest(registry)
        check = subprocess.run(["promtool", "check", "metrics"], input=exposition, capture_output=True)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), check.stdout + check.stderr
    samples: dict[str, list[Any]] = {}
    for registry in registries:
        for name, found in _samples(generate_latest(registry).decode()).items():
            samples.setdefault(name, []).extend(found)
    (tps,) = samples["labscale_stage_output_tokens_per_second"]
    assert tps.value == 60.0 and tps.labels == {"study": "unit", "task": "claims", "model": "tiny", "setting": "zero-shot",
                                                "stage": "generate", "pool": "t4", "run_key": "0123456789abcdef"}
    assert {s.labels["metric"]: s.value for s in samples["labscale_score"]} == {"accuracy": 0.75, "f1_macro": 0.5}
    assert [s.value for s in samples["labscale_stage_items"] if s.name.endswith("_total")] == [12.0, 12.0]
    assert samples["labscale_study_budget_usd"][0].value == 25.0


def test_without_a_gateway_metrics_go_to_a_textfile_in_the_store(store: ArtifactStore) -> None:
    spec = _spec()
    assert run_stage(spec, store, _work(SCORE_RESULT))
    samples = _samples(store.backend.get_bytes(f"metrics/score/{spec.key}.prom").decode())
    assert samples["labscale_stage_success"][0].value == 1.0
    assert samples["labscale_stage_last_success_timestamp_seconds"][0].value > 1.7e9
    cost = samples["labscale_stage_estimated_cost_usd"][0].value
    assert cost == pytest.approx(samples["labscale_stage_duration_seconds"][0].value / 3600 * 0.36)
    meta = store.require(spec.prefix).meta
    assert meta["cost_usd"] > 0 and meta["gpu_energy"] == "tdp-estimate"  # a t4 run with no GPU visible
    assert samples["labscale_stage_energy_joules"][0].value == pytest.approx(meta["energy_kwh"] * 3.6e6, rel=0.05)
    assert samples["labscale_stage_emissions_co2e_grams"][0].value > 0
    assert samples["labscale_stage_peak_rss_bytes"][0].value > 10 * 2**20


def test_a_failed_run_reports_failure_and_commits_nothing(store: ArtifactStore) -> None:
    spec = _spec()

    def broken(ctx: StageContext) -> dict[str, Any]:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        run_stage(spec, store, broken)
    assert not store.is_committed(spec.prefix)
    samples = _samples(store.backend.get_bytes(f"metrics/score/{spec.key}.prom").decode())
    assert samples["labscale_stage_success"][0].value == 0.0
    assert "labscale_stage_last_success_timestamp_seconds" not in samples and "labscale_score" not in samples


def test_unreachable_gateway_costs_one_warning_and_the_stage_still_commits(
        store: ArtifactStore, caplog: pytest.LogCaptureFixture) -> None:
    spec = _spec(gateway=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with caplog.at_level(logging.WARNING):
        assert run_stage(spec, store, _work(SCORE_RESULT))
    assert store.is_committed(spec.prefix)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "Pushgateway" in warnings[0].getMessage()


def test_runs_push_to_a_real_pushgateway_grouped_by_run_key(store: ArtifactStore, monkeypatch) -> None:
    require_binaries(binaries_missing(), "apt-get install prometheus-pushgateway (make test does)")
    with Pushgateway() as gateway:
        monkeypatch.setenv("LABSCALE_PUSHGATEWAY", gateway.url)  # the environment overrides the spec
        ok, failed = _spec(key="aaaaaaaaaaaaaaaa"), _spec(key="bbbbbbbbbbbbbbbb")
        run_stage(ok, store, _work(SCORE_RESULT))
        with pytest.raises(ZeroDivisionError):
            run_stage(failed, store, lambda ctx: 1 / 0)
        held = _samples(gateway.metrics_text())
    success = {s.labels["run_key"]: s.value for s in held["labscale_stage_success"]}
    assert success == {ok.key: 1.0, failed.key: 0.0}
    assert {s.labels["metric"] for s in held["labscale_score"]} == {"accuracy", "f1_macro"}
    assert not store.backend.exists(f"metrics/score/{ok.key}.prom")
