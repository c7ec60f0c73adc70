"""Where rendered manifests point: namespace, images, Kueue queue, and the names k8s/base defines.

Images: `make images` tags each stage image `VERSION` and `VERSION-GITSHA` (12 hex digits of the
commit); `make push` records each pushed `VERSION-GITSHA` image's registry digest in
`images/digests/VERSION-GITSHA.txt` (lines `REGISTRY/labscale-STAGE:TAG sha256:…`). A render points
at the digest recorded for its registry and tag (`REGISTRY/labscale-STAGE@sha256:…`), else at the
immutable `VERSION-GITSHA` tag of the checkout it runs from, both with `imagePullPolicy:
IfNotPresent` (a node never runs a stale copy of what cannot move); a `--tag` given by hand that is
not of that form, or a bare VERSION outside a git checkout, is mutable, so it is pulled `Always`.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from pathlib import Path

from labscale.k8s.pools import Pool
from labscale.spec import CELL_LABELS, RunSpec, run_labels

CONFIG_MAP = "labscale-config"
SECRET = "labscale-credentials"
SERVICE_ACCOUNT = "labscale"
ARGO_SERVICE_ACCOUNT = "labscale-argo"
CONTAINER = "stage"
LABEL_PREFIX = "labscale.io/"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
LOCAL_REGISTRY = "localhost"
IMMUTABLE_TAG = re.compile(r"^.+-[0-9a-f]{12}$")
"""`VERSION-GITSHA` as `make images` writes it (git rev-parse --short=12)."""


DIGESTS_DIR = Path("images") / "digests"
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@cache
def _git(*args: str) -> str | None:
    """`git ARGS` in the checkout labscale runs from; None outside git."""
    try:
        out = subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_sha() -> str | None:
    """The 12-hex short commit of the checkout labscale runs from (as the Makefile's GIT_SHA)."""
    sha = _git("rev-parse", "--short=12", "HEAD")
    return sha if sha and re.fullmatch(r"[0-9a-f]{12}", sha) else None


def recorded_digests(tag: str, root: Path | None = None) -> dict[str, str]:
    """Image reference → digest, as `make push` recorded them for `tag` in the checkout (`root`)."""
    if root is None:
        top = _git("rev-parse", "--show-toplevel")
        if top is None:
            return {}
        root = Path(top)
    path = root / DIGESTS_DIR / f"{tag}.txt"
    if not path.is_file():
        return {}
    digests = {}
    for line in path.read_text().splitlines():
        ref, _, digest = line.strip().partition(" ")
        if DIGEST.match(digest.strip()):
            digests[ref] = digest.strip()
    return digests


def default_tag() -> str:
    """`VERSION-GITSHA` (the immutable tag `make images` builds) in a git checkout, else `VERSION`."""
    version = metadata.version("labscale")
    sha = git_sha()
    return f"{version}-{sha}" if sha else version


@dataclass(frozen=True)
class ClusterTarget:
    """The cluster side of a render: pool, namespace, image registry/tag and Kueue queue.

    `queue` / `priority_class` default to the pool's."""

    pool: Pool
    namespace: str = "labscale"
    registry: str = LOCAL_REGISTRY
    tag: str = ""
    queue: str | None = None
    priority_class: str | None = None
    digests: dict[str, str] | None = field(default=None, compare=False)
    """Image reference → registry digest (default: what `make push` recorded for the tag)."""

    def __post_init__(self) -> None:
        if self.queue is None:
            object.__setattr__(self, "queue", self.pool.queue)
        if self.priority_class is None:
            object.__setattr__(self, "priority_class", self.pool.priority_class)
        if self.digests is None:
            object.__setattr__(self, "digests", recorded_digests(self.image_tag))

    @property
    def image_tag(self) -> str:
        return self.tag or default_tag()

    def image(self, stage: str) -> str:
        """`REGISTRY/labscale-STAGE@DIGEST` when `make push` recorded one for the tag, else `…:TAG`."""
        name = f"{self.registry}/labscale-{stage}"
        digest = (self.digests or {}).get(f"{name}:{self.image_tag}")
        return f"{name}@{digest}" if digest else f"{name}:{self.image_tag}"

    def pull_policy(self, stage: str) -> str:
        """IfNotPresent for a digest or an immutable VERSION-GITSHA tag, Always for a tag that can move."""
        return "IfNotPresent" if "@" in self.image(stage) or IMMUTABLE_TAG.match(self.image_tag) else "Always"

    @property
    def local_registry(self) -> bool:
        return self.registry.split("/", 1)[0].split(":", 1)[0] in (LOCAL_REGISTRY, "127.0.0.1")

    def kueue_labels(self) -> dict[str, str]:
        """The labels Kueue admits a Job (or an Argo pod) by; none without a queue."""
        if not self.queue:
            return {}
        labels = {KUEUE_QUEUE_LABEL: self.queue}
        if self.priority_class:
            labels[KUEUE_PRIORITY_LABEL] = self.priority_class
        return labels


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


def unit_job_name(unit: Sequence[RunSpec]) -> str:
    """The Job name of a unit of runs (labscale.plan.groups): a single run's `job_name`; a group's is
    its first run's plus `-g` and 8 hex digits of its members' keys (at most 44 characters)."""
    if len(unit) == 1:
        return job_name(unit[0])
    digest = hashlib.sha256(" ".join(run.key for run in unit).encode()).hexdigest()[:8]
    return f"{job_name(unit[0])}-g{digest}"


def unit_labels(unit: Sequence[RunSpec]) -> dict[str, str]:
    """The labels every member of the unit has (a group's cells differ in task and setting)."""
    first, *rest = (job_labels(run) for run in unit)
    return {k: v for k, v in first.items() if all(other.get(k) == v for other in rest)}
