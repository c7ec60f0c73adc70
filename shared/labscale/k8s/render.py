"""`labscale render`: a study → Job manifests (one per execution unit: a run, or a model's vLLM
generate group — labscale.plan.groups) or an Argo (Cron)Workflow (one DAG task per unit)."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from labscale.config import LoadedStudy, load_study
from labscale.errors import BadInputError
from labscale.k8s import memory
from labscale.models.shapes import GIB, shape_for
from labscale.k8s.argo import render_cron_workflow, render_workflow
from labscale.k8s.jobs import render_unit_job
from labscale.k8s.pools import POOLS, Pool
from labscale.k8s.target import LABEL_PREFIX, LOCAL_REGISTRY, ClusterTarget, unit_job_name
from labscale.params import LoraTrainParams
from labscale.plan import Plan, RunSpec, build_plan
from labscale.plan.groups import execution_units
from labscale.store import ArtifactStore, open_store


@dataclass
class ClusterPlan:
    """A study's plan bound to a store the cluster can reach and to a target."""

    plan: Plan
    store_uri: str
    target: ClusterTarget

    @cached_property
    def store(self) -> ArtifactStore:
        """The store itself, opened on first use (rendering needs only its URI, not credentials)."""
        return open_store(self.store_uri)

    def spec_uri(self, run: RunSpec) -> str:
        return f"{self.store_uri.rstrip('/')}/{run.spec_key}"


def load_cluster_plan(study: str, *, store: str | None = None, pool: str | None = None,
                      namespace: str = "labscale", registry: str = LOCAL_REGISTRY, tag: str = "",
                      queue: str | None = None, priority_class: str | None = None) -> ClusterPlan:
    """Load and plan a study for a cluster (`store`/`pool` override the study's; `queue` /
    `priority_class` the pool's Kueue LocalQueue and WorkloadPriorityClass)."""
    loaded = load_study(study)
    updates = {k: v for k, v in (("store", store), ("pool", pool)) if v}
    if updates:
        loaded = LoadedStudy(loaded.study.model_copy(update=updates), loaded.path, loaded.base_dir)
    uri = loaded.study.store
    if uri.startswith("file://") and not Path(uri.removeprefix("file://")).is_absolute():
        raise BadInputError(f"{study}: store: {uri!r} is a directory on this machine, which pods cannot see — "
                            "fix: pass --store s3://BUCKET/PREFIX")
    target = ClusterTarget(POOLS[loaded.study.pool], namespace, registry, tag, queue or None, priority_class or None)
    if target.priority_class and not target.queue:
        raise BadInputError(f"--priority-class {target.priority_class!r}: a Kueue priority needs a queue — "
                            "fix: also pass --queue LOCALQUEUE")
    return ClusterPlan(build_plan(loaded), uri, target)


def image_warning(target: ClusterTarget) -> str | None:
    """A warning when the images name the localhost registry, which a real cluster's nodes cannot pull from."""
    if not target.local_registry:
        return None
    return (f"images {target.image('<stage>')} are in the {target.registry} registry: only a cluster whose nodes "
            "have them loaded (kind load docker-image, minikube image load) can start the pods — fix: "
            "make push REGISTRY=REG and pass --registry REG")


def train_memory_notes(cp: ClusterPlan) -> dict[str, dict[str, str]]:
    """Per train run on a GPU pool: its estimated GPU memory (annotation); BadInputError if it cannot fit."""
    pool: Pool = cp.target.pool
    notes: dict[str, dict[str, str]] = {}
    for run in cp.plan.runs:
        if not isinstance(run.params, LoraTrainParams) or pool.gpu_memory_gib is None:
            continue
        model, train = run.params.model, run.params.train
        shape = shape_for(model.path)
        if shape is None:
            continue
        fit = memory.TrainFit(model.quantization, train.batch_size, train.grad_accum, train.max_length,
                              train.gradient_checkpointing, train.r)
        need = memory.training_bytes(shape, fit) / GIB
        if not memory.fits(shape, fit, pool.gpu_memory_gib):
            best = memory.plan_training(shape, pool.gpu_memory_gib, max_length=fit.max_length, lora_r=fit.lora_r,
                                        effective_batch=fit.batch_size * fit.grad_accum)
            raise BadInputError(
                f"{cp.plan.study.path}: setting {run.labels['setting']!r}: training {model.path} needs ~{need:.1f} GiB "
                f"of GPU memory, more than the {pool.name} budget of "
                f"{memory.budget_bytes(pool.gpu_memory_gib) / GIB:.1f} GiB — fix: use {best.describe()}")
        notes[run.prefix] = {f"{LABEL_PREFIX}gpu-memory-estimate": f"{need:.1f}Gi"}
    return notes


def render_documents(cp: ClusterPlan, executor: str, schedule: str | None = None) -> dict[str, dict[str, Any]]:
    """File name → manifest: one Job per execution unit, numbered in the order they run (`kubernetes`),
    or one (Cron)Workflow (`argo`)."""
    notes = train_memory_notes(cp)
    name = cp.plan.study.study.name
    if executor == "argo":
        if schedule:
            return {f"{name}-cronworkflow.yaml": render_cron_workflow(cp.plan, cp.target, cp.spec_uri, schedule)}
        return {f"{name}-workflow.yaml": render_workflow(cp.plan, cp.target, cp.spec_uri)}
    if schedule:
        raise BadInputError("--schedule: only the argo executor schedules reruns — fix: add --executor argo")
    units = execution_units(cp.plan.runs)
    width = len(str(len(units)))
    return {f"{i:0{width}d}-{unit_job_name(unit)}.yaml":
            render_unit_job(unit, cp.spec_uri, cp.target, unit_notes(notes, unit)) for i, unit in enumerate(units, 1)}


def unit_notes(notes: dict[str, dict[str, str]], unit: list[RunSpec]) -> dict[str, str]:
    """The annotations of a unit's Job from its runs' (a train run's GPU memory estimate)."""
    merged: dict[str, str] = {}
    for run in unit:
        merged |= notes.get(run.prefix, {})
    return merged


HEADER = "# Rendered by `labscale render`: regenerate it rather than edit it.\n"


class _PlainDumper(yaml.SafeDumper):
    """Writes shared sub-objects out in full (no &anchors / *aliases), as kubectl users expect."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump(documents: dict[str, dict[str, Any]], out: Path | None) -> None:
    """Write each manifest to `out/<file>`, or all of them to stdout as one multi-document YAML."""
    if out is None:
        sys.stdout.write(yaml.dump_all(documents.values(), Dumper=_PlainDumper, sort_keys=False))
        return
    out.mkdir(parents=True, exist_ok=True)
    for file, doc in documents.items():
        (out / file).write_text(HEADER + yaml.dump(doc, Dumper=_PlainDumper, sort_keys=False))
    print(f"wrote {len(documents)} manifest(s) to {out}", file=sys.stderr)
