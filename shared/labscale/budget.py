"""Budgets: estimate what the uncommitted runs of a plan will cost before they run, and refuse a
run that would take a study past its dollar or carbon budget.

Estimates use the task sizes prep measured (test items, train rows, mean prompt length); before
prep has run they use the task's `max_items` caps, else assumed sizes (`ASSUMED_SIZES`, marked `~`):
- open-model generate: items × max_new_tokens ÷ the pool's generation throughput;
- API generate: items × (prompt tokens ≈ prompt chars / 4 + max_new_tokens) × the model's price
  (the study's `models[].price`, else labscale.prices; a fine-tuned cell at fine-tuned rates);
- train: optimizer steps × batch × grad_accum × max_length tokens ÷ the pool's training throughput
  (an upper bound: sequences are rarely full); API fine-tuning: train rows × prompt tokens × epochs
  × the model's training price;
- a distilled cell: its teacher's generate runs over the train (± val) split as above; the student
  (labscale.plan.distill.student_seconds) from its epochs × train rows × max_length;
- seconds → $ (pool price) and kg CO2e (labscale.energy's estimate for a node of the pool: its GPU
  TDP and its RAM, `POOL_RAM_GB`, not the planning machine's).
Throughputs are declared per pool (`POOL_TOKENS_PER_S`, for the pool's typical model: the tiny
demo model on `cpu`, a 7B QLoRA model on `t4`/`a100`); a study overrides them with `throughput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from labscale.cost import compute_cost_usd, pool_usd_per_hour
from labscale.plan.distill import student_seconds
from labscale.energy import POOL_RAM_GB, EnergyMeter
from labscale.params import (
    ApiFinetuneParams, ApiGenerateParams, LoraTrainParams, ModelGenerateParams, PrepParams, StudentParams,
)
from labscale.plan import Plan, RunSpec
from labscale.store import ArtifactStore
from labscale.store.attempts import AttemptTotals, read_attempts

POOL_TOKENS_PER_S: dict[str, dict[str, float]] = {
    "cpu": {"generate": 500.0, "train": 5000.0},
    "t4": {"generate": 150.0, "train": 400.0},
    "a100": {"generate": 1200.0, "train": 3000.0},
}
GPU_POOLS = ("t4", "a100")
CHARS_PER_TOKEN = 4.0
ESTIMATED_STAGES = ("train", "generate")
"""Where the money goes; prep, score and aggregate take seconds to minutes."""
ASSUMED_SIZES = {"items": 500, "train_rows": 2000, "test_prompt_chars_mean": 2000.0}
"""Task sizes assumed for a plan whose prep has not run (and whose task sets no `max_items`)."""


@dataclass(frozen=True)
class Estimate:
    """What one run is expected to take: compute seconds on its pool, API dollars, total $ and CO2e."""

    spec: RunSpec
    seconds: float
    api_usd: float
    usd: float
    kg_co2e: float
    assumed: bool
    """True when the task sizes are assumptions (prep has not run)."""


def _seconds_and_api_usd(spec: RunSpec, sizes: dict[str, Any], throughput: dict[str, float]) -> tuple[float, float]:
    params = spec.params
    if isinstance(params, StudentParams):
        return student_seconds(spec.stage, params.distill, sizes, throughput), 0.0
    if isinstance(params, LoraTrainParams):
        recipe = params.train
        rows = sizes["train_rows"] * recipe.train_fraction
        if isinstance(params, ApiFinetuneParams):
            tokens = rows * sizes.get("test_prompt_chars_mean", 0.0) / CHARS_PER_TOKEN * max(1, round(recipe.epochs))
            return 0.0, tokens * (params.model.training_price or 0.0) / 1e6
        per_step = recipe.batch_size * recipe.grad_accum
        steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(recipe.epochs * rows / per_step)
        return steps * per_step * recipe.max_length / throughput["train"], 0.0
    if isinstance(params, ModelGenerateParams):
        # A compiled cell's prompt search may answer up to `max_calls` validation items first.
        items = (sizes["items"] if params.split == "test" else sizes.get(f"{params.split}_rows", sizes["items"])) \
            + (params.compile.max_calls if params.compile else 0)
        if isinstance(params, ApiGenerateParams):
            # A fine-tuned cell (its adapter input: the API's fine-tuned model) is called at fine-tuned rates.
            price = params.model.fine_tuned_price if "adapter" in spec.inputs else params.model.token_price
            prompt_tokens = sizes.get("test_prompt_chars_mean", 0.0) / CHARS_PER_TOKEN
            return 0.0, price.usd(items * prompt_tokens, items * params.max_new_tokens) if price else 0.0
        return items * params.max_new_tokens / throughput["generate"], 0.0
    return 0.0, 0.0


def pool_throughput(plan: Plan, pool: str | None = None) -> dict[str, float]:
    """Declared tokens/s on `pool`; the study's `throughput` overrides those of its own pool."""
    study = plan.study.study
    pool = pool or study.pool
    overrides = study.throughput.model_dump(exclude_none=True) if pool == study.pool else {}
    return {**POOL_TOKENS_PER_S[pool], **overrides}


@dataclass(frozen=True)
class BudgetCheck:
    """Spent (committed runs' recorded $ / CO2e) and planned (estimates of the rest) of a plan."""

    spent_usd: float
    spent_kg: float
    planned_usd: float
    planned_kg: float
    assumed: int
    """Runs estimated from assumed task sizes (their prep is not committed)."""


class PlanCosts:
    """What a plan has cost and will cost, against its store: each run's manifest is read once."""

    def __init__(self, plan: Plan, store: ArtifactStore):
        self.plan, self.store = plan, store
        self.manifests = {run.prefix: store.manifest(run.prefix) for run in plan.runs}
        self.preps = {run.prefix: run for run in plan.runs if run.stage == "prep"}

    def committed(self, spec: RunSpec) -> bool:
        return self.manifests[spec.prefix] is not None

    def to_estimate(self) -> list[RunSpec]:
        """The uncommitted runs where the money goes."""
        return [r for r in self.plan.runs if r.stage in ESTIMATED_STAGES and not self.committed(r)]

    def task_sizes(self, spec: RunSpec) -> tuple[dict[str, Any], bool]:
        """Prep's measured sizes for the run's task, else its caps / the assumed sizes (and True)."""
        prep_prefix = spec.inputs.get("prep")
        manifest = self.manifests.get(prep_prefix) if prep_prefix else None
        if manifest is not None:
            return manifest.meta["metrics"], False
        prep = self.preps.get(prep_prefix) if prep_prefix else None
        caps = prep.params.max_items if prep is not None and isinstance(prep.params, PrepParams) else {}
        return {**ASSUMED_SIZES, "items": caps.get("test", ASSUMED_SIZES["items"]),
                "train_rows": caps.get("train", ASSUMED_SIZES["train_rows"])}, True

    def estimate(self, spec: RunSpec, pool: str | None = None) -> Estimate:
        """The expected cost of one run on `pool` (default: the study's)."""
        pool = pool or spec.pool
        sizes, assumed = self.task_sizes(spec)
        seconds, api_usd = _seconds_and_api_usd(spec, sizes, pool_throughput(self.plan, pool))
        price = spec.usd_per_hour if pool == spec.pool else pool_usd_per_hour(pool)
        footprint = EnergyMeter(pool, **spec.carbon.model_dump(), ram_gb=POOL_RAM_GB[pool]).footprint(seconds)
        return Estimate(spec, seconds, api_usd, compute_cost_usd(seconds, price) + api_usd, footprint.kg_co2e,
                        assumed)

    def check(self) -> BudgetCheck:
        """Spent so far (committed runs: the sums over their attempts their manifests record; runs not
        committed yet: what their attempts so far recorded in the journal) and still to spend."""
        spent = [m.meta for m in self.manifests.values() if m is not None]
        unfinished = [AttemptTotals.of(read_attempts(self.store, r.prefix))
                      for r in self.plan.runs if not self.committed(r)]
        guesses = [self.estimate(r) for r in self.to_estimate()]
        return BudgetCheck(sum(m.get("cost_usd", 0.0) for m in spent) + sum(a.compute_usd for a in unfinished),
                           sum(m.get("kg_co2e", 0.0) for m in spent) + sum(a.kg_co2e for a in unfinished),
                           sum(g.usd for g in guesses), sum(g.kg_co2e for g in guesses),
                           sum(g.assumed for g in guesses))

    def gpu_hours_by_pool(self) -> dict[str, tuple[float, float]]:
        """Pool → (GPU-hours, $) of the uncommitted open-model train/generate runs if run on that pool."""
        runs = [r for r in self.to_estimate() if not r.on_api]
        totals = {}
        for pool in GPU_POOLS:
            guesses = [self.estimate(r, pool) for r in runs]
            totals[pool] = (sum(g.seconds for g in guesses) / 3600, sum(g.usd for g in guesses))
        return totals

    def api_usd(self) -> float:
        """Estimated API dollars of the uncommitted closed-model runs."""
        return sum(self.estimate(r).api_usd for r in self.to_estimate())


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
