"""k8s/ and `labscale render --executor kubernetes`: kustomize builds, official schemas, pod security."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import REPO, require_binaries, run_cli, vllm_demo

from labscale.k8s.jobs import render_job, render_unit_job
from labscale.k8s.pod import API_KEYS, STORE_KEYS, TRACKING_KEYS
from labscale.k8s.pools import GPU_STAGES, POOLS
from labscale.k8s.render import load_cluster_plan, render_documents
from labscale.k8s.target import ClusterTarget, recorded_digests
from labscale.params import ApiGenerateParams, JudgeParams, ModelParams, OpenGenerateParams, Runtime, ScoreParams
from labscale.plan import STAGES
from labscale.plan.groups import execution_units
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


def gib(quantity: str) -> int:
    assert quantity.endswith("Gi"), quantity
    return int(quantity.removesuffix("Gi"))


def secret_keys(job: dict[str, Any]) -> set[str]:
    (box,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"] for e in box["env"] if "valueFrom" in e}


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
    env = {e["name"]: e["value"] for e in box["env"] if "value" in e}
    mounts = {m["mountPath"]: m["name"] for m in box["volumeMounts"]}
    assert mounts[env["TMPDIR"]] == "scratch" and env["HF_HOME"].startswith("/cache/")
    assert env["LABSCALE_CACHE"].startswith("/cache/") and mounts["/cache"] == "cache"
    assert {v["name"] for v in pod["volumes"]} == {"scratch", "cache"}
    assert all("emptyDir" in v for v in pod["volumes"])
    # the emptyDirs together fit the ephemeral-storage limit (else the kubelet evicts a pod within its volumes)
    sizes = sum(gib(v["emptyDir"]["sizeLimit"]) for v in pod["volumes"])
    assert sizes < gib(box["resources"]["limits"]["ephemeral-storage"])
    # credentials key by key (never the whole Secret), the store's always
    assert box["envFrom"] == [{"configMapRef": {"name": "labscale-config"}}]
    secret = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in box["env"] if "valueFrom" in e}
    assert set(STORE_KEYS) <= set(secret) and all(ref["name"] == "labscale-credentials" for ref in secret.values())
    assert {ref["key"] for ref in secret.values()} == set(secret)
    assert box["imagePullPolicy"] in ("IfNotPresent", "Always")
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
    box.pop("image")  # the template's tag stands for the VERSION-GITSHA that render fills in
    box["env"] = sorted(box["env"], key=lambda e: e["name"])
    return spec


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_jobs_match_labscale_render(overlay: str) -> None:
    """The kustomize templates and the Jobs `labscale render` writes agree on everything but the run."""
    templates = {d["metadata"]["labels"]["labscale.io/stage"]: d for d in kustomize(overlay) if d["kind"] == "Job"}
    rendered = {}
    for study in (STUDIES[0], BENCHMARK_STUDY):
        cp = load_cluster_plan(str(REPO / study), store=STORE, pool=OVERLAYS[overlay])
        for doc in render_documents(cp, "kubernetes").values():
            if "labscale.io/run-key" in doc["metadata"]["annotations"]:  # a run's Job (a group's runs longer)
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
    units = execution_units(cp.plan.runs)
    files = sorted(tmp_path.glob("*.yaml"))
    assert len(files) == len(units), result.stderr
    for file, unit in zip(files, units, strict=True):  # one Job per unit, in the order they run
        job = yaml.safe_load(file.read_text())
        validate(job)
        meta = job["metadata"]
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args == [a for run in unit for a in ("--spec", f"{STORE}/{run.spec_key}")]
        if len(unit) > 1:
            check_group_job(job, unit, cp.target.pool)
            continue
        (run,) = unit
        assert meta["name"] == f"labscale-{run.stage}-{run.key}"
        assert meta["labels"]["labscale.io/study"] == run.study and meta["labels"]["labscale.io/stage"] == run.stage
        assert all(meta["labels"][f"labscale.io/{k}"] == run.labels[k] for k in ("task", "model", "setting")
                   if k in run.labels)
        assert json.loads(meta["annotations"]["labscale.io/inputs"]) == run.inputs
    # medsum's three Mistral cells run on vLLM on a GPU pool: one Job answers them
    groups = [unit for unit in units if len(unit) > 1]
    # the shipped GPU studies load their models 4-bit, which generate on hf (vLLM 0.32 loads no
    # bitsandbytes weights): no groups; a vLLM study's group Job is checked below
    assert groups == []
    assert sorted(r.prefix for unit in units for r in unit) == sorted(r.prefix for r in cp.plan.runs)


def check_group_job(job: dict[str, Any], unit: list[RunSpec], pool: Any) -> None:
    """A group's Job: named after its first run, the labels its members share, each member's run key,
    spec and inputs in annotations, the stage's deadline per member, one generate pod's resources."""
    meta = job["metadata"]
    first = unit[0]
    assert re.fullmatch(rf"labscale-{first.stage}-{first.key}-g[0-9a-f]{{8}}", meta["name"])
    assert len(meta["name"]) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", meta["name"])
    assert json.loads(meta["annotations"]["labscale.io/run-keys"]) == [r.key for r in unit]
    assert json.loads(meta["annotations"]["labscale.io/specs"]) == [f"{STORE}/{r.spec_key}" for r in unit]
    assert json.loads(meta["annotations"]["labscale.io/inputs"]) == {r.key: r.inputs for r in unit}
    for key in ("task", "model", "setting"):  # a label only where every member has the same value
        values = {r.labels.get(key) for r in unit}
        assert meta["labels"].get(f"labscale.io/{key}") == (values.pop() if len(values) == 1 else None), key
    assert meta["labels"]["labscale.io/stage"] == first.stage
    assert job["spec"]["template"]["metadata"]["labels"] == {k: v for k, v in meta["labels"].items()
                                                             if not k.startswith("kueue.")}
    assert job["spec"]["activeDeadlineSeconds"] == pool.deadline_s(first.stage) * len(unit)
    alone = render_job(first, f"{STORE}/{first.spec_key}", ClusterTarget(pool))
    (box,) = job["spec"]["template"]["spec"]["containers"]
    assert box["resources"] == alone["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert job["spec"]["template"]["spec"]["nodeSelector"] == alone["spec"]["template"]["spec"]["nodeSelector"]


def test_a_models_vllm_cells_render_as_one_generate_job(tmp_path: Path) -> None:
    """`engine: vllm` on a GPU pool: the model's six generate cells (2 tasks x 3 settings, base and
    fine-tuned) are one Job whose pod gets all six --spec args; every other run keeps its own Job."""
    study = vllm_demo(tmp_path)
    run_cli("render", str(study), "--store", STORE, "--out", str(tmp_path / "jobs"), cwd=tmp_path, check=True)
    cp = load_cluster_plan(str(study), store=STORE)
    generates = [r for r in cp.plan.runs if r.stage == "generate"]
    assert len(generates) == 6 and {r.params.engine for r in generates} == {"vllm"}
    jobs = [yaml.safe_load(f.read_text()) for f in sorted((tmp_path / "jobs").glob("*.yaml"))]
    assert len(jobs) == len(cp.plan.runs) - 5
    for job in jobs:
        validate(job)
    stages = [j["metadata"]["labels"]["labscale.io/stage"] for j in jobs]
    (group,) = [j for j in jobs if j["metadata"]["labels"]["labscale.io/stage"] == "generate"]
    # after every train run (the fine-tuned cells read their adapters), before any score run
    assert stages.index("generate") > max(i for i, s in enumerate(stages) if s == "train")
    assert stages.index("generate") < stages.index("score")
    keys = json.loads(group["metadata"]["annotations"]["labscale.io/run-keys"])
    assert sorted(keys) == sorted(r.key for r in generates)
    by_key = {r.key: r for r in generates}
    unit = [by_key[k] for k in keys]
    check_group_job(group, unit, POOLS["t4"])
    assert group["metadata"]["labels"]["labscale.io/model"] == "tiny-llama"
    assert "labscale.io/task" not in group["metadata"]["labels"] and "labscale.io/setting" not in group["metadata"]["labels"]
    (box,) = group["spec"]["template"]["spec"]["containers"]
    assert box["args"][::2] == ["--spec"] * 6 and box["args"][1::2] == [f"{STORE}/{r.spec_key}" for r in unit]
    assert box["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert group["spec"]["activeDeadlineSeconds"] == 6 * POOLS["t4"].gpu_deadline_s
    # the same study on the hf engine: one Job per generate run, as before
    hf = vllm_demo(tmp_path / "hf", engine="hf")
    hf_docs = render_documents(load_cluster_plan(str(hf), store=STORE), "kubernetes").values()
    assert sum(d["metadata"]["labels"]["labscale.io/stage"] == "generate" for d in hf_docs) == 6


def test_a_group_job_gets_the_union_of_its_members_credentials() -> None:
    common = {"seed": 0, "max_new_tokens": 8, "batch_size": 1, "shard_size": 1, "engine": "vllm"}
    specs = [RunSpec(stage="generate", key=f"{i:016x}", study="s", store="s3://b/p", params=OpenGenerateParams(
        model=_model("hf"), **common), runtime=Runtime(tracking={"backend": "wandb", "project": "p"}) if i else Runtime())
        for i in range(2)]
    target = ClusterTarget(POOLS["t4"])
    alone = secret_keys(render_unit_job(specs[:1], lambda r: f"s3://b/p/{r.spec_key}", target))
    both = secret_keys(render_unit_job(specs, lambda r: f"s3://b/p/{r.spec_key}", target))
    assert alone == set(STORE_KEYS) and both == set(STORE_KEYS) | set(TRACKING_KEYS)


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


# ── secrets per stage ────────────────────────────────────────────────────────────────────────────

def _model(kind: str) -> ModelParams:
    return ModelParams(kind=kind, path="gpt-4o-mini" if kind == "openai" else "m")


def test_only_runs_that_call_an_api_get_the_api_key() -> None:
    target = ClusterTarget(POOLS["t4"])

    def keys(stage: str, params: Any, runtime: Runtime = Runtime()) -> set[str]:
        spec = RunSpec(stage=stage, key="abcdef0123456789", study="s", store="s3://b/p", params=params, runtime=runtime)
        return secret_keys(render_job(spec, f"s3://b/p/specs/{stage}/abcdef0123456789.json", target))

    common = {"seed": 0, "max_new_tokens": 8}
    open_gen = keys("generate", OpenGenerateParams(model=_model("hf"), **common, batch_size=1, shard_size=1))
    api_gen = keys("generate", ApiGenerateParams(model=_model("openai"), **common))
    plain_score = keys("score", ScoreParams(suite="classification"))
    judged = keys("score", ScoreParams(suite="summarization", judge=JudgeParams(model=_model("openai"), zeta=0.5,
                                                                                max_new_tokens=8, batch_size=1)))
    assert open_gen == plain_score == set(STORE_KEYS)
    assert api_gen == judged == set(STORE_KEYS) | set(API_KEYS)
    tracked = keys("generate", OpenGenerateParams(model=_model("hf"), **common, batch_size=1, shard_size=1),
                   Runtime(tracking={"backend": "wandb", "project": "p"}))
    assert tracked == set(STORE_KEYS) | set(TRACKING_KEYS)


def test_api_study_scopes_the_openai_key_to_its_api_runs() -> None:
    cp = load_cluster_plan(str(REPO / "studies/lab-scale-ai-api.yaml"), store=STORE, pool="t4")
    jobs = list(render_documents(cp, "kubernetes").values())
    with_key = {j["metadata"]["labels"]["labscale.io/stage"] for j in jobs if "OPENAI_API_KEY" in secret_keys(j)}
    without = {j["metadata"]["labels"]["labscale.io/stage"] for j in jobs if "OPENAI_API_KEY" not in secret_keys(j)}
    assert "generate" in with_key and {"prep", "aggregate"} <= without and "prep" not in with_key
    api_runs = {f"labscale-{r.stage}-{r.key}" for r in cp.plan.runs if r.on_api}
    assert api_runs and all("OPENAI_API_KEY" in secret_keys(j) for j in jobs if j["metadata"]["name"] in api_runs)
    assert all(secret_keys(j) >= set(STORE_KEYS) for j in jobs)


# ── Kueue ────────────────────────────────────────────────────────────────────────────────────────

def test_a_queue_labels_every_job_for_kueue_and_creates_it_suspended() -> None:
    queued = load_cluster_plan(str(REPO / STUDIES[1]), store=STORE, queue="gpu-team", priority_class="batch-low")
    plain = load_cluster_plan(str(REPO / STUDIES[1]), store=STORE)
    for job in render_documents(queued, "kubernetes").values():
        validate(job)
        assert job["spec"]["suspend"] is True
        assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-team"
        assert job["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "batch-low"
        assert "kueue.x-k8s.io/queue-name" not in job["spec"]["template"]["metadata"]["labels"]
    for job in render_documents(plain, "kubernetes").values():
        assert "suspend" not in job["spec"] and not any(k.startswith("kueue.") for k in job["metadata"]["labels"])


def test_a_pool_can_name_its_local_queue() -> None:
    pool = replace(POOLS["a100"], queue="a100-queue")
    assert ClusterTarget(pool).kueue_labels() == {"kueue.x-k8s.io/queue-name": "a100-queue"}
    assert ClusterTarget(pool, queue="other").queue == "other"  # --queue overrides the pool's


def test_priority_class_without_a_queue_is_bad_input(tmp_path: Path) -> None:
    result = run_cli("render", STUDIES[0], "--store", STORE, "--priority-class", "high", "--out", str(tmp_path),
                     cwd=REPO)
    assert result.returncode == 2 and not list(tmp_path.iterdir())
    assert result.stderr.strip() == ("labscale: error: --priority-class 'high': a Kueue priority needs a queue — "
                                     "fix: also pass --queue LOCALQUEUE")


# ── images ───────────────────────────────────────────────────────────────────────────────────────

def test_images_are_immutable_tags_pulled_if_not_present(tmp_path: Path) -> None:
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                         check=True).stdout.strip()
    cp = load_cluster_plan(str(REPO / STUDIES[0]), store=STORE)
    for job in render_documents(cp, "kubernetes").values():
        (box,) = job["spec"]["template"]["spec"]["containers"]
        assert box["image"].endswith(f":{metadata.version('labscale')}-{sha}")
        assert box["imagePullPolicy"] == "IfNotPresent"
    moving = load_cluster_plan(str(REPO / STUDIES[0]), store=STORE, registry="ghcr.io/lab", tag="latest")
    (box,) = next(iter(render_documents(moving, "kubernetes").values()))["spec"]["template"]["spec"]["containers"]
    assert box["image"] == "ghcr.io/lab/labscale-prep:latest" and box["imagePullPolicy"] == "Always"


def test_render_warns_about_the_localhost_registry(tmp_path: Path) -> None:
    local = run_cli("render", STUDIES[0], "--store", STORE, "--out", str(tmp_path / "a"), cwd=REPO, check=True)
    assert "labscale: warning: images localhost/labscale-<stage>:" in local.stderr
    assert "fix: make push REGISTRY=REG and pass --registry REG" in local.stderr
    remote = run_cli("render", STUDIES[0], "--store", STORE, "--registry", "ghcr.io/lab", "--out", str(tmp_path / "b"),
                     cwd=REPO, check=True)
    assert "warning" not in remote.stderr


# ── ConfigMap ────────────────────────────────────────────────────────────────────────────────────

def test_every_configmap_key_is_read_by_labscale() -> None:
    (config,) = [d for d in kustomize("local") if d["kind"] == "ConfigMap"]
    sources = "\n".join(p.read_text() for p in (REPO / "shared" / "labscale").rglob("*.py"))
    for key in config["data"]:
        assert f'"{key}"' in sources, f"ConfigMap key {key} is read by no labscale code"


FAKE_TOOL = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.log"
case "$1" in
  push) if [ "$2" = --digestfile ]; then printf 'sha256:%064d' 7 > "$3"; fi ;;
  inspect) ref="$4"; echo "other.example/x@sha256:$(printf '%064d' 1)"; echo "${ref%:*}@sha256:$(printf '%064d' 9)" ;;
esac
"""


@pytest.mark.parametrize(("tool", "digit"), [("docker", "9"), ("podman", "7")])
def test_make_push_records_digests_and_render_names_images_by_them(tool: str, digit: str, tmp_path: Path) -> None:
    require_binaries([] if shutil.which("make") else ["make"], "install make")
    fake = tmp_path / "bin" / tool
    fake.parent.mkdir()
    fake.write_text(FAKE_TOOL)
    fake.chmod(0o755)
    digests_dir = tmp_path / "images" / "digests"
    done = subprocess.run(["make", "-s", "push", "REGISTRY=reg.example/lab", f"CONTAINER_TOOL={fake}",
                           f"DIGESTS_DIR={digests_dir}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    tag = ClusterTarget(POOLS["cpu"]).image_tag
    lines = (digests_dir / f"{tag}.txt").read_text().splitlines()
    digest = f"sha256:{'0' * 63}{digit}"
    assert lines == [f"reg.example/lab/labscale-{s}:{tag} {digest}" for s in
                     ("prep", "aggregate", "train", "generate", "score", "benchmark")]
    target = ClusterTarget(POOLS["t4"], registry="reg.example/lab", digests=recorded_digests(tag, tmp_path))
    assert target.image("train") == f"reg.example/lab/labscale-train@{digest}"
    assert target.pull_policy("train") == "IfNotPresent"
    elsewhere = ClusterTarget(POOLS["t4"], registry="ghcr.io/lab", tag="latest", digests=recorded_digests(tag, tmp_path))
    assert elsewhere.image("train") == "ghcr.io/lab/labscale-train:latest" and elsewhere.pull_policy("train") == "Always"


def test_make_push_fails_without_a_digest(tmp_path: Path) -> None:
    require_binaries([] if shutil.which("make") else ["make"], "install make")
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\nexit 0\n")  # pushes, but the image has no RepoDigests
    fake.chmod(0o755)
    done = subprocess.run(["make", "-s", "push", "REGISTRY=reg.example/lab", f"CONTAINER_TOOL={fake}",
                           f"DIGESTS_DIR={tmp_path / 'd'}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode != 0 and "make push: no registry digest for reg.example/lab/labscale-prep:" in done.stdout
    assert not list((tmp_path / "d").iterdir())
