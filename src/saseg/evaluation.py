"""evaluate: IoU per frame and class, then RQ1 correlations and RQ2 trade-off curves.

Reads a run written by `saseg score` (scores.parquet, frames.parquet, predictions/) and the
labels of the same frames; writes ``iou.parquet``, ``correlation.csv``, ``tradeoff.csv``,
``agreement.csv``, ``eval.json`` and the PNG plots (paper Table 3, Figures 7 and 9).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import pandas as pd

from .analysis.correlation import correlation_table, format_table, paired_table, score_agreement
from .analysis.tradeoff import max_skip_table, tradeoff_table
from .columns import run_identity
from .data import Dataset, as_dataset
from .errors import DataError
from .io import write_csv, write_json, write_parquet
from .metrics import ConfusionMatrix, frame_iou
from .progress import progress_bar
from .layout import EvalDir, RunDir
from .viz.plots import plot_iou_vs_sa, plot_tradeoff

log = logging.getLogger(__name__)

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def evaluate(scores: str | Path, data: Dataset | str | None, out_dir: str | Path, *,
             split: str | None = "test", thresholds: Sequence[float] = THRESHOLDS,
             risk: float = 0.05, plots: bool = True, progress: bool = True,
             labelled_only: bool = False) -> dict:
    """Compare the run's scores with labelled IoU; returns the summary written to eval.json.

    With `labelled_only`, only the scored frames the labelled data holds are evaluated (a
    labelled queue brought back by ``saseg labels import``); otherwise every scored frame
    needs a label.
    """
    run = RunDir.from_scores(scores)
    scores_df = run.scores()
    frames_df = run.frames()
    identity = run_identity(run.meta(), frames_df["frame_id"])  # the whole run's, before any filter
    classes = run.classes()
    columns = run.score_columns()
    dataset = run.dataset() if data is None else as_dataset(data, split)
    if not dataset.has_labels:
        raise DataError(f"Expected labels to evaluate against, but {dataset.spec} has none.")

    wanted = set(scores_df["frame_id"])
    if labelled_only:
        held = {dataset.frame_id(i) for i in range(len(dataset))}
        wanted &= held
        if not wanted:
            raise DataError(f"Expected labels for some scored frames, but {dataset.spec} holds none "
                            "of the run's frame ids.")
        scores_df = scores_df[scores_df["frame_id"].isin(wanted)].reset_index(drop=True)
        frames_df = frames_df[frames_df["frame_id"].isin(wanted)].reset_index(drop=True)
        log.info("evaluate: %d labelled frames of the run", len(wanted))
    tables = []
    cm = ConfusionMatrix(classes.num_classes, classes.ignore_index)
    bar = progress_bar(total=len(wanted), desc="evaluate: IoU", unit="frame", enabled=progress)
    for frame in dataset:
        if frame.frame_id not in wanted:
            continue
        pred = run.prediction(frame.frame_id)
        table = frame_iou(pred, frame.label, classes)
        cm.update(pred, frame.label)
        table.insert(0, "frame_id", frame.frame_id)
        table.insert(1, "frame_index", frame.index)
        tables.append(table)
        wanted.discard(frame.frame_id)
        bar.update(1)
    bar.close()
    if wanted:
        raise DataError(f"Expected labels for every scored frame, but {len(wanted)} are not in "
                        f"{dataset.spec}, e.g. {sorted(wanted)[:3]}.")
    iou_df = pd.concat(tables, ignore_index=True)

    out = EvalDir(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    write_parquet(out.iou_path, iou_df)
    corr = correlation_table(scores_df, frames_df, iou_df, columns, classes)
    write_csv(out.correlation_path, corr)
    agreement = None
    if {"mdsa", "lsa"} <= set(columns):
        agreement = score_agreement(scores_df, "mdsa", "lsa", frames_df=frames_df, classes=classes)
        write_csv(out.agreement_path, agreement)
    curves = tradeoff_table(scores_df, frames_df, iou_df, columns, classes, thresholds=thresholds)
    write_csv(out.tradeoff_path, curves)
    skips = max_skip_table(curves, threshold=thresholds[0], risk=risk)
    write_csv(out.max_skip_path, skips)
    pngs = []
    if plots:
        pairs = paired_table(scores_df, frames_df, iou_df, columns, classes)
        for column in columns:
            pngs.append(plot_iou_vs_sa(pairs, out.iou_plot_path(column), score=column,
                                       correlations=corr))
        pngs.append(plot_tradeoff(curves, out.tradeoff_plot_path(columns[0]), score=columns[0]))
    summary = {
        "scores": str(run.scores_path.resolve()), "run": identity,
        "data": dataset.spec, "n_frames": int(iou_df["frame_id"].nunique()),
        "score_columns": columns, "thresholds": list(thresholds), "risk": risk,
        "table": format_table(corr), "plots": [str(p) for p in pngs],
        "mean_iou": _mean_class_iou(iou_df),
        "dataset_iou": dict(zip(classes.names, cm.compute().tolist())),
        "dataset_miou": cm.miou(),
    }
    write_json(out.summary_path, summary)
    return summary


def _mean_class_iou(iou_df: pd.DataFrame) -> float:
    """Mean over frames and classes of the per-frame class IoU (the paper's unit)."""
    classes = iou_df[iou_df["kind"] == "class"]
    return float(classes["iou"].mean())
