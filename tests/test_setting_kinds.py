"""Every setting of every shipped study has the kind the planner, the train dispatch, the budget and
the report use (`SettingConfig.kind`), pinned here by hand, not computed by the code under test."""

from __future__ import annotations

import pytest
from conftest import REPO

from labscale.config import load_study
from labscale.config.study import SettingKind
from labscale.plan.planner import report_params

K = SettingKind
EXPECTED: dict[str, dict[str, SettingKind]] = {
    "abstention-probe.yaml": {"zero-shot": K.ZERO_SHOT, "finetuned": K.FINETUNED,
                              "contrastive": K.ZERO_SHOT},  # contrastive search is decoding, not a prompt
    "bias-probe.yaml": {"zero-shot": K.ZERO_SHOT, "finetuned": K.FINETUNED},
    "demo.yaml": {"zero-shot": K.ZERO_SHOT, "3-shot": K.K_SHOT, "finetuned": K.FINETUNED},
    "distill.yaml": {"few-shot": K.K_SHOT, "distilled": K.DISTILLED},
    "judge-dpo.yaml": {"zero-shot": K.ZERO_SHOT, "dpo": K.PREFERENCE},
    "lab-scale-ai-api.yaml": {"zero-shot": K.ZERO_SHOT, "3-shot": K.K_SHOT},
    "lab-scale-ai.yaml": {"zero-shot": K.ZERO_SHOT, "3-shot": K.K_SHOT, "compiled": K.COMPILED,
                          "finetuned": K.FINETUNED},
    "llm-classifier.yaml": {"zero-shot": K.ZERO_SHOT, "few-shot": K.K_SHOT, "finetuned": K.FINETUNED},
    "medsum-mistral-t4.yaml": {"zero-shot": K.ZERO_SHOT, "3-shot": K.K_SHOT, "finetuned": K.FINETUNED},
    "privacy-probe.yaml": {"zero-shot": K.ZERO_SHOT, "lora": K.FINETUNED, "dp-lora": K.DP},
    "tool-learning.yaml": {"zero-shot": K.ZERO_SHOT, "qlora-lr-1e-4": K.FINETUNED, "qlora-lr-2e-4": K.FINETUNED,
                           "qlora-lr-5e-4": K.FINETUNED},
}


def test_every_shipped_study_is_pinned() -> None:
    assert set(EXPECTED) == {p.name for p in (REPO / "studies").glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_setting_has_its_kind_and_the_report_is_told_it(name: str) -> None:
    study = load_study(str(REPO / "studies" / name)).study
    assert {s.id: s.kind for s in study.settings} == EXPECTED[name]
    assert report_params(study).setting_kinds == EXPECTED[name]
