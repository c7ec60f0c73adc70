"""Planning: a study → RunSpecs (one per stage run, with typed params), keyed so unchanged runs are skipped."""

from labscale.plan.planner import Plan, build_plan
from labscale.spec import STAGES, RunSpec, code_version, run_key

__all__ = ["STAGES", "Plan", "RunSpec", "build_plan", "code_version", "run_key"]
