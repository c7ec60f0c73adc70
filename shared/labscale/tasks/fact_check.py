"""Claim + evidence → SUPPORTS / REFUTES / NOT_ENOUGH_INFO (seed 000; Climate-FEVER pairs)."""

from labscale.tasks.base import TaskDef

TASK = TaskDef(
    name="fact-check",
    description="Decide whether the evidence supports or refutes the claim, or gives not enough information.",
    kind="label",
    instruction=(
        "Does the evidence support or refute the claim? "
        "Answer with one of: SUPPORTS, REFUTES, NOT_ENOUGH_INFO."
    ),
    input_template="Claim: {claim}\nEvidence: {evidence}",
    target_field="label",
    id_field="claim_id",
    labels=("SUPPORTS", "REFUTES", "NOT_ENOUGH_INFO"),
    metric_suite="classification",
    max_new_tokens=8,
)
