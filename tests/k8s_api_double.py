"""TEST DOUBLE of the Kubernetes API — only the endpoints `labscale submit` uses. Not a cluster.

A `KubernetesApiDouble` serves on 127.0.0.1 (a free port) and records every request. A Job
"runs" without any pod: the first read after its creation says active, the next says succeeded
— or failed, for the stages given in `failures` (stage → container exit code), with one pod
whose log is `log_lines`. A Job created suspended (`spec.suspend`, as Jobs for a Kueue queue are)
waits for admission first: its first `admit_after` reads say suspended (condition Suspended, as the
Job controller sets it), then the double admits it as Kueue would (spec.suspend → false) and it runs
as above. `on_finish(manifest)`, if given, is called as a Job ends (before its final status is
sent), where a test stands in for what its pod would have committed. Endpoints: create / read a
Job, list pods by label, read a pod's log.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
PODS = "/api/v1/namespaces/{ns}/pods"
STAMP = "2026-01-01T00:00:00Z"


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    body: Any = None


@dataclass
class _Job:
    manifest: dict[str, Any]
    reads: int = 0
    exit_code: int | None = None
    suspended_reads: int = 0


@dataclass
class KubernetesApiDouble:
    namespace: str = "labscale"
    failures: dict[str, int] = field(default_factory=dict)
    log_lines: list[str] = field(default_factory=list)
    admit_after: int = 2
    on_finish: Callable[[dict[str, Any]], None] | None = None
    requests: list[Request] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    """(what, job name) in order: ("created" | "exists" | "suspended" | "admitted" | "active" | "succeeded" | "failed"
    | "deleted", name)."""
    jobs: dict[str, _Job] = field(default_factory=dict)

    def __enter__(self) -> KubernetesApiDouble:
        double = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                double._handle(self, "GET")

            def do_POST(self) -> None:  # noqa: N802
                double._handle(self, "POST")

            def do_DELETE(self) -> None:  # noqa: N802
                double._handle(self, "DELETE")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        """A kubeconfig whose current context is this double."""
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "double",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": "test-double-token"}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "tester"}}],
        }))
        return path

    def created(self) -> list[dict[str, Any]]:
        """Bodies of the Job create requests, in order."""
        return [r.body for r in self.requests if r.method == "POST"]

    # -- the API ------------------------------------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        length = int(handler.headers.get("Content-Length") or 0)
        body = json.loads(handler.rfile.read(length)) if length else None
        self.requests.append(Request(method, url.path, query, body))
        jobs, pods = JOBS.format(ns=self.namespace), PODS.format(ns=self.namespace)
        if method == "POST" and url.path == jobs:
            return self._create(handler, body)
        if method == "GET" and url.path.startswith(jobs + "/"):
            return self._read_job(handler, url.path.removeprefix(jobs + "/"))
        if method == "DELETE" and url.path.startswith(jobs + "/") and url.path.removeprefix(jobs + "/") in self.jobs:
            name = url.path.removeprefix(jobs + "/")
            del self.jobs[name]
            self.events.append(("deleted", name))
            return self._send(handler, 200, {"kind": "Status", "status": "Success"})
        if method == "GET" and url.path == pods:
            return self._pods(handler, query.get("labelSelector", "").removeprefix("job-name="))
        if method == "GET" and url.path.startswith(pods + "/") and url.path.endswith("/log"):
            return self._send(handler, 200, "\n".join(self.log_lines) + "\n", "text/plain")
        self._send(handler, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})

    def _create(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        name = body["metadata"]["name"]
        if name in self.jobs:
            self.events.append(("exists", name))
            return self._send(handler, 409, {"kind": "Status", "code": 409, "reason": "AlreadyExists"})
        stage = body["metadata"]["labels"]["labscale.io/stage"]
        self.jobs[name] = _Job(copy.deepcopy(body), exit_code=self.failures.get(stage))  # the request keeps what was sent
        self.events.append(("created", name))
        self._send(handler, 201, {**body, "status": {}})

    def _read_job(self, handler: BaseHTTPRequestHandler, name: str) -> None:
        job = self.jobs.get(name)
        if job is None:
            return self._send(handler, 404, {"kind": "Status", "code": 404, "reason": "NotFound"})
        spec = job.manifest["spec"]
        if spec.get("suspend"):
            job.suspended_reads += 1
            if job.suspended_reads <= self.admit_after:
                self.events.append(("suspended", name))
                status: dict[str, Any] = {"conditions": [{"type": "Suspended", "status": "True",
                                                          "reason": "JobSuspended", "message": "Job suspended"}]}
                return self._send(handler, 200, {**job.manifest, "status": status})
            spec["suspend"] = False  # what Kueue does when the queue admits the Job
            self.events.append(("admitted", name))
        job.reads += 1
        if job.reads == 2 and self.on_finish is not None:
            self.on_finish(job.manifest)
        if job.reads == 1:
            status = {"active": 1}
            self.events.append(("active", name))
        elif job.exit_code is None:
            status = {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
            self.events.append(("succeeded", name))
        else:
            reason = "PodFailurePolicy" if job.exit_code == 2 else "BackoffLimitExceeded"
            message = (f"Container stage for pod {self.namespace}/{name}-x1 failed with exit code 2 matching FailJob rule"
                       if job.exit_code == 2 else "Job has reached the specified backoff limit")
            status = {"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": reason,
                                                   "message": message}]}
            self.events.append(("failed", name))
        self._send(handler, 200, {**job.manifest, "status": status})

    def _pods(self, handler: BaseHTTPRequestHandler, job: str) -> None:
        items = []
        if job in self.jobs and self.jobs[job].exit_code is not None:
            terminated = {"exitCode": self.jobs[job].exit_code, "reason": "Error"}
            items.append({"metadata": {"name": f"{job}-x1", "labels": {"job-name": job}, "creationTimestamp": STAMP},
                          "status": {"phase": "Failed", "containerStatuses": [
                              {"name": "stage", "image": "img", "imageID": "", "ready": False, "restartCount": 0,
                               "state": {"terminated": terminated}}]}})
        self._send(handler, 200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, code: int, payload: Any, content_type: str = "application/json") -> None:
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
