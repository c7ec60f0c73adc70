"""The vLLM engine (`engine: vllm`) on the CPU build that `make setup` installs: it answers what the HF
path answers (same prompts, token ids, greedy decoding, float32 on CPU), applies a cell's LoRA adapter,
runs in bf16 when the model asks, runs a whole study with a fine-tuned cell, and resumes after kill -9
without redoing committed items."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli, small_study

from labscale.models.calls import Prompt
from labscale.models.client import OpenClient, VllmClient
from labscale.models.loading import resolve_model_path
from labscale.models.vllm_engine import serving_rank
from labscale.params import ModelParams

TINY = ModelParams(path="tiny-llama", build="tiny-llama", max_length=512)
INPUTS = [
    "Patient reports a dry cough for three days and mild fever.",
    "Doctor: any chest pain? Patient: no, only when I cough.",
    "The claim says the drug halves the risk; the trial found no effect.",
    "Evidence: sea level rose 20 cm since 1900. Claim: sea level is falling.",
    "Follow-up in two weeks; continue the inhaler twice a day.",
    "Nurse notes: blood pressure 130/85, pulse 72, no distress.",
]
PROMPT = Prompt("Summarise the note in one sentence.", (("Cough, fever.", "Respiratory infection."),), False)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter on the tiny model as the train stage saves one (PEFT, all linear layers), with
    random B matrices so that it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = tmp_path_factory.mktemp("adapter")
    base = AutoModelForCausalLM.from_pretrained(resolve_model_path(TINY), dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                           task_type="CAUSAL_LM"))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, weight in lora.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=generator) * 0.5)
    lora.save_pretrained(out)
    return out


def _answers(client: OpenClient) -> list[tuple[str, int]]:
    return [(r.text, r.tokens_out) for r in client.ask(PROMPT, INPUTS)]


def test_vllm_answers_as_the_hf_path_and_applies_the_adapter(adapter: Path) -> None:
    hf_base, hf_tuned = (_answers(OpenClient(TINY, 24, adapter_dir=a, batch_size=4)) for a in (None, adapter))
    # one engine (it serves rank-8 adapters) answers both the base model and the adapted cell
    vllm_base = _answers(VllmClient(TINY, 24, rank=8))
    vllm_tuned = _answers(VllmClient(TINY, 24, adapter_dir=adapter, rank=8))
    assert vllm_tuned != vllm_base and hf_tuned != hf_base  # the adapter is applied
    # float32 on CPU, the same token ids in: the same greedy tokens out
    assert vllm_base == hf_base
    assert vllm_tuned == hf_tuned


def test_min_new_tokens_holds_back_the_end(adapter: Path) -> None:
    replies = VllmClient(TINY, 12, min_new_tokens=12, rank=8).ask(PROMPT, INPUTS)
    assert [r.tokens_out for r in replies] == [12] * len(INPUTS)


def test_a_bfloat16_model_runs_in_bf16_on_the_engine_with_its_adapter(adapter: Path) -> None:
    """`dtype: bfloat16`: vLLM computes in bf16 (its own model config says so), applies the adapter, and
    its replies' agreement with the float32 HF path is only reported (bf16 flips near-ties)."""
    import torch

    bf16 = TINY.model_copy(update={"dtype": "bfloat16"})
    tuned_client = VllmClient(bf16, 24, adapter_dir=adapter, rank=8)
    tuned = _answers(tuned_client)
    assert tuned_client.engine.dtype == "bfloat16"
    assert tuned_client.engine.llm.llm_engine.model_config.dtype == torch.bfloat16
    assert _answers(VllmClient(bf16, 24, rank=8)) != tuned  # the same (bf16) engine, no adapter
    hf = _answers(OpenClient(TINY, 24, adapter_dir=adapter, batch_size=4))
    print(f"\nbf16 vLLM vs float32 HF, random adapter: {sum(a == b for a, b in zip(tuned, hf))}/{len(hf)} identical")


def test_serving_rank_rounds_up_to_what_vllm_serves() -> None:
    assert [serving_rank(r) for r in (1, 4, 8, 9, 64, 200)] == [8, 8, 8, 16, 64, 256]
    with pytest.raises(ValueError, match="above what vLLM serves"):
        serving_rank(1024)


SETTINGS = """\
  - id: zero-shot
  - id: ft
    finetune: {r: 8, learning_rate: 0.003, max_steps: 12, batch_size: 4, grad_accum: 1, warmup_steps: 0,
               gradient_checkpointing: false, save_steps: 12, max_length: 256}
"""
TWO_ENGINES = """\
  - {id: tiny-hf, path: tiny-llama, build: tiny-llama, max_length: 512, engine: hf}
  - {id: tiny-vllm, path: tiny-llama, build: tiny-llama, max_length: 512, engine: vllm}
  - {id: tiny-vllm-bf16, path: tiny-llama, build: tiny-llama, max_length: 512, engine: vllm, dtype: bfloat16}
"""


def _rows(store: Path) -> dict[tuple[str, str, str], dict[str, str]]:
    (path,) = store.glob("aggregate/*/results.csv")
    return {(r["task"], r["model"], r["setting"]): r for r in csv.DictReader(path.open())}


def _predictions(store: Path, prefix: str) -> list[str]:
    return [json.loads(line)["prediction"] for line in (store / prefix / "predictions.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_study_runs_end_to_end_on_vllm_with_a_fine_tuned_cell(tmp_path: Path) -> None:
    """One study, the tiny model under both engines (the train runs are shared: the same model and
    recipe) and once more on vLLM in bf16 (its own train runs: the model trains in bf16 too): every cell
    runs, the table carries the engine, each generate run records its dtype, and on the fine-tuned cells
    each vLLM model's primary metric differs from the hf engine's (float32) by less than the cell's 95 %
    CI half-width. Float32 on both engines: at least 90 % identical predictions; bf16: reported."""
    from labscale.config import load_study
    from labscale.plan import build_plan

    study = small_study(tmp_path, settings=SETTINGS, tasks=("claims", "notes"), test_items=24, models=TWO_ENGINES)
    result = run_cli("run", str(study), cwd=tmp_path, check=True)
    store = tmp_path / "store"
    rows = _rows(store)
    assert len(rows) == 12
    engines = {model: {r["engine"] for (_, m, _), r in rows.items() if m == model} for model in
               ("tiny-hf", "tiny-vllm", "tiny-vllm-bf16")}
    assert engines == {"tiny-hf": {"hf"}, "tiny-vllm": {"vllm"}, "tiny-vllm-bf16": {"vllm"}}
    assert "vLLM engine for tiny-llama started" in result.stderr
    plan = build_plan(load_study(study))
    trains = [r for r in plan.runs if r.stage == "train"]
    assert len(trains) == 4  # per task: one shared by both float32 models' fine-tuned cells, one in bf16
    gens = {(r.labels["task"], r.labels["model"], r.labels["setting"]): r.prefix for r in plan.runs
            if r.stage == "generate"}
    for (_, model, _), prefix in gens.items():
        meta = json.loads((store / prefix / "_MANIFEST.json").read_text())["meta"]
        assert meta["metrics"]["dtype"] == ("bfloat16" if model.endswith("bf16") else "float32")
    for task, metric in (("claims", "accuracy"), ("notes", "rougeL")):
        hf = rows[task, "tiny-hf", "ft"]
        half_width = (float(hf[f"{metric}_hi"]) - float(hf[f"{metric}_lo"])) / 2
        for model in ("tiny-vllm", "tiny-vllm-bf16"):
            vllm = rows[task, model, "ft"]
            a, b = (_predictions(store, gens[task, m, "ft"]) for m in ("tiny-hf", model))
            agreement = sum(x == y for x, y in zip(a, b)) / len(a)
            print(f"\n{task} ft: {metric} hf {hf[metric]} {model} {vllm[metric]} (CI half-width {half_width:.3f}); "
                  f"identical predictions {agreement:.0%}")
            assert abs(float(hf[metric]) - float(vllm[metric])) < half_width or hf[metric] == vllm[metric]
            if model == "tiny-vllm":
                assert agreement >= 0.9


def _kill_at_first_shard(study: Path, cwd: Path, timeout: float = 300) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "labscale.cli", "run", str(study)], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not list((cwd / "store").glob("generate/*/shards/*/_MANIFEST.json")):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            assert time.monotonic() < deadline, "no shard was committed"
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_kill_during_a_vllm_generate_run_resumes_after_its_committed_shards(tmp_path: Path) -> None:
    models = "  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512, engine: vllm}\n"
    study = small_study(tmp_path, settings="  - id: zero-shot\n", tasks=("notes",), test_items=24,
                        generation="generation: {batch_size: 1, shard_size: 2}\n", models=models)
    _kill_at_first_shard(study, tmp_path)
    store = tmp_path / "store"
    committed = len(list(store.glob("generate/*/shards/*/_MANIFEST.json")))
    assert 0 < committed < 12 and not list(store.glob("generate/*/_MANIFEST.json"))
    result = run_cli("run", str(study), cwd=tmp_path, check=True)
    assert result.stderr.count("already committed — skipping") == committed
    (manifest,) = store.glob("generate/*/_MANIFEST.json")
    meta = json.loads(manifest.read_text())["meta"]
    assert meta["attempts"] == 2 and meta["metrics"]["engine"] == "vllm" and meta["metrics"]["items"] == 24
    assert meta["metrics"]["dtype"] == "float32"
    ids = [json.loads(line)["id"] for line in (manifest.parent / "predictions.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 24


GRID = """\
  - id: zero-shot
  - {id: one-shot, shots: 1}
  - id: ft
    finetune: {r: 16, max_steps: 2, batch_size: 2, save_steps: 2, max_length: 128}
"""
VLLM_TINY = "  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512, engine: vllm}\n"


def test_a_models_vllm_cells_form_one_unit_after_the_trains(tmp_path: Path) -> None:
    """The local executor runs a model's vLLM generate runs in one process: every train first (as the
    dependencies allow), then one unit with all of the model's cells; hf cells and other stages alone.
    The engine is started to serve the study's largest LoRA rank, so base and adapted cells share it."""
    from labscale.config import load_study
    from labscale.plan import build_plan
    from labscale.plan.groups import execution_units

    models = VLLM_TINY + "  - {id: tiny-hf, path: tiny-llama, build: tiny-llama, max_length: 512, engine: hf}\n"
    plan = build_plan(load_study(small_study(tmp_path, settings=GRID, tasks=("claims", "notes"), models=models)))
    units = execution_units(plan.runs)
    assert sorted(r.prefix for unit in units for r in unit) == sorted(r.prefix for r in plan.runs)
    stages = [[r.stage for r in unit] for unit in units]
    assert stages[:2] == [["prep"], ["prep"]] and stages[-1] == ["aggregate"]
    (group,) = [unit for unit in units if len(unit) > 1]
    assert {(r.labels["task"], r.labels["model"]) for r in group} == {("claims", "tiny"), ("notes", "tiny")}
    assert len(group) == 6 and {r.params.engine for r in group} == {"vllm"}
    assert {r.runtime.engine.max_lora_rank for r in group} == {16}
    position = {r.prefix: i for i, unit in enumerate(units) for r in unit}
    for run in plan.runs:  # every run after its inputs
        assert all(position[p] < position[run.prefix] for p in run.inputs.values() if p in position)
    hf_generates = [unit for unit in units if unit[0].stage == "generate" and unit[0].params.engine == "hf"]
    assert len(hf_generates) == 6 and all(len(unit) == 1 for unit in hf_generates)


@pytest.mark.slow
def test_a_grouped_run_skips_a_cached_cell_and_a_failing_cell_fails_alone(tmp_path: Path) -> None:
    """`labscale stage generate --spec A --spec B --spec C`: A is committed (skipped), B's adapter is not
    (it fails, exit 2), C still runs on the engine and commits."""
    from labscale.config import load_study
    from labscale.executors.publish import upload_sources, write_specs
    from labscale.plan import build_plan
    from labscale.stage import spec_uri
    from labscale.store import open_store

    study = small_study(tmp_path, settings=GRID, tasks=("claims",), test_items=8, models=VLLM_TINY)
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    (prep,) = [r for r in plan.runs if r.stage == "prep"]
    gens = {r.labels["setting"]: r for r in plan.runs if r.stage == "generate"}
    run_cli("stage", "prep", "--spec", spec_uri(store, prep), cwd=tmp_path, check=True)
    run_cli("stage", "generate", "--spec", spec_uri(store, gens["zero-shot"]), cwd=tmp_path, check=True)
    cached = store.require(gens["zero-shot"].prefix)
    result = run_cli("stage", "generate", *(arg for s in ("zero-shot", "ft", "one-shot")
                                            for arg in ("--spec", spec_uri(store, gens[s]))), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "1 of 3 runs failed" in result.stderr
    assert store.require(gens["zero-shot"].prefix) == cached  # skipped, not redone
    assert not store.is_committed(gens["ft"].prefix)
    assert "its adapter input" in result.stderr and "is not committed" in result.stderr
    made = store.require(gens["one-shot"].prefix)
    assert made.meta["metrics"]["engine"] == "vllm" and made.meta["metrics"]["items"] == 8


@pytest.mark.parametrize(("models", "settings", "field"), [
    ("  - {id: q, path: tiny-llama, build: tiny-llama, quantization: 4bit, engine: vllm}\n", "  - id: zero-shot\n",
     "models[0].engine"),
    (VLLM_TINY, "  - id: cs\n    decoding: {strategy: contrastive}\n", "settings[0].decoding.strategy"),
])
def test_what_vllm_cannot_do_is_refused_by_validate(tmp_path: Path, models: str, settings: str, field: str) -> None:
    study = small_study(tmp_path, settings=settings, models=models)
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{study}:" in line and field in line and "fix:" in line and "engine: hf" in line


def test_a_4bit_model_generates_on_hf_even_where_the_study_asks_for_vllm(tmp_path: Path) -> None:
    from labscale.config import load_study
    from labscale.plan import build_plan

    models = "  - {id: q, path: tiny-llama, build: tiny-llama, quantization: 4bit}\n" + VLLM_TINY
    study = small_study(tmp_path, settings="  - id: zero-shot\n", models=models,
                        generation="generation: {engine: vllm}\n")
    engines = {r.labels["model"]: r.params.engine for r in build_plan(load_study(study)).runs if r.stage == "generate"}
    assert engines == {"q": "hf", "tiny": "vllm"}


def test_the_engine_serves_a_tasks_own_larger_lora_rank(tmp_path: Path) -> None:
    from labscale.config import load_study
    from labscale.plan import build_plan

    study = small_study(tmp_path, settings=GRID, models=VLLM_TINY, extra_task="    finetune: {r: 32}\n")
    gens = [r for r in build_plan(load_study(study)).runs if r.stage == "generate"]
    assert {r.runtime.engine.max_lora_rank for r in gens} == {32}
