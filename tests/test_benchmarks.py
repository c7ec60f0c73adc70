"""The `benchmarks:` step: lm-eval on the tiny model with the project's local task (studies/benchmarks),
its numbers equal to lm-eval's own, and the aggregate's base-vs-adapted table carrying them."""

from __future__ import annotations

import contextlib
import csv
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli, small_study

from labscale.config import load_study
from labscale.errors import BadInputError
from labscale.executors.publish import upload_sources, write_specs
from labscale.jobs import benchmark
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import Benchmark, ModelParams
from labscale.plan import build_plan
from labscale.report.benchmarks import comparison_rows
from labscale.stage import run_stage
from labscale.store import ArtifactStore, open_store

TASKS = REPO / "studies" / "benchmarks"
TASK = "labscale_tiny_mc"
FINETUNED = """\
  - id: zero-shot
  - id: ft
    finetune: {r: 8, learning_rate: 0.003, max_steps: 2, batch_size: 4, grad_accum: 1, warmup_steps: 0,
               gradient_checkpointing: false, save_steps: 2, max_length: 256}
"""


def benchmark_study(tmp_path: Path, settings: str = "  - id: zero-shot\n", tasks: str = TASK) -> Path:
    """A small study with a `benchmarks:` block on the project's local lm-eval task."""
    study = small_study(tmp_path, settings=settings, test_items=4)
    study.write_text(study.read_text() + f"benchmarks: {{tasks: [{tasks}], include_path: {TASKS}, batch_size: 4}}\n")
    return study


def planned(study: Path) -> tuple[Any, ArtifactStore]:
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    return plan, store


def results_json(store: ArtifactStore, prefix: str) -> dict[str, Any]:
    return json.loads(store.backend.get_bytes(f"{prefix}/results.json"))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection but to this machine (the Hub must not be asked for anything)."""
    connect = socket.socket.connect

    def local_only(sock: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else "local"
        assert host in ("local", "127.0.0.1", "::1", "localhost"), f"network access to {address}"
        return connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)


def lm_eval_directly(model: ModelParams) -> dict[str, Any]:
    """lm-eval's own numbers for `model` on the local task, without labscale's stage."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=load_causal_lm(model).eval(), tokenizer=load_tokenizer(model), batch_size=4,
              max_length=model.max_length)
    with contextlib.chdir(TASKS):
        manager = TaskManager(include_path=str(TASKS), include_defaults=False)
        results = lm_eval.simple_evaluate(model=lm, tasks=[TASK], task_manager=manager, log_samples=False)
    return results["results"][TASK]


def test_the_stage_reports_what_lm_eval_reports(tmp_path: Path, no_network: None) -> None:
    plan, store = planned(benchmark_study(tmp_path))
    (spec,) = [r for r in plan.runs if r.stage == "benchmark"]
    assert run_stage(spec, store, benchmark.run)
    (row,) = results_json(store, spec.prefix)["results"]
    assert row["task"] == TASK and row["metric"] == "acc" and row["n"] == 20 and row["top"]
    assert 0 <= row["value"] <= 1 and row["stderr"] > 0
    direct = lm_eval_directly(spec.params.model)
    assert (row["value"], row["stderr"]) == (direct["acc,none"], direct["acc_stderr,none"])
    metrics = store.require(spec.prefix).meta["metrics"]
    assert metrics["offline"] is True and metrics["items"] == 20
    assert metrics["scores"] == {f"{TASK}/acc": row["value"]}
    assert "lm_eval.json" in store.require(spec.prefix).files


def test_an_unknown_task_is_bad_input_before_the_model_loads(tmp_path: Path) -> None:
    plan, store = planned(benchmark_study(tmp_path, tasks=f"{TASK}, no_such_task"))
    (spec,) = [r for r in plan.runs if r.stage == "benchmark"]
    with pytest.raises(BadInputError, match="benchmarks.tasks: no_such_task unknown to lm-eval .* fix: "):
        run_stage(spec, store, benchmark.run)


def test_the_hub_goes_offline_only_when_every_task_is_local(tmp_path: Path) -> None:
    assert benchmark.all_local(TASKS, [TASK])
    assert not benchmark.all_local(TASKS, [TASK, "mmlu"]) and not benchmark.all_local(None, [TASK])
    (tmp_path / "task.yaml").write_text((TASKS / "tiny_mc.yaml").read_text() + "process_docs: !function utils.f\n")
    (tmp_path / "group.yaml").write_text(f"group: mine\ntask: [{TASK}, arc_easy]\n")
    (tmp_path / "ours.yaml").write_text(f"group: ours\ntask: [{TASK}]\n")
    assert benchmark.all_local(tmp_path, [TASK, "ours"]) and not benchmark.all_local(tmp_path, ["mine"])
    (tmp_path / "hub.yaml").write_text("task: hub_data\ndataset_path: cais/mmlu\n")  # local YAML, Hub data
    assert not benchmark.all_local(tmp_path, [TASK])


def test_comparison_rows_pair_each_adapter_with_its_base() -> None:
    def row(task: str, value: float, top: bool = True) -> dict[str, Any]:
        return {"task": task, "metric": "acc", "value": value, "stderr": 0.03, "n": 100, "top": top}

    entries = [Benchmark(model="m", run="b/1", setting=None, trained_on=None),
               Benchmark(model="m", run="b/2", setting="ft", trained_on="claims"),
               Benchmark(model="n", run="b/3", setting=None, trained_on=None)]
    results = {"b/1": [row("mmlu", 0.5), row("mmlu_anatomy", 0.4, top=False)], "b/2": [row("mmlu", 0.45)],
               "b/3": [row("mmlu", 0.6)]}
    first, second = comparison_rows(entries, results)
    assert (first["model"], first["setting"], first["trained_on"], first["benchmark"]) == ("m", "ft", "claims", "mmlu")
    assert (first["base"], first["adapted"], first["delta"]) == (0.5, 0.45, pytest.approx(-0.05))
    assert first["delta_stderr"] == pytest.approx(0.03 * 2 ** 0.5)
    assert (second["model"], second["setting"], second["adapted"], second["delta"]) == ("n", None, None, None)


@pytest.mark.slow
def test_the_aggregate_compares_base_and_adapted(tmp_path: Path) -> None:
    """`labscale run` (each stage in its own process, so the Hub really is offline for lm-eval)."""
    study = benchmark_study(tmp_path, settings=FINETUNED)
    output = run_cli("run", str(study), cwd=tmp_path, check=True).stdout
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    base, adapted = (results_json(store, b.run)["results"][0] for b in plan.benchmarks)
    assert [(b.setting, b.trained_on) for b in plan.benchmarks] == [(None, None), ("ft", "claims")]
    assert all(store.require(b.run).meta["metrics"]["offline"] for b in plan.benchmarks)
    sizes = [json.loads(store.backend.get_bytes(f"{b.run}/lm_eval.json"))["config"]["model_num_parameters"]
             for b in plan.benchmarks]
    assert sizes[1] > sizes[0]  # the adapted run evaluated the model with its LoRA adapter
    store.fetch(plan.aggregate.prefix, tmp_path / "agg")
    (row,) = csv.DictReader(open(tmp_path / "agg" / "benchmarks.csv"))
    assert (row["model"], row["setting"], row["trained_on"], row["benchmark"], row["metric"]) == (
        "tiny", "ft", "claims", TASK, "acc")
    assert [float(row[k]) for k in ("base", "base_stderr", "adapted", "adapted_stderr")] == [
        base["value"], base["stderr"], adapted["value"], adapted["stderr"]]
    section = output.split("## Benchmarks: base vs adapted")[1]  # results.md, as the CLI prints it
    cells = [c.strip() for c in next(r for r in section.splitlines() if r.startswith("| tiny")).split("|")[1:-1]]
    assert cells[:8] == ["tiny", "ft", "claims", TASK, "acc", "20", f"{base['value']:.4g} ± {base['stderr']:.4g}",
                         f"{adapted['value']:.4g} ± {adapted['stderr']:.4g}"]
    html = (tmp_path / "agg" / "report.html").read_text()
    assert "Benchmarks: base vs adapted" in html and f"{adapted['value']:.4g} ± {adapted['stderr']:.4g}" in html


def test_the_paper_study_names_tasks_lm_eval_knows() -> None:
    from lm_eval.tasks import TaskManager

    benchmarks = load_study(REPO / "studies" / "lab-scale-ai.yaml").study.benchmarks
    assert benchmarks is not None and benchmarks.tasks == ["bbh", "mmlu", "ifeval", "gpqa_main_zeroshot"]
    assert set(benchmarks.tasks) <= set(TaskManager().all_tasks)
