"""`file://` backend: objects are files under a root directory (the embedded default store).

Files are written as a temp file + atomic rename; the temp file (mode 600 from `mkstemp`) is given
the mode a plain `open()` would have (0666 less the process umask) before the rename, so a store on a
shared machine is as readable as the umask says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from labscale.store.backend import StoredObject


def umask_mode() -> int:
    """The mode a new file gets from `open()`: 0o666 less the process umask."""
    current = os.umask(0o022)
    os.umask(current)
    return 0o666 & ~current


def honour_umask(path: str | Path) -> None:
    """Give a file made by `mkstemp` (mode 600) the mode the umask allows."""
    os.chmod(path, umask_mode())


class FileBackend:
    """Objects as files below `root`; every write is a temp file + atomic rename."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.uri = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents and path != self.root:
            raise ValueError(f"store key escapes the store root: {key!r}")
        return path

    def _atomic_write(self, key: str, write) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
            honour_umask(tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_file(self, key: str, src: Path) -> None:
        with open(src, "rb") as source:
            self._atomic_write(key, lambda out: shutil.copyfileobj(source, out, 1 << 20))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda out: out.write(data))

    def get_file(self, key: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), dest)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = (p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        return sorted(k for k in keys if not Path(k).name.startswith(".") and k.startswith(prefix))

    def list_objects(self, prefix: str) -> list[StoredObject]:
        objects = []
        for key in self.list(prefix):
            try:
                info = (self.root / key).stat()
            except FileNotFoundError:  # removed while we listed
                continue
            objects.append(StoredObject(key, info.st_size, datetime.fromtimestamp(info.st_mtime, timezone.utc)))
        return objects

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
