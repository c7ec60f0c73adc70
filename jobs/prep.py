"""prep: load a task's data, split it deterministically, and write prompt-formatted JSONL.

Reads: local source files (committed to the store by the planner) or a Hugging Face dataset id.
Writes: train/val/test.jsonl (rows: id, input, target, prompt, completion, and attributes when the
task maps any), fewshot.jsonl, task.json
(the task definition and prompt family, for later stages), stats.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from labscale.config.sources import InputProblem, read_data_file
from labscale.errors import BadInputError
from labscale.jsonl import write_jsonl
from labscale.metrics.labels import label_key
from labscale.params import PrepParams
from labscale.prompts import CHAT_TEMPLATE, render_prompt
from labscale.stage import StageContext, stage_main
from labscale.tasks import TaskDef

STAGE = "prep"


def _load_source(ctx: StageContext, params: PrepParams) -> Any:
    """The source as a `datasets.DatasetDict` of its named splits."""
    import datasets

    source = params.source
    if source.hf:
        return datasets.load_dataset(source.hf, source.hf_config, revision=source.revision)
    refs = source.files or {}
    files: dict[str, str] = {}
    for split, ref in refs.items():
        path = ctx.fetch_upload(ref, ctx.scratch / "source" / split / ref.name)
        try:  # the checks `labscale validate` ran on the study's copy: the same file, the same verdict
            read_data_file(path)
        except InputProblem as exc:
            raise BadInputError(f"{ref.name} {exc.problem} — fix: {exc.fix}") from None
        files[split] = str(path)
    suffixes = {Path(f).suffix for f in files.values()}
    builder = "csv" if suffixes == {".csv"} else "json"
    if len(suffixes) > 1 and ".csv" in suffixes:
        raise BadInputError(f"source files {sorted(files.values())}: mix CSV and JSON — fix: use one format per task")
    try:
        return datasets.load_dataset(builder, data_files=files, cache_dir=str(ctx.scratch / "hf-datasets"))
    except Exception as exc:  # the datasets library raises many types for unparsable files
        names = ", ".join(ref.name for ref in refs.values())
        raise BadInputError(f"{names}: cannot be parsed as {builder} ({exc.__class__.__name__}) — fix the file") from exc


def _select(dataset_dict: Any, expr: str, seed: int) -> list[dict]:
    """Rows of one HF split expression (e.g. `train[:80%]`) over seeded-shuffled source splits."""
    import datasets

    instruction = datasets.ReadInstruction.from_spec(expr)
    sizes = {name: len(split) for name, split in dataset_dict.items()}
    if expr.split("[")[0] not in sizes:
        raise BadInputError(f"split {expr!r}: the source has splits {sorted(sizes)} — fix the study's splits")
    rows: list[dict] = []
    for part in instruction.to_absolute(sizes):
        shuffled = dataset_dict[part.splitname].shuffle(seed=seed)
        rows.extend(shuffled.select(range(part.from_, part.to)).to_list())
    return rows


def _normalize(task: TaskDef, row: dict, columns: dict[str, str]) -> dict | None:
    """Rename columns; return None for rows a task cannot use (empty fields, unknown label)."""
    row = {columns.get(k, k): v for k, v in row.items()}
    missing = [f for f in task.required_fields if f not in row]
    if missing:
        raise BadInputError(f"task {task.name}: source rows lack field(s) {', '.join(missing)} "
                            f"(have {', '.join(sorted(row))}) — fix: map them with tasks[].columns")
    if any(row[f] is None or not str(row[f]).strip() for f in task.required_fields):
        return None
    target = str(row[task.target_field]).strip()
    if task.kind == "label":
        canonical = {label_key(label): label for label in task.labels}
        target = canonical.get(label_key(target), "")
        if not target:
            return None
    row[task.target_field] = target
    return row


def item_attributes(task: TaskDef, row: dict) -> dict[str, Any]:
    """{"attributes": {role: value}} for a task that maps attributes (group, answer type), else {}."""
    if not task.attributes:
        return {}
    return {"attributes": {role: str(row[field]).strip() for role, field in task.attributes.items()}}


def run(ctx: StageContext) -> dict[str, Any]:
    """Load, split, clean and format the task's rows; returns split sizes and prompt lengths."""
    params = ctx.params
    assert isinstance(params, PrepParams)
    task, seed, family = params.task, params.seed, params.family
    # The stored prompt is a preview; generate and train render with the model's tokenizer, which a
    # chat template needs (prep stays free of model libraries).
    preview_family = "plain" if family == CHAT_TEMPLATE else family
    source = _load_source(ctx, params)
    stats: dict[str, Any] = {"splits": {}}
    seen_train: set[str] = set()
    pool: list[dict] = []
    used_ids: set[str] = set()
    for role in ("train", "val", "test"):
        if role not in params.splits:
            continue
        raw = _select(source, params.splits[role], seed)
        kept, seen, dropped, leaked = [], set(), 0, 0
        for index, raw_row in enumerate(raw):
            row = _normalize(task, raw_row, params.columns)
            if row is None:
                dropped += 1
                continue
            text = task.render_input(row)
            if text in seen:
                dropped += 1
                continue
            if role != "train" and text in seen_train:
                leaked += 1
                continue
            seen.add(text)
            item_id = str(row[task.id_field]) if task.id_field and task.id_field in row else f"{role}-{index}"
            if item_id in used_ids:  # ids key predictions and per-item scores: keep them unique
                item_id = f"{item_id}-{role}-{index}"
            used_ids.add(item_id)
            target = row[task.target_field]
            kept.append({"id": item_id, "input": text, "target": target,
                         "prompt": render_prompt(preview_family, task.instruction, text), "completion": target,
                         **item_attributes(task, row)})
        cap = params.max_items.get(role)
        kept = kept[:cap] if cap else kept
        if role == "train":
            seen_train = {r["input"] for r in kept}
            pool = kept[: params.fewshot_pool]
        if not kept:
            raise BadInputError(f"task {task.name}: split {role} ({params.splits[role]}) has no usable rows — "
                                f"fix the source or the split expression")
        write_jsonl(ctx.out_dir / f"{role}.jsonl", kept)
        words = [len(r["input"].split()) for r in kept]
        stats["splits"][role] = {"rows": len(kept), "dropped": dropped, "removed_overlapping_train": leaked,
                                 "input_words_mean": round(sum(words) / len(words), 1), "input_words_max": max(words),
                                 "prompt_chars_mean": round(sum(len(r["prompt"]) for r in kept) / len(kept), 1)}
        ctx.log.info("%s: %d rows (%d dropped, %d overlapping train removed)", role, len(kept), dropped, leaked)
    write_jsonl(ctx.out_dir / "fewshot.jsonl", pool)
    (ctx.out_dir / "task.json").write_text(json.dumps({"task": task.model_dump(mode="json"), "family": family}, indent=2))
    (ctx.out_dir / "stats.json").write_text(json.dumps(stats, indent=2))
    return {"items": stats["splits"]["test"]["rows"], **{f"{r}_rows": s["rows"] for r, s in stats["splits"].items()},
            "test_prompt_chars_mean": stats["splits"]["test"]["prompt_chars_mean"]}


def main(argv: list[str] | None = None) -> int:
    """The stage's entrypoint: `python -m labscale.jobs.prep --spec URI`."""
    return stage_main(STAGE, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
