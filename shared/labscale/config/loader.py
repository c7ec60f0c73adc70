"""Load a study file, turning every problem into one line that names file, field, line and fix."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from labscale.config.checks import check_distill, check_engines, check_judges, check_prices
from labscale.config.sources import DataFile, InputProblem, SplitSlice, read_data_file
from labscale.config.study import Benchmarks, CompileConfig, Study, TaskConfig, TrainConfig, resolve_task
from labscale.errors import StudyError
from labscale.tasks import REGISTRY, TaskDef, known_tasks, unknown_task_message

_FIXES = {
    "extra_forbidden": "remove it or correct its spelling (see the schema in labscale/config/study.py)",
    "missing": "add it",
    "literal_error": "use one of the allowed values",
    "string_pattern_mismatch": "use lowercase letters, digits and '-' (like a DNS name)",
    "too_short": "give at least one entry",
    "int_parsing": "give a whole number",
    "int_type": "give a whole number",
    "float_parsing": "give a number",
    "bool_parsing": "give true or false",
    "string_type": "give a string",
    "dict_type": "give a mapping (key: value)",
    "list_type": "give a list",
    "greater_than_equal": "use a value in the allowed range",
    "greater_than": "use a value in the allowed range",
    "less_than_equal": "use a value in the allowed range",
    "less_than": "use a value in the allowed range",
}


@dataclass(frozen=True)
class LoadedStudy:
    """A validated study plus where it came from (relative paths resolve against `base_dir`)."""

    study: Study
    path: Path
    base_dir: Path

    def resolve(self, relative: str) -> Path:
        return (self.base_dir / relative).resolve()


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _line(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest YAML node along `loc` (None when YAML gives none)."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if k.value == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _parse_yaml(path: Path) -> tuple[Any, yaml.Node | None]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(where, "(file)", "no such file", "check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(where, "(file)", f"cannot read it ({exc.__class__.__name__})", "give a UTF-8 YAML file") from None
    try:
        return yaml.safe_load(text), yaml.compose(text)
    except RecursionError:
        raise StudyError(where, "(yaml)", f"nested deeper than a study file can be (over {MAX_DEPTH} levels)",
                         "remove the extra nesting: a study is a few levels deep", _too_deep_line(text)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise StudyError(where, "(yaml)", f"invalid YAML: {problem}", "fix the YAML syntax at that line",
                         mark.line + 1 if mark else None) from None


MAX_DEPTH = 64
"""How deep _too_deep_line looks for the nesting that overflowed the YAML parser's recursion."""

_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken, yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _too_deep_line(text: str) -> int | None:
    """1-based line where the YAML's nesting first exceeds MAX_DEPTH (the scanner does not recurse)."""
    depth = 0
    try:
        for token in yaml.scan(text):
            depth += isinstance(token, _OPEN) - isinstance(token, _CLOSE)
            if depth > MAX_DEPTH:
                return token.start_mark.line + 1
    except yaml.YAMLError:
        return None
    return None


def _schema_error(path: Path, root: yaml.Node | None, err: ValidationError) -> StudyError:
    first = err.errors()[0]
    loc = tuple(first["loc"])
    fix = getattr(first.get("ctx", {}).get("error"), "fix", None) or _FIXES.get(first["type"], "correct the value as the message says")
    msg = first["msg"].removeprefix("Value error, ")
    return StudyError(str(path), _field(loc), msg, fix, _line(root, loc))


def _maps_hub_columns(columns: dict[str, str], hub_columns: dict[str, str], fields: set[str]) -> bool:
    """Whether `columns` renames every hub column: onto the task field given, or (for a column that
    merely clashes with a task field) onto any name that is not a task field."""
    return all(
        columns.get(column) is not None and (columns[column] == field if field in fields else columns[column] not in fields)
        for column, field in hub_columns.items()
    )


def _task_def(task: TaskConfig, i: int, fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> TaskDef:
    """The task entry `i` runs (registered or inline), or a one-line error at the field at fault."""
    if task.task is None and task.define is None:
        fail(("tasks", i, "task"), "no task given", "name a registered task, or define one inline with 'define:'")
    if task.task is not None and task.task not in REGISTRY:
        fail(("tasks", i, "task"), unknown_task_message(task.task), f"use one of: {known_tasks()}")
    try:
        task_def = resolve_task(task)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ("tasks", i, "define", *first["loc"])
        cause = first.get("ctx", {}).get("error")
        fix = getattr(cause, "fix", None) or _FIXES.get(first["type"], "correct the definition as the message says")
        fail(loc, first["msg"].removeprefix("Value error, "), fix)
    hub_columns = task_def.hub_columns if task.source.hf and task.source.hf == task_def.hub_dataset else {}
    if not _maps_hub_columns(task.columns, hub_columns, set(task_def.required_fields)):
        mapping = ", ".join(f"{column}: {field}" for column, field in hub_columns.items())
        fail(("tasks", i, "source", "hf"), f"{task.source.hf} names the task's fields differently",
             f"add columns: {{{mapping}}}")
    return task_def


def _check_semantics(loaded: LoadedStudy, root: yaml.Node | None) -> None:
    study, where = loaded.study, str(loaded.path)

    def fail(loc: tuple[Any, ...], problem: str, fix: str) -> NoReturn:
        raise StudyError(where, _field(loc), problem, fix, _line(root, loc))

    for group in ("tasks", "models", "settings"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(study, group)):
            if item.id in seen:
                fail((group, i, "id"), f"duplicate id {item.id!r}", "give every entry its own id")
            seen.add(item.id)
    reference = study.report.reference
    for field, value, known in (("model", reference and reference.model, [m.id for m in study.models]),
                                ("setting", reference and reference.setting, [s.id for s in study.settings])):
        if value is not None and value not in known:
            fail(("report", "reference", field), f"{value!r} is not in the study", f"use one of {', '.join(known)}")
    train_rows: dict[int, int] = {}
    for i, task in enumerate(study.tasks):
        task_def = _task_def(task, i, fail)
        data: dict[str, DataFile] = {}
        for split, rel in (task.source.files or {}).items():
            loc = ("tasks", i, "source", "files", split)
            path = loaded.resolve(rel)
            if not path.is_file():
                fail(loc, f"data file {rel!r} not found (looked at {path})", "fix the path (relative to the study file)")
            try:
                data[split] = read_data_file(path)
            except InputProblem as exc:
                fail(loc, f"{rel!r} {exc.problem}", exc.fix)
            renamed = {task.columns.get(c, c) for c in data[split].columns}
            missing = [f for f in task_def.required_fields if f not in renamed]
            if missing:
                fail(loc, f"{rel!r} lacks column(s) {', '.join(missing)} (it has {', '.join(data[split].columns)})",
                     "map your columns with tasks[].columns: {your_column: field}")
        for role, expr in task.splits.items():
            selected = _split_rows(task.source.files, data, i, role, expr, fail)
            if role == "train" and selected is not None:
                train_rows[i] = selected
    task_ids = [t.id for t in study.tasks]
    for i, setting in enumerate(study.settings):
        if setting.train_task is not None and setting.train_task not in task_ids:
            fail(("settings", i, "train_task"), f"{setting.train_task!r} is not a task of the study",
                 f"use one of {', '.join(task_ids)}")
        if setting.train_task is not None and setting.finetune is None:
            fail(("settings", i, "train_task"), "only a fine-tuned setting trains on a task",
                 "add a `finetune` recipe or remove train_task")
    for i, model in enumerate(study.models):
        local = model.path.startswith((".", "/"))
        if local and model.build is None:
            _check_model_dir(loaded, i, model.path, fail)
    for i, setting in enumerate(study.settings):
        _check_shots(study, train_rows, ("settings", i, "shots"), setting.shots, "shots", fail)
        if setting.compile is not None:
            _check_compile(study, train_rows, i, setting.compile, fail)
        if setting.finetune is not None:
            _check_private_finetune(study, i, setting.finetune, fail)
        if setting.distill is not None:
            check_distill(study, i, fail)
        api_models = [m.id for m in study.models if m.kind == "openai"]
        if setting.decoding is not None and setting.decoding.strategy != "greedy" and api_models:
            fail(("settings", i, "decoding", "strategy"),
                 f"{setting.decoding.strategy} search needs an open model's hidden states; {api_models[0]!r} is an API model",
                 "use greedy decoding in this setting, or put the API models in another study")
    check_judges(study, fail)
    check_prices(study, fail)
    check_engines(study, fail)
    if study.benchmarks is not None:
        _check_benchmarks(loaded, study.benchmarks, fail)


def _split_rows(files: dict[str, str] | None, data: dict[str, DataFile], i: int, role: str, expr: str,
                fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> int | None:
    """Rows split `role`'s expression selects from the local files (None for a Hub dataset, whose sizes
    validate does not download); an expression that selects nothing is an error."""
    loc = ("tasks", i, "splits", role)
    piece = SplitSlice.parse(expr)  # the schema has parsed it already
    if files is None:
        if piece.selects_nothing_ever():
            fail(loc, f"{expr!r} selects no rows (its start is not before its end)",
                 f"give a start before the end, e.g. {piece.split}[70%:80%]")
        return None
    if piece.split not in files:
        fail(loc, f"split {piece.split!r} is not among source.files ({', '.join(sorted(files))})",
             "name a split given in source.files")
    rows = data[piece.split].rows
    selected = piece.count(rows)
    if not selected:
        start, stop = piece.bounds(rows)
        why = "its start is not before its end" if piece.selects_nothing_ever() else f"rows {start}:{stop}"
        fail(loc, f"{expr!r} selects no rows of the {rows} in {files[piece.split]!r} ({why})",
             f"give a start before the end, e.g. {piece.split}[70%:80%], or add rows to the file")
    return selected


def _check_shots(study: Study, train_rows: dict[int, int], loc: tuple[Any, ...], shots: int, field: str,
                 fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> None:
    """`shots` demonstrations fit every task's few-shot pool: the first `fewshot_pool` rows of its train
    split (after any max_items.train cap). The fix names the limit that binds."""
    if not shots:
        return
    for t, task in enumerate(study.tasks):
        if "train" not in task.splits:
            fail(loc, f"{shots} demonstrations but task {task.id!r} has no train split to draw them from",
                 f"add splits.train to task {task.id!r}, or lower {field}")
        limits = [(task.fewshot_pool, 2, "its few-shot pool (fewshot_pool) holds", f"raise tasks[{t}].fewshot_pool")]
        if "train" in task.max_items:
            limits.append((task.max_items["train"], 1, "max_items.train keeps", f"raise tasks[{t}].max_items.train"))
        if t in train_rows:
            limits.append((train_rows[t], 0, f"its train split ({task.splits['train']}) has",
                           "give the train split more rows"))
        size, _, why, fix = min(limits)
        if shots > size:
            fail(loc, f"{shots} demonstrations but task {task.id!r}: {why} only {size} row(s)",
                 f"lower {field} to {size} or fewer, or {fix}")


def _check_model_dir(loaded: LoadedStudy, i: int, rel: str, fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> None:
    """A local model path is a folder saved with `save_pretrained`: config, weights and a tokenizer."""
    folder = loaded.resolve(rel)
    if not folder.is_dir():
        fail(("models", i, "path"), f"model directory {rel!r} not found",
             "fix the path, or give a Hugging Face model id like org/name")
    lacks = [what for what, patterns in (("config.json", ("config.json",)),
                                         ("weights (*.safetensors or *.bin)", ("*.safetensors", "*.bin")),
                                         ("tokenizer files", ("tokenizer.json", "tokenizer.model", "tokenizer_config.json",
                                                              "vocab.json", "vocab.txt", "spiece.model")))
             if not any(any(folder.glob(p)) for p in patterns)]
    if lacks:
        fail(("models", i, "path"), f"{rel!r} is a directory but not a model: it has no {' and no '.join(lacks)}",
             "point path at a folder written by save_pretrained (model and tokenizer), or give a Hugging Face id like org/name")


def _check_compile(study: Study, train_rows: dict[int, int], i: int, compile: CompileConfig,
                   fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> None:
    """A compiled setting searches on each task's validation split, with demonstrations from its pool."""
    for task in study.tasks:
        if "val" not in task.splits:
            fail(("settings", i, "compile"), f"task {task.id!r} has no 'val' split to search prompts on",
                 f"add splits.val to task {task.id!r} (never the test split)")
    _check_shots(study, train_rows, ("settings", i, "compile", "shots"), max(compile.shots, default=0),
                 "compile.shots", fail)


def _check_private_finetune(study: Study, i: int, recipe: TrainConfig,
                            fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> None:
    """DP-SGD and the privacy audit need the model's weights and per-example losses: open models only."""
    api = [m.id for m in study.models if m.kind == "openai"]
    for block in ("dp", "audit"):
        if getattr(recipe, block) is not None and api:
            fail(("settings", i, "finetune", block), f"model {api[0]!r} is fine-tuned by its provider's API, "
                 f"which offers no {'differential privacy' if block == 'dp' else 'per-example losses'}",
                 f"remove the openai model(s) from this study or the `{block}` block")


def _check_benchmarks(loaded: LoadedStudy, benchmarks: Benchmarks,
                      fail: Callable[[tuple[Any, ...], str, str], NoReturn]) -> None:
    """Benchmarks run on the study's open models; a local task folder must hold lm-eval task YAMLs."""
    if all(model.kind != "hf" for model in loaded.study.models):
        fail(("benchmarks",), "no open (kind: hf) model to benchmark: API models are skipped",
             "add an hf model or remove benchmarks")
    rel = benchmarks.include_path
    if rel is None:
        return
    folder = loaded.resolve(rel)
    if not folder.is_dir():
        fail(("benchmarks", "include_path"), f"task folder {rel!r} not found (looked at {folder})",
             "fix the path (relative to the study file)")
    if not any(folder.rglob("*.yaml")):
        fail(("benchmarks", "include_path"), f"{rel!r} holds no lm-eval task YAML (*.yaml)",
             "put the task YAMLs there, or remove include_path")


def load_study(path: str | Path) -> LoadedStudy:
    """Parse and validate a study file; raise `StudyError` (exit 2) on the first problem."""
    path = Path(path)
    data, root = _parse_yaml(path)
    if not isinstance(data, dict):
        raise StudyError(str(path), "(top level)", "expected a mapping of study fields", "start with 'name: my-study'", 1)
    try:
        study = Study.model_validate(data)
    except ValidationError as err:
        raise _schema_error(path, root, err) from None
    loaded = LoadedStudy(study=study, path=path, base_dir=path.parent.resolve())
    _check_semantics(loaded, root)
    return loaded
