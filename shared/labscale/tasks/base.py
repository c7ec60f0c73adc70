"""What a task is: how to turn a data row into model input and a reference, and how to score it."""

from __future__ import annotations

import json
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from labscale.metrics import LABEL_SUITES, SUITE_ATTRIBUTES, SUITES, check_labels


class TaskDefError(ValueError):
    """An invalid task definition: what is wrong, and how to fix it (the loader prints both)."""

    def __init__(self, problem: str, fix: str):
        super().__init__(problem)
        self.fix = fix


def _empty(value: Any) -> bool:
    return not value


def render_value(value: Any, item_key: str | None = None) -> str:
    """A row field as text: a list one element per line (a record as its `item_key`, a chat message
    as "role: content", another mapping as JSON), a mapping as JSON, anything else as stripped text."""
    if isinstance(value, list):
        return "\n".join(_render_item(item, item_key) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value).strip()


def _render_item(item: Any, item_key: str | None) -> str:
    if isinstance(item, dict):
        if item_key is not None and item_key in item:
            return render_value(item[item_key])
        if {"role", "content"} <= item.keys():
            return f"{item['role']}: {render_value(item['content'])}"
    return render_value(item)


class TaskDef(BaseModel):
    """A task registry entry (or an inline `define:` of a study). Data sources come from the study;
    this is format + metrics only. Everything that changes what a run does is part of its key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    kind: Literal["generation", "label"]
    instruction: str = Field(min_length=1)
    input_template: str
    """`str.format` template over the row's fields, e.g. "Claim: {claim}\\nEvidence: {evidence}"."""
    target_field: str = Field(min_length=1)
    id_field: str | None = None
    labels: tuple[str, ...] = ()
    """Canonical labels of a label task, exactly as the model should answer them."""
    metric_suite: str
    max_new_tokens: int = Field(ge=1)
    min_new_tokens: int = Field(default=0, ge=0, exclude_if=_empty)
    """Open models generate at least this many tokens (e.g. a summary, never an empty answer)."""
    item_keys: dict[str, str] = Field(default_factory=dict, exclude_if=_empty)
    """Field → key: a field holding a list of records renders each record's `key`, one per line.
    The key defaults to the field's own name (Climate-FEVER's `evidences` mapped to `evidence`
    renders each `evidences[].evidence`). Left out of the run key when empty."""
    attributes: dict[str, str] = Field(default_factory=dict, exclude_if=_empty)
    """Attribute role → row field, copied into each prepared row for the metric suite, e.g.
    {group: gender} (group_classification) or {answer_type: answer_type} (qa). Rows with an empty
    attribute are dropped. Left out of the run key when empty."""
    version: str = "1"
    """Bump when the task's behaviour changes, so cached runs are redone."""
    hub_dataset: str | None = Field(default=None, exclude=True)
    """The public Hugging Face dataset the seeds used (documentation; not part of the run key)."""
    hub_columns: dict[str, str] = Field(default_factory=dict, exclude=True)
    """The `columns:` mapping `hub_dataset` needs (source column → task field); checked by validate."""

    @field_validator("input_template")
    @classmethod
    def _named_fields_only(cls, template: str) -> str:
        fix = "write each row field as {name} and literal braces as {{ }}"
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        except ValueError as exc:
            raise TaskDefError(f"input_template is not a valid template ({exc})", fix) from None
        if not fields:
            raise TaskDefError("input_template names no row field", "name one, e.g. 'Text: {text}'")
        for field, spec, conv in fields:
            if not field.isidentifier() or spec or conv:
                raise TaskDefError(f"input_template field {{{field}}} is not a plain field name", fix)
        return template

    @field_validator("metric_suite")
    @classmethod
    def _known_suite(cls, suite: str) -> str:
        if suite not in SUITES:
            raise TaskDefError(f"unknown metric suite {suite!r}", f"use one of: {', '.join(sorted(SUITES))}")
        return suite

    @field_validator("labels")
    @classmethod
    def _distinct_labels(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        if labels:
            try:
                check_labels(labels)
            except ValueError as exc:
                raise TaskDefError(str(exc), "give each label once, spelled as the model should answer it") from None
        return labels

    @model_validator(mode="after")
    def _consistent(self) -> "TaskDef":
        label_suites = ", ".join(sorted(LABEL_SUITES))
        if self.kind == "label" and not self.labels:
            raise TaskDefError(f"task {self.name}: a label task needs labels", "list the answers: labels: [A, B]")
        if self.kind == "generation" and self.labels:
            raise TaskDefError(f"task {self.name}: labels are only for kind: label", "remove labels, or use kind: label")
        if (self.kind == "label") != (self.metric_suite in LABEL_SUITES):
            free_text = ", ".join(sorted(set(SUITES) - LABEL_SUITES))
            raise TaskDefError(f"task {self.name}: metric_suite {self.metric_suite!r} does not fit kind {self.kind!r}",
                               f"use one of: {label_suites if self.kind == 'label' else free_text}")
        if self.min_new_tokens > self.max_new_tokens:
            raise TaskDefError(f"task {self.name}: min_new_tokens {self.min_new_tokens} > max_new_tokens "
                               f"{self.max_new_tokens}", "make min_new_tokens at most max_new_tokens")
        self._check_attributes()
        if self.target_field in self.input_fields:
            raise TaskDefError(f"task {self.name}: target_field {self.target_field!r} is also in input_template "
                               "(the model would see the answer)", f"remove {{{self.target_field}}} from input_template")
        return self

    def _check_attributes(self) -> None:
        """The attribute roles are the ones the metric suite reads, and include those it requires."""
        reads, requires = SUITE_ATTRIBUTES.get(self.metric_suite, ((), ()))
        unknown = sorted(set(self.attributes) - set(reads))
        if unknown:
            raise TaskDefError(f"task {self.name}: metric suite {self.metric_suite!r} reads no attribute(s) {unknown}",
                               f"use the roles it reads: {', '.join(reads) or 'none'}")
        missing = [role for role in requires if role not in self.attributes]
        if missing:
            raise TaskDefError(f"task {self.name}: metric suite {self.metric_suite!r} needs attribute(s) {missing}",
                               f"map each to a row field, e.g. attributes: {{{missing[0]}: <field>}}")

    @property
    def input_fields(self) -> list[str]:
        """Row fields the input template reads."""
        return [f for _, f, _, _ in string.Formatter().parse(self.input_template) if f]

    @property
    def required_fields(self) -> list[str]:
        return [*self.input_fields, self.target_field, *self.attributes.values()]

    def render_input(self, row: dict) -> str:
        """The task input shown to a model for one row."""
        return self.input_template.format(**{f: render_value(row[f], self.item_keys.get(f, f)) for f in self.input_fields})
