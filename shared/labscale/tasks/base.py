"""What a task is: how to turn a data row into model input and a reference, and how to score it."""

from __future__ import annotations

import string
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator


class TaskDef(BaseModel):
    """A task registry entry. Data sources come from the study; this is format + metrics only."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    kind: Literal["generation", "label"]
    instruction: str
    input_template: str
    """`str.format` template over the row's fields, e.g. "Claim: {claim}\\nEvidence: {evidence}"."""
    target_field: str
    id_field: str | None = None
    labels: tuple[str, ...] = ()
    """Canonical labels of a label task, exactly as the model should answer them."""
    metric_suite: str
    max_new_tokens: int
    version: str = "1"
    """Bump when the task's behaviour changes, so cached runs are redone."""

    @model_validator(mode="after")
    def _labels_match_kind(self) -> "TaskDef":
        if self.kind == "label" and not self.labels:
            raise ValueError(f"task {self.name}: a label task needs labels")
        return self

    @property
    def input_fields(self) -> list[str]:
        """Row fields the input template reads."""
        return [f for _, f, _, _ in string.Formatter().parse(self.input_template) if f]

    @property
    def required_fields(self) -> list[str]:
        return [*self.input_fields, self.target_field]

    def render_input(self, row: dict) -> str:
        """The task input shown to a model for one row."""
        return self.input_template.format(**{f: str(row[f]).strip() for f in self.input_fields})
