"""The shift alarm over folders: a pool run against its pilot run (`saseg.analysis.shift`)."""

from __future__ import annotations

from typing import Sequence

from ..analysis.shift import ShiftCheck, run_shift
from ..layout import RunDir

__all__ = ["pool_shift"]


def pool_shift(pilot: RunDir, pool: RunDir, columns: Sequence[str] = (), **options) -> list[ShiftCheck]:
    """Checks of the pool against the pilot: the frame SA of the first SA score (both runs
    z-scored against the pilot's reference), then each frames-table column in `columns`
    (`saseg.analysis.shift.run_shift` on the two runs' tables)."""
    return run_shift(pilot.scores(), pilot.frames(), pool.scores(), pool.frames(), classes=pilot.classes(),
                     score=pilot.score_columns()[0], reference=pilot.zscore(), columns=columns, **options)
