"""Store maintenance: `verify` re-checksums every committed artifact; `gc` plans (and applies) removals.

Both work on any `Backend` through its object operations; sizes and last writes come from the
storage system's own listing (`Backend.list_objects`: a file's stat on `file://`, the object listing
on `s3://`).

What gc may remove, and nothing else:

- `checkpoint`: `train/<key>/checkpoints/` of a committed train run (only an unfinished run resumes
  from them);
- `leftover`: a run prefix `<stage>/<key>` (or an uploaded source, `sources/<hash>`) with objects but
  no `_MANIFEST.json`, whose newest object *and* newest attempt record are older than the cut-off
  (a run in progress rewrites its attempt record every heartbeat, so it is never that old);
- `unreferenced`: with `References` from the current plans of the studies to keep, every committed
  run and source none of them references, with its spec, log and metrics textfile. Without
  references, nothing is removed for this reason (the store may be shared with other studies).

Specs of referenced runs, attempt records of committed runs and anything under other top-level
folders are never touched; every deletion is a backend key, so nothing outside the store root.
"""

from __future__ import annotations

import re
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from labscale.errors import BadInputError
from labscale.spec import STAGES
from labscale.store.artifacts import MANIFEST, ArtifactStore, Manifest, sha256_file
from labscale.store.attempts import ATTEMPTS, read_attempts
from labscale.store.backend import StoredObject
from labscale.store.file import FileBackend

SOURCES = "sources"
UNIT_TOPS = (*STAGES, SOURCES)
"""Top-level folders whose `<top>/<name>` prefixes are units gc removes whole (runs, uploaded sources)."""
RUN_FILES = (("specs", ".json"), ("logs", ".log"), ("metrics", ".prom"))
"""Objects beside a run `<stage>/<key>` that belong to it: `specs/<stage>/<key>.json` (its spec), its local
log and its metrics textfile."""


def _run_file(top: str, ext: str, run: str) -> str:
    return f"{top}/{run}{ext}"


def _run_of_file(key: str) -> str | None:
    """The run `<stage>/<key>` a spec, log or textfile belongs to (None for other keys)."""
    for top, ext in RUN_FILES:
        if key.startswith(f"{top}/") and key.endswith(ext):
            run = key[len(top) + 1: -len(ext)]
            if run.count("/") == 1 and run.split("/")[0] in STAGES:
                return run
    return None


def list_objects(store: ArtifactStore, prefix: str = "") -> list[StoredObject]:
    """Every object below `prefix`, sorted by key, with its size and last write."""
    return store.backend.list_objects(prefix)


def size_text(n: int) -> str:
    """Bytes as a short decimal size (`12.3 MB`)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


# -- verify -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a committed artifact: `file` is '' for the artifact as a whole."""

    prefix: str
    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.prefix}/{self.file or MANIFEST}: {self.what}"


@dataclass
class VerifyReport:
    """What `verify` checked and what it found."""

    uri: str
    artifacts: int = 0
    files: int = 0
    bytes: int = 0
    """The sizes the manifests give of every file checked."""
    problems: list[Problem] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        found = "no problems" if self.clean else f"{len(self.problems)} problem(s)"
        return (f"verified {self.artifacts} artifacts, {self.files} files, {size_text(self.bytes)} "
                f"in {self.uri}: {found}")


def _committed(objects: Iterable[StoredObject]) -> list[str]:
    suffix = f"/{MANIFEST}"
    return sorted(o.key[: -len(suffix)] for o in objects if o.key.endswith(suffix))


def _read_manifest(store: ArtifactStore, prefix: str) -> Manifest | str:
    """The manifest at `prefix`, or what is wrong with it."""
    try:
        return Manifest.model_validate_json(store.backend.get_bytes(f"{prefix}/{MANIFEST}"))
    except FileNotFoundError:
        return "manifest vanished while verifying"
    except ValidationError as exc:
        return (f"unreadable manifest ({exc.error_count()} errors) — the artifact cannot be used; "
                "delete the prefix and rerun")


def _stored_sha256(store: ArtifactStore, key: str, scratch: Path) -> str:
    """Hash an object: in place on `file://`, else through a temporary download."""
    backend = store.backend
    if isinstance(backend, FileBackend):
        return sha256_file(backend.root / key)
    tmp = scratch / "object"
    try:
        backend.get_file(key, tmp)
        return sha256_file(tmp)
    finally:
        tmp.unlink(missing_ok=True)


def verify(store: ArtifactStore, progress: Callable[[int, int], Any] | None = None) -> VerifyReport:
    """Re-checksum every file of every committed artifact (every `_MANIFEST.json`, nested ones included:
    checkpoints, shards, sources). `progress(done_bytes, total_bytes)` is called as files are checked."""
    objects = list_objects(store)
    by_key = {o.key: o for o in objects}
    report = VerifyReport(store.uri)
    manifests: list[tuple[str, Manifest]] = []
    for prefix in _committed(objects):
        report.artifacts += 1
        manifest = _read_manifest(store, prefix)
        if isinstance(manifest, str):
            report.problems.append(Problem(prefix, "", manifest))
        else:
            if manifest.prefix != prefix:
                report.problems.append(Problem(prefix, "", f"manifest names prefix {manifest.prefix!r}: it was "
                                                            "copied or moved here — delete the prefix and rerun"))
            manifests.append((prefix, manifest))
    total = sum(entry.size for _, manifest in manifests for entry in manifest.files.values())
    done = 0
    with tempfile.TemporaryDirectory(prefix="labscale-verify-") as scratch:
        for prefix, manifest in manifests:
            for name, entry in sorted(manifest.files.items()):
                key = f"{prefix}/{name}"
                report.files += 1
                what = _check_file(store, key, entry.sha256, entry.size, by_key.get(key), Path(scratch))
                if what:
                    report.problems.append(Problem(prefix, name, what))
                report.bytes += entry.size
                done += entry.size
                if progress:
                    progress(done, total)
    return report


def _check_file(store: ArtifactStore, key: str, sha256: str, size: int, listed: StoredObject | None,
                scratch: Path) -> str:
    """What is wrong with one file of an artifact ('' when it matches its manifest entry)."""
    if key.startswith("/") or ".." in key.split("/"):
        return "the manifest names a file outside its prefix (tampered) — delete the prefix and rerun"
    if listed is None and not store.backend.exists(key):
        return "missing (listed in the manifest, not stored) — delete the prefix and rerun its stage"
    if listed is not None and listed.size != size:
        return (f"size {listed.size} bytes, manifest says {size} (truncated or overwritten) — "
                "delete the prefix and rerun")
    try:
        actual = _stored_sha256(store, key, scratch)
    except FileNotFoundError:
        return "missing (vanished while verifying)"
    if actual != sha256:
        return (f"sha256 mismatch (manifest {sha256[:12]}…, stored {actual[:12]}…): corrupted — "
                "delete the prefix and rerun its stage")
    return ""


# -- gc ---------------------------------------------------------------------------------------

Reason = Literal["checkpoint", "leftover", "unreferenced"]
REASONS: dict[str, str] = {
    "checkpoint": "checkpoints of a committed train run",
    "leftover": "uncommitted leftover",
    "unreferenced": "committed, no current plan references it",
}


@dataclass(frozen=True)
class References:
    """What the current plans of the studies to keep need: run prefixes (`<stage>/<key>`) and sources."""

    runs: frozenset[str]
    sources: frozenset[str]

    def __contains__(self, unit: str) -> bool:
        return unit in self.runs or unit in self.sources


@dataclass(frozen=True)
class GcPolicy:
    """What to remove: leftovers older than `older_than`; unreferenced runs only when `keep` is given."""

    older_than: timedelta = timedelta(days=7)
    keep: References | None = None
    now: datetime | None = None
    """The time ages are measured from (default: now)."""


@dataclass(frozen=True)
class Removal:
    """One thing gc removes: everything stored under `prefix` (and its run's files), for `reason`."""

    prefix: str
    reason: Reason
    keys: tuple[str, ...]
    bytes: int
    detail: str = ""

    def describe(self) -> str:
        detail = f"; {self.detail}" if self.detail else ""
        return f"{self.prefix}  ({len(self.keys)} objects, {size_text(self.bytes)}): {REASONS[self.reason]}{detail}"


@dataclass(frozen=True)
class Kept:
    """An uncommitted run gc leaves alone, and why (it may be in progress)."""

    prefix: str
    why: str


@dataclass
class GcPlan:
    """What gc would remove (or removed, once applied)."""

    uri: str
    removals: list[Removal] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)

    @property
    def objects(self) -> int:
        return sum(len(r.keys) for r in self.removals)

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.removals)


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> timedelta:
    """`90m`, `12h`, `7d`, `2w` (s, m, h, d, w) → a timedelta; anything else is bad input."""
    match = _AGE.match(text)
    if not match:
        raise BadInputError(f"--older-than {text!r}: not an age — fix: a number and a unit, e.g. 12h, 7d or 2w "
                            "(units s, m, h, d, w)")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _unit(key: str) -> str | None:
    """The run (or source) prefix a key belongs to, or None for keys outside such units."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] in UNIT_TOPS:
        return f"{parts[0]}/{parts[1]}"
    return None


def _age_text(age: timedelta) -> str:
    """`45m`, `5.5h`, `7d`."""
    seconds = age.total_seconds()
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.3g}h" if seconds < 48 * 3600 else f"{seconds / 86400:.3g}d"


def _last_write(store: ArtifactStore, unit: str, objects: list[StoredObject]) -> datetime | None:
    """The newest of the unit's object times and its attempt records' `updated_at` (None when neither is known)."""
    dated = [o.modified for o in objects]
    if unit.split("/")[0] in STAGES and any(f"/{ATTEMPTS}/" in o.key for o in objects):
        for record in read_attempts(store, unit):
            try:
                dated.append(datetime.fromisoformat(record.updated_at))
            except ValueError:
                continue
    return max(dated, default=None)


def _ordered(objects: Iterable[StoredObject]) -> tuple[str, ...]:
    """Keys in deletion order: manifests first (a reader then sees nothing committed), then the rest."""
    keys = [o.key for o in objects]
    return tuple(sorted(keys, key=lambda k: (not k.endswith(f"/{MANIFEST}"), k)))


def _removal(prefix: str, reason: Reason, objects: list[StoredObject], detail: str = "") -> Removal:
    return Removal(prefix, reason, _ordered(objects), sum(o.size for o in objects), detail)


def plan_gc(store: ArtifactStore, policy: GcPolicy) -> GcPlan:
    """What gc removes under `policy`; removes nothing (see `apply_gc`)."""
    now = policy.now or datetime.now(timezone.utc)
    objects = list_objects(store)
    by_key = {o.key: o for o in objects}
    units: dict[str, list[StoredObject]] = defaultdict(list)
    for obj in objects:
        if (unit := _unit(obj.key)) is not None:
            units[unit].append(obj)
    plan = GcPlan(store.uri)
    for unit, members in sorted(units.items()):
        committed = f"{unit}/{MANIFEST}" in by_key
        stage = unit.split("/")[0]
        unreferenced = policy.keep is not None and unit not in policy.keep
        extra = [by_key[k] for k in (_run_file(top, ext, unit) for top, ext in RUN_FILES) if k in by_key] \
            if unreferenced else []
        if committed and unreferenced:
            plan.removals.append(_removal(unit, "unreferenced", members + extra))
        elif committed and stage == "train":
            checkpoints = [o for o in members if o.key.startswith(f"{unit}/checkpoints/")]
            if checkpoints:
                plan.removals.append(_removal(f"{unit}/checkpoints", "checkpoint", checkpoints))
        elif not committed:
            last = _last_write(store, unit, members)
            if last is None:
                plan.kept.append(Kept(unit, "uncommitted, age unknown (the store does not date its objects)"))
            elif now - last < policy.older_than:
                plan.kept.append(Kept(unit, f"uncommitted, last written {_age_text(now - last)} ago "
                                            f"(younger than {_age_text(policy.older_than)}: may be in progress)"))
            else:
                plan.removals.append(_removal(unit, "leftover", members + extra,
                                              f"last written {_age_text(now - last)} ago"))
    if policy.keep is not None:  # specs (logs, textfiles) of runs no kept plan references and nothing stores
        orphans: dict[str, list[StoredObject]] = defaultdict(list)
        for obj in objects:
            run = _run_of_file(obj.key)
            if run is not None and run not in policy.keep and run not in units:
                orphans[run].append(obj)
        plan.removals += [_removal(run, "unreferenced", files, "only its spec/log/metrics are stored")
                          for run, files in orphans.items()]
    plan.removals.sort(key=lambda r: (r.prefix, r.reason))
    return plan


def apply_gc(store: ArtifactStore, plan: GcPlan, progress: Callable[[int], Any] | None = None) -> None:
    """Delete what `plan` lists, each unit's manifests first; `progress(n)` after each object."""
    for removal in plan.removals:
        for key in removal.keys:
            store.backend.delete(key)
            if progress:
                progress(1)
    root = store.backend.root if isinstance(store.backend, FileBackend) else None
    if root is not None:  # file://: drop the directories left empty (S3 has none)
        for removal in plan.removals:
            for key in removal.keys:
                _prune_empty(root, (root / key).parent)


def _prune_empty(root: Path, directory: Path) -> None:
    while directory != root and root in directory.parents:
        try:
            directory.rmdir()
        except OSError:  # not empty (or already gone by another path)
            if directory.exists():
                return
        directory = directory.parent


__all__ = ["GcPlan", "GcPolicy", "Kept", "Problem", "References", "Removal", "StoredObject", "VerifyReport",
           "apply_gc", "list_objects", "parse_age", "plan_gc", "size_text", "verify"]
