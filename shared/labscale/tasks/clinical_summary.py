"""Clinical dialogue → note section (seed 000; `beanham/medsum`, derived from MTS-Dialog).

Sources: `beanham/medsum` (splits train / validation / test), or the MTS-Dialog CSVs
(github abachaa/MTS-Dialog: `ID, section_header, section_text, dialogue`), read as they are.
"""

from labscale.tasks.base import TaskDef

TASK = TaskDef(
    name="clinical-summary",
    description="Summarize a doctor-patient dialogue into the clinical note section named by its header.",
    kind="generation",
    instruction="Summarize the doctor-patient dialogue into the clinical note section named by the header.",
    input_template="Section: {section_header}\nDialogue:\n{dialogue}",
    target_field="section_text",
    id_field="ID",
    metric_suite="summarization",
    max_new_tokens=64,
    hub_dataset="beanham/medsum",
)
