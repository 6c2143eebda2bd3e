"""Export the labelling queue to annotation tools, in priority order, with pre-annotations.

`export_queue` dispatches to `export_labelstudio`, `export_cvat` or `export_fiftyone`; each
writes an ``IMPORT.md`` into the out dir with the import steps; `saseg.export.check` re-reads
an export as the tool will.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..data.classes import ClassInfo
from ..errors import DataError
from .cvat import export_cvat
from .fiftyone import HeatmapFn, export_fiftyone, load_fiftyone
from .labelstudio import export_labelstudio
from .queue import ImageFn, PredictionFn, read_plan

TOOLS = ("labelstudio", "cvat", "fiftyone")

__all__ = ["TOOLS", "export_queue", "export_labelstudio", "export_cvat", "export_fiftyone",
           "load_fiftyone", "read_plan"]


def export_queue(
    queue,
    *,
    to: str,
    out_dir: str | os.PathLike,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None = None,
    heatmap_for: HeatmapFn | None = None,
    copy: bool = False,
    include_skipped: bool = False,
    **options,
) -> Path:
    """Export the frames to label, most surprising first, for one annotation tool.

    Parameters
    ----------
    queue : pandas.DataFrame
        The labelling plan (plan.csv, see `read_plan`): ``rank`` (1 = label first),
        ``frame_id``, ``frame_index``, ``source``, ``score``, ``action`` ("label" | "skip").
    to : {"labelstudio", "cvat", "fiftyone"}
    out_dir : path
        Output folder; re-running overwrites it cleanly.
    classes : ClassInfo
    prediction_for : callable frame_id -> ndarray of shape (H, W), int
        Predicted class ids, exported as the pre-annotation.
    image_for : callable frame_id -> ndarray of shape (H, W, 3), uint8, optional
        Renders frames whose ``source`` is not an image file (video, generated); each is
        written once to ``out_dir/images``.
    heatmap_for : callable frame_id -> ndarray of shape (H, W), float, optional
        Per-pixel SA; used by the FiftyOne export only.
    copy : bool
        Copy source images into the out dir (CVAT: instead of hard-linking them).
    include_skipped : bool
        Export every row, not only ``action == "label"``.
    **options
        Tool-specific: ``image_root``, ``url_prefix`` (Label Studio); ``heatmap_range``,
        ``dataset_name`` (FiftyOne).

    Returns
    -------
    Path
        `out_dir`.
    """
    common = dict(out_dir=out_dir, classes=classes, prediction_for=prediction_for,
                  image_for=image_for, copy=copy, include_skipped=include_skipped)
    if to == "labelstudio":
        return export_labelstudio(queue, **common, **options)
    if to == "cvat":
        return export_cvat(queue, **common, **options)
    if to == "fiftyone":
        return export_fiftyone(queue, **common, heatmap_for=heatmap_for, **options)
    raise DataError(f"Expected an export target in {list(TOOLS)}, but got {to!r}.")
