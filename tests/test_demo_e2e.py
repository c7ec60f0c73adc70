"""The demo study end to end through the CLI: results, a fully cached rerun, an incremental change."""

from __future__ import annotations

import csv
import io
import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def _counts(stderr: str) -> tuple[int, int]:
    match = re.search(r"(\d+) runs executed, (\d+) cached", stderr)
    assert match, stderr[-2000:]
    return int(match[1]), int(match[2])


def _results(store: Path) -> list[dict[str, str]]:
    (results,) = store.glob("aggregate/*/results.csv")
    return list(csv.DictReader(io.StringIO(results.read_text())))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("demo")
    shutil.copytree(REPO / "studies", work / "studies")
    store = f"file://{work / 'store'}"
    first = run_cli("run", "studies/demo.yaml", "--store", store, cwd=work, check=True)
    assert _counts(first.stderr) == (17, 0)
    return work, first.stdout


def test_demo_prints_the_table_and_fine_tuning_clearly_beats_zero_shot(demo) -> None:
    work, table = demo
    assert "## dialogue-summary" in table and "## claim-check" in table
    rows = {(r["task"], r["setting"]): r for r in _results(work / "store")}
    assert len(rows) == 6
    summary_zero, summary_ft = rows["dialogue-summary", "zero-shot"], rows["dialogue-summary", "finetuned"]
    assert float(summary_ft["rougeL"]) > float(summary_zero["rougeL"]) + 0.25
    claims_zero, claims_ft = rows["claim-check", "zero-shot"], rows["claim-check", "finetuned"]
    assert float(claims_ft["accuracy"]) > float(claims_zero["accuracy"]) + 0.3
    assert float(claims_ft["valid_rate"]) > 0.9
    assert summary_ft["train_path"] == "lora-cpu" and summary_zero["train_path"] == "-"


def test_second_run_executes_nothing_and_prints_the_same_table(demo) -> None:
    work, table = demo
    again = run_cli("run", "studies/demo.yaml", "--store", f"file://{work / 'store'}", cwd=work, check=True)
    assert _counts(again.stderr) == (0, 17)
    assert again.stdout == table
    results = run_cli("results", "studies/demo.yaml", "--store", f"file://{work / 'store'}", cwd=work, check=True)
    assert results.stdout == table


def test_changing_shots_reruns_only_generate_score_aggregate_of_those_cells(demo) -> None:
    work, _ = demo
    study = work / "studies" / "demo.yaml"
    study.write_text(study.read_text().replace("shots: 3", "shots: 2"))
    plan = run_cli("plan", str(study), "--store", f"file://{work / 'store'}", cwd=work, check=True).stdout
    to_run = sorted(line.split()[3] + " " + line.split()[4] for line in plan.splitlines() if " to run " in line)
    assert to_run == ["aggregate demo", "generate claim-check", "generate dialogue-summary",
                      "score claim-check", "score dialogue-summary"]
    assert all("3-shot" in line for line in plan.splitlines() if " to run " in line and "aggregate" not in line)
    result = run_cli("run", str(study), "--store", f"file://{work / 'store'}", cwd=work, check=True)
    assert _counts(result.stderr) == (5, 12)
