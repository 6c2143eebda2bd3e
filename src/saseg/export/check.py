"""Re-read an export as the tool will, before anyone uploads gigabytes: frames, masks, order.

Each checker decodes only what the export wrote, with the tool's own conventions:

* Label Studio: ``tasks.json``; each ``?d=`` URL resolved against ``document_root`` (relative to
  the export folder, or `root`) and found
  inside the storage folder (the rule Label Studio serves by); brush RLE regions decoded
  (`saseg.export.rle`) and painted by label name, in ``labelstudio_config.xml``'s order.
* CVAT: ``images/manifest.jsonl`` against CVAT's manifest rules (header lines, ``name`` /
  ``extension`` / ``width`` / ``height`` per image, each naming a file of that size);
  ``annotations.zip``'s ``SegmentationClass`` PNGs decoded by ``labelmap.txt`` colour
  (background = unlabelled), in ``ImageSets/Segmentation/default.txt`` order.
* FiftyOne: ``metadata.json``'s ``default_mask_targets``; ``samples.json``'s images and
  mask PNGs, read back exactly.

A mask is verified when it equals ``prediction_for(frame_id)``, with the ignore index (and
any id outside the classes) read as unlabelled, which is how each tool shows it. The order
is verified when the frames come in `expected_order` (or, without one, in strictly
increasing rank).
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import unquote
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from ..errors import FormatError
from . import rle
from .labelstudio import LOCAL_FILES_URL, document_root
from .queue import PredictionFn

UNLABELLED = -1


@dataclass
class ExportCheck:
    """What re-reading one export found.

    Attributes
    ----------
    tool : str
    frames : int
        Frames the export holds.
    masks_verified : int
        Frames whose decoded mask equals the prediction (0 when no `prediction_for` was given).
    order_verified : bool
    problems : list of str
        One line each; empty when the export is sound.
    compared : bool
        Whether masks were compared with predictions (False: decoded only).
    """

    tool: str
    frames: int = 0
    masks_verified: int = 0
    order_verified: bool = False
    problems: list[str] = field(default_factory=list)
    compared: bool = True

    @property
    def ok(self) -> bool:
        return (not self.problems and self.order_verified
                and (self.masks_verified == self.frames or not self.compared))

    def describe(self) -> str:
        order = "order verified" if self.order_verified else "order NOT verified"
        masks = (f"{self.masks_verified}/{self.frames} masks verified" if self.compared
                 else "masks decoded, not compared with predictions (no plan given)")
        line = f"{self.tool}: {self.frames} frames, {masks}, {order}"
        shown = "".join(f"\n  - {p}" for p in self.problems[:10])
        more = f"\n  - ... and {len(self.problems) - 10} more" if len(self.problems) > 10 else ""
        return line + shown + more


Checker = Callable[[Path, ExportCheck], list]
"""One tool's reader: (export dir, check to note problems in) -> [(frame_id, rank, DecodedMask | None)]."""


def verify_export(out_dir: str | os.PathLike, tool: str, checker: Checker, *,
                  prediction_for: PredictionFn | None = None,
                  expected_order: list[str] | None = None) -> ExportCheck:
    """Re-read the export in `out_dir` with `checker` (one tool's reader) and compare it with
    the predictions; `saseg.export.check_export` picks the checker by tool name.

    Parameters
    ----------
    out_dir : path
    tool : str, the tool's name (for the messages)
    checker : callable (out_dir, ExportCheck) -> list of (frame_id, rank, DecodedMask or None)
    prediction_for : callable frame_id -> ndarray of shape (H, W), int, optional
    expected_order : list of str, optional
        Frame ids in queue order.
    """
    out_dir = Path(out_dir)
    check = ExportCheck(tool, compared=prediction_for is not None)
    try:
        frames = checker(out_dir, check)
    except (OSError, ValueError, KeyError, TypeError, FormatError, zipfile.BadZipFile,
            ElementTree.ParseError) as exc:
        check.problems.append(f"cannot read the export in {out_dir}: {exc}")
        return check
    check.frames = len(frames)
    ids = [frame_id for frame_id, _, _ in frames]
    ranks = [rank for _, rank, _ in frames]
    if expected_order is not None:
        check.order_verified = ids == [str(i) for i in expected_order]
        if not check.order_verified:
            check.problems.append(f"frames are not in queue order: got {ids[:5]}..., expected "
                                  f"{list(expected_order)[:5]}...")
    else:
        check.order_verified = all(a < b for a, b in zip(ranks, ranks[1:]))
        if not check.order_verified:
            check.problems.append("ranks are not strictly increasing")
    if prediction_for is not None:
        for frame_id, _, mask in frames:
            if mask is None:
                continue
            expected = unlabelled_outside(np.asarray(prediction_for(frame_id)), mask.num_classes)
            if mask.ids.shape != expected.shape:
                check.problems.append(f"frame {frame_id!r}: mask is {mask.ids.shape}, prediction "
                                      f"{expected.shape}")
            elif not np.array_equal(mask.ids, expected):
                wrong = int((mask.ids != expected).sum())
                check.problems.append(f"frame {frame_id!r}: {wrong} pixels differ from the prediction")
            else:
                check.masks_verified += 1
    return check


@dataclass
class DecodedMask:
    """A frame's mask as the tool reads it: (H, W) int64 class ids, UNLABELLED where none."""

    ids: np.ndarray
    num_classes: int


def unlabelled_outside(prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """Class ids with everything outside ``0..num_classes-1`` (the ignore index) as UNLABELLED."""
    prediction = prediction.astype(np.int64)
    return np.where((prediction >= 0) & (prediction < num_classes), prediction, UNLABELLED)


def check_labelstudio(out_dir: Path, check: ExportCheck) -> list[tuple[str, int, DecodedMask | None]]:
    tasks = json.loads((out_dir / "tasks.json").read_text(encoding="utf-8"))
    setup = json.loads((out_dir / "labelstudio_storage.json").read_text(encoding="utf-8"))
    config = ElementTree.fromstring((out_dir / "labelstudio_config.xml").read_text(encoding="utf-8"))
    names = [label.attrib["value"] for label in config.iter("Label")]
    root = document_root(out_dir)
    storage = (out_dir / setup["storage_path"]).resolve() if setup.get("storage_path") else None
    frames = []
    for task in tasks:
        data, frame_id = task["data"], str(task["data"]["frame_id"])
        size = None
        url = str(data["image"])
        if url.startswith(LOCAL_FILES_URL):
            path = (root / unquote(url[len(LOCAL_FILES_URL):])).resolve()
            if storage is None or storage.resolve() not in path.parents:
                check.problems.append(f"frame {frame_id!r}: {path} is outside the storage {storage}, "
                                      "so Label Studio will not serve it")
            size = _image_size(path, frame_id, check)
        mask = None
        predictions = task.get("predictions") or []
        if len(predictions) != 1 or not 0 <= float(predictions[0].get("score", 0)) <= 1:
            check.problems.append(f"frame {frame_id!r}: expected one prediction, its score (if "
                                  "any) in [0, 1]")
        else:
            mask = _paint_brush_regions(predictions[0]["result"], names, frame_id, check)
            if mask is not None and size is not None and mask.ids.shape != size:
                check.problems.append(f"frame {frame_id!r}: regions are {mask.ids.shape}, image {size}")
        frames.append((frame_id, int(data["rank"]), mask))
    return frames


def _paint_brush_regions(results, names, frame_id, check) -> DecodedMask | None:
    if not results:
        return None
    height, width = int(results[0]["original_height"]), int(results[0]["original_width"])
    ids = np.full((height, width), UNLABELLED, dtype=np.int64)
    for result in results:
        label = result["value"]["brushlabels"][0]
        if label not in names:
            check.problems.append(f"frame {frame_id!r}: label {label!r} is not in the config")
            return None
        painted = rle.decode(result["value"]["rle"], height, width)
        if (ids[painted] != UNLABELLED).any():
            check.problems.append(f"frame {frame_id!r}: brush regions overlap")
        ids[painted] = names.index(label)
    return DecodedMask(ids, len(names))


def check_cvat(out_dir: Path, check: ExportCheck) -> list[tuple[str, int, DecodedMask | None]]:
    images = out_dir / "images"
    lines = [json.loads(line) for line in
             (images / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    if lines[:2] != [{"version": "1.1"}, {"type": "images"}]:
        check.problems.append(f"manifest.jsonl must start with the version and type lines, got {lines[:2]}")
    entries = lines[2:]
    for entry in entries:
        missing = [k for k in ("name", "extension", "width", "height") if k not in entry]
        if missing:
            check.problems.append(f"manifest entry {entry} lacks {missing}")
            continue
        path = images / f"{entry['name']}{entry['extension']}"
        size = _image_size(path, entry["name"], check)
        if size is not None and size != (entry["height"], entry["width"]):
            check.problems.append(f"{path.name}: manifest says {entry['width']}x{entry['height']}, "
                                  f"the image is {size[1]}x{size[0]}")
    names = [e.get("name") for e in entries]
    with zipfile.ZipFile(out_dir / "annotations.zip") as archive:
        colours = _labelmap_colours(archive.read("labelmap.txt").decode("utf-8"))
        listed = archive.read("ImageSets/Segmentation/default.txt").decode("utf-8").split()
        if listed != names:
            check.problems.append("ImageSets/Segmentation/default.txt and manifest.jsonl list "
                                  "different frames or orders")
        frames = []
        stems = _frame_ids_by_stem(out_dir)
        for name in names:
            rank = str(name).partition("_")[0]
            frame_id = stems[name]
            png = Image.open(io.BytesIO(archive.read(f"SegmentationClass/{name}.png"))).convert("RGB")
            frames.append((frame_id, int(rank), _decode_colours(np.asarray(png), colours, name, check)))
    return frames


def _labelmap_colours(labelmap: str) -> dict[tuple[int, int, int], int]:
    """``colour -> class id`` from labelmap.txt (background first, id UNLABELLED)."""
    colours = {}
    entries = [line for line in labelmap.splitlines() if line.strip() and not line.startswith("#")]
    for class_id, line in enumerate(entries, start=-1):
        rgb = tuple(int(v) for v in line.split(":")[1].split(","))
        colours[rgb] = class_id
    return colours


def _decode_colours(rgb: np.ndarray, colours, name, check) -> DecodedMask | None:
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    lookup = {(r << 16) | (g << 8) | b: i for (r, g, b), i in colours.items()}
    values, inverse = np.unique(packed, return_inverse=True)
    unknown = [int(v) for v in values if int(v) not in lookup]
    if unknown:
        check.problems.append(f"{name}: colours {[f'#{v:06x}' for v in unknown[:3]]} are not in labelmap.txt")
        return None
    ids = np.array([lookup[int(v)] for v in values], dtype=np.int64)[inverse.reshape(packed.shape)]
    return DecodedMask(ids, len(colours) - 1)


def _frame_ids_by_stem(out_dir: Path) -> dict[str, str]:
    """Image name -> frame id, from the export's own record (a file name alone loses the id)."""
    return json.loads((out_dir / "cvat_frames.json").read_text(encoding="utf-8"))


def check_fiftyone(out_dir: Path, check: ExportCheck) -> list[tuple[str, int, DecodedMask | None]]:
    info = json.loads((out_dir / "metadata.json").read_text(encoding="utf-8"))["info"]
    targets = info.get("default_mask_targets")
    if not isinstance(targets, dict) or not all(str(k).isdigit() for k in targets):
        check.problems.append("metadata.json: info.default_mask_targets must map ids to class names")
        targets = {}
    num_classes = len(targets)
    samples = json.loads((out_dir / "samples.json").read_text(encoding="utf-8"))["samples"]
    frames = []
    for sample in samples:
        frame_id = str(sample["frame_id"])
        size = _image_size(out_dir / sample["filepath"], frame_id, check)  # relative or absolute
        mask_path = out_dir / sample["prediction"]["mask_path"]
        mask = None
        try:
            with Image.open(mask_path) as png:
                ids = np.asarray(png).astype(np.int64)
            mask = DecodedMask(unlabelled_outside(ids, num_classes), num_classes)
            if size is not None and ids.shape != size:
                check.problems.append(f"frame {frame_id!r}: mask is {ids.shape}, image {size}")
        except OSError as exc:
            check.problems.append(f"frame {frame_id!r}: cannot read its mask {mask_path}: {exc}")
        frames.append((frame_id, int(sample["rank"]), mask))
    return frames


def _image_size(path: Path, frame_id, check: ExportCheck) -> tuple[int, int] | None:
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except OSError as exc:
        check.problems.append(f"frame {frame_id!r}: cannot read its image {path}: {exc}")
        return None
