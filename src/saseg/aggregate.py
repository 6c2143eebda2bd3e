"""From per-pixel SA to class SA, z-scored class-group SA and frame SA (paper section 5.1).

The paper takes "the mean SA of all [sampled] pixels in a specific class as the class SA of
that image", and a class group's SA as "the mean of z-score standardised class SA values of
all classes that appear in the image". Classes here are always *predicted* classes: labels
are not available when frames are scored.

z-scoring uses, per class and score, the mean and the population standard deviation
(``ddof=0``) of the class SA across the frames of a reference set (by default the scored set
itself). Where that deviation is 0 (including a class seen in one frame only) every frame of
the class gets z = 0: the class carries no information about which frame is more surprising.
"""

from __future__ import annotations

import logging
from os import PathLike
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .columns import KEY_COLUMNS, frame_column, group_column, require_columns
from .data.classes import ClassInfo
from .errors import DataError, FormatError
from .io import read_json, write_json
from .sampling import stable_argsort

log = logging.getLogger(__name__)

__all__ = ["class_scores", "group_scores", "zscore_reference", "ZScoreReference", "frame_scores",
           "predicted_rows"]

_REF_COLUMNS = ["class_id", "score", "mean", "std", "n_frames"]
_FORMAT_VERSION = 1


def class_scores(scores: Mapping[str, torch.Tensor], classes, n_pixels=None, *,
                 q: float = 0.9) -> pd.DataFrame:
    """Class SA of one frame: mean and 90th percentile of its sampled pixels' scores.

    Parameters
    ----------
    scores : mapping of str to tensor of shape (N,)
        Per-pixel scores of the N sampled pixels (e.g. ``{"mdsa": ..., "lsa": ...}``). NaN
        values (a class unknown to an estimator) are left out; all-NaN gives NaN.
    classes : int tensor of shape (N,)
        Predicted class of each sampled pixel.
    n_pixels : tensor/array of shape (C,), mapping class id -> int, or None
        Number of pixels predicted as each class in the whole frame (None: the sample counts).
    q : float
        Quantile reported as ``<name>_q90`` (linear interpolation, as ``numpy.quantile``).

    Returns
    -------
    DataFrame with one row per sampled class, sorted by id: ``class_id``, ``n_pixels``,
    ``n_sampled``, then for each score ``<name>`` (mean) and ``<name>_q90``.
    """
    ids, counts, stats = group_scores(scores, classes, q=q)
    out = {"class_id": ids.astype(np.int64)}
    if n_pixels is None:
        out["n_pixels"] = counts
    elif isinstance(n_pixels, Mapping):
        out["n_pixels"] = np.array([int(n_pixels.get(int(c), 0)) for c in ids], dtype=np.int64)
    else:
        n_arr = torch.as_tensor(n_pixels).cpu().numpy()
        if len(ids) and ids.max() >= len(n_arr):
            raise DataError(f"class_scores: expected n_pixels for class ids up to {ids.max()}, "
                            f"but got {len(n_arr)} entries.")
        out["n_pixels"] = n_arr[ids].astype(np.int64)
    out["n_sampled"] = counts
    return pd.DataFrame({**out, **stats})


def group_scores(scores: Mapping[str, torch.Tensor], keys, *, q: float = 0.9
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Per group of pixels, for every group at once: the mean and the `q` quantile of each
    score, NaN left out (all-NaN gives NaN), as ``torch.nanmean`` / ``torch.nanquantile``.

    One sort per score does all groups: values sorted by group, then by value (NaN last), so
    group g's m_g finite values start at ``start_g``; with ``h = q (m_g - 1)`` the quantile is
    ``lerp(v[start_g + floor h], v[start_g + ceil h], h - floor h)`` (linear interpolation).
    A batch keys pixels by ``frame * C + class`` (`saseg.scoring.FrameScorer`); one frame by
    class (`class_scores`).

    Parameters
    ----------
    scores : mapping of str to tensor of shape (N,), per-pixel scores
    keys : int tensor of shape (N,), each pixel's group
    q : float, reported as ``<name>_q<100 q>``

    Returns
    -------
    groups : int64 array (G,), the keys present, ascending
    counts : int64 array (G,), pixels per group
    stats : dict ``<name>`` -> (G,) float64 means and ``<name>_q90`` -> (G,) quantiles
    """
    keys = torch.as_tensor(keys).reshape(-1).long()
    for name, values in scores.items():
        if torch.as_tensor(values).reshape(-1).shape[0] != keys.shape[0]:
            raise DataError(f"class_scores: expected {keys.shape[0]} scores for {name!r} (one "
                            f"per sampled pixel), but got {torch.as_tensor(values).numel()}.")
    groups, inverse, counts = torch.unique(keys, return_inverse=True, return_counts=True)
    n_groups = len(groups)
    start = counts.cumsum(0) - counts
    stats: dict[str, np.ndarray] = {}
    for name, values in scores.items():
        values = torch.as_tensor(values).reshape(-1).to(torch.float64).to(keys.device)
        finite = ~torch.isnan(values)
        m = torch.bincount(inverse[finite], minlength=n_groups)
        sums = torch.bincount(inverse, weights=torch.where(finite, values, 0.0), minlength=n_groups)
        by_value = torch.sort(values).indices  # NaN sort last; ties are equal values
        order = by_value[stable_argsort(inverse[by_value])]
        ordered = values[order]
        h = q * (m - 1).clamp(min=0).to(torch.float64)
        below, above = h.floor().long(), h.ceil().long()
        quantile = torch.lerp(ordered[start + below], ordered[start + above], h - below)
        empty = m == 0
        stats[name] = torch.where(empty, float("nan"), sums / m.clamp(min=1)).cpu().numpy()
        stats[f"{name}_q{round(q * 100)}"] = torch.where(empty, float("nan"), quantile).cpu().numpy()
    return groups.cpu().numpy(), counts.cpu().numpy().astype(np.int64), stats


def predicted_rows(scores_df: pd.DataFrame) -> pd.DataFrame:
    """The rows of classes predicted in their frame: a run with quality features also has
    rows (``n_pixels`` 0) for classes only likely present, which carry no SA."""
    if "n_pixels" not in scores_df.columns:
        return scores_df
    return scores_df[scores_df["n_pixels"] > 0]


def zscore_reference(scores_df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per class and score: mean and population std (ddof=0) of the class SA across frames.

    Parameters
    ----------
    scores_df : DataFrame with ``class_id`` and the ``columns``, one row per (frame, class)
    columns : sequence of str

    Returns
    -------
    DataFrame with columns ``class_id``, ``score``, ``mean``, ``std``, ``n_frames`` (frames
    with a finite class SA), one row per (class, score).
    """
    require_columns(scores_df, ["class_id", *columns], "scores table")
    scores_df = predicted_rows(scores_df)
    rows = []
    for col in columns:
        grouped = scores_df.groupby("class_id")[col]
        stats = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=0),
                              "n_frames": grouped.count()}).reset_index()
        stats.insert(1, "score", col)
        rows.append(stats)
    if not rows:
        return pd.DataFrame(columns=_REF_COLUMNS)
    ref = pd.concat(rows, ignore_index=True)[_REF_COLUMNS]
    return ref.astype({"class_id": "int64", "n_frames": "int64"})


class ZScoreReference:
    """Saved per-class statistics, so later runs z-score against the same baseline.

    Attributes
    ----------
    table : DataFrame with columns ``class_id``, ``score``, ``mean``, ``std``, ``n_frames``
    """

    def __init__(self, table: pd.DataFrame):
        require_columns(table, _REF_COLUMNS, "z-score reference")
        self.table = table[_REF_COLUMNS].reset_index(drop=True)

    @classmethod
    def fit(cls, scores_df: pd.DataFrame, columns: Sequence[str]) -> "ZScoreReference":
        return cls(zscore_reference(scores_df, columns))

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(self.table["score"]))

    def to_dict(self) -> dict:
        return {"format_version": _FORMAT_VERSION, "ddof": 0,
                "rows": [{"class_id": int(r.class_id), "score": str(r.score),
                          "mean": _none_if_nan(r.mean), "std": _none_if_nan(r.std),
                          "n_frames": int(r.n_frames)} for r in self.table.itertuples()]}

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "z-score reference") -> "ZScoreReference":
        if not isinstance(d, Mapping) or d.get("format_version") != _FORMAT_VERSION or "rows" not in d:
            got = d.get("format_version") if isinstance(d, Mapping) else type(d).__name__
            raise FormatError(f"{where}: expected a z-score reference with format_version "
                              f"{_FORMAT_VERSION} and 'rows', but got {got!r}.")
        table = pd.DataFrame(list(d["rows"]), columns=_REF_COLUMNS)
        table = table.astype({"class_id": "int64", "score": str, "mean": "float64",
                              "std": "float64", "n_frames": "int64"})
        return cls(table)

    def save(self, path: str | PathLike) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | PathLike) -> "ZScoreReference":
        return cls.from_dict(read_json(path), where=str(path))


def frame_scores(scores_df: pd.DataFrame, classes: ClassInfo, columns: Sequence[str],
                 reference: ZScoreReference | pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per frame: z-scored class-group SA and frame SA.

    For score ``s`` and the predicted classes P of a frame, with z_c = (SA_c - mean_c) / std_c
    (z_c = 0 where std_c is 0)::

        group_<g>_<s> = mean of z_c over c in P ∩ g   (NaN when no class of g is predicted:
                                                       the group is not applicable to the frame)
        frame_<s>     = mean of z_c over c in P       (all predicted classes weigh the same,
                                                       whatever their size)

    Classes without reference statistics (unseen in the reference set) and NaN class SAs get
    z = NaN and are left out of the means (a warning is logged).

    Parameters
    ----------
    scores_df : DataFrame, one row per (frame, predicted class)
        ``frame_id``, ``frame_index``, ``source``, ``class_id``, the ``columns``.
    classes : ClassInfo
        Its ``groups`` name the class groups.
    columns : sequence of str
        Class SA columns to aggregate.
    reference : ZScoreReference, its table, or None (statistics of ``scores_df`` itself)

    Returns
    -------
    DataFrame sorted by ``frame_index``: ``frame_id``, ``frame_index``, ``source``,
    ``n_segments`` (number of predicted classes), then ``group_<g>_<s>`` and ``frame_<s>``.
    """
    columns = list(columns)
    require_columns(scores_df, [*KEY_COLUMNS, "class_id", *columns], "scores table")
    if reference is None:
        ref = zscore_reference(scores_df, columns)
    else:
        ref = reference.table if isinstance(reference, ZScoreReference) else reference
        require_columns(ref, _REF_COLUMNS, "z-score reference")
        missing = sorted(set(columns) - set(ref["score"]))
        if missing:
            raise DataError(f"z-score reference: expected statistics for scores {missing}, "
                            f"but it holds {sorted(set(ref['score']))}.")
    df = predicted_rows(scores_df).reset_index(drop=True)
    frames = (df.groupby("frame_id", sort=False)
              .agg(frame_index=("frame_index", "first"), source=("source", "first"),
                   n_segments=("class_id", "nunique")))
    result = {}
    for col in columns:
        z = _zscores(df, col, ref[ref["score"] == col])
        by_frame = z.groupby(df["frame_id"], sort=False)
        for group, ids in classes.groups.items():
            in_group = df["class_id"].isin(ids)
            result[group_column(group, col)] = z[in_group].groupby(df["frame_id"][in_group]).mean()
        result[frame_column(col)] = by_frame.mean()
    for name, series in result.items():
        frames[name] = series.reindex(frames.index).astype("float64")
    out = frames.reset_index()[["frame_id", "frame_index", "source",
                                "n_segments", *result]]
    return out.sort_values(["frame_index", "frame_id"], kind="stable").reset_index(drop=True)


def _zscores(df: pd.DataFrame, col: str, ref: pd.DataFrame) -> pd.Series:
    """(n_rows,) z-scores of one score column, NaN where the class has no statistics."""
    stats = ref.set_index("class_id")
    mean = df["class_id"].map(stats["mean"])
    std = df["class_id"].map(stats["std"])
    unknown = sorted(set(df["class_id"][mean.isna()].tolist()))
    if unknown:
        log.warning("z-scoring %s: no reference statistics for class ids %s; their class SA "
                    "is left out of group and frame SA.", col, unknown)
    z = (df[col].astype("float64") - mean) / std
    return z.where(~((std == 0) & df[col].notna() & mean.notna()), 0.0)



def _none_if_nan(x) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
