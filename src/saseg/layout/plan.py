"""A plan folder (``saseg plan -o PLAN``): the one place that spells its file names::

    PLAN/plan.csv               the queue, rank 1 = label first (what ``saseg export`` reads)
    PLAN/plan.json              the summary: counts, costs, the guarantee and shift checks
    PLAN/segments.csv           a segment plan's per-segment decisions (accept / label), for exports
    PLAN/guarantee_curve.csv    with a guarantee: the Learn-then-Test curve over thresholds
    PLAN/risk_coverage.png      the same curve as a plot
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["PlanDir"]


class PlanDir:
    """Paths of one plan folder (layout in the module docstring)."""

    QUEUE = "plan.csv"
    SUMMARY = "plan.json"
    SEGMENTS = "segments.csv"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"PlanDir({str(self.root)!r})"

    @property
    def queue_path(self) -> Path:
        return self.root / self.QUEUE

    @property
    def summary_path(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def segments_path(self) -> Path:
        return self.root / self.SEGMENTS

    @property
    def guarantee_curve_path(self) -> Path:
        return self.root / "guarantee_curve.csv"

    @property
    def risk_coverage_path(self) -> Path:
        return self.root / "risk_coverage.png"

    @property
    def is_planned(self) -> bool:
        return self.summary_path.is_file()
