"""``saseg select`` over files: a run's ``scores.parquet`` in, the selection's CSV out."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import pandas as pd

from ..analysis.selection import select_frames, selection_spread
from ..errors import DataError
from ..io import write_csv
from ..layout import RunDir

log = logging.getLogger(__name__)

__all__ = ["select_from_scores"]


def select_from_scores(scores_path, out_csv, **options) -> tuple[pd.DataFrame, dict]:
    """`select_frames` on a ``scores.parquet`` file, written to `out_csv` (the CLI's ``select``).

    Returns the selection and the `selection_spread` of its frames' ``at_mean`` embeddings
    (or of `options["embeddings"]`); the spread is NaN when neither is available.
    """
    if str(out_csv).endswith(("/", os.sep)) or Path(out_csv).is_dir():
        raise DataError(f"select: expected a CSV file to write the selection to, but {out_csv} names a folder.")
    RunDir.from_scores(scores_path).check_finished()  # as plan and evaluate do
    try:
        scores = pd.read_parquet(scores_path)
    except (OSError, ValueError) as exc:
        raise DataError(f"Expected a scores.parquet at {scores_path}, but it cannot be read: {exc}") from None
    chosen = select_frames(scores, **options)
    emb = options.get("embeddings")
    if emb is None and "at_mean" in scores.columns:
        rows = scores[scores["class_id"] == chosen["class_id"].iloc[0]].set_index("frame_id")["at_mean"]
        emb = rows.to_dict()
    spread = (selection_spread([emb[f] for f in chosen["frame_id"]]) if emb is not None
              else {"n": len(chosen), "mean_pairwise": math.nan, "min_pairwise": math.nan})
    write_csv(out_csv, chosen)
    log.info("selected %d frames (%s); spread %s", len(chosen), options.get("level"), spread)
    return chosen, spread
