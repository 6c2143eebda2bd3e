"""Scores compared fairly on a labelled run, per segment: what each could accept in hindsight.

Rows of likely-present but unpredicted classes (``n_pixels`` 0) carry the learned ``risk``
and the plug-in score but no SA or softmax score, so a plan on SA must label them and can
never skip their frame. `compare_scores` reports both readings, on the same labelled run:

- ``all rows``: every segment; a score's NaN rows are labelled (the plan's real behaviour);
- ``shared rows``: only the rows where every compared score is defined (equal footing).

Scores: any scores.parquet column, ``plugin_risk`` (1 - plug-in expected IoU), and the
``oracle`` (`saseg.analysis.segments.oracle_score`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .segments import hindsight, oracle_score, score_values, segment_table

__all__ = ["compare_scores", "available_scores"]


def available_scores(scores_df: pd.DataFrame, score_columns: Sequence[str]) -> list[str]:
    """The run's segment scores worth comparing: its score columns, risk and plugin_risk where present."""
    names = [c for c in score_columns if c in scores_df.columns and c != "risk"]
    if "plugin_iou" in scores_df.columns:
        names.append("plugin_risk")
    if "risk" in scores_df.columns:
        names.append("risk")
    return names


def compare_scores(scores_df: pd.DataFrame, iou_df: pd.DataFrame, n_classes: int, scores: Sequence[str], *,
                   alpha: float = 0.05, iou_below: float = 0.5, promise: str = "label-error") -> pd.DataFrame:
    """Hindsight accepted share per score, on all rows and on the shared rows.

    Returns
    -------
    DataFrame, one row per score (then ``oracle``): ``score``, ``all_rows`` and
    ``shared_rows`` (share of segments accepted), ``all_frames_skipped`` (share of frames
    skipped whole, all rows), ``n_all``, ``n_shared`` (rows judged).
    """
    values = {s: score_values(scores_df, s) for s in scores}
    shared = np.ones(len(scores_df), bool)
    for v in values.values():
        shared &= np.isfinite(v)
    frame_ids = pd.unique(scores_df["frame_id"].astype(str))
    out = []
    for name in [*scores, "oracle"]:
        row = {"score": name}
        for label, mask in (("all", np.ones(len(scores_df), bool)), ("shared", shared)):
            sub = scores_df[mask].copy()
            table = segment_table(sub.assign(_s=0.0), "_s", n_classes, iou_df, iou_below, frame_ids=frame_ids)
            table.score = oracle_score(table) if name == "oracle" else values[name][mask]
            h = hindsight(table, alpha, promise)
            row[f"{label}_rows"] = h["accepted_rows_share"]
            row[f"n_{label}"] = int(mask.sum())
            if label == "all":
                row["all_frames_skipped"] = h["skipped_frames_share"]
        out.append(row)
    return pd.DataFrame(out, columns=["score", "all_rows", "shared_rows", "all_frames_skipped", "n_all", "n_shared"])
