"""Two public records → do they refer to the same person? y / n (seed 000, entity matching).

Source: `isaacOnline/deeds-and-voting-matching` (splits train / validation / test), read as it is:
`prompt` holds the record pair ("Name 1: …\\nName 2: …\\nAddress 1: …\\nAddress 2: …") and
`overall_label` the answer, y or n. As in the seed, the model is asked for one token, y or n:
"y" / "N." alone is valid, a sentence mentioning exactly one of them is resolvable, anything else —
"yes" and "no" included — unresolvable. Scored by P / R / F1 of the positive label y, accuracy and
the format rates (seed 000 reports the same).
"""

from labscale.tasks.base import TaskDef

TASK = TaskDef(
    name="entity-match",
    description="Decide whether two public records (names and addresses) refer to the same person.",
    kind="label",
    instruction=(
        "Compare the two records (names and addresses from public records) and decide whether they refer "
        "to the same person, allowing for variations in how names and addresses are written. "
        "Answer with one token: y if they do, n if they do not."
    ),
    input_template="{prompt}",
    target_field="overall_label",
    labels=("y", "n"),
    metric_suite="binary_classification",
    max_new_tokens=4,
    hub_dataset="isaacOnline/deeds-and-voting-matching",
)
