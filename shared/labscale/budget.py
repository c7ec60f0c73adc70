"""Budgets: estimate what the uncommitted runs of a plan will cost before they run, and refuse a
run that would take a study past its dollar or carbon budget.

**Task sizes.** Estimates use the sizes prep measured (test items, train rows, mean prompt length).
Before prep has run (marked `~`): for local source files, the rows each split expression selects of
the file (after the task's `max_items` caps) and, for the prompt length, the file's mean characters
per row; for a Hub dataset, the caps, else `ASSUMED_SIZES`. Tokens ≈ characters / `CHARS_PER_TOKEN`.

**Model size.** P parameters, L layers, hidden size h (labscale.models.shapes.estimate_shape): from
the model's config.json when it is a local directory (or the project-built tiny model's recipe),
else from the size in a Hub name (`…-7B-…`: the reference Mistral-7B / Llama-2-13B shapes, other
sizes scaled from 7B), else a 7B model. Weights' bytes: DecoderShape.weight_bytes (16-bit, or NF4
with 4-bit).

**Seconds of an open-model run** on a pool (`POOL_SPEEDS`: effective FLOP/s, memory bandwidth,
per-layer step overhead; `STAGE_START_S`; `LOAD_BYTES_PER_S`):
- start-up: the stage's fixed seconds (process start, imports, data, checkpoints) + model weights ÷
  load rate;
- forward FLOPs per token at context c: 2P + 4·L·h·c (weights + attention);
- train: steps × batch × grad_accum rows of min(max_length, prompt + new tokens) tokens, at 3×
  forward FLOPs per token (4× with gradient checkpointing), ÷ the pool's FLOP/s;
- generate: prefill (items × prompt tokens, forward; a k-shot prompt's demonstrations once per batch,
  as a shared prefix) + ⌈items ÷ batch⌉ × max_new_tokens decode steps,
  each L × the per-layer overhead + weights ÷ bandwidth + batch × forward FLOPs ÷ FLOP/s; a
  k-shot prompt is (1 + k) × the zero-shot prompt (capped at the model's max_length);
- prep, score (+ BERTScore, + a judge answering every item as a generate run would), aggregate:
  fixed seconds (`STAGE_START_S`), measured on the demo; they run on the study's pool too.
API runs: generate, items × (prompt tokens + max_new_tokens) × the model's price (the study's
`models[].price`, else labscale.prices; a fine-tuned cell at fine-tuned rates); API fine-tuning,
train rows × prompt tokens × epochs × its training price; an API judge, items × its price.
A distilled cell: its teacher's generate runs over the train (± val) split as above; the student
(labscale.plan.distill.student_seconds) from `STUDENT_TOKENS_PER_S`. A study's `throughput`
(tokens/s on its own pool) replaces the FLOP model's train / decode rate (start-up still counts).
Seconds → $ (pool price) and kg CO2e (labscale.energy's estimate for a node of the pool: its GPU
TDP and its RAM, labscale.nodes, not the planning machine's).

Measured against: the demo (tiny model, cpu pool; docs/cost-and-report.md has the per-run table) and,
for 7B, the H100 figures of issue 18 (bench/gpu.py's code, 2026-11-27) and LLaMA-Factory's QLoRA
anchor (bench/gpu.py `ANCHOR_TRAIN_TOKENS_PER_S`); tests/test_budget.py checks both within 2×.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labscale.config.sources import InputProblem, SplitSlice, read_data_file
from labscale.cost import compute_cost_usd, pool_usd_per_hour
from labscale.energy import EnergyMeter
from labscale.models.memory import estimated_batch
from labscale.models.shapes import MISTRAL_7B, DecoderShape, estimate_shape, weights_format
from labscale.nodes import node
from labscale.params import (
    ApiFinetuneParams, ApiGenerateParams, LoraTrainParams, ModelGenerateParams, ModelParams, OpenGenerateParams,
    PrepParams, ScoreParams, StudentParams,
)
from labscale.plan import Plan, RunSpec
from labscale.plan.distill import student_seconds
from labscale.store import ArtifactStore
from labscale.store.attempts import AttemptTotals, read_attempts


@dataclass(frozen=True)
class PoolSpeed:
    """What a node of a pool does per second for the estimate's arithmetic (module docstring)."""

    flops: float
    """Effective FLOP/s of forward passes (prefill, decode; utilisation folded in)."""
    train_flops: float
    """Effective FLOP/s of training steps (forward, backward, optimizer)."""
    bandwidth: float
    """Bytes/s of weights read once per decode step."""
    layer_step_s: float
    """Host/kernel-launch seconds per layer per decode step (the HF decode loop is overhead-bound)."""


H100_NF4_DECODE_STEP_S = 1 / 26.1
"""One decode step of the project's loop on a random 7B (Mistral shapes, NF4), batch 1, one H100
(issue 18's table, 2026-11-27, torch 2.11, transformers 5.23): 26.1 tok/s → 38.3 ms."""
A100_QLORA_TRAIN_TOKENS_PER_S = 2415.0
"""LLaMA-Factory's benchmark: 7B, 4-bit QLoRA, one A100 40 GB (bench/gpu.py ANCHOR_TRAIN_TOKENS_PER_S)."""
GPU_LAYER_STEP_S = (H100_NF4_DECODE_STEP_S - MISTRAL_7B.weight_bytes("nf4") / 3.35e12) / MISTRAL_7B.layers
"""≈ 1.16 ms: the H100 step less its weight read (3.35 TB/s), per layer; taken as host-bound, so the
same on every GPU pool (LitGPT's NF4 Llama-2-7B on an A100, 20 tok/s = 50 ms/step, agrees within 1.3×)."""


def _train_flops_per_token(shape: DecoderShape, context: float, checkpointing: bool) -> float:
    return (4 if checkpointing else 3) * (2 * shape.params + 4 * shape.layers * shape.hidden * context)


A100_FLOPS = A100_QLORA_TRAIN_TOKENS_PER_S * _train_flops_per_token(MISTRAL_7B, 512, True)
"""≈ 1.43e14 FLOP/s effective: the anchor's tokens/s × 4 forward passes (QLoRA with gradient
checkpointing, as LLaMA-Factory runs it) at its 1,024-token cutoff (mean context 512)."""
T4_OVER_A100 = 65.0 / 312.0
"""Peak 16-bit tensor FLOP/s, T4 65 TFLOP/s over A100 312 TFLOP/s (NVIDIA data sheets)."""
CPU_FLOPS, CPU_TRAIN_FLOPS = 6.0e9, 4.5e10
"""Fitted to the demo's generate and train runs on a quiet 2-vCPU machine, as CI runs it (tiny model,
float32, 32 test items, 30 training steps, 2026-11-27; docs/cost-and-report.md). On a machine shared
with other jobs the same runs take 2-8x longer (training most: its two threads contend)."""

POOL_SPEEDS: dict[str, PoolSpeed] = {
    "cpu": PoolSpeed(flops=CPU_FLOPS, train_flops=CPU_TRAIN_FLOPS, bandwidth=1.0e10, layer_step_s=0.0),
    "t4": PoolSpeed(flops=A100_FLOPS * T4_OVER_A100, train_flops=A100_FLOPS * T4_OVER_A100, bandwidth=3.2e11,
                    layer_step_s=GPU_LAYER_STEP_S),
    "a100": PoolSpeed(flops=A100_FLOPS, train_flops=A100_FLOPS, bandwidth=1.555e12, layer_step_s=GPU_LAYER_STEP_S),
}
"""Bandwidths: T4 320 GB/s, A100 40 GB 1,555 GB/s (data sheets; bench/gpu.py GPU_BANDWIDTH_BYTES_PER_S)."""
STAGE_START_S: dict[str, float] = {"prep": 1.0, "train": 7.0, "generate": 4.5, "score": 1.5, "aggregate": 1.0}
"""Fixed seconds of a run: process start, imports, reading inputs, the tiny model's load, a train run's
tokenizing and checkpoint commits (the demo on a quiet 2-vCPU machine, 2026-11-27: prep 0.65 s,
generate ~4.5 s, a 30-step train 10.6-11.4 s in all, score 1.05 s, aggregate 0.7 s)."""
BERTSCORE_S = 4.0
"""A summarization score run with BERTScore on: loading its model and scoring (demo, quiet: 5.5-5.7 s
vs 1.05 s without)."""
LOAD_BYTES_PER_S = 1.0e9
"""Model weights (16-bit size) read and placed per second (assumed: local disk / image cache)."""
STUDENT_TOKENS_PER_S: dict[str, float] = {"cpu": 5000.0, "t4": 400.0, "a100": 3000.0}
"""A distilled cell's student (a small encoder), training tokens/s (labscale.plan.distill)."""
CHARS_PER_TOKEN = 4.0
ESTIMATED_STAGES = ("prep", "train", "generate", "score", "aggregate")
"""Every stage has an estimate; train and generate are where the money goes."""
GPU_STAGES = ("train", "generate")
GPU_POOLS = ("t4", "a100")
ASSUMED_SIZES = {"items": 500, "train_rows": 2000, "test_prompt_chars_mean": 2000.0}
"""Task sizes assumed for a plan whose prep has not run, whose data is not a local file (and whose
task sets no `max_items`)."""
@dataclass(frozen=True)
class Estimate:
    """What one run is expected to take: compute seconds on its pool (of which start-up), API
    dollars, total $ and CO2e."""

    spec: RunSpec
    seconds: float
    api_usd: float
    usd: float
    kg_co2e: float
    assumed: bool
    """True when the estimate depends on task sizes that are not prep's (assumed, or read from the
    source files)."""
    startup_s: float = 0.0
    """The fixed part of `seconds` (process start, model load); the rest scales with the work."""


@dataclass(frozen=True)
class _Work:
    """What a run does, in the units the arithmetic needs."""

    sizes: dict[str, Any]
    speed: PoolSpeed
    throughput: dict[str, float]
    """The study's `throughput` override on its pool (tokens/s), else empty."""
    new_tokens: int
    """The task's answer length (max_new_tokens of its generate runs), for training rows."""
    pool: str = "cpu"


def _prompt_tokens(sizes: dict[str, Any], shots: int = 0, new_tokens: int = 0, limit: int | None = None) -> float:
    """A k-shot prompt: the zero-shot prompt + k demonstrations (an item and its answer, ≈ half the
    answer budget), at most `limit`."""
    tokens = sizes.get("test_prompt_chars_mean", 0.0) / CHARS_PER_TOKEN * (1 + shots) + shots * new_tokens / 2
    return min(tokens, limit) if limit else tokens


def _forward_flops(shape: DecoderShape, context: float) -> float:
    return 2 * shape.params + 4 * shape.layers * shape.hidden * context


def _startup(stage: str, shape: DecoderShape | None) -> float:
    return STAGE_START_S.get(stage, 0.0) + (shape.params * 2 / LOAD_BYTES_PER_S if shape else 0.0)


def _decode_seconds(shape: DecoderShape, model: ModelParams, work: _Work, items: float, prompt: float,
                    new_tokens: int, batch: int, shared: float = 0.0) -> float:
    """Prefill of every prompt, then ⌈items ÷ batch⌉ × new_tokens decode steps. The `shared` tokens
    every prompt starts with (a k-shot prompt's demonstrations) are prefilled once per batch: both
    engines compute a shared prefix once (hf per batch, vllm's prefix cache)."""
    speed = work.speed
    if "generate" in work.throughput:  # the study's own figure replaces the FLOP model
        return items * new_tokens / work.throughput["generate"]
    own = prompt - shared
    prefill = (items * own * _forward_flops(shape, shared + own / 2)
               + math.ceil(items / max(1, batch)) * shared * _forward_flops(shape, shared / 2)) / speed.flops
    weights = shape.weight_bytes(weights_format(model.quantization, dtype=model.dtype))
    step = (shape.layers * speed.layer_step_s + weights / speed.bandwidth
            + batch * _forward_flops(shape, prompt + new_tokens / 2) / speed.flops)
    return prefill + math.ceil(items / max(1, batch)) * new_tokens * step


def _train_seconds(shape: DecoderShape, params: LoraTrainParams, work: _Work) -> float:
    recipe = params.train
    rows = work.sizes["train_rows"] * recipe.train_fraction
    per_step = recipe.batch_size * recipe.grad_accum
    steps = recipe.max_steps if recipe.max_steps > 0 else math.ceil(recipe.epochs * rows / per_step)
    row_tokens = min(recipe.max_length, _prompt_tokens(work.sizes) + work.new_tokens)
    tokens = steps * per_step * row_tokens
    if "train" in work.throughput:
        return tokens / work.throughput["train"]
    return tokens * _train_flops_per_token(shape, row_tokens / 2, recipe.gradient_checkpointing) / work.speed.train_flops


def _items(spec: RunSpec, params: ModelGenerateParams, sizes: dict[str, Any]) -> float:
    # A compiled cell's prompt search may answer up to `max_calls` validation items first.
    split = sizes["items"] if params.split == "test" else sizes.get(f"{params.split}_rows", sizes["items"])
    return split + (params.compile.max_calls if params.compile else 0)


def _seconds_and_api_usd(spec: RunSpec, work: _Work, base_dir: Path) -> tuple[float, float, float]:
    """(seconds, of which start-up, API dollars) of one run."""
    params, sizes = spec.params, work.sizes
    if isinstance(params, StudentParams):
        start = _startup(spec.stage, None)
        return start + student_seconds(spec.stage, params.distill, sizes, work.throughput), start, 0.0
    if isinstance(params, ApiFinetuneParams):
        rows = sizes["train_rows"] * params.train.train_fraction
        tokens = rows * _prompt_tokens(sizes) * max(1, round(params.train.epochs))
        return 0.0, 0.0, tokens * (params.model.training_price or 0.0) / 1e6
    if isinstance(params, LoraTrainParams):
        shape = estimate_shape(params.model, base_dir)
        start = _startup(spec.stage, shape)
        return start + _train_seconds(shape, params, work), start, 0.0
    if isinstance(params, ApiGenerateParams):
        # A fine-tuned cell (its adapter input: the API's fine-tuned model) is called at fine-tuned rates.
        items = _items(spec, params, sizes)
        price = params.model.fine_tuned_price if "adapter" in spec.inputs else params.model.token_price
        prompt = _prompt_tokens(sizes, params.shots, params.max_new_tokens)
        return 0.0, 0.0, price.usd(items * prompt, items * params.max_new_tokens) if price else 0.0
    if isinstance(params, OpenGenerateParams):
        shape = estimate_shape(params.model, base_dir)
        start = _startup(spec.stage, shape)
        limit = max(1, params.model.max_length - params.max_new_tokens)
        prompt = _prompt_tokens(sizes, params.shots, params.max_new_tokens, limit)
        shared = max(0.0, prompt - _prompt_tokens(sizes, 0, 0, limit))
        items = _items(spec, params, sizes)
        batch = estimated_batch(params.model, params.batch_size, pool=work.pool, prompt_tokens=prompt,
                                max_new_tokens=params.max_new_tokens, items=items, base_dir=base_dir)
        return start + _decode_seconds(shape, params.model, work, items, prompt,
                                       params.max_new_tokens, batch, shared), start, 0.0
    if isinstance(params, ScoreParams):
        start = _startup(spec.stage, None) + (BERTSCORE_S if params.options.bertscore else 0.0)
        judge = params.judge
        if judge is None:
            return start, start, 0.0
        prompt = _prompt_tokens(sizes) + work.new_tokens  # the item and the cell's answer
        if judge.model.is_api:
            price = judge.model.token_price
            return start, start, price.usd(sizes["items"] * prompt, sizes["items"] * judge.max_new_tokens) if price else 0.0
        shape = estimate_shape(judge.model, base_dir)
        start += shape.params * 2 / LOAD_BYTES_PER_S
        return start + _decode_seconds(shape, judge.model, work, sizes["items"], prompt,
                                       judge.max_new_tokens, judge.batch_size), start, 0.0
    start = _startup(spec.stage, None)
    return start, start, 0.0


def pool_throughput(plan: Plan, pool: str | None = None) -> dict[str, float]:
    """The study's declared tokens/s (`throughput`) when `pool` is its own pool, else none."""
    study = plan.study.study
    pool = pool or study.pool
    return study.throughput.model_dump(exclude_none=True) if pool == study.pool else {}


def source_sizes(prep: PrepParams, uploads: dict[str, Path]) -> dict[str, Any] | None:
    """Sizes of a task read from its local source files, as prep will cut them (None for a Hub dataset
    or a file that cannot be read): rows each split expression selects, capped by `max_items`, and the
    file's mean characters per row + the task's instruction standing in for the prompt length."""
    files = prep.source.files
    if not files:
        return None
    counts: dict[str, int] = {}
    chars: dict[str, float] = {}
    try:
        for split, ref in files.items():
            path = uploads[ref.prefix]
            counts[split] = read_data_file(path).rows
            chars[split] = (len(path.read_text(encoding="utf-8-sig", errors="replace")) / max(1, counts[split])
                            + len(prep.task.instruction))
        rows = {}
        for role, expr in prep.splits.items():
            piece = SplitSlice.parse(expr)
            selected = piece.count(counts[piece.split])
            cap = prep.max_items.get(role)
            rows[role] = min(selected, cap) if cap else selected
        test_source = SplitSlice.parse(prep.splits["test"]).split if "test" in prep.splits else next(iter(chars))
    except (InputProblem, KeyError, OSError, StopIteration):
        return None
    return {"items": rows.get("test", ASSUMED_SIZES["items"]), **{f"{r}_rows": n for r, n in rows.items()},
            "train_rows": rows.get("train", 0), "test_prompt_chars_mean": chars[test_source]}


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
        self.new_tokens: dict[str, int] = {}
        """prep prefix → the longest answer its task's generate runs ask for."""
        for run in plan.runs:
            if isinstance(run.params, ModelGenerateParams) and "prep" in run.inputs:
                prep = run.inputs["prep"]
                self.new_tokens[prep] = max(self.new_tokens.get(prep, 0), run.params.max_new_tokens)
        self._source_sizes: dict[str, dict[str, Any] | None] = {}

    def committed(self, spec: RunSpec) -> bool:
        return self.manifests[spec.prefix] is not None

    def to_estimate(self) -> list[RunSpec]:
        """The uncommitted runs."""
        return [r for r in self.plan.runs if r.stage in ESTIMATED_STAGES and not self.committed(r)]

    def _prep_of(self, spec: RunSpec) -> str | None:
        return spec.prefix if spec.stage == "prep" else spec.inputs.get("prep")

    def task_sizes(self, spec: RunSpec) -> tuple[dict[str, Any], bool]:
        """Prep's measured sizes for the run's task, else those read from its local source files, its
        caps or the assumed sizes (and True)."""
        prep_prefix = self._prep_of(spec)
        manifest = self.manifests.get(prep_prefix) if prep_prefix else None
        if manifest is not None:
            return manifest.meta["metrics"], False
        prep = self.preps.get(prep_prefix) if prep_prefix else None
        if prep is None or not isinstance(prep.params, PrepParams):
            return dict(ASSUMED_SIZES), True
        if prep.prefix not in self._source_sizes:
            self._source_sizes[prep.prefix] = source_sizes(prep.params, self.plan.uploads)
        from_files = self._source_sizes[prep.prefix]
        if from_files is not None:
            return from_files, True
        caps = prep.params.max_items
        return {**ASSUMED_SIZES, "items": caps.get("test", ASSUMED_SIZES["items"]),
                "train_rows": caps.get("train", ASSUMED_SIZES["train_rows"])}, True

    def estimate(self, spec: RunSpec, pool: str | None = None) -> Estimate:
        """The expected cost of one run on `pool` (default: the run's)."""
        pool = pool or spec.pool
        sizes, assumed = self.task_sizes(spec)
        throughput = pool_throughput(self.plan, pool)
        if isinstance(spec.params, StudentParams):
            throughput = {"train": throughput.get("train", STUDENT_TOKENS_PER_S[pool])}
        work = _Work(sizes, POOL_SPEEDS[pool], throughput, self.new_tokens.get(self._prep_of(spec) or "", 0), pool)
        seconds, startup, api_usd = _seconds_and_api_usd(spec, work, self.plan.study.base_dir)
        price = spec.usd_per_hour if pool == spec.pool else pool_usd_per_hour(pool)
        footprint = EnergyMeter(pool, **spec.carbon.model_dump(), ram_gb=node(pool).ram_gb).footprint(seconds)
        sized = spec.stage in GPU_STAGES or (isinstance(spec.params, ScoreParams) and spec.params.judge is not None)
        return Estimate(spec, seconds, api_usd, compute_cost_usd(seconds, price) + api_usd, footprint.kg_co2e,
                        assumed and sized, startup)

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
        runs = [r for r in self.to_estimate() if r.stage in GPU_STAGES and not r.on_api]
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
