"""The byte-level interface an artifact store needs from a storage system.

`ArtifactStore` (manifests, checksums, commit-last) is written once against this protocol; a
storage system (local files, S3) only implements these few object operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from labscale.errors import EXIT_TRANSIENT, LabscaleError


class StoreUnavailable(LabscaleError):
    """The storage system did not answer (endpoint down, timeouts) after the backend's bounded retries:
    a transient failure (exit 1), reported in one line that names the endpoint."""

    exit_code = EXIT_TRANSIENT


@dataclass(frozen=True)
class StoredObject:
    """One object of a store: its key, its size and when it was last written."""

    key: str
    size: int
    modified: datetime


class Backend(Protocol):
    """Flat object storage addressed by '/'-separated keys."""

    uri: str

    def put_file(self, key: str, src: Path) -> None:
        """Store the file at `src` under `key`, replacing any object there."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any object there."""

    def get_file(self, key: str, dest: Path) -> None:
        """Copy the object at `key` to `dest`; raise FileNotFoundError if absent."""

    def get_bytes(self, key: str) -> bytes:
        """Return the object at `key`; raise FileNotFoundError if absent."""

    def exists(self, key: str) -> bool:
        """Whether an object is stored at `key`."""

    def list(self, prefix: str) -> list[str]:
        """All keys that start with `prefix`, sorted."""

    def list_objects(self, prefix: str) -> list[StoredObject]:
        """All objects whose key starts with `prefix`, sorted by key, with size and last write."""

    def delete(self, key: str) -> None:
        """Remove the object at `key` (no error if absent)."""
