"""RQ2: what does skipping the least surprising frames cost in accuracy? (paper 5.3.2, Fig. 9)

Skip (do not label) the fraction r of frames with the lowest SA and accept the model's
segmentation of them as correct. Two inaccuracies of the skipped set S, for one target::

    below_t          = |{f in S : IoU_f < t}| / |S|     (share of problematic skipped frames)
    mean_1_minus_iou = mean over f in S of (1 - IoU_f)

With r = 0 nothing is skipped and both are 0 by convention. |S| = floor(r * n) frames, so a
ratio never skips more than it says. Frames with equal SA are skipped in frame order (stable
sort), which makes every curve deterministic.

Two references bracket the SA order: ``random`` is the exact expectation over uniformly random
skip orders (for |S| >= 1 that is the value over all n frames, as every frame is equally likely
to be skipped), ``oracle`` skips the highest-IoU frames first (the best any order can do).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from ..data.classes import ClassInfo
from ..errors import DataError
from .correlation import paired_table

__all__ = ["tradeoff_curve", "tradeoff_table", "curves_from_pairs", "max_skip", "max_skip_table", "n_skipped", "skip_order", "one_curve",
           "THRESHOLDS", "CURVE_COLUMNS"]

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
ORDERS = ("sa", "random", "oracle")
CURVE_COLUMNS = ["skip_ratio", "n_skipped", "metric", "threshold", "value"]


def n_skipped(skip_ratio: float, n: int) -> int:
    """Frames skipped at a ratio: floor(r * n), with a tolerance for float error in r * n."""
    return int(np.floor(skip_ratio * n + 1e-9))


def skip_order(sa) -> np.ndarray:
    """(n,) indices in skipping order: lowest SA first, ties in input (frame) order."""
    return np.argsort(np.asarray(sa, dtype=np.float64), kind="stable")


def tradeoff_curve(sa, iou, *, thresholds: Sequence[float] = THRESHOLDS,
                   skip_ratios=None, order: str = "sa") -> pd.DataFrame:
    """Inaccuracy of the skipped frames against the skip ratio, for one target.

    Parameters
    ----------
    sa : array-like of shape (n,)
        The target's SA per frame, in frame order. Pairs where SA or IoU is NaN are dropped.
    iou : array-like of shape (n,), values in [0, 1]
    thresholds : sequence of float
        IoU thresholds t for ``below_t``.
    skip_ratios : array-like of float in [0, 1]; default ``np.linspace(0, 1, 101)``
    order : {"sa", "random", "oracle"}

    Returns
    -------
    DataFrame with columns ``skip_ratio``, ``n_skipped``, ``metric`` ("below_t" |
    ``"mean_1_minus_iou"``), ``threshold`` (NaN for the 1 - IoU rows), ``value``; rows grouped
    by metric and threshold, skip ratios ascending within a group.
    """
    sa, iou = np.asarray(sa, dtype=np.float64).ravel(), np.asarray(iou, dtype=np.float64).ravel()
    if sa.shape != iou.shape:
        raise DataError(f"tradeoff_curve: expected one IoU per SA value, but got {len(sa)} SA "
                        f"values and {len(iou)} IoUs.")
    keep = np.isfinite(sa) & np.isfinite(iou)
    sa, iou = sa[keep], iou[keep]
    if ((iou < 0) | (iou > 1)).any():
        raise DataError(f"tradeoff_curve: expected IoU values in [0, 1], but got "
                        f"{iou[(iou < 0) | (iou > 1)][:5].tolist()}.")
    ratios = np.linspace(0, 1, 101) if skip_ratios is None else np.asarray(skip_ratios, dtype=np.float64).ravel()
    if not (np.isfinite(ratios) & (ratios >= 0) & (ratios <= 1)).all():
        raise DataError(f"tradeoff_curve: expected skip ratios in [0, 1], but got {ratios.tolist()[:10]}.")
    if order not in ORDERS:
        raise DataError(f"tradeoff_curve: expected order in {ORDERS}, but got {order!r}.")
    n = len(sa)
    k = np.array([n_skipped(r, n) for r in ratios], dtype=np.int64)
    metrics = [("below_t", float(t), (iou < t).astype(np.float64)) for t in thresholds]
    metrics.append(("mean_1_minus_iou", float("nan"), 1.0 - iou))
    idx = skip_order(sa) if order == "sa" else np.argsort(-iou, kind="stable")
    parts = []
    for name, t, bad in metrics:
        if order == "random":
            value = np.where(k > 0, bad.mean() if n else 0.0, 0.0)
        else:
            cum = np.concatenate([[0.0], np.cumsum(bad[idx])])
            value = np.where(k > 0, cum[k] / np.maximum(k, 1), 0.0)
        parts.append(pd.DataFrame({"skip_ratio": ratios, "n_skipped": k, "metric": name,
                                   "threshold": t, "value": value}))
    return pd.concat(parts, ignore_index=True)[CURVE_COLUMNS]


def tradeoff_table(scores_df: pd.DataFrame, frames_df: pd.DataFrame | None,
                   iou_df: pd.DataFrame, score_columns: Sequence[str], classes: ClassInfo, *,
                   thresholds: Sequence[float] = THRESHOLDS, skip_ratios=None,
                   references: bool = True) -> pd.DataFrame:
    """Trade-off curves of every class, group and frame target and every score.

    Inputs as in `saseg.analysis.correlation.paired_table`; the rest and the result as in
    `curves_from_pairs`.
    """
    pairs = paired_table(scores_df, frames_df, iou_df, score_columns, classes)
    return curves_from_pairs(pairs, thresholds=thresholds, skip_ratios=skip_ratios,
                             references=references)


def curves_from_pairs(pairs: pd.DataFrame, *, thresholds: Sequence[float] = THRESHOLDS,
                      skip_ratios=None, references: bool = True) -> pd.DataFrame:
    """Trade-off curves of every target and score, plus the random and oracle references.

    Parameters
    ----------
    pairs : DataFrame from `saseg.analysis.correlation.paired_table`
        ``target``, ``kind``, ``score``, ``sa``, ``iou``, one row per frame in frame order.
    thresholds, skip_ratios : as in `tradeoff_curve`
    references : bool
        Add ``order="random"`` and ``order="oracle"`` curves for each (target, score) on the
        same frames.

    Returns
    -------
    DataFrame with columns ``target``, ``kind``, ``score``, ``order``, ``n_frames`` and the
    curve columns of `tradeoff_curve`.
    """
    missing = [c for c in ("target", "kind", "score", "sa", "iou") if c not in pairs.columns]
    if missing:
        raise DataError(f"pairs table: expected columns {missing}, but got {list(pairs.columns)}.")
    orders = ORDERS if references else ("sa",)
    parts = []
    for (target, kind, score), g in pairs.groupby(["target", "kind", "score"], sort=False):
        for order in orders:
            curve = tradeoff_curve(g["sa"], g["iou"], thresholds=thresholds,
                                   skip_ratios=skip_ratios, order=order)
            n = int((np.isfinite(g["sa"]) & np.isfinite(g["iou"])).sum())
            head = pd.DataFrame({"target": target, "kind": kind, "score": score, "order": order,
                                 "n_frames": n}, index=curve.index)
            parts.append(pd.concat([head, curve], axis=1))
    if not parts:
        return pd.DataFrame(columns=["target", "kind", "score", "order", "n_frames", *CURVE_COLUMNS])
    return pd.concat(parts, ignore_index=True)


def max_skip(curve: pd.DataFrame, threshold: float | None = 0.5, risk: float = 0.05) -> float:
    """Largest skip ratio whose skipped frames are at most `risk` problematic.

    Parameters
    ----------
    curve : DataFrame from `tradeoff_curve`, or a `tradeoff_table` narrowed to one target and
        score (its ``order="sa"`` rows are used)
    threshold : float or None
        IoU threshold of the ``below_t`` rows; None uses ``mean_1_minus_iou`` instead.
    risk : float
        Largest acceptable value.

    Returns
    -------
    float
        max r with value(r) <= risk (0.0 always qualifies: nothing skipped, no inaccuracy).
    """
    sub = one_curve(curve, threshold)
    ok = sub["value"].to_numpy() <= risk + 1e-12
    return float(sub["skip_ratio"].to_numpy()[ok].max()) if ok.any() else 0.0


def max_skip_table(table: pd.DataFrame, threshold: float | None = 0.5,
                   risk: float = 0.05) -> pd.DataFrame:
    """`max_skip` of every (target, kind, score) curve of a `tradeoff_table`.

    Returns
    -------
    DataFrame with columns ``target``, ``kind``, ``score``, ``n_frames``, ``threshold``,
    ``risk``, ``max_skip_ratio`` (skipping in SA order) and, for the reference orders in the
    table, ``max_skip_random`` and ``max_skip_oracle``.
    """
    keys = ["target", "kind", "score"]
    missing = [c for c in keys if c not in table.columns]
    if missing:
        raise DataError(f"trade-off table: expected columns {missing}, but got {list(table.columns)}.")
    rows = []
    orders = table["order"].unique() if "order" in table.columns else ["sa"]
    for (target, kind, score), g in table.groupby(keys, sort=False):
        n = int(g["n_frames"].iloc[0]) if "n_frames" in g.columns else -1
        row = [target, kind, score, n, threshold, risk]
        for order in orders:
            curve = g[g["order"] == order].assign(order="sa") if "order" in g.columns else g
            row.append(max_skip(curve, threshold, risk))
        rows.append(row)
    names = ["max_skip_ratio" if o == "sa" else f"max_skip_{o}" for o in orders]
    return pd.DataFrame(rows, columns=[*keys, "n_frames", "threshold", "risk", *names])


def one_curve(curve: pd.DataFrame, threshold: float | None) -> pd.DataFrame:
    """Rows of one curve for one metric; raises unless `curve` holds exactly one curve."""
    missing = [c for c in CURVE_COLUMNS if c not in curve.columns]
    if missing:
        raise DataError(f"trade-off curve: expected columns {missing}, but got {list(curve.columns)}.")
    if "order" in curve.columns:
        curve = curve[curve["order"] == "sa"]
    for key in ("target", "score"):
        if key in curve.columns and curve[key].nunique() > 1:
            raise DataError(f"trade-off curve: expected a single {key}, but got "
                            f"{sorted(curve[key].unique())}; select one first.")
    if threshold is None:
        sub = curve[curve["metric"] == "mean_1_minus_iou"]
    else:
        sub = curve[(curve["metric"] == "below_t") & np.isclose(curve["threshold"], threshold)]
    if sub.empty:
        have = sorted(curve.loc[curve["metric"] == "below_t", "threshold"].unique().tolist())
        raise DataError(f"trade-off curve: expected rows for threshold {threshold}, but the "
                        f"curve has thresholds {have}.")
    return sub.sort_values("skip_ratio", kind="stable")
