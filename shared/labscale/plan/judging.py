"""What the judge adds to a plan (labscale.judge): the score run's judge (`judge:` block) and a
preference setting's train params. Runs of studies without them are keyed exactly as before."""

from __future__ import annotations

from typing import Any

from labscale.config import ModelConfig
from labscale.config.study import SettingConfig, Study


def _judge_model(study: Study, model_id: str) -> ModelConfig:
    return next(m for m in study.models if m.id == model_id)


def score_judge(study: Study, setting: SettingConfig) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(params, runtime) of the judge in a cell's score run; None when the cell is not judged."""
    from labscale.plan.planner import api_runtime, model_params

    config = study.judge
    if config is None or (config.settings is not None and setting.id not in config.settings):
        return None
    judge = _judge_model(study, config.model)
    params = {"model": model_params(judge), "zeta": config.zeta, "max_new_tokens": config.max_new_tokens,
              "batch_size": study.generation.batch_size}
    return params, api_runtime(judge)


def preference_params(study: Study, setting: SettingConfig, task_max_new_tokens: int
                      ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, runtime) of a preference setting's train run: sampling, judge and DPO settings."""
    from labscale.plan.planner import api_runtime, model_params

    assert setting.preference is not None
    config = setting.preference
    judge = _judge_model(study, config.judge)
    params = {**config.model_dump(mode="json", exclude={"judge"}), "judge": model_params(judge),
              "max_new_tokens": config.max_new_tokens or study.generation.max_new_tokens or task_max_new_tokens,
              "batch_size": study.generation.batch_size}
    return params, api_runtime(judge)


def plans_cell(setting: SettingConfig, model: ModelConfig) -> bool:
    """Preference tuning trains open models only: an API model (e.g. the judge) gets no preference cell."""
    return setting.preference is None or model.kind != "openai"
