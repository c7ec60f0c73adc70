"""The study report: statistics per cell and between cells, drift between runs, report.html.

`report_params` (what the planner puts into the aggregate's parameters) is importable without
matplotlib; the rendering modules import it lazily.
"""

from labscale.report.params import PRIMARY_METRIC, ReportParams, report_params

__all__ = ["PRIMARY_METRIC", "ReportParams", "report_params"]
