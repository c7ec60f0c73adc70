"""k8s/ and `labscale render --executor kubernetes`: kustomize builds, official schemas, pod security."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO, require_binaries, run_cli

from labscale.k8s.jobs import render_job
from labscale.k8s.pools import GPU_STAGES, POOLS
from labscale.k8s.render import load_cluster_plan, render_documents
from labscale.k8s.target import ClusterTarget
from labscale.params import ApiGenerateParams, ModelParams, OpenGenerateParams
from labscale.plan import STAGES
from labscale.spec import RunSpec

K8S_VERSION = "1.30.0"
OVERLAYS = {"local": "cpu", "t4": "t4", "a100": "a100"}
STUDIES = ("studies/demo.yaml", "studies/medsum-mistral-t4.yaml")
BENCHMARK_STUDY = "studies/lab-scale-ai.yaml"  # the one with `benchmarks:` (a benchmark stage)
STORE = "s3://labscale-artifacts/test"


def kustomize(overlay: str) -> list[dict[str, Any]]:
    require_binaries([] if shutil.which("kubectl") else ["kubectl"], "install kubectl (kustomize is built in)")
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s" / "overlays" / overlay)],
                         capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def validate(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    if doc["kind"] == "Job":
        check_pod(doc["spec"]["template"]["spec"])


def check_pod(pod: dict[str, Any]) -> None:
    """Restricted pod security, scratch/cache volumes, and GPU quantities (schemas don't check those)."""
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    (box,) = pod["containers"]
    sc = box["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e["value"] for e in box["env"]}
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    assert mounts[env["TMPDIR"]] == "scratch" and env["HF_HOME"].startswith("/cache/")
    assert env["LABSCALE_CACHE"].startswith("/cache/") and mounts["/cache"] == "cache"
    assert {v["name"] for v in pod["volumes"]} == {"scratch", "cache"}
    assert all("emptyDir" in v for v in pod["volumes"])
    assert {"secretRef": {"name": "labscale-credentials"}} in box["envFrom"]
    gpus = box["resources"]["limits"].get("nvidia.com/gpu")
    assert gpus in (None, "1")
    assert ("nodeSelector" in pod) == (gpus == "1")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_builds_and_validates(overlay: str) -> None:
    docs = kustomize(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == ["ConfigMap", *["Job"] * len(STAGES), "Namespace", "NetworkPolicy", "Role", "RoleBinding",
                     "ServiceAccount"]
    assert sorted(d["metadata"]["labels"]["labscale.io/stage"] for d in docs if d["kind"] == "Job") == sorted(STAGES)
    for doc in docs:
        validate(doc)
    assert not any(d["kind"] == "Secret" for d in docs), "apply -k must never overwrite real credentials"


def _comparable(job: dict[str, Any]) -> dict[str, Any]:
    """A Job minus what differs per run (name, labels, annotations, --spec, run key env, suspend)."""
    spec = json.loads(json.dumps(job["spec"]))
    spec.pop("suspend", None)
    pod = spec["template"]["spec"]
    spec["template"].pop("metadata")
    (box,) = pod["containers"]
    box.pop("args")
    box["env"] = sorted((e for e in box["env"] if e["name"] != "LABSCALE_RUN_KEY"), key=lambda e: e["name"])
    return spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_jobs_match_labscale_render(overlay: str) -> None:
    """The kustomize templates and the Jobs `labscale render` writes agree on everything but the run."""
    templates = {d["metadata"]["labels"]["labscale.io/stage"]: d for d in kustomize(overlay) if d["kind"] == "Job"}
    rendered = {}
    for study in (STUDIES[0], BENCHMARK_STUDY):
        cp = load_cluster_plan(str(REPO / study), store=STORE, pool=OVERLAYS[overlay])
        for doc in render_documents(cp, "kubernetes").values():
            rendered.setdefault(doc["metadata"]["labels"]["labscale.io/stage"], doc)
    assert set(rendered) == set(templates)
    for stage, job in rendered.items():
        assert _comparable(job) == _comparable(templates[stage]), stage


def test_gpu_stages_get_the_pool_and_one_gpu() -> None:
    jobs = {d["metadata"]["labels"]["labscale.io/stage"]: d["spec"] for d in kustomize("t4") if d["kind"] == "Job"}
    for stage, spec in jobs.items():
        pod = spec["template"]["spec"]
        limits = pod["containers"][0]["resources"]["limits"]
        if stage in GPU_STAGES:
            assert pod["nodeSelector"] == {"labscale.io/pool": "t4"} and limits["nvidia.com/gpu"] == "1"
            assert spec["activeDeadlineSeconds"] == POOLS["t4"].gpu_deadline_s
        else:
            assert "nodeSelector" not in pod and "nvidia.com/gpu" not in limits
        rules = {r["action"]: r for r in spec["podFailurePolicy"]["rules"]}
        assert rules["FailJob"]["onExitCodes"]["values"] == [2]
        assert rules["Ignore"]["onPodConditions"][0]["type"] == "DisruptionTarget"


def test_least_privilege_role() -> None:
    (role,) = [d for d in kustomize("local") if d["kind"] == "Role"]
    rules = {(r["apiGroups"][0], r["resources"][0]): sorted(r["verbs"]) for r in role["rules"]}
    assert rules == {("batch", "jobs"): ["create", "delete", "get", "watch"], ("", "pods"): ["list"], ("", "pods/log"): ["get"]}


def test_secret_template_has_placeholders_only() -> None:
    secret = yaml.safe_load((REPO / "k8s/base/secret.template.yaml").read_text())
    validate(secret)
    assert set(secret["stringData"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "OPENAI_API_KEY"}
    assert set(secret["stringData"].values()) <= {"REPLACE_ME", ""}


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("pool", ["cpu", "t4", "a100"])
def test_rendered_jobs_validate(study: str, pool: str, tmp_path: Path) -> None:
    result = run_cli("render", study, "--store", STORE, "--pool", pool, "--out", str(tmp_path), cwd=REPO, check=True)
    cp = load_cluster_plan(str(REPO / study), store=STORE, pool=pool)
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == len(cp.plan.runs), result.stderr
    for file, run in zip(files, cp.plan.runs, strict=True):  # one Job per run, in plan order
        job = yaml.safe_load(file.read_text())
        validate(job)
        meta = job["metadata"]
        assert meta["name"] == f"labscale-{run.stage}-{run.key}"
        assert meta["labels"]["labscale.io/study"] == run.study and meta["labels"]["labscale.io/stage"] == run.stage
        assert all(meta["labels"][f"labscale.io/{k}"] == run.labels[k] for k in ("task", "model", "setting")
                   if k in run.labels)
        assert json.loads(meta["annotations"]["labscale.io/inputs"]) == run.inputs
        assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["--spec", f"{STORE}/{run.spec_key}"]


def test_medsum_train_job_carries_its_gpu_memory_estimate() -> None:
    cp = load_cluster_plan(str(REPO / STUDIES[1]), store=STORE)
    (train,) = [d for d in render_documents(cp, "kubernetes").values() if d["metadata"]["labels"]["labscale.io/stage"] == "train"]
    assert train["metadata"]["annotations"]["labscale.io/gpu-memory-estimate"] == "7.5Gi"


def test_render_refuses_a_store_pods_cannot_see() -> None:
    result = run_cli("render", "studies/demo.yaml", cwd=REPO)
    assert result.returncode == 2
    assert "studies/demo.yaml: store: 'file://.labscale'" in result.stderr and "fix: pass --store s3://" in result.stderr


def test_render_refuses_training_that_cannot_fit_the_gpu(tmp_path: Path) -> None:
    study = (REPO / STUDIES[1]).read_text().replace("quantization: 4bit", "quantization: none")
    path = tmp_path / "big.yaml"
    path.write_text(study)
    result = run_cli("render", str(path), "--store", STORE, cwd=REPO)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert f"{path}: setting 'finetuned': training mistralai/Mistral-7B-Instruct-v0.2 needs ~" in line
    assert "fix: use quantization: 4bit, batch_size: 4, grad_accum: 1, max_length: 2048" in line


def test_api_model_runs_get_cpu_placement_on_a_gpu_pool() -> None:
    def job(kind: str) -> dict:
        common = {"model": ModelParams(kind=kind, path="m"), "seed": 0, "max_new_tokens": 8}
        params = ApiGenerateParams(**common) if kind == "openai" else OpenGenerateParams(**common, batch_size=1,
                                                                                          shard_size=1)
        spec = RunSpec(stage="generate", key="abcdef0123456789", study="s", store="s3://b/p", params=params)
        return render_job(spec, "s3://b/p/specs/generate/abcdef0123456789.json", ClusterTarget(POOLS["t4"]))

    gpu_pod, api_pod = (job(k)["spec"]["template"]["spec"] for k in ("hf", "openai"))
    assert gpu_pod["nodeSelector"] and "nvidia.com/gpu" in gpu_pod["containers"][0]["resources"]["limits"]
    assert "nodeSelector" not in api_pod and "nvidia.com/gpu" not in api_pod["containers"][0]["resources"]["limits"]
