"""Artifacts: a directory of files committed under a store prefix, sealed by `_MANIFEST.json`.

Commit protocol (the same for every backend): upload every file, then write the manifest last.
The manifest lists each file's sha256 and size, so a reader either sees no manifest (the artifact
does not exist yet, whatever files are lying around) or a complete, verifiable artifact.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from labscale.errors import BadInputError, IntegrityError
from labscale.store.backend import Backend

MANIFEST = "_MANIFEST.json"


class FileEntry(BaseModel):
    sha256: str
    size: int


class Manifest(BaseModel):
    """What a committed artifact holds, and the stage's metadata (metrics, versions, timings)."""

    format: int = 1
    prefix: str
    committed_at: str
    files: dict[str, FileEntry]
    meta: dict[str, Any] = {}


class MissingArtifact(BadInputError, FileNotFoundError):
    """An artifact a reader needs is not committed (deleted, or its stage never ran): rerunning the reader
    cannot help (exit 2); running what makes it can."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore:
    """Commit and read verified artifacts on any `Backend`."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.uri = backend.uri

    # -- reading ----------------------------------------------------------------------------
    def manifest(self, prefix: str) -> Manifest | None:
        """The committed manifest at `prefix`, or None when the artifact is absent or unsealed."""
        try:
            raw = self.backend.get_bytes(f"{prefix}/{MANIFEST}")
        except FileNotFoundError:
            return None
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise IntegrityError(f"{self.uri}/{prefix}/{MANIFEST}: unreadable manifest ({exc.error_count()} errors)") from exc

    def is_committed(self, prefix: str) -> bool:
        """Whether a valid manifest seals `prefix`."""
        try:
            return self.manifest(prefix) is not None
        except IntegrityError:
            return False

    def committed_children(self, prefix: str) -> list[str]:
        """Prefixes directly or deeply below `prefix` that hold a manifest (shards, checkpoints)."""
        suffix = f"/{MANIFEST}"
        keys = self.backend.list(prefix.rstrip("/") + "/")
        return sorted(k[: -len(suffix)] for k in keys if k.endswith(suffix))

    def fetch_file(self, prefix: str, name: str, dest: Path, manifest: Manifest | None = None) -> Path:
        """Download one file of a committed artifact to `dest`, verifying its checksum."""
        manifest = manifest or self.require(prefix)
        entry = manifest.files.get(name)
        if entry is None:
            raise IntegrityError(f"{self.uri}/{prefix}: artifact has no file {name!r}")
        self.backend.get_file(f"{prefix}/{name}", dest)
        actual = sha256_file(dest)
        if actual != entry.sha256 or dest.stat().st_size != entry.size:
            dest.unlink(missing_ok=True)
            raise IntegrityError(
                f"{self.uri}/{prefix}/{name}: checksum mismatch (manifest {entry.sha256[:12]}…, "
                f"stored {actual[:12]}…): the object is corrupted; delete the prefix and rerun"
            )
        return dest

    def fetch(self, prefix: str, dest_dir: Path) -> Manifest:
        """Download a whole committed artifact into `dest_dir`, verifying every file."""
        manifest = self.require(prefix)
        for name in manifest.files:
            self.fetch_file(prefix, name, dest_dir / name, manifest)
        return manifest

    def require(self, prefix: str) -> Manifest:
        """The manifest at `prefix`, or `MissingArtifact` saying which input is missing."""
        manifest = self.manifest(prefix)
        if manifest is None:
            raise MissingArtifact(f"{self.uri}/{prefix}: no committed artifact — fix: run its stage first "
                                  "(`labscale run STUDY` runs every missing one)")
        return manifest

    # -- writing ----------------------------------------------------------------------------
    def commit(self, prefix: str, local_dir: Path, meta: dict[str, Any] | None = None) -> Manifest:
        """Upload every file below `local_dir` to `prefix`, then seal it with the manifest."""
        self.backend.delete(f"{prefix}/{MANIFEST}")  # a re-commit is unsealed until it is whole
        files: dict[str, FileEntry] = {}
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            name = path.relative_to(local_dir).as_posix()
            if name == MANIFEST:
                continue
            files[name] = FileEntry(sha256=sha256_file(path), size=path.stat().st_size)
            self.backend.put_file(f"{prefix}/{name}", path)
        manifest = Manifest(
            prefix=prefix,
            committed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            files=files,
            meta=meta or {},
        )
        self.backend.put_bytes(f"{prefix}/{MANIFEST}", manifest.model_dump_json(indent=2).encode())
        return manifest

    def delete(self, prefix: str) -> None:
        """Remove a committed artifact: unseal it first, then delete its files."""
        manifest = self.manifest(prefix)
        self.backend.delete(f"{prefix}/{MANIFEST}")
        for name in manifest.files if manifest else ():
            self.backend.delete(f"{prefix}/{name}")

    def put_json(self, key: str, payload: Any) -> bool:
        """Write a small standalone JSON object (run specs); not an artifact. Nothing is written when the
        same bytes are stored there already (so a fully cached run works on a read-only store); True if written."""
        data = json.dumps(payload, indent=2, sort_keys=True).encode()
        try:
            if self.backend.get_bytes(key) == data:
                return False
        except FileNotFoundError:
            pass
        self.backend.put_bytes(key, data)
        return True

