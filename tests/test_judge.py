"""The "what is missing" judge: reply parsing, the reward against a hand computation with the real
offline MiniLM, the study-file checks and plan keys, and the score stage's judge step with an open judge
(the API judge and preference tuning end to end: tests/test_preference.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from labscale.judge import Judgement, parse_judgement, reward, rewards, summary

VALID = [
    ("[[7]] [[[the dosage]]]", 7, "the dosage"),
    ("Rating: [[ 10 ]]\nMissing: [[[ nothing of note ]]] thanks", 10, "nothing of note"),
    ("[[[a follow-up date]]] comes first, then [[1]].", 1, "a follow-up date"),
    ("[[3]] [[[the units [mg] of the dose]]]", 3, "the units [mg] of the dose"),
    ("[[5]]\n[[[line one\nline two]]]", 5, "line one\nline two"),
]
INVALID = [
    ("The response is fine, 7/10.", "no [[rating]]"),
    ("[[[the dosage]]] only", "no [[rating]]"),
    ("[[11]] [[[x]]]", "rating 11 outside 1-10"),
    ("[[0]] [[[x]]]", "rating 0 outside 1-10"),
    ("[[-3]] [[[x]]]", "rating -3 outside 1-10"),
    ("[[7.5]] [[[x]]]", "rating '7.5' is not a whole number"),
    ("[[seven]] [[[x]]]", "rating 'seven' is not a whole number"),
    ("[[7]] and later [[8]] [[[x]]]", "2 ratings (expected one)"),
    ("[[7]] but nothing about what is missing", "no [[[what is missing]]]"),
    ("[[7]] [[[a]]] [[[b]]]", "2 what-is-missing texts (expected one)"),
    ("[[7]] [[[   ]]]", "empty [[[what is missing]]]"),
    ("[[7]] [[[the dosage", "unbalanced or nested brackets"),
    ("[[7 [[[x]]]", "unbalanced or nested brackets"),
    ("[[7]] [[[outer [[inner]] text]]]", "unbalanced or nested brackets"),
    ("[[[[7]]]] [[[x]]]", "unbalanced or nested brackets"),
    ("", "no [[rating]]"),
]


@pytest.mark.parametrize(("text", "rating", "missing"), VALID)
def test_parse_valid_judgements(text: str, rating: int, missing: str) -> None:
    assert parse_judgement(text) == Judgement(rating, missing, True, None)


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_parse_malformed_judgements_are_invalid_with_a_reason(text: str, reason: str) -> None:
    judgement = parse_judgement(text)
    assert not judgement.valid
    assert judgement.reason == reason


def test_invalid_keeps_what_it_could_read() -> None:
    assert parse_judgement("[[7]] no missing").rating == 7
    assert parse_judgement("[[12]] [[[x]]]").missing == "x"


def _independent_cos(a: str, b: str) -> float:
    """cos of MiniLM sentence embeddings, pooled and normalised here in numpy (not labscale's path)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from labscale.metrics import default_bertscore_model

    path = default_bertscore_model()
    tok, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    vecs = []
    for text in (a, b):
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**enc).last_hidden_state[0].numpy().astype(np.float64)
        vecs.append(hidden.mean(axis=0))  # one unpadded text: every token counts
    return float(vecs[0] @ vecs[1] / (np.linalg.norm(vecs[0]) * np.linalg.norm(vecs[1])))


@pytest.mark.parametrize("zeta", [0.0, 0.5, 1.0])
def test_reward_matches_a_hand_computation(zeta: float) -> None:
    responses = ["The patient should take 5 mg of the drug daily.", "Paris is the capital of France."]
    judgements = [parse_judgement("[[8]] [[[the duration of the treatment]]]"),
                  parse_judgement("[[3]] [[[the population of Paris]]]")]
    got = rewards(judgements + [parse_judgement("[[9]]")], responses + ["x"], zeta)
    assert got[2] is None  # invalid: no reward
    for value, response, rating, missing in zip(got, responses, (8, 3),
                                                ("the duration of the treatment", "the population of Paris")):
        cos = _independent_cos(response, missing)
        assert 0.05 < cos < 0.95  # a real similarity, not a degenerate 0 or 1
        assert value == pytest.approx((1 - zeta) * (rating - 5) / 5 + zeta * cos, abs=1e-5)
    assert reward(10, 0.3, 0.0) == 1.0 and reward(1, 0.3, 0.0) == pytest.approx(-0.8)
    assert reward(5, 0.3, 1.0) == pytest.approx(0.3)


def test_embedder_matches_sentence_transformers() -> None:
    """Where sentence-transformers is installed, labscale's pooling gives its embeddings."""
    st = pytest.importorskip("sentence_transformers")
    from labscale.judge import embedder
    from labscale.metrics import default_bertscore_model

    texts = ["short", "a much longer sentence that pads the other one in the batch"]
    ours = embedder().encode(texts)
    theirs = st.SentenceTransformer(default_bertscore_model(), device="cpu").encode(texts, normalize_embeddings=True)
    assert np.allclose(ours, theirs, atol=1e-5)


def test_summary_over_valid_judgements() -> None:
    from labscale.judge import JudgedItem
    from labscale.models.calls import Reply

    reply = Reply("", 10, 5, usd=0.25)
    items = [JudgedItem(Judgement(8, "a", True), 0.5, reply), JudgedItem(Judgement(4, "b", True), -0.1, reply),
             JudgedItem(Judgement(None, None, False, "no [[rating]]"), None, reply)]
    metrics = summary(items)
    assert metrics["judge_rating_mean"] == 6.0
    assert metrics["judge_reward_mean"] == pytest.approx(0.2)
    assert metrics["judge_invalid_rate"] == pytest.approx(1 / 3)
    assert summary(items[2:]) == {"judge_invalid_rate": 1.0}


# ---- the study file: judge and preference blocks -------------------------------------------------

ERRORS = [
    ("name: t\n", "name: t\njudge: {model: gpt}\n", ["judge.model", "'gpt' is not a model of the study", "use one of tiny"]),
    ("name: t\n", "name: t\njudge: {model: tiny, settings: [nope]}\n", ["judge.settings", "'nope' is not a setting"]),
    ("name: t\n", "name: t\njudge: {model: tiny, zeta: 1.5}\n", ["judge.zeta", "less than or equal to 1"]),
    ("    shots: 2\n", "    shots: 2\n    preference: {judge: gpt}\n",
     ["settings[1].preference.judge", "'gpt' is not a model of the study"]),
    ("    shots: 2\n", "    shots: 2\n    preference: {judge: tiny, candidates: 1}\n",
     ["settings[1].preference.candidates", "greater than or equal to 2"]),
    ("    shots: 2\n", "    shots: 2\n    train_task: claims\n    preference: {judge: tiny}\n",
     ["settings[1].preference", "cannot be combined with train_task"]),
]


@pytest.mark.parametrize(("old", "new", "expected"), ERRORS)
def test_bad_judge_blocks_name_the_field_and_the_fix(tmp_path: Path, old: str, new: str, expected: list[str]) -> None:
    from test_study_errors import VALID, write_study

    from labscale.config import load_study
    from labscale.errors import StudyError

    study = write_study(tmp_path, VALID.format(store=tmp_path / "store").replace(old, new, 1))
    with pytest.raises(StudyError) as err:
        load_study(study)
    assert all(fragment in str(err.value) for fragment in expected), str(err.value)


def _plan(tmp_path: Path, settings: str, judge: str = "") -> object:
    from conftest import small_study

    from labscale.config import load_study
    from labscale.plan import build_plan

    study = small_study(tmp_path, settings=settings, test_items=4)
    study.write_text(study.read_text() + judge)
    return build_plan(load_study(study))


def test_judge_changes_only_the_score_keys(tmp_path: Path) -> None:
    settings = "  - id: zs\n  - id: ft\n    finetune: {max_steps: 1}\n"
    plain = _plan(tmp_path / "a", settings)
    judged = _plan(tmp_path / "b", settings, "judge: {model: tiny, settings: [ft]}\n")
    keys = lambda plan, stage: {r.labels.get("setting"): r.key for r in plan.runs if r.stage == stage}  # noqa: E731
    for stage in ("prep", "train", "generate"):
        assert keys(plain, stage) == keys(judged, stage)
    assert all(getattr(r.params, "judge", None) is None for r in plain.runs)
    assert keys(plain, "score")["zs"] == keys(judged, "score")["zs"]  # not listed: not judged
    assert keys(plain, "score")["ft"] != keys(judged, "score")["ft"]
    (score,) = [r for r in judged.runs if r.stage == "score" and r.labels["setting"] == "ft"]
    assert score.params.judge.zeta == 0.5 and score.params.judge.model.path == "tiny-llama"


def test_a_preference_setting_plans_a_train_run_with_the_judge(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "  - id: ft\n    finetune: {max_steps: 1}\n  - id: dpo\n    preference: {judge: tiny}\n")
    trains = {r.labels["setting"]: r for r in plan.runs if r.stage == "train"}
    assert not hasattr(trains["ft"].params, "preference")
    preference = trains["dpo"].params.preference
    assert preference.candidates == 4 and preference.judge.path == "tiny-llama"
    assert preference.max_new_tokens == 8  # the fact-check task's answer length
    assert trains["dpo"].params.train.r == 8  # the default LoRA recipe
    (generate,) = [r for r in plan.runs if r.stage == "generate" and r.labels["setting"] == "dpo"]
    assert generate.inputs["adapter"] == trains["dpo"].prefix


# ---- the score stage's judge step with an open judge ----------------------------------------------

def test_score_judges_every_item_with_an_open_judge_and_journals_it(tmp_path: Path) -> None:
    from conftest import run_in_process

    from labscale.jsonl import read_jsonl

    plan = _plan(tmp_path, "  - id: zs\n", "judge: {model: tiny, max_new_tokens: 16}\n")
    store = run_in_process(plan, ("prep", "generate", "score"))
    (score,) = [r for r in plan.runs if r.stage == "score"]
    scores = store.require(score.prefix).meta["metrics"]["scores"]
    out = tmp_path / "score"
    store.fetch(score.prefix, out)
    items = read_jsonl(out / "per_item.jsonl")
    assert len(items) == 4 and all({"judge_rating", "judge_missing", "judge_valid", "judge_reason",
                                    "judge_reward"} <= set(i) for i in items)
    invalid = [i for i in items if not i["judge_valid"]]
    assert scores["judge_invalid_rate"] == pytest.approx(len(invalid) / 4)
    assert all(i["judge_reason"] and i["judge_reward"] is None for i in invalid)  # a random tiny model judges badly
    assert len(store.backend.list(f"{score.prefix}/judge/")) == 4  # one journaled reply per distinct item


def test_the_shipped_judge_dpo_study_judges_and_preference_tunes() -> None:
    from conftest import REPO

    from labscale.config import load_study
    from labscale.plan import build_plan

    plan = build_plan(load_study(REPO / "studies" / "judge-dpo.yaml"))
    (train,) = [r for r in plan.runs if r.stage == "train"]
    assert train.params.preference.judge.path == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert all(r.params.judge is not None for r in plan.runs if r.stage == "score")
    assert any(b.setting == "dpo" for b in plan.benchmarks)  # the adapter's capability check
