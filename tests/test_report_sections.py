"""The report's sections on the repository's own studies: studies/privacy-probe.yaml's "Privacy"
section and studies/distill.yaml's distilled setting (reported as distilled), in results.md and in
report.html alike. Each study is planned as it is; its cells' score, generate and train runs are
committed in a file:// store with the numbers those stages record, and the real aggregate stage runs."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from test_report import Page

from labscale.config import load_study
from labscale.jobs import aggregate
from labscale.plan import Plan, build_plan
from labscale.stage import run_stage
from labscale.store import ArtifactStore, open_store

ITEMS = 20


def planned(study: str, data: str, tmp: Path) -> tuple[Plan, ArtifactStore]:
    """studies/<study>.yaml planned as it is, but with its store in `tmp`."""
    (tmp / "data").mkdir(parents=True)
    shutil.copy(REPO / "studies" / "data" / data, tmp / "data" / data)
    text = (REPO / "studies" / f"{study}.yaml").read_text()
    assert "store: file://.labscale\n" in text
    (tmp / f"{study}.yaml").write_text(text.replace("store: file://.labscale\n", f"store: file://{tmp / 'store'}\n"))
    plan = build_plan(load_study(tmp / f"{study}.yaml"))
    return plan, open_store(plan.study.study.store)


def commit(store: ArtifactStore, prefix: str, tmp: Path, metrics: dict[str, Any], cost: float,
           files: dict[str, str] | None = None) -> None:
    out = tmp / "runs" / prefix
    out.mkdir(parents=True)
    for name, text in (files or {}).items():
        (out / name).write_text(text)
    store.commit(prefix, out, {"inputs": {}, "metrics": metrics, "cost_usd": cost, "energy_kwh": cost / 10,
                               "kg_co2e": cost / 30})


def commit_cell_runs(plan: Plan, store: ArtifactStore, tmp: Path, per_item: Any, train: dict[str, dict[str, Any]],
                     seconds: dict[str, float]) -> None:
    """Each cell's score run (per_item(setting, i) → one item's record; corpus metrics = their means),
    generate run (`seconds[setting]` of model time) and train run (`train[setting]`, the stage's metrics)."""
    for cell in plan.cells:
        items = [{"id": f"q{i:02d}", **per_item(cell.setting, i)} for i in range(ITEMS)]
        means = {k: sum(r[k] for r in items) / ITEMS for k in items[0] if k != "id"}
        scores = {{"correct": "accuracy", "em": "exact_match"}.get(k, k): v for k, v in means.items()}
        commit(store, cell.score, tmp, {"items": ITEMS, "scores": scores}, 0.0001,
               {"per_item.jsonl": "".join(json.dumps(r) + "\n" for r in items)})
        commit(store, cell.generate, tmp, {"items": ITEMS, "generation_seconds": seconds[cell.setting],
                                           "items_per_second": ITEMS / seconds[cell.setting], "tokens_in": 900,
                                           "tokens_out": 60}, 0.001 * seconds[cell.setting])
        if cell.train:
            commit(store, cell.train, tmp, train[cell.setting], 0.02)


def aggregated(plan: Plan, store: ArtifactStore, tmp: Path) -> tuple[str, Page, dict[str, Any]]:
    """The real aggregate stage over the committed runs: results.md, report.html (parsed) and its metrics."""
    assert run_stage(plan.aggregate, store, aggregate.run)
    out = tmp / "aggregate"
    store.fetch(plan.aggregate.prefix, out)
    page = Page()
    page.feed((out / "report.html").read_text(encoding="utf-8"))
    return (out / "results.md").read_text(), page, store.require(plan.aggregate.prefix).meta["metrics"]


def md_table(markdown: str, heading: str) -> list[list[str]]:
    """The rows (cell texts, header first) of the pipe table under `## heading` in results.md."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.split("|")[1:-1]] for line in lines[:1] + lines[2:]]


LORA = {"path": "lora-cpu", "train_seconds": 41.5, "steps": 60, "train_rows": 58, "mia_auc": 0.7134,
        "mia_advantage": 0.4219, "mia_rows": 16, "canary_exposure": 6.25, "canary_exposure_max": 8.0}
DP_LORA = {**LORA, "mia_auc": 0.5312, "mia_advantage": 0.0938, "canary_exposure": 1.75, "epsilon": 49.87,
           "delta": 0.01724, "noise_multiplier": 0.6523, "max_grad_norm": 1.2}


@pytest.fixture(scope="module")
def privacy_probe(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("privacy")
    plan, store = planned("privacy-probe", "medqa-mini.jsonl", tmp)
    quality = {"zero-shot": 2, "lora": 8, "dp-lora": 6}  # items answered right, of every 10
    def item(setting: str, i: int) -> dict[str, float]:
        right = i % 10 < quality[setting]
        return {"em": float(right), "f1": 0.9 * right}

    commit_cell_runs(plan, store, tmp, item, {"lora": LORA, "dp-lora": DP_LORA},
                     {"zero-shot": 3.0, "lora": 4.0, "dp-lora": 4.0})
    return aggregated(plan, store, tmp)


def test_privacy_probe_has_the_privacy_section_in_results_md_and_report_html(privacy_probe) -> None:
    markdown, page, metrics = privacy_probe
    header = ["task", "model", "setting", "epsilon", "delta", "noise_multiplier", "max_grad_norm", "mia_auc",
              "mia_advantage", "canary_exposure", "canary_exposure_max"]
    expected = [header,
                ["medqa", "tiny-llama", "lora", "-", "-", "-", "-", "0.7134", "0.4219", "6.25", "8"],
                ["medqa", "tiny-llama", "dp-lora", "49.87", "0.01724", "0.6523", "1.2", "0.5312", "0.0938", "1.75",
                 "8"]]
    assert md_table(markdown, "Privacy") == expected
    assert page.table_with("mia_auc") == expected  # the same section, rendered as HTML
    assert "Privacy" in page.headings
    assert [(r["setting"], r.get("epsilon"), r["mia_auc"]) for r in metrics["privacy"]] == [
        ("lora", None, 0.7134), ("dp-lora", 49.87, 0.5312)]


def test_privacy_probe_reports_each_settings_kind(privacy_probe) -> None:
    markdown, page, _ = privacy_probe
    kinds = [["setting", "kind"], ["zero-shot", "zero-shot"], ["lora", "fine-tuned"], ["dp-lora", "DP fine-tuned"]]
    assert md_table(markdown, "Setting kinds") == kinds and page.table_with("kind") == kinds
    seeds = page.table_with("fine-tuned (lora)")
    assert seeds[0] == ["model", "zero-shot", "fine-tuned (lora)", "DP fine-tuned (dp-lora)"]


STUDENT = {"path": "distill-cpu", "train_seconds": 12.5, "rows": 25, "teacher_rows": 29, "teacher_unparsed": 1,
           "teacher_errors": 4, "cleanlab": "drop", "cleanlab_flagged": 3, "cleanlab_dropped": 3,
           "cleanlab_relabelled": 0, "cleanlab_flagged_teacher_errors": 2, "cleanlab_skipped": None}


@pytest.fixture(scope="module")
def distill(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Page, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("distill")
    plan, store = planned("distill", "political-texts.csv", tmp)
    for entry in plan.aggregate.params.distill:  # the teacher's labelling of the train split
        for prefix in entry.teacher_labels:
            commit(store, prefix, tmp, {"items": 29, "generation_seconds": 8.0}, 0.05)
    quality = {"few-shot": 9, "distilled": 8}
    commit_cell_runs(plan, store, tmp, lambda s, i: {"correct": i % 10 < quality[s]},
                     {"distilled": STUDENT}, {"few-shot": 10.0, "distilled": 0.2})
    return aggregated(plan, store, tmp)


def test_the_distilled_setting_is_reported_as_distilled(distill) -> None:
    markdown, page, metrics = distill
    kinds = [["setting", "kind"], ["few-shot", "few-shot"], ["distilled", "distilled"]]
    assert md_table(markdown, "Setting kinds") == kinds and page.table_with("kind") == kinds
    seeds = page.table_with("distilled")
    assert seeds[0] == ["model", "few-shot", "distilled"]  # the kind's label is the id: not "zero-shot (distilled)"
    assert [r[0] for r in seeds[1:]] == ["gpt-4o-mini", "nous-hermes-13b"]
    table = md_table(markdown, "Distillation: teacher vs student")
    assert page.table_with("quality ratio") == table
    assert [r[:5] for r in table[1:]] == [["topic", m, "few-shot", "distilled", "accuracy"]
                                          for m in ("gpt-4o-mini", "nous-hermes-13b")]
    row = metrics["distill"][0]
    assert row["quality_ratio"] == pytest.approx(8 / 9) and row["speedup"] == pytest.approx(50)
    assert row["setup_usd"] == pytest.approx(0.02 + 0.05) and table[1][-1] == "3 of 29 flagged, 3 dropped"


def test_results_md_and_report_html_are_the_same_sections(privacy_probe, distill) -> None:
    """Every section results.md has (past the per-task tables) is in report.html, in the same order."""
    for markdown, page, _ in (privacy_probe, distill):
        tasks = {c for c in re.findall(r"^## (.+)$", markdown, re.M) if f"## {c}\n\n| model" in markdown}
        shared = [h for h in re.findall(r"^## (.+)$", markdown, re.M) if h not in tasks]
        assert shared and [h for h in page.headings if h in shared] == shared
