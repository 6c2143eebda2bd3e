"""RQ1: does the model do worse on more surprising frames? (paper section 5.3.1, Table 3)

Spearman rank correlation between a target's SA and its IoU across frames, for every class
(class SA from the scores table against class IoU) and class group (z-scored group SA from the
frames table against group IoU). A negative rho means: more surprise, lower IoU.

A frame counts for a target when the target has both an SA and an IoU there: the target is
predicted in the frame (so it has an SA) and the frame has labels. Frames where a class is
labelled but never predicted (IoU 0, no SA) are therefore not counted; they are the model's
misses, which SA cannot rank because it is computed on predicted classes.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from ..columns import FRAME, frame_column, frame_target_iou, group_column, require_columns
from ..data.classes import ClassInfo
from ..errors import DataError
from ..metrics import spearman

log = logging.getLogger(__name__)

__all__ = ["paired_table", "correlation_table", "format_table", "score_agreement"]

PAIR_COLUMNS = ["target", "kind", "score", "frame_id", "frame_index", "sa", "iou"]


def paired_table(scores_df: pd.DataFrame, frames_df: pd.DataFrame | None, iou_df: pd.DataFrame,
                 score_columns: Sequence[str], classes: ClassInfo) -> pd.DataFrame:
    """Long table of (SA, IoU) pairs: one row per target, score and frame with both.

    Parameters
    ----------
    scores_df : DataFrame, one row per (frame, predicted class)
        ``frame_id``, ``frame_index``, ``class_id`` and the score columns (class SA).
    frames_df : DataFrame or None, one row per frame
        ``frame_id``, ``frame_index``, ``group_<g>_<score>`` and optionally ``frame_<score>``;
        None skips the groups and the frame target.
    iou_df : DataFrame, `saseg.metrics.frame_iou` rows of all frames plus a ``frame_id`` column
    score_columns : sequence of str, e.g. ``["mdsa", "lsa"]``
    classes : ClassInfo

    Returns
    -------
    DataFrame with columns ``target``, ``kind`` ("class" | "group" | "frame"), ``score``,
    ``frame_id``, ``frame_index``, ``sa``, ``iou``; classes first (in id order), then groups,
    then (when ``frames_df`` has ``frame_<score>`` columns) target "frame": the frame SA against
    the frame's mean class IoU over the classes labelled or predicted in it. Frames are in
    ``frame_index`` order within a target.
    """
    score_columns = list(score_columns)
    require_columns(scores_df, ["frame_id", "frame_index", "class_id", *score_columns], "scores table")
    require_columns(iou_df, ["frame_id", "kind", "target", "class_id", "iou"], "IoU table")
    parts = []
    class_iou = iou_df.loc[iou_df["kind"] == "class", ["frame_id", "class_id", "iou"]]
    joined = scores_df.merge(class_iou, on=["frame_id", "class_id"], how="inner")
    for cid in sorted(joined["class_id"].unique()):
        rows = joined[joined["class_id"] == cid]
        for s in score_columns:
            parts.append(_pairs(rows, classes.name(int(cid)), "class", s, rows[s]))
    if frames_df is not None and classes.groups:
        group_iou = iou_df.loc[iou_df["kind"] == "group", ["frame_id", "target", "iou"]]
        for g in classes.groups:
            cols = [group_column(g, s) for s in score_columns]
            require_columns(frames_df, ["frame_id", "frame_index", *cols], "frames table")
            rows = frames_df.merge(group_iou[group_iou["target"] == g], on="frame_id", how="inner")
            for s, col in zip(score_columns, cols):
                parts.append(_pairs(rows, g, "group", s, rows[col]))
    frame_cols = {s: frame_column(s) for s in score_columns}
    if frames_df is not None and all(c in frames_df.columns for c in frame_cols.values()):
        miou = frame_target_iou(iou_df).reset_index()
        rows = frames_df.merge(miou, on="frame_id", how="inner")
        for s, col in frame_cols.items():
            parts.append(_pairs(rows, FRAME, FRAME, s, rows[col]))
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(
            PAIR_COLUMNS, [str, str, str, str, "int64", "float64", "float64"])})
    out = pd.concat(parts, ignore_index=True)
    return out[np.isfinite(out["sa"]) & np.isfinite(out["iou"])].reset_index(drop=True)


def _pairs(rows: pd.DataFrame, target: str, kind: str, score: str, sa: pd.Series) -> pd.DataFrame:
    out = pd.DataFrame({"target": target, "kind": kind, "score": score,
                        "frame_id": rows["frame_id"].astype(str).to_numpy(),
                        "frame_index": rows["frame_index"].to_numpy(),
                        "sa": sa.astype("float64").to_numpy(),
                        "iou": rows["iou"].astype("float64").to_numpy()}, columns=PAIR_COLUMNS)
    return out.sort_values(["frame_index", "frame_id"], kind="stable")


def correlation_table(scores_df: pd.DataFrame, frames_df: pd.DataFrame | None,
                      iou_df: pd.DataFrame, score_columns: Sequence[str],
                      classes: ClassInfo) -> pd.DataFrame:
    """Spearman correlation between SA and IoU per target and score (paper Table 3).

    Inputs as in `paired_table`.

    Returns
    -------
    DataFrame with columns ``target``, ``kind``, ``score``, ``n_frames`` (frames where the
    target has both an SA and an IoU), ``rho``, ``p``, ``reason`` (why rho is NaN, else "").
    """
    pairs = paired_table(scores_df, frames_df, iou_df, score_columns, classes)
    return _correlate(pairs, "sa", "iou")


def _correlate(pairs: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    rows = []
    for (target, kind, score), g in pairs.groupby(["target", "kind", "score"], sort=False):
        rho, p, reason = spearman(g[x], g[y])
        rows.append((target, kind, score, len(g), rho, p, reason))
    return pd.DataFrame(rows, columns=["target", "kind", "score", "n_frames", "rho", "p", "reason"])


def format_table(df: pd.DataFrame) -> str:
    """Render a `correlation_table` like the paper's Table 3: one line per target.

    Columns: target, kind, n (largest ``n_frames`` over the scores), then ``rho_<score>`` and
    ``p_<score>`` for each score; "-" where rho is undefined.
    """
    require_columns(df, ["target", "kind", "score", "n_frames", "rho", "p"], "correlation table")
    if df.empty:
        return "(no targets with both SA and IoU)"
    scores = list(dict.fromkeys(df["score"]))
    targets = list(dict.fromkeys(zip(df["target"], df["kind"])))
    lines = []
    for target, kind in targets:
        sub = df[(df["target"] == target) & (df["kind"] == kind)].set_index("score")
        row = {"target": target, "kind": kind, "n": int(sub["n_frames"].max())}
        for s in scores:
            ok = s in sub.index and np.isfinite(sub.loc[s, "rho"])
            row[f"rho_{s}"] = f"{sub.loc[s, 'rho']:.3f}" if ok else "-"
            row[f"p_{s}"] = f"{sub.loc[s, 'p']:.3e}" if ok else "-"
        lines.append(row)
    return pd.DataFrame(lines).to_string(index=False)


def score_agreement(scores_df: pd.DataFrame, a: str = "mdsa", b: str = "lsa", *,
                    frames_df: pd.DataFrame | None = None,
                    classes: ClassInfo | None = None) -> pd.DataFrame:
    """Spearman rho between two scores across frames, per class (and per group if given).

    The paper reports rho(MDSA, LSA) > 0.98 for every class and group, i.e. the cheap MDSA
    ranks frames like LSA.

    Returns
    -------
    DataFrame with columns ``target``, ``kind``, ``score`` ("<a>~<b>"), ``n_frames``, ``rho``,
    ``p``, ``reason``.
    """
    require_columns(scores_df, ["frame_id", "class_id", a, b], "scores table")
    parts = []
    for cid, g in scores_df.groupby("class_id", sort=True):
        name = (classes.name(int(cid)) if classes is not None
                else str(g["class_name"].iloc[0]) if "class_name" in g else str(cid))
        parts.append(pd.DataFrame({"target": name, "kind": "class", "x": g[a].to_numpy(float),
                                   "y": g[b].to_numpy(float)}))
    if frames_df is not None and classes is not None:
        for grp in classes.groups:
            ca, cb = group_column(grp, a), group_column(grp, b)
            require_columns(frames_df, [ca, cb], "frames table")
            parts.append(pd.DataFrame({"target": grp, "kind": "group",
                                       "x": frames_df[ca].to_numpy(float),
                                       "y": frames_df[cb].to_numpy(float)}))
    if not parts:
        return pd.DataFrame(columns=["target", "kind", "score", "n_frames", "rho", "p", "reason"])
    pairs = pd.concat(parts, ignore_index=True)
    pairs = pairs[np.isfinite(pairs["x"]) & np.isfinite(pairs["y"])]
    pairs.insert(2, "score", f"{a}~{b}")
    return _correlate(pairs, "x", "y")

