"""Where rendered manifests point: namespace, images, and the names k8s/base defines."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from labscale.k8s.pools import Pool
from labscale.spec import CELL_LABELS, RunSpec, run_labels

CONFIG_MAP = "labscale-config"
SECRET = "labscale-credentials"
SERVICE_ACCOUNT = "labscale"
ARGO_SERVICE_ACCOUNT = "labscale-argo"
CONTAINER = "stage"
LABEL_PREFIX = "labscale.io/"


def default_tag() -> str:
    """Images are tagged with the package version (and version-gitsha; see `make images`)."""
    return metadata.version("labscale")


@dataclass(frozen=True)
class ClusterTarget:
    """The cluster side of a render: pool, namespace and image registry/tag."""

    pool: Pool
    namespace: str = "labscale"
    registry: str = "localhost"
    tag: str = ""

    def image(self, stage: str) -> str:
        return f"{self.registry}/labscale-{stage}:{self.tag or default_tag()}"


def job_name(spec: RunSpec) -> str:
    """A run's Job (and DAG task) name: stage + run key, a valid DNS-1123 label."""
    return f"labscale-{spec.stage}-{spec.key}"


def job_labels(spec: RunSpec) -> dict[str, str]:
    """Labels on a run's Job and pod: of its run labels (labscale.spec.run_labels), the study, the stage
    and the cell (task/model/setting) it belongs to; run key and spec are annotations."""
    run = run_labels(spec)
    labels = {"app.kubernetes.io/name": "labscale", "app.kubernetes.io/component": run["stage"],
              f"{LABEL_PREFIX}study": run["study"], f"{LABEL_PREFIX}stage": run["stage"]}
    labels |= {f"{LABEL_PREFIX}{k}": run[k] for k in sorted(CELL_LABELS) if run[k]}
    return labels
