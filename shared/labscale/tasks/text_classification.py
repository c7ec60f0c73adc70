"""Political text classification (seed 002, llm-classifier): partisanship and topic.

Seed 002 labelled its own political texts (no public dataset), so both tasks read local CSV or
JSONL files with a `text` column and a `label` column; map other names with `columns:`, e.g.
`{partisanship: label}` (studies/llm-classifier.yaml). Scored by weighted F1 and accuracy (the
seed's table), with the generate stage's seconds per item next to them. Another label set is an
inline task away: `define: {labels: [...]}` next to `task: topic` in a study.
"""

from collections.abc import Sequence

from labscale.tasks.base import TaskDef


def classification_task(name: str, description: str, question: str, labels: Sequence[str]) -> TaskDef:
    """A label task over one `text` field that asks `question` and lists `labels` as the answers."""
    return TaskDef(
        name=name,
        description=description,
        kind="label",
        instruction=f"{question} Answer with one of: {', '.join(labels)}.",
        input_template="Text: {text}",
        target_field="label",
        id_field="id",
        labels=tuple(labels),
        metric_suite="classification",
        max_new_tokens=8,
    )


PARTISANSHIP = classification_task(
    "partisanship",
    "Which side of US party politics a political text takes.",
    "Which US political party does this text support, if any?",
    ("DEMOCRAT", "REPUBLICAN", "NEUTRAL"),
)
TOPIC = classification_task(
    "topic",
    "The policy topic of a political text.",
    "What policy topic is this political text about?",
    ("ECONOMY", "HEALTHCARE", "IMMIGRATION", "ENVIRONMENT", "EDUCATION", "CRIME"),
)
TASKS = (PARTISANSHIP, TOPIC)
