"""Judge-driven preference tuning end to end: the tiny model's sampled candidates are judged by an
API judge (the local OpenAI-compatible TEST DOUBLE), rewarded with the real offline MiniLM, paired,
and a LoRA adapter is trained with DPO; the adapted cell is then generated, judged and aggregated."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from conftest import run_in_process, small_study
from openai_double import OpenAIDouble

from labscale.config import load_study
from labscale.plan import build_plan
from labscale.prices import API_PRICES
from labscale.training.dpo import preference_pairs

SETTINGS = """\
  - id: base
  - id: dpo
    preference: {judge: judge, candidates: 3, temperature: 1.5, max_new_tokens: 12, beta: 0.1}
    finetune: {r: 8, learning_rate: 0.003, max_steps: 2, batch_size: 2, grad_accum: 1, warmup_steps: 0,
               gradient_checkpointing: false, save_steps: 50, max_length: 256, train_fraction: 0.05}
"""


def judge_reply(messages: list[dict[str, str]]) -> str:
    """A deterministic judge: rating from the response's length, a fixed "what is missing"."""
    query = messages[-1]["content"]
    found = re.search(r"\[Response\]\n(.*)\n\n\[Your judgement\]", query, re.DOTALL)
    if found is None:  # a generate request to the API model's own cells
        return "SUPPORTS"
    response = found.group(1)
    return f"Rating: [[{1 + len(response) % 10}]]\nMissing: [[[the evidence that supports or refutes the claim]]]"


def _study(tmp_path: Path, base_url: str) -> Path:
    models = ("  - {id: tiny, path: tiny-llama, build: tiny-llama, max_length: 512}\n"
              f"  - {{id: judge, kind: openai, path: gpt-4o-mini, base_url: '{base_url}', concurrency: 4}}\n")
    study = small_study(tmp_path, settings=SETTINGS, models=models, test_items=4)
    study.write_text(study.read_text() + "judge: {model: judge, zeta: 0.5, max_new_tokens: 64}\n")
    return study


def test_preference_pairs_take_best_and_worst_and_skip_ties() -> None:
    pairs = preference_pairs(["p1", "p2", "p3", "p4"],
                             [["a", "b", "c"], ["d", "e"], ["f", "g"], ["h", "i"]],
                             [[0.1, 0.7, -0.2], [0.3, 0.3], [None, 0.5], [0.4, -0.4]])
    assert [(p.prompt, p.chosen, p.rejected) for p in pairs] == [("p1", "b", "c"), ("p4", "h", "i")]
    assert pairs[0].chosen_reward == 0.7 and pairs[0].rejected_reward == -0.2


@pytest.mark.slow
def test_judge_driven_dpo_trains_an_adapter_that_is_evaluated_like_any_cell(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.numpy import load_file

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-double")
    with OpenAIDouble(answer_chat=judge_reply) as double:
        plan = build_plan(load_study(_study(tmp_path, double.base_url)))
        assert {(c.model, c.setting) for c in plan.cells} == {("tiny", "base"), ("judge", "base"), ("tiny", "dpo")}
        store = run_in_process(plan, ("prep", "train", "generate", "score", "aggregate"))
        billed_first = len(double.billed())

        (train,) = [r for r in plan.runs if r.stage == "train"]
        metrics = store.require(train.prefix).meta["metrics"]
        assert metrics["path"] == "dpo-lora-cpu" and metrics["steps"] == 2
        assert metrics["candidates"] == 15 and 1 <= metrics["pairs"] <= 5  # 5 prompts × 3 candidates
        assert metrics["judge_invalid_rate"] == 0.0
        assert metrics["reward_chosen_mean"] > metrics["reward_rejected_mean"]
        assert metrics["dpo_loss"] > 0 and metrics["api_usd"] > 0
        adapter = tmp_path / "adapter"
        store.fetch(train.prefix, adapter)
        weights = load_file(str(adapter / "adapter" / "adapter_model.safetensors"))
        lora_b = [w for name, w in weights.items() if "lora_B" in name]
        assert lora_b and all(abs(w).sum() > 0 for w in lora_b)  # DPO moved every LoRA layer off zero
        pairs = [json.loads(line) for line in (adapter / "pairs.jsonl").read_text().splitlines()]
        assert len(pairs) == metrics["pairs"] and all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)

        (generate,) = [r for r in plan.runs if r.stage == "generate" and r.labels["setting"] == "dpo"]
        assert generate.inputs["adapter"] == train.prefix

        # Rerun training from scratch: the candidates and every judgement come from the store's journal.
        store.backend.delete(f"{train.prefix}/_MANIFEST.json")
        run_in_process(plan, ("train",))
        assert store.require(train.prefix).meta["metrics"]["pairs"] == metrics["pairs"]
        assert len(double.billed()) == billed_first

    price = API_PRICES["gpt-4o-mini"]
    scores = [store.require(r.prefix).meta["metrics"] for r in plan.runs if r.stage == "score"]
    assert all(s["api_usd"] == pytest.approx(s["judge_usd"]) and s["judge_usd"] > 0 for s in scores)
    judged = [e for e in double.billed() if "[Response]" in e.item]
    assert len(judged) == 15 + 3 * 4  # the candidates, then 3 cells × 4 test items
    assert sum(s["judge_usd"] for s in scores) + metrics["judge_usd"] == pytest.approx(
        sum(price.usd(e.tokens_in, e.tokens_out) for e in judged), rel=1e-9)
    (results,) = (tmp_path / "store").glob("aggregate/*/results.csv")
    rows = list(csv.DictReader(results.open()))
    assert len(rows) == 3
    for row in rows:
        assert float(row["judge_invalid_rate"]) == 0.0
        assert 1 <= float(row["judge_rating_mean"]) <= 10
        assert -1 <= float(row["judge_reward_mean"]) <= 1
