"""The s3:// artifact store against a real SeaweedFS S3 server on 127.0.0.1 (see tests/s3server.py)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("boto3")

from boto3.s3.transfer import TransferConfig  # noqa: E402
from conftest import BUCKET, make_artifact, point_env_at, run_cli, small_study  # noqa: E402
from s3server import SeaweedS3  # noqa: E402

from labscale.errors import BadInputError, IntegrityError  # noqa: E402
from labscale.store import MANIFEST, ArtifactStore, open_store, sha256_file  # noqa: E402
from labscale.store.backend import StoreUnavailable  # noqa: E402
from labscale.store.s3 import S3Backend  # noqa: E402

MiB = 1 << 20


@pytest.fixture
def store(s3_env: SeaweedS3) -> ArtifactStore:
    """A store on a fresh prefix of the test bucket."""
    return open_store(f"s3://{BUCKET}/t-{uuid.uuid4().hex[:8]}")


def test_commit_and_fetch_round_trip(store: ArtifactStore, s3_env: SeaweedS3, tmp_path: Path) -> None:
    backend = store.backend
    assert isinstance(backend, S3Backend)
    assert store.uri == f"s3://{BUCKET}/{backend.prefix}"
    assert backend.client.meta.endpoint_url == s3_env.endpoint
    manifest = store.commit("train/k1", make_artifact(tmp_path), {"metrics": {"loss": 1.5}})
    assert backend.list("train/k1/") == ["train/k1/_MANIFEST.json", "train/k1/a.txt", "train/k1/adapter/w.bin"]
    stored = json.loads(backend.get_bytes(f"train/k1/{MANIFEST}"))
    assert stored["files"]["a.txt"]["sha256"] == sha256_file(tmp_path / "src" / "a.txt")
    assert manifest.meta["metrics"]["loss"] == 1.5
    out = tmp_path / "out"
    assert store.fetch("train/k1", out).files["adapter/w.bin"].size == 2560
    assert (out / "a.txt").read_text() == "hello"
    assert (out / "adapter" / "w.bin").read_bytes() == bytes(range(256)) * 10
    umask = os.umask(0o022)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in out.rglob("*") if p.is_file()} == {0o666 & ~umask}
    # the objects really are in the bucket, under the store's prefix
    raw = s3_env.client().get_object(Bucket=BUCKET, Key=f"{backend.prefix}/train/k1/a.txt")["Body"].read()
    assert raw == b"hello"
    store.delete("train/k1")
    assert not store.is_committed("train/k1")
    assert backend.list("train/k1/") == []


def test_large_file_is_multipart_and_round_trips(store: ArtifactStore, s3_env: SeaweedS3, tmp_path: Path) -> None:
    src = tmp_path / "big"
    src.mkdir()
    (src / "weights.bin").write_bytes(os.urandom(20 * MiB))
    store.commit("big/k", src)
    key = f"{store.backend.prefix}/big/k/weights.bin"  # type: ignore[attr-defined]
    head = s3_env.client().head_object(Bucket=BUCKET, Key=key)
    assert head["ContentLength"] == 20 * MiB
    assert head["ETag"].strip('"').endswith("-3")  # 3 parts of 8 MiB
    store.fetch("big/k", tmp_path / "out")
    assert sha256_file(tmp_path / "out" / "weights.bin") == sha256_file(src / "weights.bin")


def test_committed_children_lists_shards_in_order(store: ArtifactStore, tmp_path: Path) -> None:
    src = make_artifact(tmp_path)
    for n in (2, 0, 1):
        store.commit(f"generate/k/shards/{n:05d}", src)
    store.backend.put_bytes("generate/k/shards/00003/predictions.jsonl", b"partial")
    assert store.committed_children("generate/k/shards") == [f"generate/k/shards/{n:05d}" for n in range(3)]


def test_flipped_byte_fails_fetch_and_leaves_no_file(store: ArtifactStore, s3_env: SeaweedS3, tmp_path: Path) -> None:
    store.commit("prep/k", make_artifact(tmp_path))
    store.fetch("prep/k", tmp_path / "ok")
    client = s3_env.client()
    key = f"{store.backend.prefix}/prep/k/adapter/w.bin"  # type: ignore[attr-defined]
    data = bytearray(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    data[100] ^= 0x01
    client.put_object(Bucket=BUCKET, Key=key, Body=bytes(data))
    out = tmp_path / "bad"
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        store.fetch("prep/k", out)
    assert not (out / "adapter" / "w.bin").exists()
    assert list((out / "adapter").iterdir()) == []  # no temp file left either


def test_files_without_manifest_are_not_anmake_artifact(store: ArtifactStore, tmp_path: Path) -> None:
    store.backend.put_bytes("generate/k/predictions.jsonl", b"{}\n")  # a crash before the manifest
    assert not store.is_committed("generate/k")
    with pytest.raises(FileNotFoundError, match="no committed artifact"):
        store.fetch("generate/k", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        store.backend.get_bytes("nope/x")
    with pytest.raises(FileNotFoundError):
        store.backend.get_file("nope/x", tmp_path / "dl" / "x")
    assert list((tmp_path / "dl").iterdir()) == []
    assert not store.backend.exists("nope/x")


def test_missing_bucket_bad_credentials_and_bad_uris_are_bad_input(
        s3_env: SeaweedS3, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BadInputError) as info:
        open_store("s3://no-such-bucket-4711/p")
    message = str(info.value)
    assert "'no-such-bucket-4711'" in message and "does not exist" in message and "fix:" in message
    assert "\n" not in message
    with pytest.raises(BadInputError, match="no bucket"):
        open_store("s3:///p")
    with pytest.raises(BadInputError, match=r"file://PATH or s3://BUCKET/PREFIX"):
        open_store("gs://x/y")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(BadInputError, match="access denied"):
        open_store(f"s3://{BUCKET}/p")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(BadInputError, match="no AWS credentials"):
        open_store(f"s3://{BUCKET}/p")


def test_server_dies_mid_upload_then_recommit_succeeds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Kill S3 after the first part of a 50 MiB upload: commit fails fast and leaves no manifest."""
    with SeaweedS3() as server:
        server.make_bucket(BUCKET)
        point_env_at(server, monkeypatch)
        backend = S3Backend(BUCKET, "fault", max_attempts=2, connect_timeout=1, read_timeout=3,
                            transfer=TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB,
                                                    max_concurrency=2))
        store = ArtifactStore(backend)
        small = make_artifact(tmp_path)
        store.commit("train/k", small)  # an older, sealed version of the artifact
        big = tmp_path / "big"
        big.mkdir()
        (big / "weights.bin").write_bytes(os.urandom(50 * MiB))

        parts: list[int] = []

        def crash_after_first_part(**_: object) -> None:
            parts.append(1)
            if len(parts) == 1:
                server.kill()  # in the transfer thread, before it takes the next part

        backend.client.meta.events.register("after-call.s3.UploadPart", crash_after_first_part)
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match=f"S3 endpoint {server.endpoint} did not answer after 2 attempts"):
            store.commit("train/k", big)
        assert time.monotonic() - started < 20  # bounded retries, short timeouts
        backend.client.meta.events.unregister("after-call.s3.UploadPart", crash_after_first_part)
        assert 1 <= len(parts) < 7

        server.start()  # same data dir and ports
        assert not backend.exists(f"train/k/{MANIFEST}")
        assert not store.is_committed("train/k")
        store.commit("train/k", big)
        store.fetch("train/k", tmp_path / "out")
        assert sha256_file(tmp_path / "out" / "weights.bin") == sha256_file(big / "weights.bin")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_endpoint_is_one_line_exit_1_after_bounded_retries(tmp_path: Path) -> None:
    """`labscale plan --store s3://…` with the endpoint down: transient (exit 1), but one line, no traceback."""
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    env = dict(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="k", AWS_SECRET_ACCESS_KEY="s", AWS_DEFAULT_REGION="us-east-1",
               AWS_MAX_ATTEMPTS="3", AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    study = small_study(tmp_path, settings="  - id: zero-shot\n")
    result = run_cli("plan", str(study), "--store", f"s3://{BUCKET}/p", cwd=tmp_path, env=env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"labscale: error: S3 endpoint {endpoint} did not answer after 3 attempts while "
                               f"checking bucket '{BUCKET}'")
    assert "fix:" in lines[0]
    assert not list(tmp_path.glob("**/_MANIFEST.json"))  # nothing written anywhere
