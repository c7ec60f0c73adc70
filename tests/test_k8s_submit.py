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
from labscale.plan.groups import execution_units

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
    assert f"{len(plan.plan.runs)} runs succeeded in {len(plan.plan.runs)} Jobs, 0 runs cached" in result.stderr
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
    assert f"{runs} runs succeeded in {runs} Jobs, 0 runs cached" in result.stderr


# ── a model's vLLM cells: one Job per group ──────────────────────────────────────────────────────

def vllm_study(tmp_path: Path) -> Path:
    """The demo study with its model on the vLLM engine, on the t4 pool: its six generate cells form
    one group (data from the repo's studies/)."""
    study = tmp_path / "studies" / "demo-vllm.yaml"
    study.parent.mkdir(parents=True)
    (study.parent / "data").symlink_to(REPO / "studies" / "data")
    text = (REPO / STUDY).read_text()
    assert "    max_length: 1024\n" in text and "pool: cpu\n" in text
    study.write_text(text.replace("    max_length: 1024\n", "    max_length: 1024\n    engine: vllm\n")
                     .replace("pool: cpu\n", "pool: t4\n"))
    return study


def submit_study(double: KubernetesApiDouble, study: Path, store: str, tmp_path: Path):
    kubeconfig = double.write_kubeconfig(tmp_path / "kubeconfig")
    return run_cli("submit", str(study), "--store", store, "--kubeconfig", str(kubeconfig), "--poll-seconds", "0.01",
                   "--tag", TAG, cwd=tmp_path)


def commit(cp: ClusterPlan, run, tmp_path: Path) -> None:
    """Stand in for a run's pod: commit an artifact under its prefix."""
    out = tmp_path / "artifact" / run.key
    out.mkdir(parents=True)
    (out / "predictions.jsonl").write_text("{}\n")
    cp.store.commit(run.prefix, out, {"stage": run.stage, "metrics": {"items": 1}})


def generate_group(cp: ClusterPlan) -> list:
    (group,) = [unit for unit in execution_units(cp.plan.runs) if len(unit) > 1]
    assert len(group) == 6 and {r.stage for r in group} == {"generate"}
    return group


def specs_of(body: dict) -> list[str]:
    args = body["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[::2] == ["--spec"] * (len(args) // 2)
    return args[1::2]


@pytest.mark.parametrize("cached", [1, 6])
def test_a_group_job_runs_only_its_uncommitted_members(cached: int, double: KubernetesApiDouble, store: str,
                                                       tmp_path: Path) -> None:
    study = vllm_study(tmp_path)
    cp = load_cluster_plan(str(study), store=store, tag=TAG)
    group = generate_group(cp)
    done = group[1:1 + cached] if cached < len(group) else group
    for run in done:
        commit(cp, run, tmp_path)
    result = submit_study(double, study, store, tmp_path)
    assert result.returncode == 0, result.stderr
    generates = [b for b in double.created() if b["metadata"]["labels"]["labscale.io/stage"] == "generate"]
    rest = [r for r in group if r not in done]
    if not rest:  # a group with every member committed creates nothing
        assert generates == []
    else:
        (body,) = generates  # one Job for the model's cells, the committed one left out
        assert specs_of(body) == [cp.spec_uri(r) for r in rest]
        assert json.loads(body["metadata"]["annotations"]["labscale.io/run-keys"]) == [r.key for r in rest]
        assert body["spec"]["activeDeadlineSeconds"] == len(rest) * cp.target.pool.gpu_deadline_s
        # named after the planned group, as `labscale render` names it: a rerun adopts it
        rendered = [d["metadata"]["name"] for d in render_documents(cp, "kubernetes").values()
                    if d["metadata"]["labels"]["labscale.io/stage"] == "generate"]
        assert rendered == [body["metadata"]["name"]]
    units = execution_units(cp.plan.runs)
    assert len(double.created()) == len(units) - (1 if not rest else 0)
    assert all(f"cached    {r.title}  ({r.key})" in result.stderr for r in done)
    todo = len(cp.plan.runs) - len(done)
    assert f"{todo} runs succeeded in {len(double.created())} Jobs, {len(done)} runs cached" in result.stderr


def test_a_failed_group_job_counts_the_members_it_committed(store: str, tmp_path: Path) -> None:
    study = vllm_study(tmp_path)
    cp = load_cluster_plan(str(study), store=store, tag=TAG)
    group = generate_group(cp)
    by_key = {r.key: r for r in group}

    def first_member_commits(manifest: dict) -> None:  # the pod committed its first run, then failed
        keys = manifest["metadata"]["annotations"].get("labscale.io/run-keys")
        if keys:
            commit(cp, by_key[json.loads(keys)[0]], tmp_path)

    with KubernetesApiDouble(failures={"generate": 1}, on_finish=first_member_commits) as double:
        result = submit_study(double, study, store, tmp_path)
        assert result.returncode == 1
        (failed,) = [job for what, job in double.events if what == "failed"]
        first, *others = group
        assert failed.startswith(f"labscale-generate-{first.key}-g")
        assert f"succeeded {first.title}  (committed before Job {failed} failed)" in result.stderr
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("labscale: error: ")]
        named, _, after = error.partition(f": Job {failed} failed: BackoffLimitExceeded")
        assert ", exit code 1; committed by it: " in after, error
        assert [k for k in by_key if k in named] == [r.key for r in others]  # the five it did not commit
        assert f"; committed by it: generate {first.key} (" in after
        assert not any(b["metadata"]["labels"]["labscale.io/stage"] == "score" for b in double.created())
        # a rerun replaces the failed Job (same name) with one for the five members left
        double.failures.clear()
        double.on_finish = None
        again = submit_study(double, study, store, tmp_path)
    assert again.returncode == 0, again.stderr
    assert ("deleted", failed) in double.events
    assert [name for what, name in double.events if what == "created"].count(failed) == 2
    sent = [b for b in double.created() if b["metadata"]["name"] == failed]  # the first, a refused one, its retry
    assert [len(specs_of(b)) for b in sent] == [6, 5, 5]
    assert specs_of(double.jobs[failed].manifest) == [cp.spec_uri(r) for r in others]
    assert f"cached    {first.title}  ({first.key})" in again.stderr
