"""Accept or label each segment, under a promise calibrated on a labelled pilot of frames.

A **segment** is one row of ``scores.parquet``: a (frame, class) the model predicts or finds
likely present. A segment is *accepted* (the model's mask becomes the label) when its score
is at most a threshold lambda, else *to label*; NaN scores are always labelled. A frame whose
segments are all accepted is *skipped whole*; then the classes its label has but the model
neither predicted nor found likely (**missed** classes) are accepted too, as empty masks.

On the pilot an accepted segment is **wrong** when its class IoU in the frame is below t
(`saseg.metrics.frame_iou`; a predicted class absent from the label has IoU 0; a likely
class absent from both has no IoU and an empty mask is right). A missed class of a frame
skipped whole is wrong. Per frame i, with ``S_i`` segments (rows + missed), ``A_i`` accepted
and ``W_i`` accepted and wrong:

- **label error** (default): ``L_i = W_i / S_i``; promise ``E[L] <= alpha``: on average at
  most alpha of a frame's segment labels are wrong model masks;
- **skip precision**: ``E[W] <= alpha E[A]`` (the paper's RQ2 reading: wrong among accepted),
  tested as ``E[X] <= alpha`` with ``X_i = (W_i - alpha A_i) / C + alpha`` in [0, 1], C the
  number of classes;
- **per class** c: over frames where c is a segment, ``L^c_i = 1`` when c's segment is
  accepted and wrong (a missed c counts when every row of the frame is <= lambda).

Frames are the exchangeable unit (`saseg.analysis.bounds`): never the segments of one frame.
Label-error losses do not decrease with lambda, as conformal risk control needs; the
skip-precision loss is not monotone (so it is only promised with confidence: fixed-sequence
testing needs no monotonicity). The grid is the pilot's distinct segment scores (at most `MAX_GRID`
quantiles of them), read before any label.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError

__all__ = ["PROMISES", "MAX_GRID", "SegmentTable", "segment_table", "score_values", "threshold_grid",
           "label_error_losses", "skip_precision_losses", "class_losses", "accept", "realised",
           "hindsight", "oracle_score", "DERIVED_SCORES", "subset"]

PROMISES = ("label-error", "skip-precision")
MAX_GRID = 2000
DERIVED_SCORES = {"plugin_risk": "1 - plugin_iou: the plug-in expected IoU as a risk"}


def score_values(scores_df: pd.DataFrame, score: str) -> np.ndarray:
    """(n_rows,) float values of a segment score: a column, or ``plugin_risk`` = 1 - plugin_iou."""
    if score in scores_df.columns:
        return scores_df[score].to_numpy(dtype=np.float64)
    if score == "plugin_risk" and "plugin_iou" in scores_df.columns:
        return 1.0 - scores_df["plugin_iou"].to_numpy(dtype=np.float64)
    raise DataError(f"Expected a segment score column {score!r} (or plugin_risk, from plugin_iou) in "
                    f"scores.parquet, but it has {sorted(scores_df.columns)}.")


@dataclass
class SegmentTable:
    """Segments of a set of frames, as arrays.

    Attributes
    ----------
    frame_ids : (n_frames,) str, frame order
    row_frame : (n_rows,) int, index into frame_ids
    class_id : (n_rows,) int
    class_name : (n_rows,) str
    score : (n_rows,) float, NaN = never accepted
    wrong : (n_rows,) bool or None (None: no labels)
    missed : (n_frames,) int or None, labelled classes without a row
    missed_classes : (n_frames,) list of class names missed, or None
    n_classes : int, C of the skip-precision loss
    """

    frame_ids: np.ndarray
    row_frame: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray
    score: np.ndarray
    wrong: np.ndarray | None
    missed: np.ndarray | None
    missed_classes: list | None
    n_classes: int

    @property
    def n_frames(self) -> int:
        return len(self.frame_ids)

    def frame_max(self) -> np.ndarray:
        """(n_frames,) highest segment score per frame (+inf with a NaN row, -inf with no rows)."""
        s = np.where(np.isfinite(self.score), self.score, np.inf)
        out = np.full(self.n_frames, -np.inf)
        np.maximum.at(out, self.row_frame, s)
        return out

    def rows_per_frame(self) -> np.ndarray:
        return np.bincount(self.row_frame, minlength=self.n_frames)


def segment_table(scores_df: pd.DataFrame, score: str, n_classes: int, iou_df: pd.DataFrame | None = None,
                  iou_below: float = 0.5, frame_ids=None) -> SegmentTable:
    """Segments of a scored run, with truth from `iou_df` (eval ``iou.parquet``) when given.

    `frame_ids` fixes the frame order (default: the order of first appearance in `scores_df`).
    """
    for col in ("frame_id", "class_id"):
        if col not in scores_df.columns:
            raise DataError(f"Expected a column {col!r} in scores.parquet, but got {list(scores_df.columns)}.")
    values = score_values(scores_df, score)
    ids = pd.Index(pd.unique(scores_df["frame_id"].astype(str)) if frame_ids is None
                   else np.asarray(frame_ids, dtype=str))
    row_frame = ids.get_indexer(scores_df["frame_id"].astype(str))
    keep = row_frame >= 0
    rows = scores_df[keep]
    names = rows["class_name"].astype(str).to_numpy() if "class_name" in rows.columns \
        else rows["class_id"].astype(str).to_numpy()
    table = SegmentTable(frame_ids=ids.to_numpy(dtype=str), row_frame=row_frame[keep].astype(np.int64),
                         class_id=rows["class_id"].to_numpy(dtype=np.int64), class_name=names,
                         score=values[keep], wrong=None, missed=None, missed_classes=None, n_classes=int(n_classes))
    if iou_df is None:
        return table
    cls = iou_df[iou_df["kind"] == "class"]
    iou = cls.set_index([cls["frame_id"].astype(str), "class_id"])["iou"]
    key = pd.MultiIndex.from_arrays([rows["frame_id"].astype(str).to_numpy(), table.class_id])
    row_iou = iou.reindex(key).to_numpy(dtype=np.float64)
    table.wrong = np.isfinite(row_iou) & (row_iou < iou_below)
    labelled = cls[cls["n_label"] > 0]
    have = set(zip(rows["frame_id"].astype(str), table.class_id.tolist()))
    missed: list[list[str]] = [[] for _ in range(len(ids))]
    for fid, cid, name in zip(labelled["frame_id"].astype(str), labelled["class_id"], labelled["target"]):
        i = ids.get_indexer([fid])[0]
        if i >= 0 and (fid, int(cid)) not in have:
            missed[i].append(str(name))
    table.missed_classes = missed
    table.missed = np.array([len(m) for m in missed], dtype=np.int64)
    return table


def threshold_grid(score, max_grid: int = MAX_GRID) -> np.ndarray:
    """Ascending candidate thresholds: the distinct finite scores (at most `max_grid` quantiles)."""
    s = np.unique(np.asarray(score, dtype=np.float64)[np.isfinite(score)])
    if len(s) > max_grid:
        s = np.unique(np.quantile(s, np.linspace(0, 1, max_grid), method="inverted_cdf"))
    return s


def _cumulative(frame, start, weight, n_frames, n_grid) -> np.ndarray:
    """(n_frames, n_grid) sum of `weight` over rows with ``start <= j`` (start = first column)."""
    grid = np.zeros((n_frames, n_grid + 1))
    np.add.at(grid, (frame, start), weight)
    return np.cumsum(grid, axis=1)[:, :n_grid]


def _counts(table: SegmentTable, grid: np.ndarray):
    """(W, A, S): wrong accepted, accepted (n_frames, n_grid) and segments (n_frames,)."""
    if table.wrong is None or table.missed is None:
        raise DataError("segment losses: expected a labelled pilot (eval iou.parquet), but got no labels.")
    n, m = table.n_frames, len(grid)
    score = np.where(np.isfinite(table.score), table.score, np.inf)
    start = np.searchsorted(grid, score, side="left")  # accepted from column `start` on
    accepted = _cumulative(table.row_frame, start, np.ones(len(score)), n, m)
    wrong = _cumulative(table.row_frame, start, table.wrong.astype(np.float64), n, m)
    whole = np.arange(m)[None, :] >= np.searchsorted(grid, table.frame_max(), side="left")[:, None]
    wrong = wrong + whole * table.missed[:, None]
    accepted = accepted + whole * table.missed[:, None]
    return wrong, accepted, table.rows_per_frame() + table.missed


def label_error_losses(table: SegmentTable, grid: np.ndarray) -> np.ndarray:
    """(n_frames, n_grid) ``W_i / S_i`` (0 for a frame without segments)."""
    W, _, S = _counts(table, grid)
    return W / np.maximum(S, 1)[:, None]


def skip_precision_losses(table: SegmentTable, grid: np.ndarray, alpha: float) -> np.ndarray:
    """(n_frames, n_grid) ``X_i = (W_i - alpha A_i) / C + alpha`` in [0, 1]."""
    W, A, S = _counts(table, grid)
    if S.max(initial=0) > table.n_classes:
        raise DataError(f"skip precision: expected at most {table.n_classes} segments per frame (the classes), "
                        f"but a frame has {S.max()}.")
    return np.clip((W - alpha * A) / table.n_classes + alpha, 0.0, 1.0)


def class_losses(table: SegmentTable, grid: np.ndarray, name: str) -> np.ndarray:
    """(n_frames_with_c, n_grid) per-class loss ``L^c`` over frames where class `name` is a segment."""
    if table.wrong is None or table.missed_classes is None:
        raise DataError("per-class losses: expected a labelled pilot, but got no labels.")
    is_c = table.class_name == name
    missed_c = np.array([name in m for m in table.missed_classes])
    has_c = np.zeros(table.n_frames, bool)
    has_c[table.row_frame[is_c]] = True
    has_c |= missed_c
    n, m = table.n_frames, len(grid)
    score = np.where(np.isfinite(table.score[is_c]), table.score[is_c], np.inf)
    start = np.searchsorted(grid, score, side="left")
    loss = _cumulative(table.row_frame[is_c], start, table.wrong[is_c].astype(np.float64), n, m)
    whole = np.arange(m)[None, :] >= np.searchsorted(grid, table.frame_max(), side="left")[:, None]
    loss = loss + whole * missed_c[:, None]
    return np.minimum(loss[has_c], 1.0)


def accept(table: SegmentTable, threshold: float | None, class_thresholds: dict | None = None):
    """Decisions at a threshold: ((n_rows,) accepted, (n_frames,) skipped whole).

    A row is accepted when its score <= its class's threshold (`class_thresholds` name ->
    value caps `threshold` for that class; None accepts none of the class); a frame is
    skipped whole when every row is accepted and its highest score is <= every threshold.
    """
    if threshold is None:
        return np.zeros(len(table.score), bool), np.zeros(table.n_frames, bool)
    limit = np.full(len(table.score), float(threshold))
    strictest = float(threshold)
    for name, value in (class_thresholds or {}).items():
        value = -np.inf if value is None else min(float(value), float(threshold))
        limit[table.class_name == name] = value
        strictest = min(strictest, value)
    accepted = np.isfinite(table.score) & (table.score <= limit)
    all_rows = np.ones(table.n_frames, bool)
    np.logical_and.at(all_rows, table.row_frame, accepted)
    skipped = all_rows & (table.frame_max() <= strictest)
    return accepted, skipped


def realised(table: SegmentTable, accepted: np.ndarray, skipped: np.ndarray) -> dict:
    """What a labelled pool shows for given decisions: shares over its frames and segments."""
    if table.wrong is None or table.missed is None:
        raise DataError("realised: expected labels for the pool, but got none.")
    n = table.n_frames
    W = np.bincount(table.row_frame, weights=accepted & table.wrong, minlength=n) + skipped * table.missed
    A = np.bincount(table.row_frame, weights=accepted, minlength=n) + skipped * table.missed
    S = table.rows_per_frame() + table.missed
    return {"label_error": float(np.mean(W / np.maximum(S, 1))) if n else 0.0,
            "wrong_share_of_segments": float(W.sum() / max(S.sum(), 1)),
            "wrong_among_accepted": float(W.sum() / A.sum()) if A.sum() else float("nan"),
            "accepted_rows_share": float(accepted.mean()) if len(accepted) else 0.0,
            "skipped_frames_share": float(skipped.mean()) if n else 0.0,
            "missed_accepted": int((skipped * table.missed).sum())}


def hindsight(table: SegmentTable, alpha: float, promise: str = "label-error") -> dict:
    """The best a threshold on this score could have done on a *labelled* pool, in hindsight.

    Over the pool's own distinct scores: the largest threshold whose realised promise holds
    (label error ``mean_i W_i/S_i <= alpha``, or skip precision ``sum W <= alpha sum A``) at it
    and every smaller one. Returns ``threshold`` (None: none), ``accepted_rows_share`` and
    ``skipped_frames_share``. No guarantee: the yardstick for a calibrated plan.
    """
    grid = threshold_grid(table.score)
    if not len(grid):
        return {"threshold": None, "accepted_rows_share": 0.0, "skipped_frames_share": 0.0}
    W, A, S = _counts(table, grid)
    if promise == "label-error":
        ok = (W / np.maximum(S, 1)[:, None]).mean(0) <= alpha + 1e-12
    else:
        ok = W.sum(0) <= alpha * A.sum(0) + 1e-12
    bad = np.flatnonzero(~ok)
    j = (bad[0] if len(bad) else len(grid)) - 1
    if j < 0:
        return {"threshold": None, "accepted_rows_share": 0.0, "skipped_frames_share": 0.0}
    r = realised(table, *accept(table, float(grid[j])))
    return {"threshold": float(grid[j]), "accepted_rows_share": r["accepted_rows_share"],
            "skipped_frames_share": r["skipped_frames_share"]}


def oracle_score(table: SegmentTable) -> np.ndarray:
    """(n_rows,) the score of a greedy ranking that knows the truth: each segment by the label
    error accepting it costs, right segments first (0), then ``1 + cost`` with cost ``1/S_i``
    for a wrong one; in a frame with missed classes one segment (a wrong one where there is
    one) is held back at ``1 + (wrong + missed_i)/S_i``, its cost once accepting it skips the
    frame whole. Returned
    as ranks 0..n-1 of that order, so no block of tied segments is accepted at once."""
    if table.wrong is None or table.missed is None:
        raise DataError("oracle_score: expected labels, but got none.")
    S = np.maximum(table.rows_per_frame() + table.missed, 1)[table.row_frame]
    score = np.where(table.wrong, 1.0 + 1.0 / S, 0.0)
    missed = table.missed[table.row_frame]
    # the last row of a frame with missed classes: a wrong one where there is one, else a right one
    last = np.flatnonzero(missed > 0)
    last = last[np.lexsort((~table.wrong[last], table.row_frame[last]))]
    _, first = np.unique(table.row_frame[last], return_index=True)
    held = last[first]
    score[held] = 1.0 + (table.wrong[held] + missed[held]) / S[held]
    ranks = np.empty(len(score))  # distinct values (ties broken by row order): a threshold never takes a block
    ranks[np.lexsort((np.arange(len(score)), score))] = np.arange(len(score))
    return ranks


def subset(table: SegmentTable, frames) -> SegmentTable:
    """The segments of some frames only (``frames``: (k,) indices into ``table.frame_ids``), renumbered."""
    frames = np.asarray(frames, dtype=np.int64)
    new = np.full(table.n_frames, -1, dtype=np.int64)
    new[frames] = np.arange(len(frames))
    keep = new[table.row_frame] >= 0
    return SegmentTable(frame_ids=table.frame_ids[frames], row_frame=new[table.row_frame[keep]],
                        class_id=table.class_id[keep], class_name=table.class_name[keep], score=table.score[keep],
                        wrong=None if table.wrong is None else table.wrong[keep],
                        missed=None if table.missed is None else table.missed[frames],
                        missed_classes=None if table.missed_classes is None
                        else [table.missed_classes[i] for i in frames], n_classes=table.n_classes)
