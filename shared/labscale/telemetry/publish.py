"""Send a registry somewhere: push to a Pushgateway, or write a node-exporter textfile to the store.

A batch job must not fail because monitoring is down: an unreachable gateway costs one warning line.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway

from labscale.store import ArtifactStore

JOB = "labscale"
PUSH_TIMEOUT_S = 5.0
ENV_PUSHGATEWAY = "LABSCALE_PUSHGATEWAY"

log = logging.getLogger("labscale.telemetry")


def pushgateway_address(configured: str | None) -> str | None:
    """`LABSCALE_PUSHGATEWAY` if set (an empty value turns pushing off), else the study's setting."""
    address = os.environ.get(ENV_PUSHGATEWAY, configured)
    return address or None


def publish(registry: CollectorRegistry, grouping_key: dict[str, str], store: ArtifactStore,
            textfile_key: str, configured_gateway: str | None) -> str:
    """Push `registry` to the Pushgateway (grouped by `grouping_key`), or without one write it to the
    store at `textfile_key`. Returns where the metrics went; an unreachable gateway only logs a warning."""
    pushgateway = pushgateway_address(configured_gateway)
    if pushgateway:
        try:
            push_to_gateway(pushgateway, job=JOB, registry=registry, grouping_key=grouping_key,
                            timeout=PUSH_TIMEOUT_S)
            return pushgateway
        except OSError as exc:  # URLError, connection refused, timeout
            log.warning("metrics not pushed: Pushgateway %s unreachable (%s)", pushgateway, exc)
            return "nowhere"
    store.backend.put_bytes(textfile_key, generate_latest(registry))  # the textfile format is the exposition format
    return f"{store.uri}/{textfile_key}"


def publish_quietly(log: logging.Logger, *args: Any) -> None:
    """`publish`, but a broken store or gateway never masks the stage's own outcome: one warning."""
    try:
        publish(*args)
    except Exception as exc:  # noqa: BLE001 — monitoring must not change a run's result
        log.warning("metrics not published: %s", exc)
