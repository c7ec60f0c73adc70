"""Request + function schemas → the JSON function call(s) that fulfil it (seed 003, tool calling).

Source: `Salesforce/xlam-function-calling-60k` (one split, train), read as it is: `query` (the
user request), `tools` (a JSON list of function schemas), `answers` (the reference: a JSON list
of {"name", "arguments"} calls, several for parallel calls) and `id`. A conversation instead of one
request maps onto `query` with `columns:`; a list of {role, content} messages renders as
"role: content" lines. Scored by the "tool_call" suite: exact match of the calls, function-name
accuracy, argument precision / recall / F1 and the JSON format rates; the parser finds calls inside
prose, code fences and after a chain of thought's "Answer:" (see `labscale.metrics.tool_calls`).
"""

from labscale.tasks.base import TaskDef

TASK = TaskDef(
    name="tool-call",
    description="Call the right function(s), with the right arguments, for a user request.",
    kind="generation",
    instruction=(
        "You can call the functions described below (JSON schemas). Reply only with the call(s) that "
        'fulfil the request: a JSON list of objects with "name" and "arguments".'
    ),
    input_template="Functions:\n{tools}\n\nRequest: {query}",
    target_field="answers",
    id_field="id",
    metric_suite="tool_call",
    max_new_tokens=128,
    hub_dataset="Salesforce/xlam-function-calling-60k",
)
