"""The shift alarm: does the pool still look like the pilot a guarantee was calibrated on?

A calibrated threshold (`saseg.analysis.guarantee`) holds for frames exchangeable with the
pilot. Night, rain or a new city break that, and surprise is the natural witness: the pool's
frame SA moves away from the pilot's. Per column this compares the two samples with

- the two-sample Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``), and
- a common-language effect size, ``AUC = P(pool value > pilot value)`` (ties count 1/2;
  0.5 = no difference), from the Mann-Whitney U statistic.

The alarm fires when ``p < alpha`` (default 0.01) *and* ``|AUC - 0.5| >= min_effect``
(default 0.1, i.e. AUC outside [0.4, 0.6]): large pools make tiny, harmless differences
significant, so significance alone would cry wolf.

Frame SA is z-scored against a reference, by default the run itself, which would hide any
shift; `run_shift` therefore re-scores both runs' frame SA against the *pilot's* z-score
reference before comparing. Learned scores (``frame_risk``) need no reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp, mannwhitneyu

from ..aggregate import frame_scores
from ..columns import frame_column
from ..errors import DataError

__all__ = ["ShiftCheck", "shift_check", "shift_checks", "run_shift"]


@dataclass(frozen=True)
class ShiftCheck:
    """One column's pilot-versus-pool comparison."""

    column: str
    n_pilot: int
    n_pool: int
    ks_statistic: float
    p_value: float
    auc: float
    shifted: bool

    def describe(self) -> str:
        verdict = "SHIFT" if self.shifted else "no shift"
        way = "higher" if self.auc > 0.5 else "lower"
        return (f"{verdict} in {self.column}: pool {way} than pilot, AUC {self.auc:.2f} "
                f"(0.5 = same), KS D {self.ks_statistic:.2f}, p = {self.p_value:.2g} "
                f"({self.n_pool} pool vs {self.n_pilot} pilot frames)")

    def to_dict(self) -> dict:
        return {"column": self.column, "n_pilot": self.n_pilot, "n_pool": self.n_pool,
                "ks_statistic": self.ks_statistic, "p_value": self.p_value, "auc": self.auc,
                "shifted": self.shifted, "statement": self.describe()}


def shift_check(pilot, pool, *, column: str = "score", alpha: float = 0.01,
                min_effect: float = 0.1) -> ShiftCheck:
    """Compare two (n,) samples of one column (NaN left out); see the module doc."""
    a = np.asarray(pilot, dtype=np.float64)
    b = np.asarray(pool, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        raise DataError(f"shift check of {column}: expected at least 2 finite values on each side, but "
                        f"got {len(a)} pilot and {len(b)} pool values.")
    ks = ks_2samp(b, a)
    u = mannwhitneyu(b, a, alternative="two-sided").statistic
    auc = float(u) / (len(a) * len(b))
    shifted = bool(ks.pvalue < alpha and abs(auc - 0.5) >= min_effect)
    return ShiftCheck(column=column, n_pilot=len(a), n_pool=len(b), ks_statistic=float(ks.statistic),
                      p_value=float(ks.pvalue), auc=auc, shifted=shifted)


def shift_checks(pilot_frames: pd.DataFrame, pool_frames: pd.DataFrame, columns: Sequence[str],
                 **options) -> list[ShiftCheck]:
    """`shift_check` of each column present in both frames tables (order kept, repeats dropped)."""
    checks = []
    for col in dict.fromkeys(columns):
        if col in pilot_frames.columns and col in pool_frames.columns:
            checks.append(shift_check(pilot_frames[col], pool_frames[col], column=col, **options))
    return checks


def run_shift(pilot_scores: pd.DataFrame, pilot_frames: pd.DataFrame, pool_scores: pd.DataFrame,
              pool_frames: pd.DataFrame, *, classes, score: str, reference, columns: Sequence[str] = (),
              **options) -> list[ShiftCheck]:
    """Checks of a pool run against its pilot run, from their tables: the frame SA of `score`
    (both runs z-scored against the pilot's `reference`, a `ZScoreReference`), then each
    frames-table column in `columns`."""
    pilot_sa = frame_scores(pilot_scores, classes, [score], reference=reference)
    pool_sa = frame_scores(pool_scores, classes, [score], reference=reference)
    column = frame_column(score)
    checks = [shift_check(pilot_sa[column], pool_sa[column], column=f"{column} (pilot reference)", **options)]
    others = [c for c in columns if c != column]
    return checks + shift_checks(pilot_frames, pool_frames, others, **options)
