"""`labscale render --executor argo`: a Workflow / CronWorkflow whose DAG mirrors the plan.

No Argo JSON schema ships in any PyPI package and this machine reaches nothing else, so manifests
are checked against hera 7.1.0's models (generated from Argo's published OpenAPI spec): types by
`model_validate`, and — what hera alone does not do — every key must be a field of its model.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO, run_cli
from hera.workflows.models import CronWorkflow, Workflow
from pydantic import BaseModel, RootModel

from labscale.k8s.argo import render_cron_workflow, render_workflow
from labscale.k8s.render import load_cluster_plan

STORE = "s3://labscale-artifacts/test"
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


def check_argo(doc: dict[str, Any]) -> None:
    model = {"Workflow": Workflow, "CronWorkflow": CronWorkflow}[doc["kind"]]
    model.model_validate(doc)
    assert unknown_keys(doc, model) == []


def test_strict_check_catches_an_unknown_field() -> None:
    cp = load_cluster_plan(str(REPO / "studies/demo.yaml"), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    doc["spec"]["templates"][0]["container"]["imagePullPolicyy"] = "Always"
    assert unknown_keys(doc, Workflow) == [".spec.templates[0].container.imagePullPolicyy"]


@pytest.mark.parametrize("study", ["studies/demo.yaml", "studies/medsum-mistral-t4.yaml", "studies/lab-scale-ai.yaml"])
def test_workflow_dag_mirrors_the_plan(study: str) -> None:
    cp = load_cluster_plan(str(REPO / study), store=STORE)
    doc = render_workflow(cp.plan, cp.target, cp.spec_uri)
    check_argo(doc)
    templates = {t["name"]: t for t in doc["spec"]["templates"]}
    tasks = templates[doc["spec"]["entrypoint"]]["dag"]["tasks"]
    assert [t["name"] for t in tasks] == [f"labscale-{r.stage}-{r.key}" for r in cp.plan.runs]
    by_prefix = {r.prefix: f"labscale-{r.stage}-{r.key}" for r in cp.plan.runs}
    for task, run in zip(tasks, cp.plan.runs, strict=True):
        assert task["template"] == run.stage
        assert task["arguments"]["parameters"] == [{"name": "spec", "value": f"{STORE}/{run.spec_key}"}]
        assert sorted(task.get("dependencies", [])) == sorted(by_prefix[p] for p in run.inputs.values() if p in by_prefix)
    for stage in {r.stage for r in cp.plan.runs}:
        template = templates[stage]
        assert template["container"]["image"].startswith(f"localhost/labscale-{stage}:")
        assert template["container"]["args"] == ["--spec", "{{inputs.parameters.spec}}"]
        retry = template["retryStrategy"]
        assert retry["expression"] == "asInt(lastRetry.exitCode) == 1" and retry["backoff"]["factor"] == 2


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
    mask = re.compile(r"\b[0-9a-f]{16}\b")
    fresh = (tmp_path / name).read_text()
    assert mask.sub("KEY", shipped) == mask.sub("KEY", fresh), f"regenerate: labscale {' '.join(args[:-2])} --out k8s/argo"
