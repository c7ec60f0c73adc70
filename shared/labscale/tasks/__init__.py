"""Task registry: one module per task in this package, each defining `TASK`.

Adding a task = adding a module here (or, later, a YAML file); no stage code changes.
"""

from __future__ import annotations

from labscale.tasks import clinical_summary, fact_check
from labscale.tasks.base import TaskDef

REGISTRY: dict[str, TaskDef] = {t.name: t for t in (clinical_summary.TASK, fact_check.TASK)}

__all__ = ["REGISTRY", "TaskDef", "get_task"]


def get_task(name: str) -> TaskDef:
    """The registered task called `name` (KeyError listing the known names otherwise)."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known: {', '.join(sorted(REGISTRY))}") from None
