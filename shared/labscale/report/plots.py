"""Plots for the report, rendered with matplotlib (Agg canvas, no pyplot state) to inline SVG text."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

from labscale.report.analysis import pareto_front

_RC = {"svg.hashsalt": "labscale", "svg.fonttype": "none", "font.size": 9}
"""A fixed hash salt keeps SVG ids (and so the report) byte-identical between runs."""


@dataclass(frozen=True)
class Point:
    """One cell on a score-vs-cost plot."""

    label: str
    cost: float
    mean: float
    lo: float | None = None
    hi: float | None = None


def _use_log_x(costs: Sequence[float]) -> bool:
    positive = [c for c in costs if c > 0]
    return len(positive) == len(costs) and max(positive) / min(positive) > 50


def pareto_svg(points: Sequence[Point], ylabel: str, title: str) -> str:
    """Score (with CI error bars) against $ per cell; the Pareto-optimal cells are joined by a line."""
    from matplotlib import rc_context
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    with rc_context(_RC):
        fig = Figure(figsize=(6.4, 3.8))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        front = pareto_front([p.cost for p in points], [p.mean for p in points])
        for p, optimal in zip(points, front):
            yerr = [[p.mean - p.lo], [p.hi - p.mean]] if p.lo is not None and p.hi is not None else None
            ax.errorbar([p.cost], [p.mean], yerr=yerr, fmt="o" if optimal else "s", capsize=3,
                        color="tab:blue" if optimal else "tab:gray")
            ax.annotate(p.label, (p.cost, p.mean), textcoords="offset points", xytext=(5, 4), fontsize=8)
        best = sorted((p.cost, p.mean) for p, optimal in zip(points, front) if optimal)
        if len(best) > 1:
            ax.plot(*zip(*best), color="tab:blue", linewidth=1, alpha=0.6, drawstyle="steps-post")
        if _use_log_x([p.cost for p in points]):
            ax.set_xscale("log")
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.3g}"))
        ax.set_xlabel("estimated cost per cell (USD)")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        out = io.StringIO()
        fig.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    return svg[svg.index("<svg"):]
