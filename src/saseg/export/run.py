"""Wire a scored run to the exporters: predictions, frames and heatmaps looked up by frame id."""

from __future__ import annotations

import os
from pathlib import Path

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import read_json


def frame_lookup(run_dir: str | os.PathLike, index_of: dict[str, int]):
    """`frame_id -> Frame` over the run's dataset, using the frame indices the run recorded."""
    from ..data import open_dataset

    dataset = open_dataset(read_json(Path(run_dir) / "score.json")["data"])

    def frame_for(frame_id: str):
        frame = dataset[int(index_of[frame_id])]
        if frame.frame_id != frame_id:
            raise DataError(f"Expected frame {frame_id!r} at index {index_of[frame_id]} of "
                            f"{dataset.spec}, but found {frame.frame_id!r}; the data changed since scoring.")
        return frame

    return frame_for


def export_plan(plan: str | os.PathLike, *, to: str, out_dir: str | os.PathLike,
                run_dir: str | os.PathLike | None = None, heatmaps: bool = True,
                device: str = "cpu", **options) -> Path:
    """Export a run's labelling plan (``RUN/plan/plan.csv``) to a labelling tool.

    Predictions come from ``RUN/predictions``, frames from the scored dataset, and (FiftyOne
    only, with `heatmaps`) per-pixel SA maps recomputed with the run's model and SA model.
    """
    from . import export_queue, read_plan
    from ..pipeline import load_prediction

    plan = Path(plan)
    if run_dir is None:
        run_dir = next((p for p in (plan.parent, plan.parent.parent) if (p / "score.json").exists()),
                       None)
        if run_dir is None:
            raise DataError(f"Expected the scored run (score.json) beside or above {plan}; pass --run.")
    run_dir = Path(run_dir)
    meta = read_json(run_dir / "score.json")
    queue = read_plan(plan)
    frame_for = frame_lookup(run_dir, dict(zip(queue["frame_id"], queue["frame_index"])))
    heatmap_for = None
    if to == "fiftyone" and heatmaps:
        from ..review import heatmaps_for_run

        heatmap_for = heatmaps_for_run(run_dir, device=device)
    return export_queue(queue, to=to, out_dir=out_dir, classes=ClassInfo.from_dict(meta["classes"]),
                        prediction_for=lambda fid: load_prediction(run_dir, fid),
                        image_for=lambda fid: frame_for(fid).image, heatmap_for=heatmap_for,
                        **options)
