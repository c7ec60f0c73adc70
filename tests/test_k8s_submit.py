"""`labscale submit` against a test double of the Kubernetes API (tests/k8s_api_double.py)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from k8s_api_double import KubernetesApiDouble

from labscale.k8s.render import ClusterPlan, load_cluster_plan, render_documents

STUDY = "studies/demo.yaml"
TAG = "0.1.0-0123456789ab"  # fixed, so a commit landing mid-test cannot change the images' git sha


@pytest.fixture()
def store(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture()
def plan(store: str) -> ClusterPlan:
    return load_cluster_plan(str(REPO / STUDY), store=store, tag=TAG)


def submit(double: KubernetesApiDouble, store: str, tmp_path: Path):
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    return run_cli("submit", STUDY, "--store", store, "--kubeconfig", str(kubeconfig), "--poll-seconds", "0.01",
                   "--tag", TAG, cwd=REPO)


@pytest.fixture()
def double() -> Iterator[KubernetesApiDouble]:
    with KubernetesApiDouble() as api:
        yield api


def name(run) -> str:
    return f"labscale-{run.stage}-{run.key}"


def test_creates_every_job_in_dependency_order(double: KubernetesApiDouble, plan: ClusterPlan, store: str,
                                               tmp_path: Path) -> None:
    result = submit(double, store, tmp_path)
    assert result.returncode == 0, result.stderr
    # exactly the rendered Jobs were sent, nothing else was asked of the API
    rendered = {d["metadata"]["name"]: d for d in render_documents(plan, "kubernetes").values()}
    assert {b["metadata"]["name"]: b for b in double.created()} == rendered
    assert {(r.method, r.path.rsplit("/", 1)[0]) for r in double.requests} == {
        ("POST", "/apis/batch/v1/namespaces/labscale"), ("GET", "/apis/batch/v1/namespaces/labscale/jobs")}
    # a Job is created only after every Job producing its inputs has succeeded
    seen = {(what, job): i for i, (what, job) in enumerate(double.events)}
    producer = {r.prefix: name(r) for r in plan.plan.runs}
    for run in plan.plan.runs:
        for dep in (producer[p] for p in run.inputs.values() if p in producer):
            assert seen[("succeeded", dep)] < seen[("created", name(run))], (dep, name(run))
    # specs and sources went to the store first, as the pods read them from there
    for run in plan.plan.runs:
        assert json.loads((tmp_path / "store" / run.spec_key).read_text())["key"] == run.key
    assert f"{len(plan.plan.runs)} Jobs succeeded, 0 runs cached" in result.stderr
    assert "succeeded aggregate" in result.stderr


def test_skips_runs_already_committed(double: KubernetesApiDouble, plan: ClusterPlan, store: str,
                                      tmp_path: Path) -> None:
    preps = [r for r in plan.plan.runs if r.stage == "prep"]
    for run in preps:
        out = tmp_path / "artifact" / run.key
        out.mkdir(parents=True)
        (out / "test.jsonl").write_text("{}\n")
        plan.store.commit(run.prefix, out, {"stage": "prep", "metrics": {"items": 1, "train_rows": 1}})
    result = submit(double, store, tmp_path)
    assert result.returncode == 0, result.stderr
    created = [b["metadata"]["name"] for b in double.created()]
    assert len(created) == len(plan.plan.runs) - len(preps)
    assert not any(job.startswith("labscale-prep-") for job in created)
    assert result.stderr.count(" cached ") == len(preps)


@pytest.mark.parametrize(("exit_code", "reason"), [(2, "PodFailurePolicy"), (1, "BackoffLimitExceeded")])
def test_failed_job_reports_reason_and_log_tail(exit_code: int, reason: str, plan: ClusterPlan, store: str,
                                                tmp_path: Path) -> None:
    log = [f"line {i}" for i in range(30)] + ["labscale train: error: prep artifact has no column 'note'"]
    with KubernetesApiDouble(failures={"train": exit_code}, log_lines=log) as double:
        result = submit(double, store, tmp_path)
    assert result.returncode == exit_code
    failed = next(job for what, job in double.events if what == "failed")
    assert failed.startswith("labscale-train-") and f"Job {failed} failed: {reason}" in result.stderr
    assert f"exit code {exit_code}; last log lines:" in result.stderr
    assert "    labscale train: error: prep artifact has no column 'note'" in result.stderr
    assert "line 10" not in result.stderr and "line 11" in result.stderr  # the last 20 lines only
    log_reads = [r for r in double.requests if r.path.endswith("/log")]
    assert log_reads and log_reads[0].query == {"container": "stage", "tailLines": "20"}
    pod_lists = [r for r in double.requests if r.path == "/api/v1/namespaces/labscale/pods"]
    assert pod_lists[0].query["labelSelector"].startswith("job-name=labscale-train-")
    # nothing that reads an adapter was started
    trains = {r.prefix for r in plan.plan.runs if r.stage == "train"}
    assert not any(trains & set(json.loads(b["metadata"]["annotations"]["labscale.io/inputs"]).values())
                   for b in double.created())


def test_existing_job_is_adopted_not_recreated(double: KubernetesApiDouble, plan: ClusterPlan, store: str,
                                               tmp_path: Path) -> None:
    first = submit(double, store, tmp_path)
    assert first.returncode == 0, first.stderr
    shutil.rmtree(tmp_path / "store")  # nothing committed (the double runs nothing): all runs again
    second = submit(double, store, tmp_path)
    assert second.returncode == 0, second.stderr
    assert second.stderr.count("adopted") == len(plan.plan.runs)
    assert [what for what, _ in double.events].count("created") == len(plan.plan.runs)


def test_missing_kubeconfig_is_one_line_and_exit_2(store: str, tmp_path: Path) -> None:
    result = run_cli("submit", STUDY, "--store", store, "--kubeconfig", str(tmp_path / "nope"), cwd=REPO)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"labscale: error: kubeconfig {tmp_path / 'nope'}: ") and "fix: pass --kubeconfig" in line


def test_a_failed_job_is_replaced_on_rerun(double: KubernetesApiDouble, plan: ClusterPlan, store: str,
                                           tmp_path: Path) -> None:
    double.failures["prep"] = 1
    assert submit(double, store, tmp_path).returncode == 1
    (failed,) = [name for what, name in double.events if what == "failed"]
    double.failures.clear()
    shutil.rmtree(tmp_path / "store")
    again = submit(double, store, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ("deleted", failed) in double.events
    assert [name for what, name in double.events if what == "created"].count(failed) == 2


def test_submit_refuses_past_the_budget_once_prep_is_done(double: KubernetesApiDouble, store: str,
                                                          tmp_path: Path) -> None:
    study = tmp_path / "studies" / "demo.yaml"
    shutil.copytree(REPO / "studies", study.parent)
    study.write_text(study.read_text() + "usd_per_hour: 3600\nbudget: {usd: 0.5}\n")  # $1/s: nothing fits
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    result = run_cli("submit", str(study), "--store", store, "--kubeconfig", str(kubeconfig), "--poll-seconds", "0.01",
                     cwd=tmp_path)
    assert result.returncode == 2 and "budget.usd: estimated $" in result.stderr
    created = {b["metadata"]["labels"]["labscale.io/stage"] for b in double.created()}
    assert created == {"prep"}  # the data was prepared; nothing that costs was started


def test_a_job_waiting_for_kueue_admission_shows_as_queued(double: KubernetesApiDouble, plan: ClusterPlan,
                                                           store: str, tmp_path: Path) -> None:
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    result = run_cli("submit", STUDY, "--store", store, "--kubeconfig", str(kubeconfig), "--poll-seconds", "0.01",
                     "--queue", "gpu-team", "--priority-class", "batch-low", cwd=REPO)
    assert result.returncode == 0, result.stderr
    runs = len(plan.plan.runs)
    for body in double.created():  # created suspended, for Kueue to admit
        assert body["spec"]["suspend"] is True
        assert body["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
        assert body["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch-low"
    lines = result.stderr.splitlines()
    queued = [line for line in lines if " queued " in line]
    admitted = [line for line in lines if " admitted " in line]
    assert len(queued) == len(admitted) == runs  # each Job shown queued once, then admitted once
    assert all("waits for admission to LocalQueue gpu-team" in line for line in queued)
    for run in plan.plan.runs:
        job = name(run)
        verbs = [re.search(r"\] (\w+)", line)[1] for line in lines if job in line]
        assert verbs == ["submitted", "queued", "admitted"], job  # never shown running while it waits
        # the double kept it suspended for its first reads: nothing was said "admitted" before that
        events = [what for what, j in double.events if j == job]
        assert events[:4] == ["created", "suspended", "suspended", "admitted"]
    assert f"{runs} Jobs succeeded, 0 runs cached" in result.stderr
