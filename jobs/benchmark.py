"""benchmark: the capability-regression check — lm-evaluation-harness tasks on an open model, as it
is or with a LoRA adapter, so the report can show that adaptation did not cost general ability.

Reads: the model (+ train's adapter for an adapted run) and the study's local lm-eval task files
(uploaded to the store by the planner: a stage never reads the host's study folder).
Writes: results.json (lm-eval version, shots per task, and one row per task × metric: value,
stderr, items, `top` = a task/group the study named rather than one of its subtasks) and
lm_eval.json (lm-eval's own results, without samples). lm-eval draws its own progress bars.
When every task the study names is local, the Hugging Face Hub is switched off for the run.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import yaml

from labscale.environment import temporary_env
from labscale.errors import BadInputError
from labscale.models.loading import load_causal_lm, load_tokenizer
from labscale.params import BenchmarkParams, FileRef
from labscale.stage import StageContext, stage_main

STAGE = "benchmark"
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
"""`datasets` builders that read local files (a task YAML's `dataset_path`)."""


class _TagBlindLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs without resolving their tags (`!function utils.f`)."""


_TagBlindLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def fetch_task_files(ctx: StageContext, files: dict[str, FileRef]) -> Path | None:
    """The study's local task folder, rebuilt from the store under scratch (None: no local tasks)."""
    if not files:
        return None
    folder = ctx.scratch / "tasks"
    for rel, ref in files.items():
        ctx.fetch_upload(ref, folder / rel)
    return folder


def all_local(folder: Path | None, tasks: list[str]) -> bool:
    """Whether lm-eval can run `tasks` from the folder alone: its YAMLs define them (and every task
    their groups list), read data only from local files, and include no YAML from elsewhere."""
    if folder is None:
        return False
    defined: set[str] = set()
    members: dict[str, list[str]] = {}
    for path in folder.rglob("*.yaml"):
        config = _read_task_yaml(path, folder)
        if not _self_contained(path, config, folder):
            return False
        tags = config.get("tag") or []
        names = (config.get("task"), config.get("group"), *([tags] if isinstance(tags, str) else tags))
        defined.update(n for n in names if isinstance(n, str))
        if isinstance(config.get("group"), str) and isinstance(config.get("task"), list):
            members[config["group"]] = [t for t in config["task"] if isinstance(t, str)]
    pending, seen = list(tasks), set()
    while pending:
        name = pending.pop()
        if name not in defined:
            return False
        if name not in seen:
            seen.add(name)
            pending += members.get(name, [])
    return True


def _read_task_yaml(path: Path, folder: Path) -> dict[str, Any]:
    """A task YAML's top-level fields ({} for a YAML that is not a mapping: lm-eval skips it too)."""
    try:
        config = yaml.load(path.read_text(encoding="utf-8"), Loader=_TagBlindLoader)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadInputError(f"benchmarks.include_path: {path.relative_to(folder)} is not valid YAML "
                            f"({exc.__class__.__name__}) — fix the task file") from None
    return config if isinstance(config, dict) else {}


def _self_contained(path: Path, config: dict[str, Any], folder: Path) -> bool:
    """A task YAML whose data is local files read by a packaged builder, and whose `include` is in the folder."""
    files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
    entries = files.values() if isinstance(files, dict) else [files]
    paths = [f for e in entries for f in (e if isinstance(e, list) else [e])]
    include = config.get("include")
    return (config.get("dataset_path", "json") in LOCAL_BUILDERS and not any("://" in str(f) for f in paths)
            and (include is None or (path.parent / include).resolve().is_relative_to(folder.resolve())))


def result_rows(results: dict[str, Any], requested: list[str]) -> list[dict[str, Any]]:
    """lm-eval's results as rows: task, metric (`name` or `name,filter`), value, stderr, items, top."""
    subtasks = {s for subs in results.get("group_subtasks", {}).values() for s in subs}
    rows = []
    for task, entries in results["results"].items():
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        for key, value in entries.items():
            metric, sep, filt = key.partition(",")
            if not sep or metric.endswith("_stderr") or not isinstance(value, (int, float)):
                continue
            stderr = entries.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": metric if filt == "none" else key, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None, "n": n,
                         "top": task in requested or task not in subtasks})
    return rows


def evaluate(ctx: StageContext, params: BenchmarkParams, folder: Path | None, offline: bool) -> dict[str, Any]:
    """simple_evaluate over the study's tasks, on the model (+ adapter) loaded by the project's loader
    (lm-eval's own task registry is indexed only when a task may come from it)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder) if folder else None, include_defaults=not offline)
    unknown = [t for t in params.tasks if t not in manager.all_tasks]
    if unknown:
        raise BadInputError(f"benchmarks.tasks: {', '.join(unknown)} unknown to lm-eval {lm_eval.__version__}"
                            f"{' and to include_path' if folder else ''} — fix: pick names from `lm-eval ls tasks` "
                            "or define the task in a YAML under include_path")
    adapter = ctx.fetch("adapter") / "adapter" if "adapter" in ctx.spec.inputs else None
    model = load_causal_lm(params.model, adapter).eval()
    lm = HFLM(pretrained=model, tokenizer=load_tokenizer(params.model), batch_size=params.batch_size,
              max_length=params.model.max_length)
    # A task's relative paths (data_files) are relative to its folder; lm-eval writes nothing elsewhere.
    with contextlib.chdir(folder or ctx.scratch):
        return lm_eval.simple_evaluate(model=lm, tasks=params.tasks, num_fewshot=params.num_fewshot,
                                       limit=params.limit, task_manager=manager, log_samples=False)


def run(ctx: StageContext) -> dict[str, Any]:
    """Benchmark the run's model; returns its metrics (the named tasks' scores, items, offline)."""
    params = ctx.params
    assert isinstance(params, BenchmarkParams)
    folder = fetch_task_files(ctx, params.task_files)
    offline = all_local(folder, params.tasks)
    ctx.log.info("lm-eval tasks %s (%s)", ", ".join(params.tasks), "local, Hub offline" if offline else "Hub")
    # The Hub libraries read these when first imported: in a stage process, that is in `evaluate`.
    with temporary_env({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"} if offline else {}):
        results = evaluate(ctx, params, folder, offline)
    from lm_eval.utils import handle_non_serializable

    rows = result_rows(results, params.tasks)
    summary = {"lm_eval": results["lm_eval_version"], "n_shot": results["n-shot"], "results": rows}
    (ctx.out_dir / "results.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    (ctx.out_dir / "lm_eval.json").write_text(json.dumps(results, indent=1, default=handle_non_serializable),
                                              encoding="utf-8")
    return {"items": sum(n["effective"] for n in results["n-samples"].values()), "offline": offline,
            "lm_eval": results["lm_eval_version"],
            "scores": {f"{r['task']}/{r['metric']}": r["value"] for r in rows if r["top"]}}


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.benchmark --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
