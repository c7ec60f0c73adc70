"""What every executor does before any run starts (the local one, `labscale submit`, `labscale render
--write-specs`): put the study's local files and the plan's run specs in the store, where stages read
them whatever machine they run on."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from labscale.plan import Plan
from labscale.store import ArtifactStore


def upload_sources(plan: Plan, store: ArtifactStore) -> None:
    """Commit the study's local data files to the store (content-addressed), so stages read them there."""
    for prefix, path in plan.uploads.items():
        if store.is_committed(prefix):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            staged = Path(tmp) / path.name
            shutil.copyfile(path, staged)
            store.commit(prefix, Path(tmp), {"source": path.name})


def write_specs(plan: Plan, store: ArtifactStore) -> None:
    """Write every run's RunSpec to the store (`specs/<stage>/<key>.json`: what `--spec` points at), except
    those stored already: with every spec and run in place, publishing writes nothing."""
    for spec in plan.runs:
        store.put_json(spec.spec_key, spec.model_dump(mode="json"))
