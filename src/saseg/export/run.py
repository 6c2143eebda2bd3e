"""Wire a scored run to the exporters: predictions, frames and heatmaps looked up by frame id."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..columns import frame_score_columns
from ..errors import DataError
from ..layout import PlanDir, RunDir
from ..review import heatmaps_for_run
from .check import ExportCheck
from .queue import ACCEPTED_COLUMN, accepted_marks, read_plan, select_rows
from .registry import check_export, detect_tool, export_queue, exporter


def export_plan(plan: str | os.PathLike, *, to: str, out_dir: str | os.PathLike,
                run_dir: str | os.PathLike | None = None, heatmaps: bool = True,
                device: str = "cpu", **options) -> Path:
    """Export a run's labelling plan (``RUN/plan/plan.csv``) to a labelling tool.

    The run is `run_dir`, or the scored run beside or above the plan. Predictions come from
    the run's saved masks, frames and their sources from the run (a plan naming a frame
    the run does not hold is refused; a path written in the plan is never opened), and
    (FiftyOne only, with `heatmaps`) per-pixel SA maps recomputed with the run's model and
    SA model.
    """
    plan = Path(plan)
    run = RunDir(run_dir) if run_dir is not None else RunDir.near(plan)
    queue = read_plan(plan)
    # A plan is a user's file: its ids must be frames of the run, and every image comes from
    # the run's own record of that frame, never from a path written in the plan.
    sources = run.frame_sources()
    unknown = sorted(set(queue["frame_id"].astype(str)) - set(sources)) if "frame_id" in queue else []
    if unknown:
        raise DataError(f"Expected the frames of {plan} to be frames of the run {run.root}, but "
                        f"{len(unknown)} are not, e.g. {unknown[:3]}.")
    if "frame_id" in queue:
        queue = queue.assign(source=queue["frame_id"].astype(str).map(sources))
        # Every frame-level score of the run goes with the frame, beside the one ranked by.
        frames = run.frames()
        scores = [c for c in frame_score_columns(frames.columns) if c not in queue.columns]
        if scores:
            table = frames[["frame_id", *scores]].assign(frame_id=frames["frame_id"].astype(str))
            queue = queue.merge(table.drop_duplicates("frame_id"), on="frame_id", how="left")
    segments_csv = PlanDir(plan.parent).segments_path  # a segment plan: mark its accepted segments
    if segments_csv.is_file() and "frame_id" in queue:
        marks = accepted_marks(pd.read_csv(segments_csv, dtype={"frame_id": str}, keep_default_na=False))
        queue = queue.assign(**{ACCEPTED_COLUMN: [marks.get(f, "") for f in queue["frame_id"].astype(str)]})
    frame_for = run.frame_lookup()
    heatmap_for = heatmaps_for_run(run, device=device) if exporter(to).heatmaps and heatmaps else None
    return export_queue(queue, to=to, out_dir=out_dir, classes=run.classes(),
                        prediction_for=run.prediction,
                        image_for=lambda fid: frame_for(fid).image, heatmap_for=heatmap_for,
                        **options)


def check_plan_export(plan: str | os.PathLike, *, to: str, out_dir: str | os.PathLike,
                      run_dir: str | os.PathLike | None = None,
                      include_skipped: bool = False) -> ExportCheck:
    """Re-read an export of `plan` (see `saseg.export.check`) against the run's saved masks."""
    plan = Path(plan)
    run = RunDir(run_dir) if run_dir is not None else RunDir.near(plan)
    rows = select_rows(read_plan(plan), include_skipped=include_skipped)
    return check_export(out_dir, to, prediction_for=run.prediction,
                        expected_order=rows["frame_id"].astype(str).tolist())


def check_existing_export(out_dir: str | os.PathLike, *, to: str | None = None,
                          plan: str | os.PathLike | None = None,
                          run_dir: str | os.PathLike | None = None,
                          include_skipped: bool = False) -> ExportCheck:
    """``saseg export --check DIR``: re-read an export as it is, without writing to it.

    The tool is `to` or found from the folder's files. With `plan`, masks are compared with
    the run's predictions and the order with the plan's; without, masks are only decoded
    and the order checked by rank.
    """
    if not Path(out_dir).is_dir():
        raise DataError(f"Expected an export folder at {out_dir}, but there is none.")
    to = to or detect_tool(out_dir)
    if plan is None:
        return check_export(out_dir, to)
    return check_plan_export(plan, to=to, out_dir=out_dir, run_dir=run_dir,
                             include_skipped=include_skipped)
