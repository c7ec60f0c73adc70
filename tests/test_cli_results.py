"""Where the results are: `labscale run` prints their paths, `labscale results --path / --open`."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from conftest import BUCKET, small_study

import labscale.cli
from labscale.cli import main
from labscale.config import load_study
from labscale.executors.local import RunReport
from labscale.plan import Plan, build_plan
from labscale.store import ArtifactStore, open_store

FILES = {"results.csv": "task,model,setting,accuracy\nclaims,tiny,zero-shot,0.5\n",
         "results.md": "| task | accuracy |\n|---|---|\n| claims | 0.5 |\n",
         "report.html": "<!doctype html><title>report</title><p>0.5</p>\n"}


def _commit_results(plan: Plan, store: ArtifactStore, tmp_path: Path) -> None:
    """Stand in for the aggregate stage: commit its three results files where it would."""
    out = tmp_path / "aggregate-out"
    out.mkdir(exist_ok=True)
    for name, text in FILES.items():
        (out / name).write_text(text, encoding="utf-8")
    store.commit(plan.aggregate.prefix, out)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return small_study(tmp_path, settings="  - id: zero-shot\n")


def _plan(study: Path) -> tuple[Plan, ArtifactStore]:
    plan = build_plan(load_study(study))
    return plan, open_store(plan.study.study.store)


def test_results_path_prints_the_aggregate_files(study: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    plan, store = _plan(study)
    _commit_results(plan, store, tmp_path)
    assert main(["results", str(study), "--path"]) == 0
    paths = capsys.readouterr().out.splitlines()
    run_dir = tmp_path / "store" / plan.aggregate.prefix
    assert paths == [str(run_dir / name) for name in ("results.csv", "results.md", "report.html")]
    for path in map(Path, paths):
        assert path.read_text(encoding="utf-8") == FILES[path.name]


def test_results_path_without_results_is_exit_2(study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["results", str(study), "--path"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "no results for the current plan" in captured.err


def test_results_open_opens_the_report(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    plan, store = _plan(study)
    _commit_results(plan, store, tmp_path)
    opened: list[str] = []
    monkeypatch.setattr(labscale.cli.webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["results", str(study), "--open"]) == 0
    report = tmp_path / "store" / plan.aggregate.prefix / "report.html"
    assert opened == [report.as_uri()]
    assert capsys.readouterr().out == ""  # --open alone prints no table


def test_run_prints_where_the_results_are(study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`labscale run` ends with the table on stdout and the results files' paths on stderr (the executor is
    stood in for: it commits the aggregate run as the real one would)."""
    plan, store = _plan(study)

    def execute(plan: Plan, store: ArtifactStore, after_prep=None) -> RunReport:  # noqa: ANN001
        _commit_results(plan, store, tmp_path)
        return RunReport(executed=[run.prefix for run in plan.runs])

    monkeypatch.setattr(labscale.cli, "execute", execute)
    assert main(["run", str(study)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == FILES["results.md"].strip()
    lines = captured.err.splitlines()
    start = lines.index("results files:")
    paths = [line.strip() for line in lines[start + 1:]]
    run_dir = tmp_path / "store" / plan.aggregate.prefix
    assert paths == [str(run_dir / name) for name in ("results.csv", "results.md", "report.html")]
    assert all(Path(p).read_text(encoding="utf-8") == FILES[Path(p).name] for p in paths)


def test_results_on_s3_print_uris_and_open_a_cached_copy(s3_env, study: Path, tmp_path: Path,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LABSCALE_CACHE", str(tmp_path / "cache"))
    uri = f"s3://{BUCKET}/results-{uuid.uuid4().hex[:8]}"
    plan, _ = _plan(study)
    _commit_results(plan, open_store(uri), tmp_path)

    assert main(["results", str(study), "--store", uri, "--path"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{uri}/{plan.aggregate.prefix}/{name}" for name in ("results.csv", "results.md", "report.html")]

    opened: list[str] = []
    monkeypatch.setattr(labscale.cli.webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["results", str(study), "--store", uri, "--open"]) == 0
    cached = tmp_path / "cache" / "reports" / plan.aggregate.prefix / "report.html"
    assert opened == [cached.as_uri()]
    assert cached.read_text(encoding="utf-8") == FILES["report.html"]
