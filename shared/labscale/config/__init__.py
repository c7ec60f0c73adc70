"""Study files: schema (`study.py`) and loading with one-line errors (`loader.py`)."""

from labscale.config.loader import LoadedStudy, load_study
from labscale.config.study import ModelConfig, SettingConfig, Study, TaskConfig, TrainConfig

__all__ = ["LoadedStudy", "ModelConfig", "SettingConfig", "Study", "TaskConfig", "TrainConfig", "load_study"]
