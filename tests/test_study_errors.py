"""Malformed studies: one line naming file, field (and line) and fix; exit 2; nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

VALID = """\
name: t
store: file://{store}
tasks:
  - id: claims
    task: fact-check
    source:
      files: {{train: claims.jsonl}}
    splits: {{train: "train[:50%]", test: "train[50%:]"}}
models:
  - id: tiny
    path: tiny-llama
    build: tiny-llama
settings:
  - id: zero-shot
  - id: two-shot
    shots: 2
"""

# (name, replace-this, with-this, expected fragments of the one-line error)
CASES = [
    ("bad-yaml", "tasks:\n", "tasks: [\n", ["(yaml)", "invalid YAML", "fix the YAML syntax"]),
    ("unknown-top-field", "name: t\n", "name: t\nbudjet: 3\n", ["budjet", "Extra inputs", "remove it or correct its spelling", ":2:"]),
    ("unknown-nested-field", "    shots: 2\n", "    shots: 2\n    shot: 3\n", ["settings[1].shot", "remove it"]),
    ("wrong-type", "    shots: 2\n", "    shots: two\n", ["settings[1].shots", "valid integer", ":16:", "give a whole number"]),
    ("negative-shots", "    shots: 2\n", "    shots: -1\n", ["settings[1].shots", "greater than or equal"]),
    ("unknown-task", "task: fact-check", "task: fact-chek", ["tasks[0].task", "unknown task 'fact-chek'", "use one of: clinical-summary, fact-check", ":5:"]),
    ("missing-data-file", "claims.jsonl", "nope.jsonl", ["tasks[0].source.files.train", "not found", "fix the path"]),
    ("missing-field", "    task: fact-check\n", "", ["tasks[0].task", "Field required", "add it"]),
    ("bad-pool", "name: t\n", "name: t\npool: v100\n", ["pool", "'cpu', 't4' or 'a100'", "allowed values"]),
    ("bad-name", "name: t\n", "name: My Study\n", ["name", "String should match pattern", "lowercase"]),
    ("unknown-report-reference", "name: t\n", "name: t\nreport: {reference: {model: gpt, setting: zs}}\n",
     ["report.reference.model", "'gpt' is not in the study", "use one of"]),
    ("unknown-train-task", "    shots: 2\n", "    shots: 2\n    train_task: nope\n",
     ["settings[1].train_task", "'nope' is not a task of the study", "use one of claims"]),
    ("api-model-built-locally", "    build: tiny-llama\n", "    build: tiny-llama\n    kind: openai\n",
     ["models[0]", "served by its API", "remove 'build' and 'quantization'"]),
    ("no-test-split", 'test: "train[50%:]"', 'val: "train[50%:]"', ["tasks[0].splits", "'test' split is required"]),
    ("bad-split-expr", '"train[:50%]"', '"train[:50%"', ["tasks[0].splits", "not a split expression"]),
    ("unknown-source-split", '"train[:50%]"', '"validation[:50%]"', ["tasks[0].splits.train", "not among source.files"]),
    ("duplicate-id", "  - id: two-shot\n", "  - id: zero-shot\n", ["settings[1].id", "duplicate id 'zero-shot'"]),
    ("unknown-family", "    build: tiny-llama\n", "    build: tiny-llama\n    family: gpt5\n", ["models[0].family", "unknown family 'gpt5'"]),
    ("missing-model-dir", "    path: tiny-llama\n    build: tiny-llama\n", "    path: ./models/none\n", ["models[0].path", "model directory './models/none' not found"]),
    ("both-sources", "      files: {train: claims.jsonl}\n", "      files: {train: claims.jsonl}\n      hf: org/ds\n", ["tasks[0].source", "exactly one of"]),
    ("empty-models", "models:\n  - id: tiny\n    path: tiny-llama\n    build: tiny-llama\n", "models: []\n", ["models", "at least 1 item"]),
    ("missing-column", '"label": "SUPPORTS"', '"verdict": "SUPPORTS"', ["tasks[0].source.files.train", "lacks column(s) label", "tasks[].columns"]),
    ("not-a-mapping", "name: t\n", "- just\n- a list\nname: t\n", ["invalid YAML"]),
    ("too-many-shots", "    shots: 2\n", "    shots: 20\n", ["settings[1].shots", "less than or equal to 16"]),
    ("unknown-tracker", "name: t\n", "name: t\ntracking: {backend: comet, project: p}\n",
     ["tracking.backend", "'wandb' or 'mlflow'", "use one of the allowed values", ":2:"]),
    ("tracker-password-in-file", "name: t\n",
     "name: t\ntracking: {backend: mlflow, project: p, tracking_uri: 'https://me:secret@mlflow.example'}\n",
     ["tracking", "tracking_uri holds a password", "MLFLOW_TRACKING_PASSWORD", "in the environment"]),
    ("compile-without-val", "    shots: 2\n", "    compile: {val_items: 4}\n",
     ["settings[1].compile", "task 'claims' has no 'val' split", "add splits.val"]),
    ("compile-with-shots", "    shots: 2\n", "    shots: 2\n    compile: {}\n",
     ["settings[1]", "searches its demonstrations", "remove 'shots'"]),
    ("compile-budget-too-small", "    shots: 2\n", "    compile: {val_items: 40, max_calls: 20}\n",
     ["settings[1].compile", "max_calls (20) is below val_items (40)"]),
    ("contrastive-with-api-model", "    path: tiny-llama\n    build: tiny-llama\nsettings:\n  - id: zero-shot\n",
     "    kind: openai\n    path: gpt-4o-mini\nsettings:\n  - id: zero-shot\n    decoding: {strategy: contrastive}\n",
     ["settings[0].decoding.strategy", "contrastive search needs an open model's hidden states",
      "'tiny' is an API model", "use greedy decoding"]),
    ("unknown-decoding", "    shots: 2\n", "    decoding: {strategy: beam}\n",
     ["settings[1].decoding.strategy", "'greedy' or 'contrastive'"]),
    ("attribute-the-suite-does-not-read", "    task: fact-check\n",
     "    task: fact-check\n    define: {attributes: {group: claim}}\n",
     ["tasks[0]", "metric suite 'classification' reads no attribute(s) ['group']", "use the roles it reads: none"]),
    ("benchmarks-missing-folder", "name: t\n", "name: t\nbenchmarks: {tasks: [mmlu], include_path: nope}\n",
     ["benchmarks.include_path", "task folder 'nope' not found", "fix the path (relative to the study file)", ":2:"]),
    ("benchmarks-no-tasks", "name: t\n", "name: t\nbenchmarks: {tasks: []}\n", ["benchmarks.tasks", "at least 1 item"]),
    ("benchmarks-bad-limit", "name: t\n", "name: t\nbenchmarks: {tasks: [mmlu], limit: 2.5}\n",
     ["benchmarks.limit", "2.5 is neither a whole count nor a share below 1"]),
    ("benchmarks-api-only", "    path: tiny-llama\n    build: tiny-llama\n",
     "    kind: openai\n    path: gpt-4o-mini\nbenchmarks: {tasks: [mmlu]}\n",
     ["benchmarks", "no open (kind: hf) model to benchmark", "add an hf model or remove benchmarks"]),
]


def write_study(tmp_path: Path, text: str | None = None) -> Path:
    rows = [{"claim_id": str(i), "claim": f"c{i}", "evidence": f"e{i}", "label": "SUPPORTS"} for i in range(20)]
    (tmp_path / "claims.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = text if text is not None else VALID.format(store=tmp_path / "store")
    study = tmp_path / "study.yaml"
    study.write_text(text)
    return study


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "labscale.cli", *args], cwd=cwd, capture_output=True, text=True)


def test_the_base_study_is_valid(tmp_path: Path) -> None:
    result = run_cli("validate", str(write_study(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "1 tasks × 1 models × 2 settings = 2 cells" in result.stdout


@pytest.mark.parametrize(("name", "old", "new", "expected"), CASES, ids=[c[0] for c in CASES])
def test_malformed_study_one_line_exit_2_nothing_written(tmp_path: Path, name: str, old: str, new: str, expected: list[str]) -> None:
    base = VALID.format(store=tmp_path / "store")
    if name == "missing-column":
        study = write_study(tmp_path)
        (tmp_path / "claims.jsonl").write_text((tmp_path / "claims.jsonl").read_text().replace(old, new))
    else:
        assert old in base, f"case {name}: {old!r} not in the base study"
        study = write_study(tmp_path, base.replace(old, new, 1))
    for command in ("validate", "plan", "run"):
        result = run_cli(command, str(study), cwd=tmp_path)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"labscale: error: {study}"), lines[0]
        for fragment in expected:
            assert fragment in lines[0], (fragment, lines[0])
        assert "fix:" in lines[0]
    assert not (tmp_path / "store").exists()
    assert not (tmp_path / ".labscale").exists()


def test_missing_study_file(tmp_path: Path) -> None:
    result = run_cli("validate", "nope.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "labscale: error: nope.yaml: (file): no such file — fix: check the path"
