"""``saseg quality fit`` and ``apply`` over folders: read the pilot or the run, call
`saseg.analysis.quality.RunQuality` on its tables, write the result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import pandas as pd

from ..analysis.quality import RunQuality
from ..columns import run_identity
from ..errors import DataError
from ..layout import EvalDir, RunDir

__all__ = ["fit_quality", "apply_quality", "as_run"]


def as_run(path: str | os.PathLike | RunDir) -> RunDir:
    """A run dir from itself, its folder or its ``scores.parquet``."""
    if isinstance(path, RunDir):
        return path
    path = Path(path)
    return RunDir.from_scores(path) if path.suffix == ".parquet" else RunDir(path)


def fit_quality(run: str | os.PathLike, eval_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                extra_features: Sequence[str] = (), **model_options) -> RunQuality:
    """``saseg quality fit``: fit on a pilot run and its eval dir, save to `out_dir`."""
    pilot = as_run(run)
    evaluated = EvalDir(eval_dir)
    iou = evaluated.iou()
    summary = evaluated.summary()
    recorded = summary.get("run")  # evaluations before saseg recorded it: not checked
    if recorded is not None and recorded != run_identity(pilot.meta(), pilot.frames(["frame_id"])["frame_id"]):
        raise DataError(f"quality fit: expected the evaluation of the pilot {pilot.root}, but {evaluated.root} "
                        f"evaluated another run ({summary.get('scores')}): its IoUs are of other predictions.")
    quality = RunQuality(extra_features=extra_features, **model_options).fit(
        pilot.scores(), pilot.frames(), pilot.meta(), iou, where=pilot.root)
    quality.save(out_dir)
    return quality


def apply_quality(run: str | os.PathLike | RunDir, quality_dir: str | os.PathLike) -> pd.DataFrame:
    """``saseg quality apply``: write ``quality`` and ``risk`` into a scored run; returns its scores."""
    run = as_run(run)
    quality = RunQuality.load(quality_dir)
    scores_df, frames_df, meta = quality.annotate(run.scores(), run.frames(), dict(run.meta()), where=run.root)
    run.write_annotated(scores_df, frames_df, meta)
    return scores_df
