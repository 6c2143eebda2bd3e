"""Label Studio export: one task per frame, in priority order, pre-annotated with brush masks.

Writes to ``out_dir``:

* ``tasks.json`` - a list of tasks in rank order. ``data`` holds ``image`` (URL), ``frame_id``,
  ``surprise`` and ``rank``, so the Data Manager can show and sort on them; ``predictions``
  holds one prediction (``model_version`` "saseg", ``score`` = surprise) with one
  ``brushlabels`` region per predicted class (Label Studio brush RLE, see `saseg.export.rle`).
* ``labelstudio_config.xml`` - the labelling interface: an ``Image`` and ``BrushLabels``
  with the class names and colours.
* ``IMPORT.md`` - the import steps below, with this export's paths filled in.
* ``images/`` - frames decoded from a video or generated (PNG), and copies with ``copy=True``.

Images are served by Label Studio's local-files storage: ``image`` is
``/data/local-files/?d=<path relative to image_root>``; or, with ``url_prefix``,
``<url_prefix>/<path relative to image_root>`` for images served over HTTP.

Import (Label Studio >= 1.x):

1. Start Label Studio with ``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true`` and
   ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=<image_root>``.
2. Create a project; Settings > Labeling Interface > Code: paste ``labelstudio_config.xml``.
3. Settings > Cloud Storage > Add Source Storage > Local files, absolute path
   ``<image_root>`` (or a folder below it holding the images); do not sync it.
4. Import ``tasks.json``.
5. Priority order: tasks get ids in file order, but the labelling stream follows the Data
   Manager's view. Sort the view by ``rank`` ascending (column ``rank`` / ``data.rank``),
   then use "Label Tasks As Displayed" (or Settings > Annotation > Task Sampling:
   Sequential). ``surprise`` and the prediction score sort the same way, descending.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import write_text
from . import rle
from .queue import ImageFn, PredictionFn, iter_items, prune, select_rows

logger = logging.getLogger(__name__)

FROM_NAME = "tag"
TO_NAME = "image"


def export_labelstudio(
    queue,
    *,
    out_dir: str | os.PathLike,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None = None,
    copy: bool = False,
    include_skipped: bool = False,
    image_root: str | os.PathLike | None = None,
    url_prefix: str | None = None,
) -> Path:
    """Write a Label Studio project import (tasks.json + labelling config) for the queue.

    Parameters
    ----------
    queue : pandas.DataFrame
        The labelling plan: ``rank``, ``frame_id``, ``frame_index``, ``source``, ``score``,
        ``action``.
    out_dir : path
    classes : ClassInfo
    prediction_for : callable frame_id -> ndarray of shape (H, W), int
        The model's predicted class ids, exported as the pre-annotation.
    image_for : callable frame_id -> ndarray of shape (H, W, 3), uint8, optional
        Renders frames whose ``source`` is not an image file.
    copy : bool
        Copy source images into ``out_dir/images`` instead of referencing them in place.
    include_skipped : bool
        Export the ``action == "skip"`` rows too (all rows in rank order).
    image_root : path, optional
        Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``; image paths are made relative to it.
        Default: the deepest folder holding all exported images.
    url_prefix : str, optional
        Serve images from ``<url_prefix>/<relative path>`` instead of local-files storage.

    Returns
    -------
    Path
        `out_dir`.
    """
    out_dir = Path(out_dir)
    rows = select_rows(queue, include_skipped=include_skipped)
    items, tasks = [], []
    for item in iter_items(rows, out_dir=out_dir, classes=classes, prediction_for=prediction_for,
                           image_for=image_for, materialise="copy" if copy else "reference"):
        items.append(item.image)
        tasks.append({
            "data": {"image": None, "frame_id": item.frame_id, "surprise": item.score,
                     "rank": item.rank},
            "predictions": [{
                "model_version": "saseg",
                "score": item.score,
                "result": brush_results(item.prediction, classes, region_prefix=f"r{item.rank}"),
            }],
        })
    root = Path(image_root).resolve() if image_root is not None else _common_root(items, out_dir)
    for task, image in zip(tasks, items):
        task["data"]["image"] = image_url(image, root, url_prefix)

    prune(out_dir / "images", set(items))
    # Compact: every RLE byte on its own indented line would multiply the file size.
    write_text(out_dir / "tasks.json", json.dumps(tasks, separators=(",", ":")) + "\n")
    write_text(out_dir / "labelstudio_config.xml", labelstudio_config(classes))
    write_text(out_dir / "IMPORT.md", _import_notes(out_dir, root, url_prefix, len(tasks)))
    logger.info("Wrote %d Label Studio tasks to %s", len(tasks), out_dir / "tasks.json")
    return out_dir


def brush_results(
    prediction: np.ndarray, classes: ClassInfo, *, region_prefix: str = "r"
) -> list[dict]:
    """One ``brushlabels`` result per predicted class present (ignored pixels get none).

    Parameters
    ----------
    prediction : ndarray of shape (H, W), int
        Class ids; values outside ``0..num_classes-1`` (the ignore index) are left unpainted.
    """
    height, width = prediction.shape
    results = []
    for class_id in np.unique(prediction):
        if not 0 <= class_id < classes.num_classes:
            continue
        results.append({
            "id": f"{region_prefix}c{int(class_id)}",
            "from_name": FROM_NAME,
            "to_name": TO_NAME,
            "type": "brushlabels",
            "original_width": int(width),
            "original_height": int(height),
            "image_rotation": 0,
            "value": {
                "format": "rle",
                "rle": rle.encode(prediction == class_id),
                "brushlabels": [classes.names[class_id]],
            },
        })
    return results


def labelstudio_config(classes: ClassInfo) -> str:
    """The labelling interface XML: an image with one brush label per class, in class colours."""
    labels = "\n".join(
        f"    <Label value={quoteattr(name)} background={quoteattr(_hex(colour))}/>"
        for name, colour in zip(classes.names, classes.colours)
    )
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image" zoom="true"/>\n'
        f'  <BrushLabels name="{FROM_NAME}" toName="{TO_NAME}">\n'
        f"{labels}\n"
        "  </BrushLabels>\n"
        "</View>\n"
    )


def image_url(image: Path, root: Path, url_prefix: str | None = None) -> str:
    """Label Studio URL of an image file below `root` (local-files storage, or `url_prefix`)."""
    try:
        relative = Path(image).resolve().relative_to(root).as_posix()
    except ValueError:
        raise DataError(
            f"Expected every image below the Label Studio image_root {root}, but got {image}."
        ) from None
    if url_prefix:
        return url_prefix.rstrip("/") + "/" + quote(relative)
    return "/data/local-files/?d=" + quote(relative)


def _common_root(images: list[Path], out_dir: Path) -> Path:
    if not images:
        return out_dir.resolve()
    return Path(os.path.commonpath([str(p.parent) for p in images]))


def _hex(colour) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def _import_notes(out_dir: Path, root: Path, url_prefix: str | None, n: int) -> str:
    serve = (
        f"Images are served from `{url_prefix}` (paths relative to `{root}`)."
        if url_prefix else
        "Start Label Studio with local-files serving:\n\n"
        "```\nLABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\\n"
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} label-studio start\n```\n\n"
        f"and add a Source Storage of type *Local files* with absolute path `{root}` "
        "(do not sync it: the tasks come from tasks.json)."
    )
    return (
        f"# Label Studio import ({n} frames, most surprising first)\n\n"
        f"{serve}\n\n"
        "1. Create a project; Settings > Labeling Interface > Code: paste "
        "`labelstudio_config.xml`.\n"
        f"2. Import `{(out_dir / 'tasks.json').resolve()}`: each task carries the model's "
        "prediction as brush masks (edit them rather than painting from scratch).\n"
        "3. Keep the priority order: in the Data Manager sort by `rank` ascending, then "
        "*Label Tasks As Displayed* (or Settings > Annotation > Task Sampling: Sequential).\n"
    )
