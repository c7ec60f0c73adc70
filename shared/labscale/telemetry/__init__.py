"""Prometheus metrics of stage runs and studies: build a registry, push it or write a textfile."""

from labscale.telemetry.metrics import StageOutcome, stage_registry, study_registry
from labscale.telemetry.publish import publish, publish_quietly

__all__ = ["StageOutcome", "publish", "publish_quietly", "stage_registry", "study_registry"]
