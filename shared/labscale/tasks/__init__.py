"""Task registry: one module per task (or family of tasks) in this package, each defining `TASK`
or `TASKS`; and inline tasks, which a study defines in YAML (`tasks[].define`).

Adding a task = adding a module here and listing it in `_MODULES`, or a `define:` block in a
study; no stage code changes. Registered tasks, in the seeds' order: clinical-summary,
fact-check, entity-match and the probes civil-comments-bias, qasper-abstention, medqa (seed 000),
partisanship, topic (seed 002), tool-call (seed 003).
"""

from __future__ import annotations

import difflib
from types import ModuleType
from typing import TYPE_CHECKING, Any

from labscale.tasks import clinical_summary, entity_match, fact_check, probes, text_classification, tool_call
from labscale.tasks.base import TaskDef

if TYPE_CHECKING:  # pragma: no cover
    from labscale.config.study import TaskConfig

_MODULES: tuple[ModuleType, ...] = (clinical_summary, fact_check, entity_match, probes, text_classification,
                                    tool_call)


def _build_registry(modules: tuple[ModuleType, ...]) -> dict[str, TaskDef]:
    registry: dict[str, TaskDef] = {}
    for module in modules:
        for task in getattr(module, "TASKS", None) or (module.TASK,):
            if task.name in registry:
                raise ValueError(f"task {task.name!r} is registered twice (again in {module.__name__})")
            registry[task.name] = task
    return registry


REGISTRY: dict[str, TaskDef] = _build_registry(_MODULES)

__all__ = ["REGISTRY", "TaskDef", "get_task", "known_tasks", "resolve_task", "unknown_task_message"]


def known_tasks() -> str:
    """The registered task names, comma-separated, in registry order."""
    return ", ".join(REGISTRY)


def unknown_task_message(name: str) -> str:
    """"unknown task 'x'", with the closest registered name when one is close."""
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    return f"unknown task {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def get_task(name: str) -> TaskDef:
    """The registered task called `name` (KeyError listing the known names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"{unknown_task_message(name)}; known: {known_tasks()}") from None


def resolve_task(config: "TaskConfig") -> TaskDef:
    """The task a study's `tasks[]` entry runs: the registered `task`, with the fields its `define`
    sets replaced; or, with `define` alone, the task it defines (named after the entry's id).

    Raises KeyError for an unknown `task`, pydantic.ValidationError for an invalid definition.
    """
    if config.define is None:
        return get_task(config.task)
    base = get_task(config.task) if config.task is not None else None
    fields: dict[str, Any] = {name: getattr(base, name) for name in TaskDef.model_fields} if base else {"name": config.id}
    return TaskDef.model_validate({**fields, **config.define.model_dump(exclude_unset=True)})
