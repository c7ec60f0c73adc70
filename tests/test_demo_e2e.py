"""The demo study end to end through the CLI, against real services started on 127.0.0.1:
a SeaweedFS S3 server as the artifact store, a Pushgateway the stages push to, and a Prometheus
scraping it. Checks the results, the stored objects, the metrics, a fully cached rerun and an
incremental change.
"""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import BUCKET, REPO, require_binaries, run_cli
from prometheus_client.parser import text_string_to_metric_families
from promservers import Prometheus, Pushgateway, binaries_missing

from labscale.config import load_study
from labscale.cost import pool_usd_per_hour
from labscale.plan import Plan, build_plan
from labscale.store import MANIFEST, ArtifactStore, open_store, sha256_file

pytestmark = pytest.mark.slow
STORE = f"s3://{BUCKET}/demo-e2e"


@dataclass
class Demo:
    work: Path
    env: dict[str, str]
    table: str
    log: str
    gateway: Pushgateway
    prometheus: Prometheus

    def run(self, *args: str) -> tuple[str, str]:
        result = run_cli(*args, "--store", STORE, cwd=self.work, check=True, env=self.env)
        return result.stdout, result.stderr

    def store(self) -> ArtifactStore:
        os.environ.update(self.env)  # the store reads the standard AWS variables
        return open_store(STORE)

    def plan(self) -> Plan:
        return build_plan(load_study(self.work / "studies" / "demo.yaml"))


def _counts(stderr: str) -> tuple[int, int]:
    match = re.search(r"(\d+) runs executed, (\d+) cached", stderr)
    assert match, stderr[-2000:]
    return int(match[1]), int(match[2])


def _results(demo: Demo) -> dict[tuple[str, str], dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = demo.store().fetch_file(demo.plan().aggregate.prefix, "results.csv", Path(tmp) / "results.csv")
        text = path.read_text()
    return {(r["task"], r["setting"]): r for r in csv.DictReader(io.StringIO(text))}


@pytest.fixture(scope="module")
def demo(s3_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    require_binaries(binaries_missing(), "apt-get install prometheus-pushgateway prometheus (make test does)")
    work = tmp_path_factory.mktemp("demo")
    shutil.copytree(REPO / "studies", work / "studies")
    with Pushgateway() as gateway, Prometheus(scrape=gateway.address) as prometheus:
        env = {**s3_server.env(), "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
               "LABSCALE_PUSHGATEWAY": gateway.url}
        demo = Demo(work, env, "", "", gateway, prometheus)
        demo.table, demo.log = demo.run("run", "studies/demo.yaml")
        assert _counts(demo.log) == (17, 0)
        yield demo


def test_demo_prints_the_table_and_fine_tuning_clearly_beats_zero_shot(demo: Demo) -> None:
    assert "## dialogue-summary" in demo.table and "## claim-check" in demo.table
    rows = _results(demo)
    assert len(rows) == 6
    summary_zero, summary_ft = rows["dialogue-summary", "zero-shot"], rows["dialogue-summary", "finetuned"]
    assert float(summary_ft["rougeL"]) > float(summary_zero["rougeL"]) + 0.25
    claims_zero, claims_ft = rows["claim-check", "zero-shot"], rows["claim-check", "finetuned"]
    assert float(claims_ft["accuracy"]) > float(claims_zero["accuracy"]) + 0.3
    assert float(claims_ft["valid_rate"]) > 0.9
    assert summary_ft["train_path"] == "lora-cpu" and summary_zero["train_path"] == "-"
    # Training costs compute: the fine-tuned row's $ includes its training time at the pool's price
    # (not compared with the zero-shot row's $, which is wall time too and so depends on machine load).
    train_usd = float(summary_ft["train_s"]) * pool_usd_per_hour("cpu", None) / 3600
    assert float(summary_ft["usd"]) > 0.95 * train_usd > 0 and float(summary_zero["usd"]) > 0


def test_the_log_is_what_a_user_can_act_on(demo: Demo) -> None:
    """No library FutureWarnings, no bitsandbytes "pip install kernels" hint on a run that is not 4-bit, no
    `datasets` bars over its own quick steps, and never two progress bars at once (tqdm draws a nested bar
    by moving the cursor up: ESC [A)."""
    assert "FutureWarning" not in demo.log
    assert "pip install kernels" not in demo.log
    assert "Generating train split" not in demo.log and "Tokenizing train dataset" not in demo.log
    assert "\x1b[A" not in demo.log
    # the stages' own bars are there: generate's items and the trainer's steps
    assert "generate: 100%" in demo.log and "150/150" in demo.log
    # and it ends saying where the results are
    aggregate = demo.plan().aggregate.prefix
    assert demo.log.rstrip().endswith("\n".join(f"  {STORE}/{aggregate}/{name}"
                                                 for name in ("results.csv", "results.md", "report.html")))


def test_every_run_is_committed_in_s3_with_checksums_matching_the_objects(demo: Demo, tmp_path: Path) -> None:
    store = demo.store()
    client = store.backend.client
    for run in demo.plan().runs:
        manifest = store.require(run.prefix)
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"demo-e2e/{run.prefix}/")["Contents"]
        keys = {o["Key"] for o in listed}
        assert f"demo-e2e/{run.prefix}/{MANIFEST}" in keys
        for name, entry in manifest.files.items():
            local = tmp_path / run.prefix / name
            local.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, f"demo-e2e/{run.prefix}/{name}", str(local))  # raw bytes, unverified
            assert sha256_file(local) == entry.sha256, f"{run.prefix}/{name}"


def test_pushgateway_holds_every_run_and_prometheus_serves_the_scores(demo: Demo) -> None:
    held = {s.labels["run_key"]: s.value for family in text_string_to_metric_families(demo.gateway.metrics_text())
            if family.name == "labscale_stage_success" for s in family.samples}
    assert held == {run.key: 1.0 for run in demo.plan().runs}
    accuracy = float(_results(demo)["claim-check", "finetuned"]["accuracy"])
    (series,) = demo.prometheus.wait_for(
        'labscale_score{stage="score", task="claim-check", setting="finetuned", metric="accuracy"}')
    assert series["metric"]["pool"] == "cpu" and series["metric"]["model"] == "tiny-llama"
    assert float(series["value"][1]) == pytest.approx(accuracy, abs=1e-4)
    cells = demo.prometheus.wait_for('labscale_cell_score{study="demo", metric="rougeL"}')
    assert {c["metric"]["setting"] for c in cells} == {"zero-shot", "3-shot", "finetuned"}
    (cost,) = demo.prometheus.wait_for('labscale_study_cost_usd{study="demo"}')
    assert float(cost["value"][1]) > 0
    assert not demo.prometheus.query("labscale_stage_success == 0")


def test_second_run_executes_nothing_and_prints_the_same_table(demo: Demo) -> None:
    table, stderr = demo.run("run", "studies/demo.yaml")
    assert _counts(stderr) == (0, 17)
    assert table == demo.table
    results, _ = demo.run("results", "studies/demo.yaml")
    assert results == demo.table


def test_changing_shots_reruns_only_generate_score_aggregate_of_those_cells(demo: Demo) -> None:
    study = demo.work / "studies" / "demo.yaml"
    study.write_text(study.read_text().replace("shots: 3", "shots: 2"))
    plan, _ = demo.run("plan", str(study))
    to_run = sorted(line.split()[3] + " " + line.split()[4] for line in plan.splitlines() if " to run " in line)
    assert to_run == ["aggregate demo", "generate claim-check", "generate dialogue-summary",
                      "score claim-check", "score dialogue-summary"]
    assert all("3-shot" in line for line in plan.splitlines() if " to run " in line and "aggregate" not in line)
    _, stderr = demo.run("run", str(study))
    assert _counts(stderr) == (5, 12)
