"""The report's part of the aggregate parameters, resolved from the study at plan time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from labscale.config.study import SettingConfig, Study
from labscale.metrics import PRIMARY_METRIC


SETTING_KINDS: tuple[str, ...] = ("zero-shot", "few-shot", "chain-of-thought", "compiled", "fine-tuned")
"""Columns of the seeds-style table, in this order."""


def setting_kind(setting: SettingConfig) -> str:
    """zero-shot / few-shot / chain-of-thought / compiled / fine-tuned (fine-tuning wins over the
    prompt, a compiled prompt over CoT)."""
    if setting.finetune is not None:
        return "fine-tuned"
    if setting.compile is not None:
        return "compiled"
    if setting.cot:
        return "chain-of-thought"
    return "few-shot" if setting.shots else "zero-shot"


def report_params(study: Study) -> dict[str, Any]:
    """The `report` entry of the aggregate parameters (part of its run key). `report.reference` was
    checked against the study's models and settings when the study was loaded."""
    from labscale.tasks import resolve_task

    config = study.report
    ref = config.reference
    model = ref.model if ref else study.models[0].id
    setting = ref.setting if ref else study.settings[0].id
    return {
        "reference": {"model": model, "setting": setting},
        "margin": config.margin,
        "bootstrap_samples": config.bootstrap_samples,
        "confidence": config.confidence,
        "seed": study.seed,
        "primary": {t.id: PRIMARY_METRIC.get(resolve_task(t).metric_suite, "") for t in study.tasks},
        "setting_kinds": {s.id: setting_kind(s) for s in study.settings},
    }


@dataclass(frozen=True)
class ReportParams:
    """The report parameters as the aggregate stage reads them."""

    reference: dict[str, str]
    margin: float = 0.02
    bootstrap_samples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    primary: dict[str, str] = field(default_factory=dict)
    setting_kinds: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> "ReportParams":
        """From the aggregate's params (their `report` entry, made by `report_params`)."""
        return cls(**params["report"])

    def primary_metric(self, task: str, available: set[str]) -> str | None:
        """The task's primary metric; for a suite without one, rougeL or accuracy, whichever was scored."""
        metric = self.primary.get(task) or next((m for m in PRIMARY_METRIC.values() if m in available), None)
        return metric if metric in available else None
