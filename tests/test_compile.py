"""The `compiled` setting: a bounded prompt search on the validation split, never on test items."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli, run_prep, small_study
from openai_double import OpenAIDouble

from labscale.compile import PromptSearch, demo_subsets
from labscale.config.study import CompileConfig
from labscale.jobs import generate
from labscale.models.calls import Prompt, Reply
from labscale.prices import API_PRICES
from labscale.stage import run_stage
from labscale.tasks.base import TaskDef

SPLITS_WITH_VAL = 'splits: {train: "train[:60%]", val: "train[60%:75%]", test: "train[75%:]"}'
MAGIC = "Read the evidence carefully and answer with exactly one label."
TASK = TaskDef(name="claims", kind="label", instruction="Classify the claim.", input_template="{claim}",
               target_field="label", metric_suite="classification", max_new_tokens=8,
               labels=("SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO"))


def _with_val(study: Path) -> Path:
    text = study.read_text().replace('splits: {train: "train[:75%]", test: "train[75%:]"}', SPLITS_WITH_VAL)
    study.write_text(text)
    return study


def test_compilation_picks_the_better_instruction_from_validation_items_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-double")
    settings = ("  - id: compiled\n    compile: {instructions: ['" + MAGIC + "'], shots: [2], demo_sets: 2,"
                " val_items: 8, max_calls: 40}\n")
    with OpenAIDouble() as double:
        model = f"  - {{id: gpt, kind: openai, path: gpt-4o-mini, base_url: '{double.base_url}'}}\n"
        prepped = run_prep(_with_val(small_study(tmp_path, settings=settings, models=model, test_items=10)), tmp_path)
        val_rows = [json.loads(line) for line in (prepped.prep_dir / "val.jsonl").read_text().splitlines()]
        pool = [json.loads(line) for line in (prepped.prep_dir / "fewshot.jsonl").read_text().splitlines()]
        gold = {r["input"]: r["target"] for r in val_rows + prepped.test_rows}
        # Only the magic instruction makes this "model" right; otherwise it always says SUPPORTS.
        double.answer_chat = lambda messages: (gold[messages[-1]["content"]] if MAGIC in messages[0]["content"]
                                               else "SUPPORTS")
        reads: list[tuple[str, int]] = []  # spy over the stage's data access: (file, requests so far)
        real_read = generate.read_jsonl
        monkeypatch.setattr(generate, "read_jsonl",
                            lambda path: reads.append((Path(path).name, len(double.exchanges))) or real_read(path))
        spec = next(r for r in prepped.plan.runs if r.stage == "generate")
        assert run_stage(spec, prepped.store, generate.run) is True
    metrics = prepped.store.require(spec.prefix).meta["metrics"]
    test_read_at = dict(reads)["test.jsonl"]
    assert [name for name, _ in reads] == ["fewshot.jsonl", "val.jsonl", "test.jsonl"]
    assert test_read_at == metrics["search_calls"] == 8 * 4  # 2 instructions, then 2 demo sets of 2, 8 items each
    searched = {e.item for e in double.exchanges[:test_read_at]}
    test_inputs = {r["input"] for r in prepped.test_rows}
    assert searched <= {r["input"] for r in val_rows[:8]} and not searched & test_inputs
    prompt = json.loads(prepped.store.backend.get_bytes(f"{spec.prefix}/prompt.json"))
    assert prompt["instruction"] == MAGIC and prompt["search"]["best_score"] == 1.0
    assert prompt["search"]["baseline_score"] == metrics["baseline_val_score"] < metrics["compiled_val_score"] == 1.0
    assert len(prompt["search"]["trials"]) == 4 and prompt["search"]["skipped"] == 0
    assert all(tuple(d) in {(p["input"], p["target"]) for p in pool} for d in prompt["demonstrations"])
    # Every billed call, search included, is in the cell's tokens and dollars.
    billed = double.billed()
    assert metrics["tokens_in"] == sum(e.tokens_in for e in billed)
    assert metrics["api_usd"] == pytest.approx(sum(API_PRICES["gpt-4o-mini"].usd(e.tokens_in, e.tokens_out)
                                                   for e in billed), rel=1e-12)
    predictions = [json.loads(line) for line in
                   prepped.store.backend.get_bytes(f"{spec.prefix}/predictions.jsonl").decode().splitlines()]
    assert all(p["prediction"] == p["target"] for p in predictions)  # the winner answers the test items


def _counting_answerer(right: str) -> tuple[list[int], object]:
    calls: list[int] = []

    def answer(prompt: Prompt, rows: list[dict]) -> list[Reply]:
        calls.append(len(rows))
        return [Reply(r["target"] if prompt.instruction == right else "SUPPORTS", 10, 1) for r in rows]

    return calls, answer


ROWS = [{"id": str(i), "input": f"x{i}", "target": ["SUPPORTS", "REFUTES"][i % 2]} for i in range(10)]
POOL = [{"input": f"p{i}", "target": "SUPPORTS"} for i in range(6)]


def test_the_budget_bounds_the_search_and_a_tie_keeps_the_tasks_own_prompt() -> None:
    config = CompileConfig(instructions=["variant a", "variant b"], shots=[2, 4], demo_sets=2, val_items=5,
                           max_calls=10, max_tokens=None)
    calls, answer = _counting_answerer(right="nobody")  # every candidate scores the same
    result = PromptSearch(config, TASK, POOL, cot=False, seed=0).run(answer, ROWS)
    assert calls == [5, 5] and result.skipped == 1 + 4  # the third instruction and the four demo sets
    assert result.prompt == Prompt(TASK.instruction) and result.best_score == result.baseline_score == 0.6
    assert result.cost() == {"search_calls": 10, "search_tokens_in": 100, "search_tokens_out": 10, "search_usd": 0.0}


def test_an_interrupted_search_resumes_from_its_journal_without_new_calls() -> None:
    config = CompileConfig(instructions=["variant a"], shots=[2], demo_sets=2, val_items=4, max_calls=100,
                           max_tokens=None)
    journal: dict[int, object] = {}
    calls, answer = _counting_answerer(right="variant a")
    first = PromptSearch(config, TASK, POOL, False, 0, on_trial=journal.__setitem__).run(answer, ROWS)
    assert len(calls) == len(journal) == 4 and first.prompt.instruction == "variant a"
    again_calls, again = _counting_answerer(right="variant a")
    resumed = PromptSearch(config, TASK, POOL, False, 0, journal=journal).run(again, ROWS)
    assert again_calls == [] and resumed.to_json() == first.to_json()


def test_demonstration_subsets_are_seeded_distinct_and_start_with_the_first_k() -> None:
    subsets = demo_subsets(pool_size=6, shots=[0, 2, 3], sets=3, seed=1)
    assert subsets[0] == (0, 1) and subsets[3] == (0, 1, 2) and len(subsets) == 6 == len(set(subsets))
    assert subsets == demo_subsets(6, [0, 2, 3], 3, seed=1) != demo_subsets(6, [0, 2, 3], 3, seed=2)


def test_a_compiled_cell_runs_on_the_tiny_model_and_is_reported(tmp_path: Path) -> None:
    settings = ("  - id: zero-shot\n  - id: compiled\n    compile: {instructions: ['Answer with one label.'],"
                " shots: [1], demo_sets: 1, val_items: 4, max_calls: 12}\n")
    study = _with_val(small_study(tmp_path, settings=settings, test_items=6))
    run_cli("run", str(study), cwd=tmp_path, check=True)
    (results,) = (tmp_path / "store").glob("aggregate/*/results.csv")
    rows = {r["setting"]: r for r in csv.DictReader(results.open())}
    assert set(rows) == {"zero-shot", "compiled"} and rows["compiled"]["n"] == "6"
    generates = {json.loads(p.read_text())["meta"]["labels"]["setting"]: json.loads(p.read_text())["meta"]
                 for p in (tmp_path / "store").glob("generate/*/_MANIFEST.json")}
    compiled = generates["compiled"]["metrics"]
    assert compiled["search_calls"] == 12  # 2 instructions and 1 demonstration set, 4 items each
    assert compiled["tokens_in"] > generates["zero-shot"]["metrics"]["tokens_in"]
    assert int(rows["compiled"]["tokens_in"]) == compiled["tokens_in"]
    (prompt,) = (tmp_path / "store").glob("generate/*/prompt.json")
    assert json.loads(prompt.read_text())["search"]["search_calls"] == 12
    rerun = run_cli("run", str(study), cwd=tmp_path, check=True)
    assert "0 runs executed" in rerun.stderr


def test_the_plan_keys_the_search_and_budgets_its_calls(tmp_path: Path) -> None:
    from labscale.budget import PlanCosts
    from labscale.config import load_study
    from labscale.plan import build_plan
    from labscale.store import open_store

    settings = "  - id: zero-shot\n  - id: compiled\n    compile: {val_items: 4, max_calls: 40}\n"
    plan = build_plan(load_study(_with_val(small_study(tmp_path, settings=settings, test_items=12))))
    gens = {r.labels["setting"]: r for r in plan.runs if r.stage == "generate"}
    assert gens["compiled"].params.compile.max_calls == 40 and gens["zero-shot"].params.compile is None
    assert gens["compiled"].key != gens["zero-shot"].key
    costs = PlanCosts(plan, open_store(plan.study.study.store))
    zero, compiled = costs.estimate(gens["zero-shot"]), costs.estimate(gens["compiled"])
    # up to 40 search calls first (the run's start-up and model load once)
    assert compiled.seconds - compiled.startup_s == pytest.approx((zero.seconds - zero.startup_s) * (12 + 40) / 12)
