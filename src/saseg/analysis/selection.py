"""Which new frames to add to the training set (paper section 5.3.3, RQ3, Tables 4-5).

The paper adds frames with more than 1,000 pixels of the target class, sampled uniformly
from the top 30 % by SA (``high``), the bottom 30 % (``low``) or from all of them
(``random``). High-SA frames helped most when few frames were added; with more frames the
diversity *within* the added set took over, so the paper calls for a selection that is both
surprising with respect to the training data and spread out in itself. ``diverse`` is such a
selection: a surprise-weighted farthest-point (greedy k-centre) walk over frame embeddings,
the mean activation trace of the target class in each frame (``at_mean`` of scores.parquet).

Starting from the training reference points R (e.g. the class mean of the training ATs,
``MDSA.means_``; none by default), frame i of the candidates (the top `top_fraction` by SA)
keeps ``d_i = min distance of e_i to R and to the frames chosen so far`` and the walk picks
``argmax_i w_i * d_i`` with ``w_i`` the SA percentile of frame i among the eligible frames
(in (0, 1], 1 = most surprising). The first pick without R is the most surprising frame.
Distances are Euclidean in AT space. Cost: O(n k d) time and O(n d) memory for n candidates,
k picks and d AT channels (one distance update per pick, never an n x n matrix).
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist

from ..columns import require_numeric
from ..errors import DataError, UnknownClassError

log = logging.getLogger(__name__)

__all__ = ["LEVELS", "select_frames", "farthest_point_order", "selection_spread",
           "resolve_size"]

LEVELS = ("high", "low", "random", "diverse")


def resolve_size(size: int | float, n_eligible: int, base_size: int | None = None) -> int:
    """Number of frames to pick: an int as is, a float in (0, 1) as a fraction.

    The fraction is of `base_size` (the paper: 10/20/30 % of the base training set) when
    given, else of the `n_eligible` frames; it is rounded to the nearest integer, at least 1.
    """
    if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, float, np.integer, np.floating)):
        raise DataError(f"select_frames: expected size as an int >= 1 or a float in (0, 1), but got {size!r}.")
    if isinstance(size, (int, np.integer)):
        if size < 1:
            raise DataError(f"select_frames: expected an int size >= 1, but got {size}.")
        return int(size)
    if not 0.0 < float(size) < 1.0:
        raise DataError(f"select_frames: expected a fractional size in (0, 1), but got {size}; "
                        "give a number of frames as an int.")
    if base_size is not None and int(base_size) < 1:
        raise DataError(f"select_frames: expected base_size >= 1, but got {base_size}.")
    total = int(base_size) if base_size is not None else n_eligible
    return max(1, int(round(float(size) * total)))


def select_frames(scores_df: pd.DataFrame, *, target_class: int | str, level: str,
                  size: int | float, min_pixels: int = 1000, score: str = "mdsa",
                  top_fraction: float = 0.3, seed: int = 0,
                  embeddings: Mapping[str, np.ndarray] | None = None,
                  reference: np.ndarray | None = None, base_size: int | None = None,
                  pixels_column: str = "n_pixels") -> pd.DataFrame:
    """Pick `size` frames to add to the training data, by the target class's surprise.

    Parameters
    ----------
    scores_df : DataFrame
        ``scores.parquet`` rows, one per (frame, class): ``frame_id``, ``frame_index``,
        ``source``, ``class_id`` (and ``class_name``), `pixels_column`, `score`, and for
        ``diverse`` without `embeddings` an ``at_mean`` column of (d,) lists.
    target_class : int or str
        Class id, or class name matched case-insensitively against ``class_name``.
    level : {"high", "low", "random", "diverse"}
        ``high``/``low``: uniform (seeded) draw from the top/bottom `top_fraction` of the
        eligible frames by SA; ``random``: from all eligible frames; ``diverse``:
        surprise-weighted farthest-point walk over the top `top_fraction` (module doc).
    size : int or float
        An int is a number of frames; a float in (0, 1) is a fraction of `base_size`, or of
        the eligible frames when `base_size` is None (see `resolve_size`).
    min_pixels : int
        A frame is eligible when it has *more than* `min_pixels` target pixels in
        `pixels_column` (the predicted ``n_pixels`` by default; pass a labelled count column
        to follow the paper exactly) and a finite `score`.
    seed : int
        Seeds the uniform draws of ``high``/``low``/``random``; ``diverse`` is deterministic.
    embeddings : mapping frame_id -> array of shape (d,), optional
        Frame embeddings for ``diverse``; default: ``at_mean`` of the target-class rows.
    reference : array of shape (m, d) or (d,), optional
        Training-set points (e.g. the class's training AT mean) the ``diverse`` set keeps
        away from.

    Returns
    -------
    DataFrame, one row per selected frame in selection order: ``order`` (1 = first),
    ``frame_id``, ``frame_index``, ``source``, ``class_id``, ``class_name``, `score`,
    `pixels_column`, ``sa_rank`` (1 = most surprising eligible frame) and, for ``diverse``,
    ``distance`` (its distance to the reference and earlier picks when it was picked).

    Raises
    ------
    DataError
        Bad level, size or columns, no eligible frames, a size larger than the pool (the
        pool is never silently clipped: a short set would bias the comparison between
        levels), or ``diverse`` without embeddings.
    UnknownClassError
        If `target_class` does not occur in `scores_df`.
    """
    if level not in LEVELS:
        raise DataError(f"select_frames: expected level in {list(LEVELS)}, but got {level!r}.")
    if not 0.0 < float(top_fraction) <= 1.0:
        raise DataError(f"select_frames: expected top_fraction in (0, 1], but got {top_fraction}.")
    missing = [c for c in ("frame_id", "class_id", pixels_column, score) if c not in scores_df.columns]
    if missing:
        raise DataError(f"select_frames: expected columns {missing} in the scores, but got "
                        f"{list(scores_df.columns)}.")
    require_numeric(scores_df, [score], "select_frames", what="a numeric score column",
                    hint="; select by a score (mdsa, risk, ...)")
    cid = _class_id(scores_df, target_class)
    rows = scores_df[scores_df["class_id"] == cid]
    eligible = rows[(rows[pixels_column] > min_pixels) & np.isfinite(rows[score].astype(float))]
    if len(eligible) < len(rows[rows[pixels_column] > min_pixels]):
        log.warning("select_frames: %d frames have no finite %s for class %s and are left out.",
                    len(rows[rows[pixels_column] > min_pixels]) - len(eligible), score, target_class)
    if eligible["frame_id"].duplicated().any():
        raise DataError("select_frames: expected one row per frame and class, but got duplicate "
                        f"frame ids {eligible.loc[eligible['frame_id'].duplicated(), 'frame_id'].tolist()[:5]}.")
    if eligible.empty:
        raise DataError(f"select_frames: expected frames with more than {min_pixels} pixels of class "
                        f"{target_class!r} ({pixels_column}), but got none of {len(rows)} frames with it.")
    # Most surprising first; ties broken by frame id so the input row order never matters.
    ranked = eligible.sort_values("frame_id", kind="stable").sort_values(
        score, ascending=False, kind="stable").reset_index(drop=True)
    ranked["sa_rank"] = np.arange(1, len(ranked) + 1)
    n = len(ranked)
    k = resolve_size(size, n, base_size)
    n_top = max(1, math.ceil(float(top_fraction) * n))
    pool = {"high": ranked.iloc[:n_top], "low": ranked.iloc[n - n_top:], "random": ranked,
            "diverse": ranked.iloc[:n_top]}[level]
    if k > len(pool):
        raise DataError(f"select_frames: expected size <= {len(pool)} frames in the {level!r} pool "
                        f"({n} eligible, top_fraction={top_fraction}), but got size {k}.")
    if level == "diverse":
        emb = _embeddings(pool, embeddings)
        weight = (n - pool["sa_rank"].to_numpy() + 1) / n
        picks, dist = farthest_point_order(emb, k, weights=weight, reference=reference)
        out = pool.iloc[picks].assign(distance=dist)
    else:
        picks = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
        out = pool.iloc[picks]
    keep = [c for c in ("frame_id", "frame_index", "source", "class_id", "class_name", score,
                        pixels_column, "sa_rank", "distance") if c in out.columns]
    out = out[keep].reset_index(drop=True)
    out.insert(0, "order", np.arange(1, len(out) + 1))
    return out


def farthest_point_order(embeddings: np.ndarray, k: int, *, weights: np.ndarray | None = None,
                         reference: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy weighted k-centre: ``argmax_i w_i * min_j ||e_i - s_j||`` over chosen and reference s.

    Parameters
    ----------
    embeddings : array of shape (n, d)
    k : int, 1 <= k <= n
    weights : array of shape (n,), positive, optional
        Default 1; without `reference` the first pick is ``argmax w`` (first index on ties).
    reference : array of shape (m, d) or (d,), optional

    Returns
    -------
    picks : int array of shape (k,), indices in pick order
    distance : float array of shape (k,), each pick's (unweighted) distance when picked
        (inf for a first pick without reference)

    O(n k d) time, O(n d) memory.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    n = len(e)
    if e.ndim != 2 or not 1 <= k <= n:
        raise DataError(f"farthest_point_order: expected (n, d) embeddings and 1 <= k <= n, but got "
                        f"shape {e.shape} and k={k}.")
    if not np.isfinite(e).all():
        raise DataError("farthest_point_order: expected finite embeddings, but got NaN/Inf.")
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or not (w > 0).all():
        raise DataError(f"farthest_point_order: expected {n} positive weights, but got shape {w.shape} "
                        f"with minimum {w.min() if w.size else None}.")
    dist = np.full(n, np.inf)
    if reference is not None:
        ref = np.atleast_2d(np.asarray(reference, dtype=np.float64))
        if ref.ndim != 2 or ref.shape[1] != e.shape[1] or not np.isfinite(ref).all():
            raise DataError(f"farthest_point_order: expected finite reference points with {e.shape[1]} "
                            f"dimensions, but got shape {ref.shape}.")
        for r in ref:
            np.minimum(dist, np.linalg.norm(e - r, axis=1), out=dist)
    picks, picked_dist = [], []
    free = np.ones(n, dtype=bool)
    for _ in range(k):
        # Without reference the first pick has no distance to anything: take the heaviest.
        gain = w if np.isinf(dist).all() else w * dist
        i = int(np.argmax(np.where(free, gain, -np.inf)))
        picks.append(i)
        picked_dist.append(dist[i])
        free[i] = False
        np.minimum(dist, np.linalg.norm(e - e[i], axis=1), out=dist)
    return np.asarray(picks), np.asarray(picked_dist)


def selection_spread(embeddings) -> dict:
    """How spread out a set of frames is: mean and min pairwise Euclidean distance.

    Parameters
    ----------
    embeddings : array of shape (k, d), or mapping frame_id -> (d,) array

    Returns
    -------
    dict with ``n``, ``mean_pairwise`` and ``min_pairwise`` (NaN for fewer than 2 frames).
    Builds the k(k-1)/2 distances, so meant for selected sets, not for whole pools.
    """
    if isinstance(embeddings, Mapping):
        embeddings = list(embeddings.values())
    e = np.asarray(embeddings, dtype=np.float64)
    if e.ndim != 2:
        raise DataError(f"selection_spread: expected embeddings of shape (k, d), but got {e.shape}.")
    if len(e) < 2:
        return {"n": len(e), "mean_pairwise": math.nan, "min_pairwise": math.nan}
    d = pdist(e)
    return {"n": len(e), "mean_pairwise": float(d.mean()), "min_pairwise": float(d.min())}


def _class_id(scores_df: pd.DataFrame, target_class: int | str) -> int:
    present = sorted(int(c) for c in scores_df["class_id"].unique())
    if isinstance(target_class, (int, np.integer)) or str(target_class).isdigit():
        cid = int(target_class)
        if cid not in present:
            raise UnknownClassError(f"select_frames: expected a class id among those in the scores "
                                    f"{present}, but got {cid}.")
        return cid
    if "class_name" not in scores_df.columns:
        raise DataError(f"select_frames: expected a class_name column to look up {target_class!r}, "
                        "but the scores have none; pass the class id.")
    names = scores_df.drop_duplicates("class_id").set_index("class_name")["class_id"]
    lowered = {str(name).lower(): int(c) for name, c in names.items()}
    if str(target_class).lower() not in lowered:
        raise UnknownClassError(f"select_frames: expected a class name among those in the scores "
                                f"{sorted(names.index)}, but got {target_class!r}.")
    return lowered[str(target_class).lower()]


def _embeddings(pool: pd.DataFrame, embeddings: Mapping[str, np.ndarray] | None) -> np.ndarray:
    """(len(pool), d) embeddings of the pool's frames, from the mapping or ``at_mean``."""
    if embeddings is None:
        if "at_mean" not in pool.columns:
            raise DataError("select_frames: expected embeddings (frame_id -> AT mean) or an at_mean "
                            "column in the scores for level='diverse', but got neither; rescore with "
                            "a saseg version that writes at_mean.")
        values = list(pool["at_mean"])
    else:
        absent = [f for f in pool["frame_id"] if f not in embeddings]
        if absent:
            raise DataError(f"select_frames: expected an embedding for every candidate frame, but "
                            f"{len(absent)} have none, e.g. {absent[:3]}.")
        values = [embeddings[f] for f in pool["frame_id"]]
    try:
        emb = np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in values])
    except ValueError:
        raise DataError("select_frames: expected embeddings of one length d, but got mixed lengths.") from None
    return emb
