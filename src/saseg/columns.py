"""The column grammar of saseg's tables: every rule about a column name lives here.

``frames.parquet`` carries one column per (target, score): ``frame_<score>`` for the whole
frame and ``group_<g>_<score>`` for class group g (see `saseg.aggregate.frame_scores`).
`aggregate` builds these names, and `plan`, `export`, `report`, `review` and `analysis` take
them apart, all through the functions below, never by spelling a prefix. The same goes for the
default ranking score (one rule for every command), the frame-level target IoU (the mean class
IoU of a frame, the paper's unit), the two frame-id hashes, the drive a frame id belongs to
(`drive_of`), and `require_columns`.
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Sequence

import pandas as pd

from .errors import DataError

__all__ = [
    "FRAME", "FRAME_KEYS", "KEY_COLUMNS", "RISK", "frame_column", "group_column", "target_column",
    "frame_score_columns", "frame_score_names", "parse_score_column", "default_ranking_score",
    "frame_target_iou", "require_columns", "require_numeric", "ids_sha256", "id_set_sha256", "run_identity", "drive_of",
]

FRAME = "frame"
"""The target name of a whole frame (beside class and group names)."""
FRAME_KEYS = ("frame_id", "frame_index")
"""The per-frame key columns; they start with ``frame_`` but are not scores."""
KEY_COLUMNS = ("frame_id", "frame_index", "source")
"""The key columns of a scores table (one row per frame and class)."""
RISK = "risk"
"""The learned score (``1 - quality``) that `saseg quality apply` adds; ranks first when present."""

_FRAME_PREFIX = "frame_"
_GROUP_PREFIX = "group_"


def frame_column(score: str) -> str:
    """``frame_<score>``: a frame's score (mean of its z-scored class scores)."""
    return f"{_FRAME_PREFIX}{score}"


def group_column(group: str, score: str) -> str:
    """``group_<group>_<score>``: a class group's score in a frame."""
    return f"{_GROUP_PREFIX}{group}_{score}"


def target_column(target: str, score: str) -> str:
    """The frames-table column of `score` for `target` (``"frame"`` or a group name)."""
    return frame_column(score) if target == FRAME else group_column(target, score)


def frame_score_columns(columns: Iterable[str]) -> list[str]:
    """The ``frame_<score>`` columns among `columns` (not ``frame_id`` / ``frame_index``), in order."""
    return [c for c in columns if c.startswith(_FRAME_PREFIX) and c not in FRAME_KEYS]


def frame_score_names(columns: Iterable[str]) -> list[str]:
    """The score names of the ``frame_<score>`` columns among `columns` (``frame_mdsa`` -> ``mdsa``)."""
    return [c[len(_FRAME_PREFIX):] for c in frame_score_columns(columns)]


def parse_score_column(column: str, groups: Iterable[str] = ()) -> list[tuple[str, str]]:
    """The (target, score) pairs a frames-table column can mean.

    ``frame_<s>`` -> ``[("frame", s)]``; ``group_<g>_<s>`` -> ``(g, s)`` for each known group g
    that prefixes it (group names may contain ``_``, so several can match; longest first).
    Anything else -> ``[]``.
    """
    if column in FRAME_KEYS:
        return []
    if column.startswith(_FRAME_PREFIX):
        return [(FRAME, column[len(_FRAME_PREFIX):])]
    if column.startswith(_GROUP_PREFIX):
        found = [(g, column[len(group_column(g, "")):]) for g in groups
                 if column.startswith(group_column(g, "")) and len(column) > len(group_column(g, ""))]
        return sorted(found, key=lambda pair: -len(pair[0]))
    return []


def default_ranking_score(columns: Iterable[str], score_names: Sequence[str] = ()) -> str:
    """The frames-table column a command ranks by when the user names none.

    The learned ``frame_risk`` where a quality model was applied (it tracks IoU best, README
    "Measured"), else the frame score of the run's first score (its first SA estimator, the
    paper's ranking), else the first ``frame_<score>`` column of the table.
    """
    columns = list(columns)
    if frame_column(RISK) in columns:
        return frame_column(RISK)
    for name in score_names:
        if frame_column(name) in columns:
            return frame_column(name)
    found = frame_score_columns(columns)
    if not found:
        raise DataError(f"Expected a frame score column (frame_<score>), but got {columns}.")
    return found[0]


def frame_target_iou(iou_df: pd.DataFrame) -> pd.Series:
    """A frame's IoU as every frame-level target reads it: the mean of its class IoUs.

    `iou_df` holds `saseg.metrics.frame_iou` rows (``kind`` "class" or "group"); classes absent
    from both prediction and label have no row, so they do not count. Returns a Series indexed
    by ``frame_id`` (named ``iou``).
    """
    require_columns(iou_df, ["frame_id", "kind", "iou"], "IoU table")
    classes = iou_df[iou_df["kind"] == "class"]
    return classes.groupby("frame_id")["iou"].mean().rename("iou")


def require_columns(df: pd.DataFrame, columns: Iterable[str], where, *,
                    error: type[Exception] = DataError) -> None:
    """Raise one `error` naming `where` (a table's name or path) if `df` lacks any of `columns`.

    `DataError` for a table handed in; readers of a file pass `saseg.errors.FormatError`.
    """
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise error(f"{where}: expected columns {missing}, but got {list(df.columns)}.")


def require_numeric(df: pd.DataFrame, columns: Iterable[str], where, *, what: str = "numeric columns",
                    hint: str = "") -> None:
    """Raise one `DataError` naming `where` if any of `columns` holds other than numbers (text,
    booleans): an edited table, or a name column passed as a score."""
    typed = [c for c in columns if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])]
    if typed:
        raise DataError(f"{where}: expected {what}, but {typed} hold {[str(df[c].dtype) for c in typed]} "
                        f"values{hint}.")


def ids_sha256(frame_ids: Iterable[str]) -> str:
    """sha256 of the frame ids *in order* (``id\\0`` each): a dataset's identity for resuming,
    where order matters (frame indices key the run's parts)."""
    digest = hashlib.sha256()
    for frame_id in frame_ids:
        digest.update(str(frame_id).encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def id_set_sha256(frame_ids: Iterable[str]) -> str:
    """sha256 of the *set* of frame ids (sorted, then as `ids_sha256`): which frames a table
    covers, whatever its row order (a quality model's pilot, a plan's pool)."""
    return ids_sha256(sorted(map(str, frame_ids)))


def run_identity(meta: dict, frame_ids: Iterable[str]) -> dict:
    """What makes two tables one run's: the same data spec, model and set of frame ids (ids
    alone repeat across generated data sets); `meta` is the run's ``score.json``."""
    return {"data": meta.get("data"), "model_sha256": meta.get("model_sha256"),
            "frame_ids_sha256": id_set_sha256(frame_ids)}


def drive_of(frame_id: str) -> str:
    """The drive or sequence of a frame id: its folder (``d003/00012`` -> ``d003``), else the
    part before the first ``_`` (CamVid's ``0001TP_006690`` -> ``0001TP``), else ``""``.

    Frames of one drive are correlated, so every split by drive and every temporal feature
    groups frames with this one rule."""
    text = str(frame_id)
    if "/" in text:
        return text.rsplit("/", 1)[0]
    return text.split("_", 1)[0] if "_" in text else ""
