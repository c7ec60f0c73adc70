"""`labscale store verify` and `labscale store gc` on small stores built with ArtifactStore.commit."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from conftest import BUCKET, make_artifact, run_cli, small_study

from labscale.cli import main
from labscale.config import load_study
from labscale.executors.publish import upload_sources, write_specs
from labscale.plan import build_plan
from labscale.store import MANIFEST, ArtifactStore, open_store
from labscale.store.attempts import AttemptRecord, new_attempt_key
from labscale.store.maintenance import GcPolicy, parse_age, plan_gc, size_text

OLD = time.time() - 30 * 86400  # a month ago


def _bytes(root: Path, prefix: str) -> int:
    return sum(p.stat().st_size for p in (root / prefix).rglob("*") if p.is_file())


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _attempt(store: ArtifactStore, prefix: str, updated: datetime) -> str:
    stamp = updated.isoformat(timespec="milliseconds")
    key = new_attempt_key(prefix, 1)
    store.backend.put_bytes(key, AttemptRecord(number=1, started_at=stamp, updated_at=stamp, seconds=5.0)
                            .model_dump_json().encode())
    return key


def _age(root: Path, prefix: str, when: float = OLD) -> None:
    """Backdate every file below `prefix` (what an abandoned run looks like a month later)."""
    for path in (root / prefix).rglob("*"):
        if path.is_file():
            os.utime(path, (when, when))


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    """A store with: a committed train run with a committed checkpoint and an attempt record; a committed
    generate run; an uncommitted train run abandoned a month ago (its checkpoint committed); an
    uncommitted generate run written just now; an uncommitted train run whose files look a month old
    but whose attempt record (the heartbeat) was written two hours ago."""
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    src = make_artifact(tmp_path)
    now = datetime.now(timezone.utc)
    store.commit("train/t1/checkpoints/00000010", src, {"step": 10})
    store.commit("train/t1", src)
    _attempt(store, "train/t1", now - timedelta(days=40))
    store.commit("generate/g1", src)
    store.commit("train/t2/checkpoints/00000005", src, {"step": 5})
    _attempt(store, "train/t2", now - timedelta(days=30))
    _age(root, "train/t2")
    store.backend.put_bytes("generate/g2/shards/00000/predictions.jsonl", b"{}\n")
    _attempt(store, "generate/g2", now)
    store.commit("train/t3/checkpoints/00000020", src, {"step": 20})
    _attempt(store, "train/t3", now - timedelta(hours=2))
    _age(root, "train/t3")  # its files look a month old, its attempt record says two hours
    for run in ("train/t1", "generate/g1", "train/t2", "generate/g2", "train/t3"):
        store.put_json(f"specs/{run}.json", {"run": run})
    return root


def _run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# -- verify -----------------------------------------------------------------------------------


def test_verify_clean_store(store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "store", "verify", f"file://{store_root}")
    assert code == 0
    # 5 manifests (t1, its checkpoint, g1, and the checkpoints of t2 and t3), 2 files each of 5 + 2560 bytes
    assert out.splitlines() == [f"verified 5 artifacts, 10 files, 12.8 kB in file://{store_root}: no problems"]


def test_verify_finds_a_flipped_byte_and_a_truncated_file(store_root: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    weights = store_root / "train/t1/checkpoints/00000010/adapter/w.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0x01
    weights.write_bytes(bytes(data))
    text = store_root / "generate/g1/a.txt"
    text.write_bytes(text.read_bytes()[:2])
    (store_root / "train/t1/a.txt").unlink()
    code, out, _ = _run(capsys, "store", "verify", str(store_root))
    assert code == 2
    lines = out.splitlines()
    assert lines[-1] == f"verified 5 artifacts, 10 files, 12.8 kB in file://{store_root}: 3 problem(s)"
    problems = sorted(lines[:-1])
    assert len(problems) == 3
    assert problems[0].startswith("problem: generate/g1/a.txt: size 2 bytes, manifest says 5")
    assert problems[1].startswith("problem: train/t1/a.txt: missing")
    assert problems[2].startswith("problem: train/t1/checkpoints/00000010/adapter/w.bin: sha256 mismatch")


def test_verify_a_study_checks_its_store_and_exits_2_in_a_subprocess(tmp_path: Path) -> None:
    study = small_study(tmp_path, settings="  - id: zero-shot\n")
    store = open_store(f"file://{tmp_path / 'store'}")
    store.commit("prep/p1", make_artifact(tmp_path))
    assert run_cli("store", "verify", str(study), cwd=tmp_path).returncode == 0
    (tmp_path / "store/prep/p1/a.txt").write_text("jello")  # same size, other bytes
    result = run_cli("store", "verify", str(study), cwd=tmp_path)
    assert result.returncode == 2
    assert "problem: prep/p1/a.txt: sha256 mismatch" in result.stdout
    assert "1 problem(s)" in result.stdout


def test_verify_rejects_what_is_not_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "store", "verify", str(tmp_path / "nowhere"))
    assert code == 2 and "not a study file, a store URI or a store directory" in err
    code, _, err = _run(capsys, "store", "verify", f"file://{tmp_path / 'nowhere'}")
    assert code == 2 and "no such store directory" in err
    code, _, err = _run(capsys, "store", "verify", str(tmp_path), "--apply")
    assert code == 2 and "options of `store gc`" in err


# -- gc ---------------------------------------------------------------------------------------


def test_gc_dry_run_lists_and_deletes_nothing(store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.read_bytes() for p in store_root.rglob("*") if p.is_file()}
    code, out, _ = _run(capsys, "store", "gc", str(store_root))
    assert code == 0
    assert {p: p.read_bytes() for p in store_root.rglob("*") if p.is_file()} == before
    lines = out.splitlines()
    removals = [line for line in lines if line.startswith("would remove ")]
    checkpoints, leftover = _bytes(store_root, "train/t1/checkpoints"), _bytes(store_root, "train/t2")
    assert removals == [
        f"would remove train/t1/checkpoints  (3 objects, {size_text(checkpoints)}): checkpoints of a committed train run",
        f"would remove train/t2  (4 objects, {size_text(leftover)}): uncommitted leftover; last written 30d ago"]
    kept = sorted(line.split(":")[0] for line in lines if line.startswith("keep "))
    assert kept == ["keep generate/g2", "keep train/t3"]
    assert (f"dry run: would remove 2 prefixes, 7 objects, {size_text(checkpoints + leftover)} "
            f"from file://{store_root}") in out


def test_gc_apply_removes_exactly_checkpoints_and_old_leftovers(store_root: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    before = _files(store_root)
    code, out, _ = _run(capsys, "store", "gc", f"file://{store_root}", "--apply")
    assert code == 0
    removed = before - _files(store_root)
    assert removed == {k for k in before if k.startswith(("train/t1/checkpoints/", "train/t2/"))}
    assert len(removed) == 7
    assert "removed 2 prefixes, 7 objects" in out
    assert not (store_root / "train/t1/checkpoints").exists() and not (store_root / "train/t2").exists()
    # the committed runs stay whole (and verifiable), with their attempt records and every spec
    assert any(k.startswith("train/t1/attempts/") for k in _files(store_root))
    assert {f"specs/{r}.json" for r in ("train/t1", "generate/g1", "train/t2", "generate/g2", "train/t3")} \
        <= _files(store_root)
    assert _run(capsys, "store", "verify", str(store_root))[0] == 0
    assert _run(capsys, "store", "gc", str(store_root), "--apply")[1].startswith("keep")  # nothing more to do
    assert _files(store_root) == before - removed


def test_gc_older_than_decides_what_is_a_leftover(store_root: Path) -> None:
    store = open_store(f"file://{store_root}")
    leftovers = lambda age: [r.prefix for r in plan_gc(store, GcPolicy(parse_age(age))).removals  # noqa: E731
                             if r.reason == "leftover"]
    assert leftovers("60d") == []
    assert leftovers("7d") == ["train/t2"]
    assert leftovers("1h") == ["train/t2", "train/t3"]  # t3's heartbeat is two hours old, g2 was written now
    assert leftovers("0s") == ["generate/g2", "train/t2", "train/t3"]
    assert parse_age("12h") == timedelta(hours=12) and parse_age("1.5d") == timedelta(hours=36)


def test_gc_bad_age_is_bad_input(store_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "store", "gc", str(store_root), "--older-than", "7days")
    assert code == 2 and "--older-than '7days': not an age" in err


def test_gc_keep_study_removes_unreferenced_runs_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    study = small_study(tmp_path, settings="  - id: zero-shot\n")
    plan = build_plan(load_study(study))
    root = tmp_path / "store"
    store = open_store(f"file://{root}")
    upload_sources(plan, store)
    write_specs(plan, store)
    src = make_artifact(tmp_path)
    referenced = [run.prefix for run in plan.runs if run.stage in ("prep", "generate")]
    for prefix in referenced:
        store.commit(prefix, src)
    for prefix in ("generate/0ld0ld0ld0ld0ld0", "sources/00000000000000000000000000000000"):
        store.commit(prefix, src)
    store.put_json("specs/generate/0ld0ld0ld0ld0ld0.json", {})
    store.backend.put_bytes("logs/generate/0ld0ld0ld0ld0ld0.log", b"log")
    store.put_json("specs/score/5ca1ab1e5ca1ab1e.json", {})  # a spec of a run that never ran
    store.backend.put_bytes("elsewhere/keep.txt", b"not a run")

    before = _files(root)
    code, out, _ = _run(capsys, "store", "gc", str(root))  # no study named: nothing is unreferenced
    assert code == 0 and "unreferenced" not in out.replace("runs no current plan references", "")

    code, out, _ = _run(capsys, "store", "gc", str(root), "--keep-study", str(study), "--apply")
    assert code == 0
    removed = before - _files(root)
    assert removed == {k for k in before if k.startswith(("generate/0ld0ld0ld0ld0ld0/", "sources/0000000000"))} | {
        "specs/generate/0ld0ld0ld0ld0ld0.json", "logs/generate/0ld0ld0ld0ld0ld0.log",
        "specs/score/5ca1ab1e5ca1ab1e.json"}
    for prefix in referenced:
        assert store.is_committed(prefix)
    assert all(store.backend.exists(run.spec_key) for run in plan.runs)  # every referenced spec, committed or not
    assert all(store.is_committed(source) for source in plan.uploads)
    assert store.backend.exists("elsewhere/keep.txt")
    assert "removed generate/0ld0ld0ld0ld0ld0  (5 objects" in out


def test_gc_with_the_study_as_target_keeps_its_own_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A study given as the store and --keep-study another: both studies' runs are kept."""
    study = small_study(tmp_path, settings="  - id: zero-shot\n")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other = small_study(other_dir, settings="  - {id: two-shot, shots: 2}\n")
    other.write_text(other.read_text().replace(f"file://{other_dir / 'store'}", f"file://{tmp_path / 'store'}"))
    store = open_store(f"file://{tmp_path / 'store'}")
    ours = next(r.prefix for r in build_plan(load_study(study)).runs if r.stage == "generate")
    store.commit(ours, make_artifact(tmp_path))
    code, out, _ = _run(capsys, "store", "gc", str(study), "--keep-study", str(other), "--apply")
    assert code == 0 and store.is_committed(ours)


# -- s3 ---------------------------------------------------------------------------------------


def test_verify_and_gc_on_s3(s3_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,  # noqa: ANN001
                             capsys: pytest.CaptureFixture[str]) -> None:
    uri = f"s3://{BUCKET}/gc-{uuid.uuid4().hex[:8]}"
    store = open_store(uri)
    src = make_artifact(tmp_path)
    store.commit("train/t1/checkpoints/00000010", src)
    store.commit("train/t1", src)
    store.backend.put_bytes("generate/g2/partial.jsonl", b"{}\n")  # uncommitted, written just now
    assert _run(capsys, "store", "verify", uri)[:2] == (
        0, f"verified 2 artifacts, 4 files, 5.1 kB in {uri}: no problems\n")

    store.backend.put_bytes("train/t1/a.txt", b"jello")  # same size, other bytes
    code, out, _ = _run(capsys, "store", "verify", uri)
    assert code == 2 and "problem: train/t1/a.txt: sha256 mismatch" in out

    code, out, _ = _run(capsys, "store", "gc", uri, "--older-than", "1h", "--apply")
    assert code == 0
    assert "removed train/t1/checkpoints  (3 objects, " in out and "keep generate/g2" in out
    assert store.backend.list("train/t1/checkpoints/") == []
    assert store.backend.list("") == sorted(["generate/g2/partial.jsonl", f"train/t1/{MANIFEST}", "train/t1/a.txt",
                                             "train/t1/adapter/w.bin"])
