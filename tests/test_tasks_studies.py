"""Every shipped study validates and plans (no network, nothing run), and the seeds' grids are what
SEEDS.md says."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_cli

from labscale.config import load_study
from labscale.plan import build_plan
from labscale.config.study import resolve_task

STUDIES = sorted((REPO / "studies").glob("*.yaml"))


def test_the_seed_studies_are_shipped() -> None:
    names = {p.name for p in STUDIES}
    assert {"llm-classifier.yaml", "tool-learning.yaml", "lab-scale-ai.yaml", "lab-scale-ai-api.yaml"} <= names


@pytest.mark.parametrize("study", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_validates_and_plans(study: Path, tmp_path: Path) -> None:
    loaded = load_study(study)
    cells = len(loaded.study.tasks) * len(loaded.study.models) * len(loaded.study.settings)
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 0 and f"= {cells} cells" in result.stdout, result.stderr
    result = run_cli("plan", str(study), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{len(build_plan(loaded).runs)} runs: 0 cached" in result.stdout
    assert not list(tmp_path.iterdir())  # planning writes nothing


def _grid(name: str) -> tuple[dict[str, str], list[str], list[str]]:
    study = load_study(REPO / "studies" / name).study
    return ({t.id: resolve_task(t).name for t in study.tasks}, [m.path for m in study.models],
            [s.id for s in study.settings])


def test_lab_scale_ai_grid() -> None:
    tasks, models, settings = _grid("lab-scale-ai.yaml")
    assert sorted(tasks.values()) == ["clinical-summary", "entity-match", "fact-check"]
    assert models == ["mistralai/Mistral-7B-Instruct-v0.1", "meta-llama/Llama-2-7b-chat-hf", "tiiuae/falcon-7b-instruct"]
    assert settings == ["zero-shot", "3-shot", "compiled", "finetuned"]
    study = load_study(REPO / "studies" / "lab-scale-ai.yaml").study
    for task in study.tasks:  # the seeds' public datasets
        assert task.source.hf == resolve_task(task).hub_dataset
    api_tasks, api_models, api_settings = _grid("lab-scale-ai-api.yaml")
    assert api_tasks == tasks and api_models == ["gpt-3.5-turbo", "gpt-4"] and api_settings == ["zero-shot", "3-shot"]


def test_the_two_lab_scale_studies_share_their_tasks_block() -> None:
    blocks = [yaml.safe_load((REPO / "studies" / n).read_text())["tasks"]
              for n in ("lab-scale-ai.yaml", "lab-scale-ai-api.yaml")]
    assert blocks[0] == blocks[1]


def test_tool_learning_sweeps_three_learning_rates_on_phi3() -> None:
    study = load_study(REPO / "studies" / "tool-learning.yaml").study
    assert [m.path for m in study.models] == ["microsoft/Phi-3-mini-4k-instruct"]
    assert study.models[0].quantization == "4bit" and study.models[0].family == "phi3"
    rates = sorted(s.finetune.learning_rate for s in study.settings if s.finetune)
    assert len(set(rates)) == 3
    assert resolve_task(study.tasks[0]).metric_suite == "tool_call"


def test_llm_classifier_reads_the_shipped_fixture() -> None:
    loaded = load_study(REPO / "studies" / "llm-classifier.yaml")
    assert [resolve_task(t).name for t in loaded.study.tasks] == ["partisanship", "topic"]
    assert {s.id for s in loaded.study.settings} == {"zero-shot", "few-shot", "finetuned"}
    for task in loaded.study.tasks:
        assert loaded.resolve(task.source.files["train"]) == REPO / "studies" / "data" / "political-texts.csv"
