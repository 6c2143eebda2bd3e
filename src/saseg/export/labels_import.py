"""``saseg labels import``: a labelling tool's export back to a label folder saseg opens.

One entry point over the readers (`saseg.export.labels_ls`, `saseg.export.labels_cvat`) and
the writer (`saseg.export.labels`); the rules are in `saseg.export.labels`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .labels import ImportReport, label_spec, write_labels
from .labels_cvat import cvat_frames, read_segmentation_mask
from .labels_fo import DEFAULT_FIELD, fiftyone_frames, read_fiftyone_export
from .labels_ls import (detect_format, labelstudio_frames, read_json_export, read_png_export,
                        task_frames)
from .queue import CLASSES_FILE, read_classes

IMPORT_TOOLS = ("labelstudio", "cvat", "fiftyone")

__all__ = ["IMPORT_TOOLS", "import_labels", "label_spec"]


def import_labels(tool: str, export_dir: str | os.PathLike, source: str | os.PathLike,
                  out_dir: str | os.PathLike, *, root: str | os.PathLike | None = None,
                  tasks: str | os.PathLike | None = None, pick: str = "refuse",
                  field: str = DEFAULT_FIELD) -> ImportReport:
    """Import the labels of `source` (the tool's export) for the saseg export `export_dir`.

    Parameters
    ----------
    tool : {"labelstudio", "cvat", "fiftyone"}
    export_dir : path
        The folder `saseg export` wrote (moved or copied is fine).
    source : path
        Label Studio: its JSON export, or its PNG export (zip or folder). CVAT: the
        "Segmentation mask 1.1" zip (or its unzipped folder). FiftyOne: a FiftyOneDataset
        export folder of the dataset.
    out_dir : path
        The label folder (created, or added to).
    root : path, optional
        Label Studio: the folder the task image paths are relative to, when the images
        referenced outside the export did not move with it.
    tasks : path, optional
        Label Studio PNG: a JSON export of the project, mapping task ids to frames when the
        export has no ``labelstudio_tasks.json``.
    pick : {"refuse", "latest"}
        Two annotations for one task: refuse the task, or take the latest.
    field : str
        FiftyOne: the segmentation field holding the labels.

    Returns
    -------
    ImportReport
        What was imported, unlabelled or refused (one line each).
    """
    export_dir, source = Path(export_dir), Path(source)
    if not (export_dir / CLASSES_FILE).is_file() and (source / CLASSES_FILE).is_file():
        raise DataError(f"Expected --export to be the saseg export and --from the tool's export, "
                        f"but {source} is a saseg export: swap them.")
    classes = read_classes(export_dir)
    if tool == "labelstudio":
        frames = labelstudio_frames(export_dir, root)
        if detect_format(source) == "png":
            decoded = read_png_export(source, classes, task_frames(export_dir, tasks), pick=pick)
        else:
            decoded = read_json_export(source, classes, pick=pick)
    elif tool == "cvat":
        frames, names = cvat_frames(export_dir)
        decoded = read_segmentation_mask(source, classes, names)
    elif tool == "fiftyone":
        frames = fiftyone_frames(export_dir)
        decoded = read_fiftyone_export(source, classes, field=field)
    else:
        raise DataError(f"Expected a tool in {list(IMPORT_TOOLS)}, but got {tool!r}.")
    return write_labels(tool, decoded, frames, classes, out_dir)
