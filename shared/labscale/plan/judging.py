"""What the judge adds to a plan (labscale.judge): the score run's judge (`judge:` block) and a
preference setting's train params."""

from __future__ import annotations

from labscale.config import ModelConfig
from labscale.config.study import SettingConfig, Study
from labscale.params import ApiRuntime, JudgeParams, ModelParams, PreferenceParams


def _judge_model(study: Study, model_id: str) -> ModelConfig:
    return next(m for m in study.models if m.id == model_id)


def score_judge(study: Study, setting: SettingConfig) -> tuple[JudgeParams, ApiRuntime | None] | None:
    """(params, API runtime) of the judge in a cell's score run; None when the cell is not judged."""
    config = study.judge
    if config is None or (config.settings is not None and setting.id not in config.settings):
        return None
    judge = _judge_model(study, config.model)
    params = JudgeParams(model=ModelParams.of(judge), zeta=config.zeta, max_new_tokens=config.max_new_tokens,
                         batch_size=study.generation.fixed_batch_size)
    return params, ApiRuntime.of(judge)


def preference_params(study: Study, setting: SettingConfig, task_max_new_tokens: int
                      ) -> tuple[PreferenceParams, ApiRuntime | None]:
    """(params, judge's API runtime) of a preference setting's train run: sampling, judge and DPO settings."""
    assert setting.preference is not None
    config = setting.preference
    judge = _judge_model(study, config.judge)
    max_new_tokens = config.max_new_tokens or study.generation.max_new_tokens or task_max_new_tokens
    return (PreferenceParams.of(config, ModelParams.of(judge), max_new_tokens, study.generation.fixed_batch_size),
            ApiRuntime.of(judge))


def plans_cell(setting: SettingConfig, model: ModelConfig) -> bool:
    """Preference tuning trains open models only: an API model (e.g. the judge) gets no preference cell."""
    return setting.preference is None or model.kind != "openai"
