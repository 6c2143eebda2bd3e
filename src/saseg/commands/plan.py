"""``saseg plan`` over folders: the pool run and, for a guarantee, the labelled pilot behind an
eval dir in; the plan folder out (`saseg.layout.PlanDir`). Frame plans here, segment plans in
`saseg.commands.segment_plan`; the decisions are `saseg.analysis.plan` and
`saseg.analysis.guarantee` on tables."""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..analysis.guarantee import Guarantee, failures_from_iou, learn_then_test
from ..analysis.plan import Plan, PriceModel, pilot_curve_for, plan
from ..columns import default_ranking_score
from ..errors import DataError
from ..io import write_csv
from ..layout import EvalDir, PlanDir, RunDir
from ..viz.plots import plot_risk_coverage
from .shift import pool_shift

__all__ = ["plan_from_run", "calibrate", "pilot_of"]


def plan_from_run(scores: str | PathLike, out: str | PathLike, *, score: str | None = None,
                  skip_ratio: float | None = None, budget: int | None = None,
                  ratio_risk: float | None = None, eval_dir: str | PathLike | None = None,
                  max_risk: float | None = None, calibration: str | PathLike | None = None,
                  confidence: float = 0.9, targets: Sequence[str] = ("frame",),
                  annotators: int = 3, threshold: float = 0.5) -> Plan:
    """`plan` over a scored run, saved to `out` (what ``saseg plan`` does).

    Reads ``frames.parquet`` beside `scores`; `score` defaults to ``frame_risk`` when the run
    has a quality model applied, else the frame score of its first SA estimator. With `max_risk` (alpha), `calibration` (the
    eval dir of a labelled pilot) and `confidence` (1 - delta), the skip threshold comes from
    `calibrate` and the pool is checked for a shift against the pilot. With `eval_dir`, its
    ``tradeoff.csv`` curve for the same target and score (``frame_mdsa`` -> target "frame",
    ``group_<g>_mdsa`` -> group g; score "mdsa") feeds `ratio_risk` and the expected
    inaccuracy.
    """
    run = RunDir.from_scores(scores)
    frames_df = run.frames()
    if score is None:
        score = default_ranking_score(frames_df.columns, run.score_columns() if run.is_scored else ())
    pilot = None
    if eval_dir is not None:
        curve_path = EvalDir(eval_dir).tradeoff_path
        if not curve_path.exists():
            raise DataError(f"Expected a pilot trade-off curve at {curve_path} (from `saseg "
                            "evaluate`), but it does not exist.")
        pilot = pilot_curve_for(pd.read_csv(curve_path), score, where=str(curve_path))
    guarantee, shift = None, []
    if (max_risk is None) != (calibration is None):
        raise DataError("plan: expected --max-risk and --calibration together (the guarantee is "
                        "calibrated on a labelled pilot).")
    if max_risk is not None:
        guarantee, pilot_run = calibrate(calibration, score=score, alpha=max_risk,
                                         delta=1.0 - confidence, iou_below=threshold, targets=targets)
        shift = pool_shift(pilot_run, run, [score])
    result = plan(frames_df, score=score, skip_ratio=skip_ratio, budget=budget, ratio_risk=ratio_risk,
                  guarantee=guarantee, shift=shift, pilot_curve=pilot, threshold=threshold,
                  price=PriceModel(annotators=annotators))
    result.save(out)
    if guarantee is not None:
        write_csv(PlanDir(out).guarantee_curve_path, guarantee.curve)
        plot_risk_coverage(guarantee.curve, PlanDir(out).risk_coverage_path, alpha=max_risk,
                           confidence=confidence, iou_below=threshold, score=score,
                           threshold=guarantee.threshold)
    return result


def calibrate(eval_dir: str | PathLike, *, score: str, alpha: float, delta: float,
              iou_below: float = 0.5, targets: Sequence[str] = ("frame",)) -> tuple[Guarantee, RunDir]:
    """Learn-then-Test on an evaluated pilot: its run's `score` column against its IoU.

    Returns the guarantee and the pilot run (for the shift check).
    """
    pilot_run, iou = pilot_of(eval_dir)
    frames = pilot_run.frames()
    if score not in frames.columns:
        raise DataError(f"Expected the pilot run {pilot_run.root} to have the column {score!r}; score it (and "
                        f"apply the same quality model) like the pool.")
    failures = failures_from_iou(frames, iou, list(targets), iou_below)
    guarantee = learn_then_test(frames[score].to_numpy(dtype=np.float64), failures, alpha=alpha,
                                delta=delta, iou_below=iou_below, score=score)
    return guarantee, pilot_run


def pilot_of(eval_dir: str | PathLike) -> tuple[RunDir, pd.DataFrame]:
    """The labelled pilot behind an eval dir: its run (as recorded in ``eval.json``) and ``iou.parquet``."""
    pilot_eval = EvalDir(eval_dir).require("a pilot eval dir")
    recorded = Path(str(pilot_eval.summary().get("scores", "")))
    pilot_run = RunDir.from_scores(recorded) if recorded.is_file() else RunDir.near(pilot_eval.root)
    return pilot_run, pilot_eval.iou()
