"""Planning: a study → RunSpecs (one per stage run), keyed so unchanged runs are skipped."""

from labscale.plan.planner import Cell, Plan, build_plan, code_version
from labscale.plan.runspec import STAGES, RunSpec, run_key

__all__ = ["STAGES", "Cell", "Plan", "RunSpec", "build_plan", "code_version", "run_key"]
