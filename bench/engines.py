"""`make bench`, section 3: the generate stage of a grid on the two engines, side by side (issue 18).

A grid of 6 cells (2 tasks x 3 settings: zero-shot, 1-shot, 3-shot; one base model, no training)
answers 256 test items per cell with exactly 64 new tokens each (the study's
`generation.max_new_tokens` and the tasks' `min_new_tokens`, set through `tasks[].define`), four ways:

* `hf`           labscale's own batched greedy loop (`engine: hf`, batch 16), one stage process per cell,
                 as `labscale run` runs hf cells;
* `vllm-cell`    the vLLM engine (`engine: vllm`), one stage process per cell (one engine start-up each);
* `vllm-grouped` the vLLM engine, one stage process for all 6 cells (`labscale stage generate --spec A
                 --spec B ...`, as `labscale run` runs a model's vLLM cells): one start-up per model;
* `vllm-grouped-bf16` the same with the model's `dtype: bfloat16` (the others compute in float32, the
                 CPU's default, so that the engines agree token for token; the issue measured vLLM in bf16).

for two random-init models: the project's tiny Llama (`build: tiny-llama`) and a ~136M-parameter Llama
(hidden 1024, 12 layers, vocab 1024), built by the tiny model's recipe code into the model cache and
referenced by its local path. Each way runs in its own temporary store (prep runs there first, untimed).
Reported per model and way: wall time of the stage processes (start-up included: process start,
imports, model load or engine start, store I/O), the generated tokens and tok/s over generation time
(the runs' `generation_seconds`), and the agreement of the greedy outputs between engines. The
predictions store the reply text and its token count, not the token ids, so agreement is the share of
items whose text and token count are both identical. Nothing is tuned: the engines run with the
project's defaults (on a CPU vLLM runs in-process with a `VLLM_CPU_KVCACHE_SPACE` GiB KV cache, 1 unless
the environment sets it, in float32 as the HF path does, except in the bf16 way).

`python bench/engines.py --quick` runs a small grid (32 items x 16 new tokens, tiny model only);
`--model NAME` and `--ways A,B` run a part of the section (`make bench` runs all of it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from pathlib import Path

from labscale.models.tiny import TinyLlamaRecipe, build_tiny_llama, recipe_hash

WAYS = ("hf", "vllm-cell", "vllm-grouped", "vllm-grouped-bf16")
WAY_TITLES = {"hf": "HF loop, batch 16, process per cell", "vllm-cell": "vLLM, process per cell",
              "vllm-grouped": "vLLM, one engine for all cells", "vllm-grouped-bf16": "vLLM, one engine, bf16"}
SETTINGS_YAML = "  - id: zero-shot\n  - {id: 1-shot, shots: 1}\n  - {id: 3-shot, shots: 3}\n"
TASKS = (("claims", "fact-check"), ("notes", "clinical-summary"))
HF_BATCH = 16
LLAMA_136M = TinyLlamaRecipe(hidden_size=1024, intermediate_size=2304, num_hidden_layers=12, num_attention_heads=16,
                             num_key_value_heads=16)
"""~136M parameters: 12 x (4 x 1024^2 attention + 3 x 1024 x 2304 MLP) + a tied 1024 x 1024 embedding."""


@dataclass(frozen=True)
class Grid:
    items: int
    new_tokens: int


FULL, QUICK = Grid(256, 64), Grid(32, 16)


@dataclass(frozen=True)
class BenchModel:
    """A model of the bench: its name in the report, the study's `models:` fields that load it, and which
    of the issue's targets applies (speed: the ~136M model; startup: the tiny one)."""

    name: str
    path: str
    build: str | None
    target: str


@dataclass
class Cell:
    """One generate run's figures (its manifest's metrics) and its predictions (id → text, token count)."""

    tokens_out: int
    generation_s: float
    engine_startup_s: float | None
    predictions: dict[str, tuple[str, int]]


@dataclass
class WayResult:
    model: str
    way: str
    wall_s: float
    processes: int
    cells: dict[str, Cell] = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return sum(c.tokens_out for c in self.cells.values())

    @property
    def generation_s(self) -> float:
        return sum(c.generation_s for c in self.cells.values())

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.generation_s if self.generation_s else 0.0

    @property
    def startup_s(self) -> float:
        """Everything but generating: process starts, imports, model loads or engine starts, store I/O."""
        return self.wall_s - self.generation_s

    @property
    def engine_startup_s(self) -> float:
        return sum(c.engine_startup_s or 0.0 for c in self.cells.values())


@dataclass(frozen=True)
class Agreement:
    items: int
    identical: int

    @property
    def rate(self) -> float:
        return self.identical / self.items if self.items else 0.0


def agreement(a: WayResult, b: WayResult) -> Agreement:
    """Items of the cells both ways answered whose greedy reply is identical (text and token count)."""
    items = identical = 0
    for cell in sorted(a.cells.keys() & b.cells.keys()):
        left, right = a.cells[cell].predictions, b.cells[cell].predictions
        for item in left.keys() & right.keys():
            items += 1
            identical += left[item] == right[item]
    return Agreement(items, identical)


def parameter_count(model_dir: Path) -> int:
    """The parameters in a model directory's model.safetensors (from its header alone)."""
    with (model_dir / "model.safetensors").open("rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return sum(prod(t["shape"]) for name, t in header.items() if name != "__metadata__")


def study_yaml(model: BenchModel, engine: str, grid: Grid, data_dir: Path, store: Path, dtype: str = "auto") -> str:
    """The bench's study: 2 tasks x 3 settings on one model, every reply exactly `grid.new_tokens` long."""
    tasks = "".join(
        f"  - id: {tid}\n    task: {name}\n    source: {{files: {{train: {data_dir / f'{tid}.jsonl'}}}}}\n"
        f"    splits: {{train: \"train[:20%]\", test: \"train[20%:]\"}}\n    max_items: {{test: {grid.items}}}\n"
        f"    define: {{max_new_tokens: {grid.new_tokens}, min_new_tokens: {grid.new_tokens}}}\n"
        for tid, name in TASKS)
    build = f", build: {model.build}" if model.build else ""
    build += f", dtype: {dtype}" if dtype != "auto" else ""
    return (f"name: bench-engines\nseed: 0\npool: cpu\nstore: file://{store}\ntasks:\n{tasks}"
            f"models:\n  - {{id: {model.name}, path: {model.path}{build}, max_length: 1024, engine: {engine}}}\n"
            f"settings:\n{SETTINGS_YAML}"
            f"generation: {{engine: {engine}, batch_size: {HF_BATCH}, max_new_tokens: {grid.new_tokens}}}\n")


def write_data(data_dir: Path, grid: Grid) -> None:
    """The tasks' rows: 20 % train (the few-shot pool), 80 % test, of which `max_items` keeps grid.items
    (prep drops the generated data's duplicate rows, so there are more than that)."""
    from labscale.demo.data import make_claim_checks, make_dialogue_summaries
    from labscale.jsonl import write_jsonl

    rows = grid.items * 2
    write_jsonl(data_dir / "claims.jsonl", make_claim_checks(rows, seed=7))
    write_jsonl(data_dir / "notes.jsonl", make_dialogue_summaries(rows, seed=7))


def process_groups(way: str, specs: Sequence[str]) -> list[list[str]]:
    """The `--spec` URIs each stage process answers: one process per cell, or one for all."""
    return [list(specs)] if way.startswith("vllm-grouped") else [[s] for s in specs]


def stage_command(specs: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "labscale.cli", "stage", "generate", *(a for s in specs for a in ("--spec", s))]


def run_way(model: BenchModel, way: str, grid: Grid, root: Path, data_dir: Path) -> WayResult:
    """Plan the grid in a fresh store, run its preps (untimed), then time its generate stage processes."""
    from labscale.config import load_study
    from labscale.executors.publish import upload_sources, write_specs
    from labscale.jobs import prep
    from labscale.plan import build_plan
    from labscale.stage import run_stage, spec_uri
    from labscale.store import open_store

    work = root / f"{model.name}-{way}"
    work.mkdir(parents=True)
    study = work / "study.yaml"
    study.write_text(study_yaml(model, "hf" if way == "hf" else "vllm", grid, data_dir, work / "store",
                                "bfloat16" if way.endswith("-bf16") else "auto"))
    plan = build_plan(load_study(study))
    store = open_store(plan.study.study.store)
    upload_sources(plan, store)
    write_specs(plan, store)
    for run in plan.runs:
        if run.stage == "prep":
            run_stage(run, store, prep.run)
    gens = [r for r in plan.runs if r.stage == "generate"]
    assert len(gens) == 6, [r.title for r in gens]
    result = WayResult(model.name, way, 0.0, 0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for group in process_groups(way, [spec_uri(store, r) for r in gens]):
        started = time.perf_counter()
        proc = subprocess.run(stage_command(group), cwd=work, env=env, capture_output=True, text=True)
        result.wall_s += time.perf_counter() - started
        result.processes += 1
        if proc.returncode != 0:
            raise SystemExit(f"{model.name} {way}: the generate stage exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    for run in gens:
        metrics = store.require(run.prefix).meta["metrics"]
        rows = [json.loads(line) for line in store.backend.get_bytes(f"{run.prefix}/predictions.jsonl").splitlines()]
        result.cells[f"{run.labels['task']}/{run.labels['setting']}"] = Cell(
            metrics["tokens_out"], metrics["generation_seconds"], metrics.get("engine_startup_s"),
            {r["id"]: (r["prediction"], r["tokens_out"]) for r in rows})
    return result


def format_model(results: dict[str, WayResult], grid: Grid, model: BenchModel, parameters: int | None) -> list[str]:
    """One model's table, its ratios side by side, the agreement of the engines and the issue's target."""
    size = f", {parameters / 1e6:.1f}M parameters" if parameters else ""
    lines = [f"engines, {model.name}{size}: 6 cells (2 tasks x 0/1/3-shot) x {grid.items} items x "
             f"{grid.new_tokens} new tokens",
             f"  {'way':<38} {'procs':>5} {'wall s':>8} {'start-up s':>10} {'engine s':>8} {'tokens':>8} "
             f"{'gen s':>8} {'tok/s':>8}"]
    for way in WAYS:
        if way in results:
            r = results[way]
            lines.append(f"  {WAY_TITLES[way]:<38} {r.processes:>5} {r.wall_s:>8.1f} {r.startup_s:>10.1f} "
                         f"{r.engine_startup_s:>8.1f} {r.tokens:>8} {r.generation_s:>8.1f} {r.tokens_per_s:>8.0f}")
    hf, cell, grouped, bf16 = (results.get(w) for w in WAYS)
    for way, label in ((grouped, "vLLM one engine vs HF:"), (bf16, "vLLM one engine bf16 vs HF:")):
        if hf and way:
            lines.append(f"  {label:<28} speed-up {hf.wall_s / way.wall_s:5.2f}x in wall time, "
                         f"{way.tokens_per_s / hf.tokens_per_s:5.2f}x in tok/s")
    if cell and grouped:
        lines.append(f"  vLLM per cell vs one engine: speed-up {grouped.wall_s / cell.wall_s:5.2f}x in wall time, "
                     f"{cell.tokens_per_s / grouped.tokens_per_s:5.2f}x in tok/s")
    for a, b in ((hf, grouped), (hf, cell), (cell, grouped), (hf, bf16)):
        if a and b:
            agree = agreement(a, b)
            lines.append(f"  identical greedy replies, {a.way} vs {b.way}: {agree.identical}/{agree.items} "
                         f"({agree.rate:.1%}; text and token count — predictions.jsonl stores no token ids)")
    for way, dtype in ((grouped, "float32"), (bf16, "bf16")):
        if hf and way:
            lines.append(f"  {dtype}: " + target_line(model.target, hf, way))
    return lines


def target_line(target: str, hf: WayResult, grouped: WayResult) -> str:
    """The issue's target for this model, and whether this run met it."""
    if target == "speed":
        wall_x, tok_x = hf.wall_s / grouped.wall_s, grouped.tokens_per_s / hf.tokens_per_s
        met = wall_x >= 4 and tok_x >= 6
        return f"target: one engine >= 4x HF's wall time and >= 6x its tok/s: {'met' if met else 'NOT met'}"
    slower = grouped.wall_s - hf.wall_s
    met = slower <= grouped.startup_s
    return (f"target: one engine not slower than HF by more than its one start-up ({grouped.startup_s:.1f} s): "
            f"{'met' if met else 'NOT met'} ({'+' if slower >= 0 else '-'}{abs(slower):.1f} s)")


def bench_models(quick: bool) -> list[BenchModel]:
    from labscale.models.loading import cache_dir

    tiny = BenchModel("tiny-llama", "tiny-llama", "tiny-llama", "startup")
    if quick:
        return [tiny]
    big = cache_dir() / "bench" / f"llama-136m-{recipe_hash(LLAMA_136M)}"
    return [tiny, BenchModel("llama-136m", str(big), None, "speed")]


def ensure_model(model: BenchModel) -> Path:
    """The model's directory, built (before any timing) if the cache does not hold it yet."""
    from labscale.models.loading import cache_dir
    from labscale.models.tiny import ensure_tiny_llama

    if model.build == "tiny-llama":
        return ensure_tiny_llama(cache_dir() / "models")
    path = Path(model.path)
    if not (path / "model.safetensors").is_file():
        build_tiny_llama(path, LLAMA_136M)
    return path


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def bench_engines(quick: bool = False, out: Callable[[str], None] = print, models: Sequence[str] = (),
                  ways: Sequence[str] = WAYS) -> None:
    """Run the section and print its tables (or, without vLLM, one line saying it is skipped and why);
    `models` (names; empty: all) and `ways` select a part of it."""
    if not vllm_installed():
        out("engines: SKIPPED — vLLM is not installed in this environment (make setup installs vllm-cpu)")
        return
    grid = QUICK if quick else FULL
    with tempfile.TemporaryDirectory(prefix="labscale-bench-engines-") as tmp:
        root = Path(tmp)
        write_data(root / "data", grid)
        for model in bench_models(quick):
            if models and model.name not in models:
                continue
            parameters = parameter_count(ensure_model(model))
            results = {}
            for way in (w for w in WAYS if w in ways):
                results[way] = r = run_way(model, way, grid, root, root / "data")
                print(f"engines: {model.name} {way}: {r.wall_s:.1f} s, {r.tokens} tokens in {r.generation_s:.1f} s",
                      file=sys.stderr, flush=True)
            for line in format_model(results, grid, model, parameters):
                out(line)
    load = os.getloadavg()
    out(f"  ({os.cpu_count()} CPUs; load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} after the run; "
        f"VLLM_CPU_KVCACHE_SPACE={os.environ.get('VLLM_CPU_KVCACHE_SPACE', 'unset (the engine takes 1 GiB)')})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK.items} items x {QUICK.new_tokens} new tokens, "
                        "tiny model only")
    parser.add_argument("--model", action="append", default=[], choices=[m.name for m in bench_models(quick=False)],
                        help="only this model (repeatable; default: both, or the tiny one with --quick)")
    parser.add_argument("--ways", default=",".join(WAYS), help=f"comma-separated, of {', '.join(WAYS)} (default: all)")
    args = parser.parse_args(argv)
    ways = args.ways.split(",")
    if unknown := sorted(set(ways) - set(WAYS)):
        parser.error(f"--ways: unknown {', '.join(unknown)}; use some of {', '.join(WAYS)}")
    bench_engines(args.quick, models=args.model, ways=ways)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
