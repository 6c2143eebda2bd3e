"""Skip thresholds with a finite-sample guarantee: Learn-then-Test on a labelled pilot.

The claim a team can show: *with confidence 1 - delta, at most alpha of the frames skipped
by this threshold have IoU below t* (Angelopoulos, Bates et al., "Learn then Test", 2021).

On the pilot (labelled, exchangeable with the pool), each candidate threshold lambda skips
the n frames whose score is <= lambda; k of them fail (IoU < t). The null "risk among skipped
frames > alpha" has the exact binomial p-value ``P(Bin(n, alpha) <= k)``. Thresholds are
tested in fixed sequence from the most conservative (fewest skipped) and testing stops at the
first p > delta; the last rejected threshold is returned. With several targets the p-value of
a threshold is the largest of theirs (every target must pass). The grid starts where n
reaches ``ln(delta) / ln(1 - alpha)`` frames, the fewest with which a pilot without failures
can reject at all (45 at alpha = 5 %, delta = 10 %); the start depends on alpha and delta
only, so the sequence is fixed before any label is read.

The threshold, not a skip ratio, is what transfers to the pool; it holds while the pool looks
like the pilot (`saseg.analysis.shift` checks that).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import beta as beta_dist

from ..columns import FRAME, frame_target_iou
from ..errors import DataError

__all__ = ["binomial_cdf", "clopper_pearson_upper", "frames_needed", "learn_then_test", "Guarantee",
           "failures_from_iou"]


def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(Bin(n, p) <= k)`` by exact summation in log space (no scipy, for testing against it)."""
    if n < 0 or not 0.0 <= p <= 1.0:
        raise DataError(f"binomial_cdf: expected n >= 0 and p in [0, 1], but got n={n}, p={p}.")
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
             for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_upper(k: int, n: int, delta: float) -> float:
    """One-sided upper bound u with ``P(Bin(n, u) <= k) = delta`` (confidence 1 - delta)."""
    if n == 0 or k >= n:
        return 1.0
    return float(beta_dist.ppf(1.0 - delta, k + 1, n - k))


def frames_needed(alpha: float, delta: float) -> int:
    """Fewest skipped pilot frames that can certify risk <= alpha: ``ceil(ln delta / ln(1 - alpha))``."""
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise DataError(f"frames_needed: expected alpha and delta in (0, 1), but got {alpha}, {delta}.")
    return math.ceil(math.log(delta) / math.log1p(-alpha) - 1e-12)


def failures_from_iou(frames: pd.DataFrame, iou_df: pd.DataFrame, targets: Sequence[str],
                      iou_below: float) -> dict[str, np.ndarray]:
    """target -> (n_frames,) float: 1 where the frame fails (IoU < t), 0 where it passes, NaN
    where the target is absent (no IoU). Targets: ``frame`` (mean class IoU), a class name or
    a group name, matched against ``iou_df`` (`saseg.metrics.frame_iou` rows)."""
    ids = frames["frame_id"].astype(str)
    out = {}
    for target in targets:
        if target == FRAME:
            iou = frame_target_iou(iou_df)
        else:
            rows = iou_df[iou_df["target"] == target]
            if rows.empty and target not in set(iou_df["target"]):
                raise DataError(f"Expected a target 'frame' or a class or group of the pilot, but got "
                                f"{target!r}; the pilot has {sorted(set(iou_df['target']))}.")
            iou = rows.set_index("frame_id")["iou"]
        values = ids.map(iou).to_numpy(dtype=np.float64)
        out[target] = np.where(np.isfinite(values), (values < iou_below).astype(np.float64), np.nan)
    return out


@dataclass
class Guarantee:
    """A calibrated skip rule: skip frames whose score is at most `threshold`.

    Attributes
    ----------
    threshold : float or None (None: the pilot certifies no skipping)
    score, alpha, delta, iou_below, targets : the question asked
    n_pilot : labelled pilot frames with a score
    n_skipped, n_failed : pilot frames the threshold skips, and those of them that fail
        (for the worst target)
    p_value, upper_bound : at the threshold: the LTT p-value and the Clopper-Pearson bound
    needed : pilot frames the rule needs before it can skip anything
    tested : DataFrame of the tested grid (threshold, n_skipped, p_value per step)
    curve : DataFrame over every distinct pilot threshold: ``threshold``, ``coverage`` (share
        of pilot frames skipped), ``risk`` (failing share of the skipped, worst target) and
        ``upper`` (its Clopper-Pearson bound): the risk-coverage curve of the rule
    """

    threshold: float | None
    score: str
    alpha: float
    delta: float
    iou_below: float
    targets: list[str]
    n_pilot: int
    n_skipped: int = 0
    n_failed: int = 0
    p_value: float = 1.0
    upper_bound: float = 1.0
    needed: int = 0
    tested: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    curve: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    def describe(self) -> str:
        target = ", ".join(self.targets)
        if self.threshold is None:
            return (f"No guaranteed skip: the pilot of {self.n_pilot} frames cannot show, with "
                    f"{1 - self.delta:.0%} confidence, that at most {self.alpha:.0%} of skipped frames have "
                    f"IoU below {self.iou_below:g} ({target}). Even with no failures a threshold must skip at "
                    f"least {self.needed} labelled pilot frames. {self.cause()}")
        return (f"With {1 - self.delta:.0%} confidence, at most {self.alpha:.0%} of skipped frames have IoU "
                f"below {self.iou_below:g} ({target}): skip frames with {self.score} <= {self.threshold:.6g}. "
                f"On the pilot it skips {self.n_skipped} of {self.n_pilot} frames, {self.n_failed} below "
                f"{self.iou_below:g}; Clopper-Pearson upper bound {self.upper_bound:.1%}, p = {self.p_value:.3g}.")

    def cause(self) -> str:
        """Why nothing was certified, from the pilot: too few frames, or too many failures among
        the lowest-scored (then more frames alike would not help). Empty when certified."""
        if self.threshold is not None:
            return ""
        if self.tested.empty:
            return (f"Cause: too few pilot frames ({self.n_pilot} < {self.needed}); label a larger pilot "
                    f"(at least {self.needed} frames, more if some of the lowest-scored fail).")
        first = self.tested.iloc[0]
        n, k = int(first["n_target"]), int(first["n_failed"])
        multiple = next((m for m in (2, 4, 8, 16, 32, 64)
                         if n and k / n < self.alpha and binomial_cdf(m * k, m * n, self.alpha) <= self.delta), None)
        if multiple is not None:
            return (f"Cause: too few pilot frames; {k} of the {n} lowest-scored fail ({k / n:.0%}), under "
                    f"ALPHA, so a pilot about {multiple} times larger ({multiple * self.n_pilot} frames) with "
                    "failures like these would certify.")
        return (f"Cause: too many failures among the lowest-scored frames: {k} of the {n} lowest-scored fail "
                f"({k / n:.0%} against ALPHA {self.alpha:.0%}); a larger pilot would not help. Loosen ALPHA, "
                "use a better score, or plan per segment (--unit segment).")

    def to_dict(self) -> dict:
        return {"threshold": self.threshold, "score": self.score, "alpha": self.alpha, "delta": self.delta,
                "confidence": 1 - self.delta, "iou_below": self.iou_below, "targets": self.targets,
                "n_pilot": self.n_pilot, "n_skipped_pilot": self.n_skipped, "n_failed_pilot": self.n_failed,
                "p_value": self.p_value, "clopper_pearson_upper": self.upper_bound,
                "frames_needed": self.needed, "cause": self.cause(), "statement": self.describe()}


def learn_then_test(scores, failures: Mapping[str, np.ndarray], *, alpha: float = 0.05,
                    delta: float = 0.1, iou_below: float = 0.5, score: str = "score") -> Guarantee:
    """The largest pilot threshold certified by fixed-sequence LTT (see the module doc).

    Parameters
    ----------
    scores : (n,) pilot scores, higher = label first; NaN frames are left out
    failures : target -> (n,) 1.0 fail, 0.0 pass, NaN target absent (`failures_from_iou`)
    alpha, delta : the risk bound and the error level (confidence 1 - delta)
    """
    scores = np.asarray(scores, dtype=np.float64)
    if not failures:
        raise DataError("learn_then_test: expected at least one target.")
    fails = {t: np.asarray(f, dtype=np.float64) for t, f in failures.items()}
    for t, f in fails.items():
        if f.shape != scores.shape:
            raise DataError(f"learn_then_test: expected {len(scores)} failure flags for {t!r}, but got {len(f)}.")
    needed = frames_needed(alpha, delta)
    ok = np.isfinite(scores)
    scores = scores[ok]
    fails = {t: f[ok] for t, f in fails.items()}
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    result = Guarantee(threshold=None, score=score, alpha=alpha, delta=delta, iou_below=iou_below,
                       targets=list(fails), n_pilot=int(ok.sum()), needed=needed)
    # cumulative counts over the ascending order: n present and k failed per target
    cum = {t: (np.cumsum(np.isfinite(f[order])), np.cumsum(np.nan_to_num(f[order]) > 0)) for t, f in fails.items()}
    rows, curve = [], []
    ends = np.flatnonzero(np.r_[sorted_scores[1:] != sorted_scores[:-1], True])  # last index per distinct value
    for end in ends:
        worst = max(((int(failed[end]), int(present[end])) for present, failed in cum.values()),
                    key=lambda kn: kn[0] / kn[1] if kn[1] else 0.0)
        curve.append((float(sorted_scores[end]), (end + 1) / len(scores),
                      worst[0] / worst[1] if worst[1] else np.nan, clopper_pearson_upper(*worst, delta)))
    for end in ends:
        n_skip = end + 1
        if n_skip < needed:
            continue
        worst_p, worst = -1.0, (0, 0)
        for t, (present, failed) in cum.items():
            n_t, k_t = int(present[end]), int(failed[end])
            p_t = binomial_cdf(k_t, n_t, alpha) if n_t > 0 else 1.0
            if p_t > worst_p:
                worst_p, worst = p_t, (n_t, k_t)
        rows.append((float(sorted_scores[end]), int(n_skip), worst[0], worst[1], worst_p))
        if worst_p > delta:
            break
        result.threshold = float(sorted_scores[end])
        result.n_skipped, result.n_failed, result.p_value = int(n_skip), worst[1], worst_p
        result.upper_bound = clopper_pearson_upper(worst[1], worst[0], delta)
    result.tested = pd.DataFrame(rows, columns=["threshold", "n_skipped", "n_target", "n_failed", "p_value"])
    result.curve = pd.DataFrame(curve, columns=["threshold", "coverage", "risk", "upper"])
    return result
