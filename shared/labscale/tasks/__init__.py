"""Task registry: one module per task (or family of tasks) in this package, each defining `TASK`
or `TASKS`; and inline tasks, which a study defines in YAML (`tasks[].define`, resolved by
`labscale.config.study.resolve_task`).

Adding a task = adding a module here and listing it in `_MODULES`, or a `define:` block in a
study; no stage code changes. Registered tasks, in the seeds' order: clinical-summary,
fact-check, entity-match and the probes civil-comments-bias, qasper-abstention, medqa (seed 000),
partisanship, topic (seed 002), tool-call (seed 003).
"""

from __future__ import annotations

import difflib
from types import ModuleType

from labscale.tasks import clinical_summary, entity_match, fact_check, probes, text_classification, tool_call
from labscale.tasks.base import TaskDef

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

__all__ = ["REGISTRY", "TaskDef", "get_task", "known_tasks", "unknown_task_message"]


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
