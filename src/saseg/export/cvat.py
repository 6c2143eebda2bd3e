"""CVAT export: rank-named frames, a manifest for predefined order, masks as pre-annotations.

Writes to ``out_dir``:

* ``images/<rank:06d>_<frame id>.<ext>`` - every frame to label. CVAT needs the files
  themselves (uploaded or on its share), so source images are hard-linked there (copied when
  linking fails, or always with ``copy=True``); frames decoded from a video or generated are
  written as PNG once and reused by later exports. The rank prefix keeps the priority order
  even where the manifest is ignored (CVAT's "lexicographical" sorting).
* ``images/manifest.jsonl`` - CVAT dataset manifest 1.1 (``{"version": "1.1"}``,
  ``{"type": "images"}``, then one ``name``/``extension``/``width``/``height`` line per image)
  in queue order, for ``sorting_method=predefined``.
* ``annotations.zip`` - the predictions in CVAT's "Segmentation mask 1.1" format:
  ``labelmap.txt`` (``name:r,g,b::`` lines, ``background:0,0,0::`` first),
  ``ImageSets/Segmentation/default.txt`` (image names in queue order),
  ``SegmentationClass/<name>.png`` (RGB, class colours; ignored pixels black = background)
  and ``SegmentationObject/<name>.png`` (one object per predicted class, coloured with the
  Pascal VOC palette by object index 1, 2, ... in class-id order: semantic masks have no
  instances, and CVAT's importer takes each object's label from the class mask).
* ``cvat_frames.json`` - ``{image name: frame id}``, to map CVAT's frames back to the run
  (``saseg labels import`` reads it).
* ``saseg_classes.json`` - the class metadata, for ``saseg labels import``.
* ``cvat_labels.json`` - the label list for the task's Raw label editor (mask labels, colours).
* ``IMPORT.md`` - the steps below.

Import: create a task, paste ``cvat_labels.json`` into Labels > Raw, select *all* files in
``images/`` (images plus ``manifest.jsonl``), Advanced > Sorting method: *Predefined*; then
Actions > Upload annotations > "Segmentation mask 1.1", *unchecking* "Convert masks to
polygons" (``conv_mask_to_poly=false`` through the API), > ``annotations.zip``.
"""

from __future__ import annotations

import json
import logging
import os
import zipfile
from pathlib import Path

import numpy as np

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import atomic_path, write_json, write_text
from ..layout import frame_stem
from .queue import ACCEPTED_COLUMN, ImageFn, PredictionFn, encode_png, iter_items, prune, select_rows, write_classes

logger = logging.getLogger(__name__)

MANIFEST_VERSION = "1.1"
LABELMAP_HEADER = "# label:color_rgb:parts:actions"


CVAT_ACCEPTED = "cvat_accepted.json"  # image name -> accepted classes (mask formats carry no attributes)


def export_cvat(
    queue,
    *,
    out_dir: str | os.PathLike,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None = None,
    copy: bool = False,
    include_skipped: bool = False,
) -> Path:
    """Write rank-named images, a predefined-order manifest and a Segmentation mask 1.1 zip.

    Parameters
    ----------
    queue, out_dir, classes, prediction_for, image_for, copy, include_skipped
        The exporter contract (`saseg.export.registry`).
        CVAT needs class colours distinct and not black (black is its background).

    Returns
    -------
    Path
        `out_dir`.
    """
    out_dir = Path(out_dir)
    labelmap = cvat_labelmap(classes)
    rows = select_rows(queue, include_skipped=include_skipped)
    manifest = [{"version": MANIFEST_VERSION}, {"type": "images"}]
    names, images, frame_ids, accepted = [], set(), {}, {}
    with atomic_path(out_dir / "annotations.zip") as tmp, \
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        write = lambda name, data: archive.writestr(_entry(name), data)  # noqa: E731
        write("labelmap.txt", labelmap)
        for item in iter_items(
            rows, out_dir=out_dir, classes=classes, prediction_for=prediction_for,
            image_for=image_for, materialise="copy" if copy else "link",
            name_for=lambda rank, frame_id: f"{rank:06d}_{frame_stem(frame_id)}",
        ):
            name = item.image.stem
            names.append(name)
            frame_ids[name] = item.frame_id
            accepted[name] = list(item.accepted)
            images.add(item.image)
            manifest.append({"name": name, "extension": item.image.suffix, "width": item.width,
                             "height": item.height, "meta": {"related_images": []}})
            class_png, object_png = segmentation_pngs(item.prediction, classes)
            write(f"SegmentationClass/{name}.png", class_png)
            write(f"SegmentationObject/{name}.png", object_png)
        write("ImageSets/Segmentation/default.txt", "".join(n + "\n" for n in names))

    prune(out_dir / "images", images)
    write_text(out_dir / "images" / "manifest.jsonl",
               "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in manifest))
    write_json(out_dir / "cvat_labels.json", cvat_labels(classes))
    write_json(out_dir / "cvat_frames.json", frame_ids)
    if ACCEPTED_COLUMN in rows.columns:  # a segment plan: per image, the classes whose model mask is accepted
        write_json(out_dir / CVAT_ACCEPTED, accepted)
    write_classes(out_dir, classes)
    write_text(out_dir / "IMPORT.md", _import_notes(len(names)))
    logger.info("Wrote %d CVAT frames and masks to %s", len(names), out_dir)
    return out_dir


def cvat_labelmap(classes: ClassInfo) -> str:
    """``labelmap.txt``: background black, then one ``name:r,g,b::`` line per class.

    Raises
    ------
    DataError
        If a class name holds ``:`` or a line break, or colours are black or repeated: the
        masks are decoded by colour, so each class needs its own.
    """
    bad = [n for n in classes.names if ":" in n or "\n" in n or not n.strip()]
    if bad:
        raise DataError(f"Expected CVAT label names without ':' or line breaks, but got {bad}.")
    seen: dict[tuple, str] = {(0, 0, 0): "background"}
    for name, colour in zip(classes.names, classes.colours):
        if tuple(colour) in seen:
            raise DataError(
                f"Expected a distinct, non-black colour per class for CVAT masks, but class "
                f"{name!r} has colour {tuple(colour)} like {seen[tuple(colour)]!r}."
            )
        seen[tuple(colour)] = name
    lines = [LABELMAP_HEADER, "background:0,0,0::"]
    lines += [f"{n}:{r},{g},{b}::" for n, (r, g, b) in zip(classes.names, classes.colours)]
    return "\n".join(lines) + "\n"


def segmentation_pngs(prediction: np.ndarray, classes: ClassInfo) -> tuple[bytes, bytes]:
    """Class and object PNGs of one (H, W) prediction.

    Returns
    -------
    class_png : bytes
        (H, W, 3) RGB: class colours; ignored / out-of-range pixels black (background).
    object_png : bytes
        (H, W, 3) RGB: Pascal VOC palette colour of object k (1-based) for the k-th predicted
        class in id order; background black.
    """
    valid = (prediction >= 0) & (prediction < classes.num_classes)
    class_rgb = classes.colourise(prediction)
    present = np.unique(prediction[valid])
    object_index = np.zeros(classes.num_classes + 1, dtype=np.int64)
    object_index[present] = np.arange(1, present.size + 1)
    objects = object_index[np.where(valid, prediction, classes.num_classes)]
    object_rgb = voc_colormap(present.size + 1)[objects]
    return encode_png(class_rgb), encode_png(object_rgb)


def voc_colormap(n: int) -> np.ndarray:
    """(n, 3) uint8 Pascal VOC palette: index bits spread over R, G, B from the high bit down."""
    index = np.arange(n)
    colours = np.zeros((n, 3), dtype=np.int64)
    for bit in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((index >> channel) & 1) << bit
        index = index >> 3
    return colours.astype(np.uint8)


def cvat_labels(classes: ClassInfo) -> list[dict]:
    """Labels for CVAT's Raw label editor: mask labels named and coloured as the classes."""
    return [
        {"name": name, "color": "#" + "".join(f"{v:02x}" for v in colour), "type": "mask",
         "attributes": []}
        for name, colour in zip(classes.names, classes.colours)
    ]


def _import_notes(n: int) -> str:
    return (
        f"# CVAT import ({n} frames, most surprising first)\n\n"
        "Paths are relative to this folder; it can be moved or copied as a whole.\n\n"
        "1. Create a task. Labels > Raw: paste `cvat_labels.json`.\n"
        "2. Files: select *all* files in `images/` (the images and "
        "`manifest.jsonl`; or point a share at that folder). Advanced configuration > "
        "Sorting method: *Predefined*, so frames follow `manifest.jsonl` (queue order). The "
        "rank prefix of the file names keeps the order under lexicographical sorting too.\n"
        "3. After the task is created: Actions > Upload annotations > *Segmentation mask 1.1*, "
        "**uncheck \"Convert masks to polygons\"**, then choose "
        "`annotations.zip`. Each predicted class then arrives as one mask to "
        "correct. (Left checked, the default, CVAT traces every mask into polygons: small or "
        "thin regions are lost and the rest no longer match the prediction pixel for pixel.)\n\n"
        "Through the REST API, add the same option to the upload: "
        "`PUT /api/tasks/<id>/annotations?format=Segmentation%20mask%201.1"
        "&conv_mask_to_poly=false`; recent `cvat-sdk` import methods take "
        "`conv_mask_to_poly=False` too (cvat PR #8823).\n\n"
        "## Labels back\n\n"
        "Actions > Export task dataset > *Segmentation mask 1.1* (images not needed), then\n\n"
        "```\nsaseg labels import --tool cvat --export <this folder> --from <the zip> "
        "--out <labels dir>\n```\n\n"
        "CVAT names frames by file name (`<rank>_<frame>`): `cvat_frames.json` maps each name "
        "back to its frame id, so keep it beside the images. Classes map by name through the "
        "zip's `labelmap.txt`; a frame with nothing painted comes back unlabelled.\n\n"
        "The archive also reads with datumaro (`Dataset.import_from(<unzipped folder>, "
        "\"voc_segmentation\")` in datumaro 1.13; CVAT's own datumaro fork calls it `voc`).\n"
    )


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date (1980-01-01, zip's epoch): the same export gives the same bytes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info
