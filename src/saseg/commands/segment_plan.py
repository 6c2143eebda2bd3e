"""``saseg plan --unit segment`` over folders: calibrate on the pilot behind an eval dir, plan
the pool run, check the shift, save the plan folder. The decisions are
`saseg.analysis.segment_plan` on tables."""

from __future__ import annotations

from os import PathLike
from typing import Sequence

import pandas as pd

from ..analysis.plan import PriceModel
from ..analysis.segment_compare import available_scores
from ..analysis.segment_plan import (SegmentPlan, calibrate_segments, frame_mean_scores, hindsight_summary,
                                     plan_segments)
from ..analysis.segments import accept, realised, segment_table
from ..analysis.shift import shift_check
from ..layout import EvalDir, RunDir
from .plan import pilot_of

__all__ = ["plan_segments_from_run", "default_segment_score"]


def default_segment_score(scores_df: pd.DataFrame, run: RunDir) -> str:
    """``risk`` where a quality model was applied, else the run's first score column."""
    return "risk" if "risk" in scores_df.columns else run.score_columns()[0]


def plan_segments_from_run(scores: str | PathLike, out: str | PathLike, *, calibration: str | PathLike,
                           alpha: float, confidence: float = 0.9, score: str | None = None,
                           iou_below: float = 0.5, promise: str = "label-error", in_expectation: bool = False,
                           bound: str = "wsr", per_class: Sequence[str] = (), annotators: int = 3,
                           review: float = 0.0, eval_dir: str | PathLike | None = None) -> SegmentPlan:
    """``saseg plan --unit segment``: calibrate on the pilot behind `calibration` (an eval dir),
    plan the run of `scores`, check the pool's per-frame mean segment score against the
    pilot's (the shift alarm), save to `out`. With the pool's own `eval_dir` (a labelled pool,
    as in the demo or a benchmark) the summary also holds what was realised and the hindsight
    best (`hindsight_summary`)."""
    run = RunDir.from_scores(scores)
    pilot_run, iou = pilot_of(calibration)
    pool_df, pilot_df = run.scores(), pilot_run.scores()
    score = score or default_segment_score(pool_df, run)
    n_classes = run.classes().num_classes
    pilot = segment_table(pilot_df, score, n_classes, iou, iou_below)
    pool = segment_table(pool_df, score, n_classes)
    guarantee = calibrate_segments(pilot, score=score, alpha=alpha, delta=1.0 - confidence, iou_below=iou_below,
                                   promise=promise, in_expectation=in_expectation, bound=bound, per_class=per_class)
    shift = [shift_check(frame_mean_scores(pilot), frame_mean_scores(pool), column=f"mean segment {score} per frame")]
    price = PriceModel(annotators=annotators)
    result = plan_segments(pool_df, pool, guarantee, price=price, review=review, shift=shift)
    if eval_dir is not None:
        pool_iou = EvalDir(eval_dir).iou()
        truth = segment_table(pool_df, score, n_classes, pool_iou, iou_below)
        result.summary["realised"] = realised(truth, *accept(truth, guarantee.threshold, guarantee.class_thresholds))
        result.summary["hindsight"] = hindsight_summary(pool_df, pool_iou, n_classes,
                                                        available_scores(pool_df, run.score_columns()),
                                                        alpha=alpha, iou_below=iou_below, promise=promise,
                                                        price=price, review=review)
    result.save(out)
    return result
