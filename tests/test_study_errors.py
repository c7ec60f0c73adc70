"""Malformed studies: one line naming file, field (and line) and fix; exit 2; nothing written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from labscale.config import load_study
from labscale.config.sources import InputProblem, SplitSlice, read_data_file
from labscale.errors import BadInputError, StudyError
from labscale.executors.publish import upload_sources, write_specs
from labscale.jobs import prep
from labscale.jsonl import read_jsonl
from labscale.plan import build_plan
from labscale.stage import run_stage
from labscale.store import open_store

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
    ("bf16-on-t4", "    build: tiny-llama\n", "    build: tiny-llama\n    dtype: bfloat16\npool: t4\n",
     ["models[0].dtype", ":13:", "'tiny' asks for bfloat16, which the t4 pool's GPU (Turing) does not compute",
      "use dtype: auto (fp16 on a T4) or float32, or pool: a100"]),
    ("unknown-dtype", "    build: tiny-llama\n", "    build: tiny-llama\n    dtype: fp8\n",
     ["models[0].dtype", "'auto', 'float32' or 'bfloat16'", ":13:"]),
    ("dtype-of-an-api-model", "    build: tiny-llama\n", "    kind: openai\n    dtype: bfloat16\n",
     ["models[0]", "served by its API", "remove 'dtype'"]),
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
    # data problems caught before anything runs (the data file each of these cases writes: DATA_FILES)
    ("latin-1-csv", "claims.jsonl", "claims.csv",
     ["tasks[0].source.files.train", ":7:", "'claims.csv' is not UTF-8 (byte 0xe9 on line 2",
      "fix: save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 claims.csv"]),
    ("jsonl-broken-line", "claims.jsonl", "claims.jsonl",
     ["tasks[0].source.files.train", ":7:", "'claims.jsonl' line 3 is not valid JSON", "fix: fix or remove that line"]),
    ("jsonl-list-line", "claims.jsonl", "claims.jsonl",
     ["tasks[0].source.files.train", "'claims.jsonl' line 2 is a JSON list, not an object"]),
    ("empty-jsonl", "claims.jsonl", "claims.jsonl",
     ["tasks[0].source.files.train", "'claims.jsonl' is empty", "fix: put the split's rows in it"]),
    ("empty-csv", "claims.jsonl", "claims.csv", ["tasks[0].source.files.train", "'claims.csv' is empty"]),
    ("header-only-csv", "claims.jsonl", "claims.csv",
     ["tasks[0].source.files.train", "'claims.csv' has a header but no rows", "fix: add the split's rows"]),
    ("csv-extra-field", "claims.jsonl", "claims.csv",
     ["tasks[0].source.files.train", "'claims.csv' line 3 has 5 fields but the header has 4", "fix: quote fields"]),
    ("negative-max-items", "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n",
     "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n    max_items: {test: -5}\n",
     ["tasks[0].max_items", ":9:", "max_items.test is -5",
      "fix: give max_items.test a count of 1 or more, or remove it to keep every row"]),
    ("zero-max-items", "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n",
     "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n    max_items: {train: 0}\n",
     ["tasks[0].max_items", "max_items.train is 0"]),
    ("ftp-store", "store: file://", "store: ftp://",
     ["store", ":2:", "unsupported store scheme ftp://", "fix: use file://PATH or s3://BUCKET/PREFIX"]),
    ("split-selects-nothing", "\"train[:50%]\"", "\"train[80%:70%]\"",
     ["tasks[0].splits.train", ":8:", "'train[80%:70%]' selects no rows of the 20 in 'claims.jsonl'",
      "its start is not before its end", "fix: give a start before the end, e.g. train[70%:80%]"]),
    ("split-past-the-end", "test: \"train[50%:]\"", "test: \"train[30:]\"",
     ["tasks[0].splits.test", "'train[30:]' selects no rows of the 20 in 'claims.jsonl' (rows 20:20)"]),
    ("split-datasets-rejects", "\"train[:50%]\"", "\"train[5]\"", ["tasks[0].splits", "'train[5]' is not a split expression"]),
    ("split-percent-over-100", "\"train[:50%]\"", "\"train[:150%]\"",
     ["tasks[0].splits", "percent bounds must lie between -100% and 100%"]),
    ("shots-beyond-the-train-split", "    shots: 2\n", "    shots: 12\n",
     ["settings[1].shots", ":16:", "12 demonstrations but task 'claims': its train split (train[:50%]) has only 10 row(s)",
      "fix: lower shots to 10 or fewer, or give the train split more rows"]),
    ("shots-beyond-max-items", "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n",
     "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n    max_items: {train: 1}\n",
     ["settings[1].shots", "2 demonstrations but task 'claims': max_items.train keeps only 1 row(s)",
      "fix: lower shots to 1 or fewer, or raise tasks[0].max_items.train"]),
    ("shots-beyond-the-pool", "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n",
     "    splits: {train: \"train[:50%]\", test: \"train[50%:]\"}\n    fewshot_pool: 1\n",
     ["settings[1].shots", "2 demonstrations but task 'claims': its few-shot pool (fewshot_pool) holds only 1 row(s)",
      "fix: lower shots to 1 or fewer, or raise tasks[0].fewshot_pool"]),
    ("shots-without-train-split", "{train: \"train[:50%]\", test: \"train[50%:]\"}", "{test: \"train[50%:]\"}",
     ["settings[1].shots", "2 demonstrations but task 'claims' has no train split to draw them from",
      "fix: add splits.train to task 'claims', or lower shots"]),
    ("model-dir-not-a-model", "    path: tiny-llama\n    build: tiny-llama\n", "    path: ./data\n",
     ["models[0].path", ":11:", "'./data' is a directory but not a model: it has no config.json and no weights "
      "(*.safetensors or *.bin) and no tokenizer files", "fix: point path at a folder written by save_pretrained"]),
    ("yaml-nested-1000-deep-flow", "name: t\n", "name: t\nx: " + "[" * 1000 + "]" * 1000 + "\n",
     ["(yaml)", ":2:", "nested deeper than a study file can be (over 64 levels)", "fix: remove the extra nesting"]),
    ("yaml-nested-1000-deep-block", "name: t\n",
     "name: t\n" + "".join("  " * i + f"k{i}:\n" for i in range(1000)) + "  " * 1000 + "x: 1\n",
     ["(yaml)", ":66:", "nested deeper than a study file can be"]),
]

CLAIMS_CSV = "claim_id,claim,evidence,label\n"
DATA_FILES: dict[str, tuple[str, bytes]] = {
    "latin-1-csv": ("claims.csv", (CLAIMS_CSV + "1,café,e,SUPPORTS\n2,c,e,SUPPORTS\n").encode("latin-1")),
    "jsonl-broken-line": ("claims.jsonl", b'{"claim_id": "1", "claim": "c", "evidence": "e", "label": "SUPPORTS"}\n\n'
                          b'{"claim_id": "2", "claim": "c", evidence\n'),
    "jsonl-list-line": ("claims.jsonl", b'{"claim_id": "1", "claim": "c", "evidence": "e", "label": "SUPPORTS"}\n[1, 2]\n'),
    "empty-jsonl": ("claims.jsonl", b""),
    "empty-csv": ("claims.csv", b"\n\n"),
    "header-only-csv": ("claims.csv", CLAIMS_CSV.encode()),
    "csv-extra-field": ("claims.csv", (CLAIMS_CSV + "1,c,e,SUPPORTS\n2,c,e,SUPPORTS,x\n").encode()),
}
"""Cases whose data file is not the valid claims.jsonl: name → (file name, its bytes)."""


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
    if name in DATA_FILES:
        file_name, data = DATA_FILES[name]
        (tmp_path / file_name).write_bytes(data)
    (tmp_path / "data").mkdir()  # a directory that is not a model (model-dir-not-a-model)
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


def test_a_compiled_settings_demonstrations_must_fit_the_train_split(tmp_path: Path) -> None:
    """compile.shots (default [2, 4]) against a train split of 3 rows: the fix names that split, not fewshot_pool."""
    base = VALID.format(store=tmp_path / "store")
    text = base.replace('{train: "train[:50%]", test: "train[50%:]"}',
                        '{train: "train[:15%]", val: "train[50%:60%]", test: "train[60%:]"}')
    study = write_study(tmp_path, text.replace("    shots: 2\n", "    compile: {}\n"))
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert str(caught.value) == (
        f"{study}:16: settings[1].compile.shots: 4 demonstrations but task 'claims': its train split (train[:15%]) "
        "has only 3 row(s) — fix: lower compile.shots to 3 or fewer, or give the train split more rows")
    assert caught.value.exit_code == 2


def test_a_hub_split_that_selects_nothing_whatever_its_size(tmp_path: Path) -> None:
    """Without the Hub dataset's sizes, validate still rejects a slice whose start is not before its end."""
    base = VALID.format(store=tmp_path / "store").replace("files: {train: claims.jsonl}", "hf: org/claims")
    load_study(write_study(tmp_path, base.replace('"train[50%:]"', '"train[-10:]"')))  # fine: the last 10 rows
    study = write_study(tmp_path, base.replace('"train[50%:]"', '"train[100:50]"'))
    with pytest.raises(StudyError) as caught:
        load_study(study)
    assert str(caught.value) == (f"{study}:8: tasks[0].splits.test: 'train[100:50]' selects no rows (its start is not "
                                 "before its end) — fix: give a start before the end, e.g. train[70%:80%]")


BOM = b"\xef\xbb\xbf"
ROWS = [{"claim_id": str(i), "claim": f"c{i}", "evidence": f"e{i}", "label": "SUPPORTS"} for i in range(20)]
ACCEPTED: dict[str, bytes] = {
    "bom.csv": BOM + (CLAIMS_CSV + "".join(f"{r['claim_id']},{r['claim']},{r['evidence']},SUPPORTS\n" for r in ROWS)).encode(),
    "bom.jsonl": BOM + "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
    "blank-lines.jsonl": "\n".join(json.dumps(r) + "\n" for r in ROWS).encode(),
    "list.json": json.dumps(ROWS).encode(),
    "bom-lines.json": BOM + "".join(json.dumps(r) + "\n" for r in ROWS).encode(),
    "quoted-newline.csv": (CLAIMS_CSV + '1,"two\nlines",e,SUPPORTS\n\n2,c,e,SUPPORTS\n').encode(),
    "ragged.jsonl": b'{"claim": "a"}\n{"claim": "b", "label": "SUPPORTS"}\n',
}
REJECTED: dict[str, bytes] = {name: data for name, data in (
    ("latin-1.csv", DATA_FILES["latin-1-csv"][1]), ("latin-1.jsonl", '{"claim": "café"}\n'.encode("latin-1")),
    ("broken.jsonl", DATA_FILES["jsonl-broken-line"][1]), ("empty.jsonl", b""), ("empty.csv", b"\n\n"),
    ("header-only.csv", CLAIMS_CSV.encode()), ("extra-field.csv", DATA_FILES["csv-extra-field"][1]),
    ("empty-list.json", b"[]"), ("bom-only.jsonl", BOM))}


def _load_with_datasets(path: Path, cache: Path):
    import datasets

    builder = "csv" if path.suffix == ".csv" else "json"
    split = datasets.load_dataset(builder, data_files={"train": str(path)}, cache_dir=str(cache))["train"]
    split.to_list()  # as prep does: pyarrow stores a Latin-1 JSONL string undecoded, and fails only here
    return split


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_a_data_file_validate_accepts_is_read_by_datasets_alike(tmp_path: Path, name: str) -> None:
    """Validate and prep (datasets.load_dataset) agree on what a file holds: its columns and rows."""
    path = tmp_path / name
    path.write_bytes(ACCEPTED[name])
    read = read_data_file(path)
    loaded = _load_with_datasets(path, tmp_path / "cache")
    assert sorted(read.columns) == sorted(loaded.column_names)
    assert read.rows == loaded.num_rows
    assert not any(c.startswith("\ufeff") for c in read.columns)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_a_data_file_validate_rejects_datasets_cannot_load(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(REJECTED[name])
    with pytest.raises(InputProblem):
        read_data_file(path)
    with pytest.raises(Exception):  # noqa: B017 - datasets raises many types for unloadable files
        _load_with_datasets(path, tmp_path / "cache")


EXPRESSIONS = ["train", "train[:50%]", "train[50%:]", "train[80%:70%]", "train[33%:67%]", "train[-10%:]",
               "train[:-25%]", "train[-100%:100%]", "train[10:]", "train[:7]", "train[-3:]", "train[5:-5]",
               "train[30:]", "train[100:50]", "train[:0]", "train[1_0:]", "train[:]", "train[0%:1%]", "train[-1:-2]"]


@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_split_expressions_select_the_rows_datasets_selects(expr: str) -> None:
    from datasets import ReadInstruction

    piece = SplitSlice.parse(expr)
    for rows in (0, 1, 2, 3, 7, 20, 99, 100, 101, 1000, 12345):
        (absolute,) = ReadInstruction.from_spec(expr).to_absolute({"train": rows})
        assert piece.bounds(rows) == (absolute.from_, absolute.to), (expr, rows)
        assert piece.count(rows) == len(range(absolute.from_, absolute.to))


@pytest.mark.parametrize("expr", ["train[5]", "train[:150%]", "train[-101%:]", "tr-ain", "train[a:]", "train[1:2:3]"])
def test_split_expressions_datasets_rejects_are_rejected(expr: str) -> None:
    from datasets import ReadInstruction

    with pytest.raises(InputProblem):
        SplitSlice.parse(expr)
    with pytest.raises(ValueError):
        ReadInstruction.from_spec(expr)


def test_a_bom_csv_passes_validate_and_prep_reads_its_first_column(tmp_path: Path) -> None:
    """A UTF-8 CSV with a byte-order mark whose first column is a required one: accepted by validate and prep."""
    study = write_study(tmp_path, VALID.format(store=tmp_path / "store").replace("claims.jsonl", "claims.csv"))
    header = "claim,evidence,label,claim_id\n"  # the required `claim` first, right after the BOM
    (tmp_path / "claims.csv").write_bytes(BOM + (header + "".join(f"c{i},e{i},SUPPORTS,{i}\n" for i in range(20))).encode())
    result = run_cli("validate", str(study), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    spec = next(run for run in plan.runs if run.stage == "prep")
    assert run_stage(spec, store, prep.run) is True
    out = tmp_path / "prep-out"
    store.fetch(spec.prefix, out)
    train = read_jsonl(out / "train.jsonl")
    assert len(train) == 10 and all(row["input"].count("c") >= 1 for row in train)
    assert {row["id"] for row in train} | {row["id"] for row in read_jsonl(out / "test.jsonl")} == {str(i) for i in range(20)}


def test_prep_rejects_a_broken_source_file_as_validate_does(tmp_path: Path) -> None:
    """A file that changed after validate (or a spec written by hand): prep gives validate's one line, exit 2."""
    study = write_study(tmp_path)
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    (tmp_path / "claims.jsonl").write_bytes(DATA_FILES["jsonl-broken-line"][1])
    upload_sources(plan, store)
    write_specs(plan, store)
    spec = next(run for run in plan.runs if run.stage == "prep")
    with pytest.raises(BadInputError) as caught:
        run_stage(spec, store, prep.run)
    message = str(caught.value)
    assert message.startswith("claims.jsonl line 3 is not valid JSON (") and "\n" not in message
    assert message.endswith(" — fix: fix or remove that line (one JSON object per line)")
    assert caught.value.exit_code == 2
    assert not store.is_committed(spec.prefix)
