"""The file:// artifact store: commit protocol, checksum verification, sub-artifacts."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import make_artifact

from labscale.errors import BadInputError, IntegrityError
from labscale.store import MANIFEST, open_store, sha256_file


def test_commit_writes_files_then_manifest_with_checksums(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    manifest = store.commit("train/k1", make_artifact(tmp_path), {"metrics": {"loss": 1.5}})
    root = tmp_path / "store" / "train" / "k1"
    on_disk = json.loads((root / MANIFEST).read_text())
    assert set(on_disk["files"]) == {"a.txt", "adapter/w.bin"}
    assert on_disk["files"]["a.txt"]["sha256"] == sha256_file(root / "a.txt")
    assert on_disk["files"]["adapter/w.bin"]["size"] == 2560
    assert manifest.meta["metrics"]["loss"] == 1.5
    assert store.is_committed("train/k1")


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_store_files_honour_the_umask(tmp_path: Path, umask: int) -> None:
    """Files the store writes (objects, manifests, specs, fetched copies) get 0666 less the umask, as
    `open()` gives, not mkstemp's 600: results can be shared on a multi-user machine."""
    old = os.umask(umask)
    try:
        store = open_store(f"file://{tmp_path / 'store'}")
        store.commit("train/k1", make_artifact(tmp_path), {})
        store.put_json("specs/train/k1.json", {"a": 1})
        store.fetch("train/k1", tmp_path / "out")
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    written += [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(written) == 6  # a.txt, adapter/w.bin, the manifest, the spec, two fetched copies
    assert {stat.S_IMODE(p.stat().st_mode) for p in written} == {0o666 & ~umask}


def test_files_without_manifest_are_not_anmake_artifact(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    store.backend.put_bytes("generate/k/predictions.jsonl", b"{}\n")  # a crash before the manifest
    assert not store.is_committed("generate/k")
    with pytest.raises(FileNotFoundError, match="no committed artifact"):
        store.fetch("generate/k", tmp_path / "out")


def test_fetch_verifies_and_detects_a_flipped_byte(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    store.commit("prep/k", make_artifact(tmp_path))
    out = tmp_path / "out"
    store.fetch("prep/k", out)
    assert (out / "a.txt").read_text() == "hello"
    victim = tmp_path / "store" / "prep" / "k" / "adapter" / "w.bin"
    data = bytearray(victim.read_bytes())
    data[100] ^= 0x01
    victim.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        store.fetch("prep/k", tmp_path / "out2")
    assert not (tmp_path / "out2" / "adapter" / "w.bin").exists()


def test_recommit_unseals_first_and_delete_removes(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 'store'}")
    src = make_artifact(tmp_path)
    store.commit("x/k", src)
    (src / "a.txt").write_text("changed")
    store.commit("x/k", src)
    store.fetch("x/k", tmp_path / "o")
    assert (tmp_path / "o" / "a.txt").read_text() == "changed"
    store.delete("x/k")
    assert not store.is_committed("x/k")
    assert store.backend.list("x/k/") == []


def test_committed_children_lists_shards_in_order(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    src = make_artifact(tmp_path)
    for n in (2, 0, 1):
        store.commit(f"generate/k/shards/{n:05d}", src)
    store.backend.put_bytes("generate/k/shards/00003/predictions.jsonl", b"partial")
    assert store.committed_children("generate/k/shards") == [f"generate/k/shards/{n:05d}" for n in range(3)]


def test_relative_file_store_and_bad_scheme(tmp_path: Path) -> None:
    store = open_store("file://rel", base_dir=tmp_path)
    assert store.uri == f"file://{tmp_path / 'rel'}"
    with pytest.raises(BadInputError, match="unsupported scheme"):
        open_store("ftp://x")


def test_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path / 's'}")
    with pytest.raises(ValueError, match="escapes"):
        store.backend.put_bytes("../evil", b"x")
