"""A real Prometheus Pushgateway and a real Prometheus for tests, on 127.0.0.1 with free ports.

Both come from Debian (`apt-get install prometheus-pushgateway prometheus`, done by `make test`).
Each is started as a child process of the test session and stopped by its PID.

    with Pushgateway() as gateway, Prometheus(scrape=gateway.address) as prom:
        prom.query('labscale_score{metric="accuracy"}')
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

PUSHGATEWAY_BIN = "prometheus-pushgateway"
PROMETHEUS_BIN = "prometheus"


def binaries_missing() -> list[str]:
    """Which of the Prometheus binaries the tests need are not on PATH."""
    return [b for b in (PUSHGATEWAY_BIN, PROMETHEUS_BIN, "promtool") if shutil.which(b) is None]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 — loopback only
        return response.read()


class _Server:
    """A child process serving HTTP on 127.0.0.1:`port`, ready when `/-/ready` answers."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"{type(self).__name__.lower()}-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> "_Server":
        with open(self.dir / "server.log", "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                http_get(f"{self.url}/-/ready", timeout=1)
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(f"{self.command()[0]} did not start: {(self.dir / 'server.log').read_text()[-2000:]}")
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


class Pushgateway(_Server):
    def command(self) -> list[str]:
        # Debian's build persists to /var/lib/prometheus by default: keep each instance's state its own
        return [PUSHGATEWAY_BIN, f"--web.listen-address={self.address}",
                f"--persistence.file={self.dir / 'pushgateway.data'}"]

    def metrics_text(self) -> str:
        """Everything the gateway holds, in the exposition format."""
        return http_get(f"{self.url}/metrics").decode()


class Prometheus(_Server):
    """Scrapes one Pushgateway every second (honor_labels, as k8s/monitoring configures it)."""

    def __init__(self, scrape: str):
        super().__init__()
        (self.dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: pushgateway\n    honor_labels: true\n    static_configs: [{{targets: ['{scrape}']}}]\n")

    def command(self) -> list[str]:
        return [PROMETHEUS_BIN, f"--config.file={self.dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.dir / 'data'}", f"--web.listen-address={self.address}"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The result vector of an instant query."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        body = json.loads(http_get(url))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def wait_for(self, promql: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll an instant query until it returns something (scrapes are asynchronous)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(promql)):
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus returned nothing for {promql} within {timeout:.0f}s")
            time.sleep(0.5)
        return result
