"""Artifact storage: `open_store("file://…" | "s3://…")` returns an `ArtifactStore`."""

from __future__ import annotations

from pathlib import Path

from labscale.errors import BadInputError
from labscale.store.artifacts import MANIFEST, ArtifactStore, Manifest, MissingArtifact, sha256_file
from labscale.store.file import FileBackend

DEFAULT_STORE = "file://.labscale"

__all__ = ["DEFAULT_STORE", "MANIFEST", "ArtifactStore", "Manifest", "MissingArtifact", "open_store", "sha256_file"]


def open_store(uri: str, base_dir: Path | None = None) -> ArtifactStore:
    """Open a store URI. `file://rel` is relative to `base_dir` (default: the working directory)."""
    if uri.startswith("file://"):
        path = Path(uri[len("file://"):])
        if not path.is_absolute():
            path = (base_dir or Path.cwd()) / path
        return ArtifactStore(FileBackend(path))
    if uri.startswith("s3://"):
        try:  # boto3 is an optional extra: its backend is imported only for an s3:// store
            from labscale.store.s3 import S3Backend
        except ImportError as exc:
            raise BadInputError(f"store URI {uri!r} needs boto3 — fix: pip install 'labscale[cloud]'") from exc
        return ArtifactStore(S3Backend.from_uri(uri))
    raise BadInputError(f"store URI {uri!r}: unsupported scheme — fix: use file://PATH or s3://BUCKET/PREFIX")
