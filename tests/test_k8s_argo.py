"""`labscale render --executor argo`: a Workflow / CronWorkflow whose DAG mirrors the plan.

Manifests are checked twice: against Argo Workflows' published JSON schema (its
api/jsonschema/schema.json, kept next to the repo at ../shared/data/argo/schema.json; the test skips
where that copy is absent), and against hera 7.1.0's models (generated from Argo's OpenAPI spec):
types by `model_validate`, and — what hera alone does not do — every key must be a field of its model.

The retry expression is evaluated here as Argo's expr-lang would, on the `lastRetry` Argo gives a
preempted, evicted, OOM-killed, failed or timed-out pod (a small translator of the expression's
operators to Python: enough for the expressions labscale writes, not a general expr-lang engine).
"""

from __future__ import annotations

import functools
import json
import re
import types
import typing
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from conftest import REPO, run_cli, vllm_demo
from hera.workflows.models import CronWorkflow, Workflow
from pydantic import BaseModel, RootModel

from labscale.k8s.argo import RETRY_STRATEGY, render_cron_workflow, render_workflow
from labscale.k8s.pools import BACKOFF_LIMIT
from labscale.k8s.render import load_cluster_plan
from labscale.k8s.target import unit_job_name
from labscale.plan.groups import execution_units

STORE = "s3://labscale-artifacts/test"
ARGO_SCHEMA = REPO.parent / "shared" / "data" / "argo" / "schema.json"
EXAMPLES = {"demo-workflow.yaml": ("studies/demo.yaml", "s3://labscale-artifacts/demo", None),
            "medsum-mistral-t4-workflow.yaml": ("studies/medsum-mistral-t4.yaml", "s3://labscale-artifacts/medsum", None),
            "medsum-mistral-t4-cronworkflow.yaml": ("studies/medsum-mistral-t4.yaml", "s3://labscale-artifacts/medsum",
                                                    "0 3 * * 1")}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, dict, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models(arg)
    return found


def unknown_keys(data: Any, model: type[BaseModel], path: str = "") -> list[str]:
    """Keys of `data` that are no field (by alias or name) of `model`, recursively."""
    if issubclass(model, RootModel) or not isinstance(data, dict):
        return []
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    bad = []
    for key, value in data.items():
        field = fields.get(key)
        if field is None:
            bad.append(f"{path}.{key}")
            continue
        inner = _models(field.annotation)
        items = value if isinstance(value, list) else list(value.values()) if _is_map(field.annotation) else [value]
        for i, item in enumerate(items):
            for sub in inner[:1]:
                bad += unknown_keys(item, sub, f"{path}.{key}[{i}]" if isinstance(value, list) else f"{path}.{key}")
    return bad


def _is_map(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_map(a) for a in typing.get_args(annotation))
    return origin is dict


@functools.cache
def argo_schema() -> dict[str, Any] | None:
    """Argo's published definitions, IntOrString widened to integer-or-string as Argo accepts it
    (the published schema narrows it to a string; see ../shared/data/README.md)."""
    if not ARGO_SCHEMA.is_file():
        return None
    definitions = json.loads(ARGO_SCHEMA.read_text())["definitions"]
    definitions["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {"type": ["integer", "string"]}
    return definitions


def check_schema(doc: dict[str, Any]) -> None:
    definitions = argo_schema()
    if definitions is None:
        pytest.skip("../shared/data/argo/schema.json is not present")
    schema = {"$ref": f"#/definitions/io.argoproj.workflow.v1alpha1.{doc['kind']}", "definitions": definitions}
    jsonschema.validate(doc, schema, cls=jsonschema.Draft202012Validator)


def check_argo(doc: dict[str, Any]) -> None:
    model = {"Workflow": Workflow, "CronWorkflow": CronWorkflow}[doc["kind"]]
    model.model_validate(doc)
    assert unknown_keys(doc, model) == []
    check_schema(doc)


def test_strict_check_catches_an_unknown_field() -> None:
    cp = load_cluster_plan(str(REPO / "studies/demo.yaml"), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    doc["spec"]["templates"][0]["container"]["imagePullPolicyy"] = "Always"
    assert unknown_keys(doc, Workflow) == [".spec.templates[0].container.imagePullPolicyy"]


def dag_tasks(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in next(t for t in doc["spec"]["templates"] if "dag" in t)["dag"]["tasks"]}


@pytest.mark.parametrize("study", ["studies/demo.yaml", "studies/medsum-mistral-t4.yaml", "studies/lab-scale-ai.yaml",
                                   "studies/lab-scale-ai-api.yaml"])
def test_workflow_dag_mirrors_the_plan(study: str) -> None:
    cp = load_cluster_plan(str(REPO / study), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    check_argo(doc)
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    tasks = templates[doc["spec"]["entrypoint"]]["dag"]["tasks"]
    units = [unit for unit in execution_units(cp.plan.runs) if len(unit) == 1]
    assert len(units) == len(execution_units(cp.plan.runs)), "these studies have no vLLM group"
    runs = [run for (run,) in units]
    assert [t["name"] for t in tasks] == [f"labscale-{r.stage}-{r.key}" for r in runs]
    by_prefix = {r.prefix: f"labscale-{r.stage}-{r.key}" for r in runs}
    for task, run in zip(tasks, runs, strict=True):
        assert task["template"].split("-")[0] == run.stage and task["template"] in templates
        assert task["arguments"]["parameters"] == [{"name": "spec", "value": f"{STORE}/{run.spec_key}"}]
        assert sorted(task.get("dependencies", [])) == sorted(by_prefix[p] for p in run.inputs.values() if p in by_prefix)
    for task, run in zip(tasks, runs, strict=True):
        template = templates[task["template"]]
        assert template["metadata"]["labels"]["labscale.io/stage"] == run.stage
        assert template["container"]["image"].startswith(f"localhost/labscale-{run.stage}:")
        assert template["container"]["args"] == ["--spec", "{{inputs.parameters.spec}}"]
        assert template["retryStrategy"] == RETRY_STRATEGY
        env = {e["name"] for e in template["container"]["env"]}
        assert ("OPENAI_API_KEY" in env) == ("-api-" in task["template"])
        assert ("nodeSelector" in template) == (run.stage in ("train", "generate", "benchmark") and not run.on_api
                                                and cp.target.pool.gpu_memory_gib is not None)


def test_argo_runs_a_vllm_group_as_one_task(tmp_path: Path) -> None:
    """A model's vLLM generate group is one DAG task, as it is one Job: its own template's pod gets every
    member's --spec (one process, one engine) with the stage's deadline per member; it waits for every
    prep and train run a member reads, and every score run of a member waits for it."""
    cp = load_cluster_plan(str(vllm_demo(tmp_path)), store=STORE)
    units = execution_units(cp.plan.runs)
    (group,) = [unit for unit in units if len(unit) > 1]
    assert len(group) == 6
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    check_argo(doc)
    tasks = dag_tasks(doc)
    assert len(tasks) == len(units) == len(cp.plan.runs) - 5
    name = unit_job_name(group)
    assert all(f"labscale-generate-{run.key}" not in tasks for run in group)
    task = tasks[name]
    assert "arguments" not in task
    template = next(t for t in doc["spec"]["templates"] if t["name"] == task["template"])
    assert template["container"]["args"] == [a for run in group for a in ("--spec", f"{STORE}/{run.spec_key}")]
    assert "inputs" not in template and template["container"]["image"].startswith("localhost/labscale-generate:")
    assert template["activeDeadlineSeconds"] == 6 * cp.target.pool.deadline_s("generate")
    assert "nodeSelector" in template and template["retryStrategy"] == RETRY_STRATEGY
    upstream = {f"labscale-{r.stage}-{r.key}" for r in cp.plan.runs if r.stage in ("prep", "train")}
    assert len(upstream) == 4 and set(task["dependencies"]) == upstream  # 2 tasks' preps, 2 adapters
    members = {run.prefix for run in group}
    scores = [r for r in cp.plan.runs if r.stage == "score" and members & set(r.inputs.values())]
    assert len(scores) == 6
    for run in scores:
        assert name in tasks[f"labscale-score-{run.key}"]["dependencies"]


def test_cron_workflow_forbids_overlap() -> None:
    cp = load_cluster_plan(str(REPO / "studies/demo.yaml"), store=STORE)
    doc = render_cron_workflow(cp.plan, cp.target, cp.spec_uri, "0 3 * * 1")
    check_argo(doc)
    assert doc["spec"]["schedules"] == ["0 3 * * 1"] and doc["spec"]["concurrencyPolicy"] == "Forbid"
    assert doc["spec"]["startingDeadlineSeconds"] > 0
    assert doc["spec"]["workflowSpec"] == render_workflow(cp.plan, cp.target, cp.spec_uri)["spec"]


def test_bad_schedule_is_one_line_and_exit_2() -> None:
    result = run_cli("render", "studies/demo.yaml", "--store", STORE, "--executor", "argo", "--schedule", "weekly",
                     cwd=REPO)
    assert result.returncode == 2
    assert result.stderr.strip() == ("labscale: error: --schedule 'weekly': not a cron expression — "
                                     'fix: give 5 fields, e.g. "0 3 * * 1"')


@pytest.mark.parametrize("name", EXAMPLES)
def test_shipped_examples_are_valid_and_current(name: str, tmp_path: Path) -> None:
    """k8s/argo/ examples validate and equal a fresh render (run keys aside: they move with code versions)."""
    shipped = (REPO / "k8s/argo" / name).read_text()
    check_argo(yaml.safe_load(shipped))
    study, store, schedule = EXAMPLES[name]
    args = ["render", study, "--executor", "argo", "--store", store, "--out", str(tmp_path)]
    run_cli(*args, *(["--schedule", schedule] if schedule else []), cwd=REPO, check=True)
    mask = re.compile(r"\b[0-9a-f]{16}\b|(?<=-)[0-9a-f]{12}\b")  # run keys, the image tag's git sha
    fresh = (tmp_path / name).read_text()
    assert mask.sub("KEY", shipped) == mask.sub("KEY", fresh), f"regenerate: labscale {' '.join(args[:-2])} --out k8s/argo"


# ── retries ──────────────────────────────────────────────────────────────────────────────────────

EXPR_TOKEN = re.compile(r'\s*(?:(?P<str>"[^"]*"|\'[^\']*\')|(?P<num>-?\d+)|(?P<op>&&|\|\||==|!=|<=|>=|<|>|!|\(|\))'
                        r'|(?P<word>[A-Za-z_][A-Za-z_.]*))')


def expr_eval(expression: str, last_retry: dict[str, str]) -> bool:
    """Evaluate an Argo retry expression (expr-lang) on `lastRetry` values (all strings, as Argo sets them)."""
    out, pos = [], 0
    while pos < len(expression.rstrip()):
        m = EXPR_TOKEN.match(expression, pos)
        assert m and m.end() > pos, f"unsupported expr-lang at {expression[pos:]!r}"
        pos = m.end()
        if m["str"]:
            out.append(repr(m["str"][1:-1]))
        elif m["num"]:
            out.append(m["num"])
        elif m["op"]:
            out.append({"&&": " and ", "||": " or ", "!": " not "}.get(m["op"], m["op"]))
        elif m["word"] in ("contains", "matches", "in", "not", "and", "or", "true", "false", "asInt"):
            out.append({"contains": " in ", "true": "True", "false": "False", "asInt": "int"}[m["word"]]
                       if m["word"] in ("contains", "true", "false", "asInt") else f" {m['word']} ")
        else:
            assert m["word"].startswith("lastRetry."), m["word"]
            out.append(repr(last_retry[m["word"].removeprefix("lastRetry.")]))
    python = "".join(out)
    # `a contains b` is `b in a` in Python: swap the operands of each `in` of two string literals
    python = re.sub(r"('[^']*')\s+in\s+('[^']*')", r"\2 in \1", python)
    return bool(eval(python, {"__builtins__": {}, "int": int}))  # noqa: S307 — a test-only translator


def attempt(status: str, exit_code: str, message: str) -> dict[str, str]:
    return {"status": status, "exitCode": exit_code, "message": message, "duration": "60"}


RETRIED = {
    "transient error (exit 1)": attempt("Failed", "1", "Error (exit code 1)"),
    "OOM-killed": attempt("Failed", "137", "OOMKilled (exit code 137)"),
    "spot preemption (graceful node shutdown)": attempt("Failed", "143",
                                                        "Pod was terminated in response to imminent node shutdown."),
    "evicted / deleted pod (no exit code)": attempt("Error", "-1", "pod deleted"),
    "drained node": attempt("Error", "-1", "The node was low on resource: ephemeral-storage. Evicted"),
}
NOT_RETRIED = {
    "bad input (exit 2)": attempt("Failed", "2", "Error (exit code 2)"),
    "past its deadline": attempt("Failed", "137", "Pod was active on the node longer than the specified deadline"),
}


@pytest.mark.parametrize("case", RETRIED)
def test_argo_retries_transient_failures_and_disruptions(case: str) -> None:
    assert RETRY_STRATEGY["retryPolicy"] == "Always"  # Error (deleted / evicted pods) as well as Failed
    assert expr_eval(RETRY_STRATEGY["expression"], RETRIED[case]) is True


@pytest.mark.parametrize("case", NOT_RETRIED)
def test_argo_does_not_retry_bad_input_or_a_deadline(case: str) -> None:
    assert expr_eval(RETRY_STRATEGY["expression"], NOT_RETRIED[case]) is False


def test_the_old_exit_1_only_expression_would_fail_the_preemption_cases() -> None:
    """The translator does tell expressions apart: the pre-fix expression retried exit code 1 only."""
    old = "asInt(lastRetry.exitCode) == 1"
    assert [case for case, a in RETRIED.items() if not expr_eval(old, a)] == list(RETRIED)[1:]


def test_retries_keep_each_pod_deadline() -> None:
    """Argo replaces a retried pod's activeDeadlineSeconds with what is left of backoff.maxDuration:
    there is none, so every attempt runs under the stage's own deadline, and the limit covers the
    Jobs' backoffLimit plus preemptions (which Argo counts and a Job's podFailurePolicy does not)."""
    cp = load_cluster_plan(str(REPO / "studies/medsum-mistral-t4.yaml"), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    for template in doc["spec"]["templates"]:
        if "container" not in template:
            continue
        retry = template["retryStrategy"]
        assert "maxDuration" not in retry["backoff"]
        stage = template["metadata"]["labels"]["labscale.io/stage"]
        assert template["activeDeadlineSeconds"] == cp.target.pool.deadline_s(stage)
        assert retry["limit"] > BACKOFF_LIMIT
    deadlines = {t["name"]: t["activeDeadlineSeconds"] for t in doc["spec"]["templates"] if "container" in t}
    assert deadlines["train"] == 24 * 3600 and deadlines["prep"] == 2 * 3600


def test_argo_pods_carry_the_kueue_queue() -> None:
    cp = load_cluster_plan(str(REPO / "studies/demo.yaml"), store=STORE, queue="team", priority_class="low")
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    check_argo(doc)
    for template in (t for t in doc["spec"]["templates"] if "container" in t):
        assert template["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team"
        assert template["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] == "low"


def test_schema_check_catches_a_wrong_type() -> None:
    cp = load_cluster_plan(str(REPO / "studies/demo.yaml"), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    doc["spec"]["templates"][0]["retryStrategy"]["backoff"]["duration"] = 30  # a string in Argo's schema
    with pytest.raises(jsonschema.ValidationError, match="is not of type 'string'"):
        check_schema(doc)
