"""Budgets: estimate what the uncommitted runs of a plan will cost before they run, and refuse a
run that would take a study past its dollar or carbon budget.

Estimates need the test and train sizes, so they exist once the (cheap) prep runs are committed:
- open-model generate: items × max_new_tokens ÷ the pool's generation throughput;
- API generate: items × (prompt tokens ≈ prompt chars / 4 + max_new_tokens) × the model's price;
- API fine-tuning: train rows × prompt tokens × epochs × the model's training price;
- train: optimizer steps × batch × grad_accum × max_length tokens ÷ the pool's training throughput
  (an upper bound: sequences are rarely full);
- seconds → $ (pool price) and kg CO2e (labscale.energy's estimate for the pool).
Throughputs are declared per pool (`POOL_TOKENS_PER_S`, for the pool's typical model: the tiny
demo model on `cpu`, a 7B QLoRA model on `t4`/`a100`); a study overrides them with `throughput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labscale.cost import compute_cost_usd
from labscale.energy import EnergyMeter
from labscale.plan import Plan, RunSpec
from labscale.prices import api_price, training_price_per_mtok
from labscale.store import ArtifactStore

POOL_TOKENS_PER_S: dict[str, dict[str, float]] = {
    "cpu": {"generate": 500.0, "train": 5000.0},
    "t4": {"generate": 150.0, "train": 400.0},
    "a100": {"generate": 1200.0, "train": 3000.0},
}
CHARS_PER_TOKEN = 4.0
ESTIMATED_STAGES = ("train", "generate")
"""Where the money goes; prep, score and aggregate take seconds to minutes."""


@dataclass(frozen=True)
class Estimate:
    """What one run is expected to cost; `usd` is None while its prep is not committed."""

    spec: RunSpec
    usd: float | None
    kg_co2e: float | None


def _prep_metrics(store: ArtifactStore, spec: RunSpec) -> dict[str, Any] | None:
    manifest = store.manifest(spec.inputs["prep"]) if "prep" in spec.inputs else None
    return manifest.meta["metrics"] if manifest else None


def _seconds_and_api_usd(spec: RunSpec, prep: dict[str, Any], throughput: dict[str, float]) -> tuple[float, float]:
    params = spec.params
    if spec.stage == "train" and params["model"]["kind"] == "openai":
        price = training_price_per_mtok(params["model"]["path"]) or 0.0
        rows = prep["train_rows"] * params["train"]["train_fraction"]
        tokens = rows * prep.get("test_prompt_chars_mean", 0.0) / CHARS_PER_TOKEN
        return 0.0, tokens * max(1, round(params["train"]["epochs"])) * price / 1e6
    if spec.stage == "train":
        recipe = params["train"]
        per_step = recipe["batch_size"] * recipe["grad_accum"]
        steps = recipe["max_steps"] if recipe["max_steps"] > 0 else math.ceil(
            recipe["epochs"] * prep["train_rows"] * recipe["train_fraction"] / per_step)
        return steps * per_step * recipe["max_length"] / throughput["train"], 0.0
    if spec.stage == "generate":
        items, new_tokens = prep["items"], params["max_new_tokens"]
        if params["model"]["kind"] == "openai":
            price = api_price(params["model"]["path"])
            prompt_tokens = prep.get("test_prompt_chars_mean", 0.0) / CHARS_PER_TOKEN
            return 0.0, price.usd(items * prompt_tokens, items * new_tokens) if price else 0.0
        return items * new_tokens / throughput["generate"], 0.0
    return 0.0, 0.0  # prep, score, aggregate: seconds to minutes, not what budgets are about


def estimate(spec: RunSpec, store: ArtifactStore, throughput: dict[str, float]) -> Estimate:
    """The expected $ and kg CO2e of one run (None when its prep has not run yet)."""
    prep = _prep_metrics(store, spec)
    if spec.stage in ESTIMATED_STAGES and prep is None:
        return Estimate(spec, None, None)
    seconds, api_usd = _seconds_and_api_usd(spec, prep or {}, throughput)
    footprint = EnergyMeter(spec.pool, **spec.carbon).footprint(seconds)
    return Estimate(spec, compute_cost_usd(seconds, spec.usd_per_hour) + api_usd, footprint.kg_co2e)


def pool_throughput(plan: Plan) -> dict[str, float]:
    study = plan.study.study
    return {**POOL_TOKENS_PER_S[study.pool], **study.throughput.model_dump(exclude_none=True)}


@dataclass(frozen=True)
class BudgetCheck:
    spent_usd: float
    spent_kg: float
    planned_usd: float
    planned_kg: float
    unknown: int
    """Runs not estimable yet (their prep is not committed)."""


def check_budget(plan: Plan, store: ArtifactStore) -> BudgetCheck:
    """Spent (committed runs' recorded $ / CO2e) and planned (estimates of the rest)."""
    throughput = pool_throughput(plan)
    spent_usd = spent_kg = planned_usd = planned_kg = 0.0
    unknown = 0
    for spec in plan.runs:
        manifest = store.manifest(spec.prefix)
        if manifest is not None:
            spent_usd += manifest.meta.get("cost_usd", 0.0)
            spent_kg += manifest.meta.get("kg_co2e", 0.0)
            continue
        guess = estimate(spec, store, throughput)
        if guess.usd is None:
            unknown += 1
        else:
            planned_usd += guess.usd
            planned_kg += guess.kg_co2e or 0.0
    return BudgetCheck(spent_usd, spent_kg, planned_usd, planned_kg, unknown)


def over_budget(plan: Plan, check: BudgetCheck) -> str | None:
    """A one-line refusal naming the study file, field and fix, or None within budget."""
    budget = plan.study.study.budget
    for field, limit, spent, planned, unit in (("budget.usd", budget.usd, check.spent_usd, check.planned_usd, "$"),
                                               ("budget.kg_co2e", budget.kg_co2e, check.spent_kg, check.planned_kg,
                                                "kg CO2e ")):
        if limit is not None and spent + planned > limit:
            return (f"{plan.study.path}: {field}: estimated {unit}{spent + planned:.4g} (spent {unit}{spent:.4g} + "
                    f"to run {unit}{planned:.4g}) exceeds the budget {unit}{limit:.4g} — fix: raise {field}, "
                    "shrink the grid, or pass --over-budget-ok")
    return None
