"""The labelling tools saseg exports to: one table, from which the CLI and ``--check`` are built.

An exporter is two functions in one module of this package. ``write(queue, *, out_dir, classes,
prediction_for, image_for=None, copy=False, include_skipped=False, **options) -> Path`` writes
the export and returns `out_dir`:

- ``queue``: the labelling plan (DataFrame: ``rank``, ``frame_id``, ``frame_index``,
  ``source``, ``score``, ``action``; a segment plan adds the accepted classes);
- ``classes``: the `ClassInfo` of the predictions;
- ``prediction_for``: frame id -> (H, W) int predicted class ids, the pre-annotation;
- ``image_for``: frame id -> (H, W, 3) uint8, renders frames whose ``source`` is not an image
  file (optional);
- ``copy``: copy source images instead of linking or referencing them;
- ``include_skipped``: export the ``action == "skip"`` rows too (all rows in rank order);
- ``options``: the tool's own keywords (`Exporter.options`).

``check(out_dir, ExportCheck) -> [(frame_id, rank, DecodedMask | None)]`` re-reads it as the tool
will (`saseg.export.check`). Adding a tool is that module plus one line in `EXPORTERS` (or a
call to `register_exporter`); the CLI's ``--to`` choices follow the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..data.classes import ClassInfo
from ..errors import DataError
from .check import Checker, ExportCheck, check_cvat, check_fiftyone, check_labelstudio, verify_export
from .cvat import export_cvat
from .fiftyone import HeatmapFn, export_fiftyone
from .labelstudio import export_labelstudio
from .queue import ImageFn, PredictionFn

__all__ = ["Exporter", "EXPORTERS", "register_exporter", "exporter", "detect_tool", "export_queue", "check_export"]


@dataclass(frozen=True)
class Exporter:
    """One labelling tool.

    Attributes
    ----------
    write : callable, writes the export (signature in the module docstring)
    check : callable, re-reads it as the tool will
    marker : str
        A file only this tool's export holds (how `detect_tool` recognises an existing export).
    heatmaps : bool
        `write` takes ``heatmap_for`` (per-pixel SA maps, which cost a model run).
    options : tuple of str
        The tool-specific keyword options `write` accepts (e.g. Label Studio's ``image_root``).
    """

    write: Callable[..., Path]
    check: Checker
    marker: str
    heatmaps: bool = False
    options: tuple[str, ...] = ()


EXPORTERS: dict[str, Exporter] = {
    "labelstudio": Exporter(export_labelstudio, check_labelstudio, "tasks.json",
                            options=("image_root", "url_prefix")),
    "cvat": Exporter(export_cvat, check_cvat, "cvat_frames.json"),
    "fiftyone": Exporter(export_fiftyone, check_fiftyone, "samples.json", heatmaps=True,
                         options=("heatmap_range", "dataset_name")),
}


def register_exporter(name: str, tool: Exporter) -> None:
    """Add (or replace) a tool under `name`; ``saseg export --to NAME`` then offers it."""
    if not name or not name.replace("_", "").isalnum():
        raise DataError(f"Expected an exporter name of letters, digits and '_', but got {name!r}.")
    EXPORTERS[name] = tool


def exporter(name: str) -> Exporter:
    """The tool registered as `name`, or one `DataError` listing the registered ones."""
    if name not in EXPORTERS:
        raise DataError(f"Expected an export target in {list(EXPORTERS)}, but got {name!r}.")
    return EXPORTERS[name]


def detect_tool(out_dir: str | os.PathLike) -> str:
    """Which tool an existing export folder is for, from the file each exporter writes (`Exporter.marker`)."""
    out_dir = Path(out_dir)
    found = [name for name, tool in EXPORTERS.items() if (out_dir / tool.marker).is_file()]
    if len(found) != 1:
        raise DataError(f"Expected a saseg export in {out_dir} (one of "
                        f"{[tool.marker for tool in EXPORTERS.values()]}), but found {found or 'none'}.")
    return found[0]


def export_queue(queue, *, to: str, out_dir: str | os.PathLike, classes: ClassInfo,
                 prediction_for: PredictionFn, image_for: ImageFn | None = None,
                 heatmap_for: HeatmapFn | None = None, copy: bool = False,
                 include_skipped: bool = False, **options) -> Path:
    """Export the frames to label, most surprising first, for one annotation tool.

    Parameters
    ----------
    queue : pandas.DataFrame
        The labelling plan (plan.csv, see `read_plan`): ``rank`` (1 = label first),
        ``frame_id``, ``frame_index``, ``source``, ``score``, ``action`` ("label" | "skip").
    to : str, a name in `EXPORTERS`
    out_dir : path
        Output folder; re-running overwrites it cleanly.
    classes : ClassInfo
    prediction_for : callable frame_id -> ndarray of shape (H, W), int
        Predicted class ids, exported as the pre-annotation.
    image_for : callable frame_id -> ndarray of shape (H, W, 3), uint8, optional
        Renders frames whose ``source`` is not an image file (video, generated); each is
        written once to ``out_dir/images``.
    heatmap_for : callable frame_id -> ndarray of shape (H, W), float, optional
        Per-pixel SA; used by the tools with ``heatmaps`` (FiftyOne).
    copy : bool
        Copy source images into the out dir (CVAT: instead of hard-linking them).
    include_skipped : bool
        Export every row, not only ``action == "label"``.
    **options
        Tool-specific (`Exporter.options`): ``image_root``, ``url_prefix`` (Label Studio);
        ``heatmap_range``, ``dataset_name`` (FiftyOne).

    Returns
    -------
    Path
        `out_dir`.
    """
    tool = exporter(to)
    unknown = sorted(set(options) - set(tool.options))
    if unknown:
        raise DataError(f"Expected options of the {to} export among {list(tool.options)}, but got {unknown}.")
    extra = {"heatmap_for": heatmap_for} if tool.heatmaps else {}
    return tool.write(queue, out_dir=Path(out_dir), classes=classes, prediction_for=prediction_for,
                      image_for=image_for, copy=copy, include_skipped=include_skipped, **extra, **options)


def check_export(out_dir: str | os.PathLike, to: str, *, prediction_for: PredictionFn | None = None,
                 expected_order: list[str] | None = None) -> ExportCheck:
    """Re-read the export in `out_dir` for tool `to` as the tool will (`saseg.export.check`)."""
    return verify_export(out_dir, to, exporter(to).check, prediction_for=prediction_for,
                         expected_order=expected_order)
