"""The planner's public builder interface, what its per-feature builders (labscale.plan.judging,
labscale.plan.distill) plan runs through."""

from __future__ import annotations

from typing import Protocol

from labscale.config import ModelConfig, SettingConfig, TaskConfig
from labscale.config.study import Study
from labscale.params import Runtime, StageParams
from labscale.spec import RunSpec


class PlanBuilder(Protocol):
    """Plans runs of one study, each once per key, in dependency order."""

    study: Study

    def add(self, stage: str, params: StageParams, inputs: dict[str, str], runtime: Runtime | None = None,
            on_api: bool = False, **labels: str) -> RunSpec:
        """Plan one run (once per key); `on_api` runs only wait on an API: they run and are priced on CPU."""
        ...

    def train(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, labels: dict[str, str]) -> RunSpec:
        """A LoRA (or API) fine-tuning run of a setting with a `finetune:` block."""
        ...

    def generate(self, task: TaskConfig, model: ModelConfig, setting: SettingConfig, prep: RunSpec,
                 train: RunSpec | None, labels: dict[str, str], split: str = "test") -> RunSpec:
        """The model in `setting` (± its adapter) answering one prep split."""
        ...



