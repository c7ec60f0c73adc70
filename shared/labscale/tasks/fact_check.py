"""Claim + evidence → SUPPORTS / REFUTES / NOT_ENOUGH_INFO (seed 000; Climate-FEVER).

Sources:
- `amandakonet/climate_fever_adopted` (what the seeds used): claim–evidence pairs, splits train /
  valid / test; its `label` column holds NLI names (entailment, ...) and `evidence_label` the
  verdict, so a study maps `columns: {label: nli_label, evidence_label: label}` (validate checks).
- The original Climate-FEVER JSON Lines (github tdiggelm/climate-fever-dataset; one claim with five
  evidence records): `columns: {claim_label: label, evidences: evidence}` gives the claim-level
  task, each evidence sentence on its own line; DISPUTED claims are dropped (not a label).
- Local JSONL/CSV with claim, evidence, label (the demo data).
"""

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
    hub_dataset="amandakonet/climate_fever_adopted",
    hub_columns={"label": "nli_label", "evidence_label": "label"},
)
