"""Cityscapes: ``leftImg8bit/{split}/{city}/*_leftImg8bit.png`` with ``gtFine`` labelIds.

The 34 raw label ids are mapped to the 19 official train ids (everything else becomes 255,
ignored), as the Cityscapes benchmark does. Frame ids are ``{city}/{city}_{seq}_{frame}``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from .classes import ClassInfo
from .images import FileDataset, FileItem, data_error, natural_key, read_index_label, require_dir
from .spec_format import format_spec

#: (label id, train name, RGB colour) for the 19 evaluated classes, in train-id order.
_TABLE = (
    (7, "road", (128, 64, 128)), (8, "sidewalk", (244, 35, 232)),
    (11, "building", (70, 70, 70)), (12, "wall", (102, 102, 156)),
    (13, "fence", (190, 153, 153)), (17, "pole", (153, 153, 153)),
    (19, "traffic light", (250, 170, 30)), (20, "traffic sign", (220, 220, 0)),
    (21, "vegetation", (107, 142, 35)), (22, "terrain", (152, 251, 152)),
    (23, "sky", (70, 130, 180)), (24, "person", (220, 20, 60)), (25, "rider", (255, 0, 0)),
    (26, "car", (0, 0, 142)), (27, "truck", (0, 0, 70)), (28, "bus", (0, 60, 100)),
    (31, "train", (0, 80, 100)), (32, "motorcycle", (0, 0, 230)), (33, "bicycle", (119, 11, 32)),
)

CITYSCAPES = ClassInfo(
    names=tuple(name for _, name, _ in _TABLE),
    colours=tuple(colour for _, _, colour in _TABLE),
    ignore_index=255,
    groups={"flat": (0, 1), "construction": (2, 3, 4), "object": (5, 6, 7),
            "nature": (8, 9), "sky": (10,), "human": (11, 12),
            "vehicle": (13, 14, 15, 16, 17, 18)},
)

#: label id -> train id lookup table (255 = ignore)
LABEL_TO_TRAIN = np.full(256, 255, dtype=np.int64)
LABEL_TO_TRAIN[[label_id for label_id, _, _ in _TABLE]] = np.arange(len(_TABLE))


def read_label_ids(path: Path) -> np.ndarray:
    """Read a ``*_gtFine_labelIds.png`` as (H, W) int64 train ids."""
    raw = read_index_label(path)
    if raw.size and (raw.min() < 0 or raw.max() > 255):
        raise data_error(
            f"Expected Cityscapes label ids 0..255 in {path}, but got {raw.min()}..{raw.max()}.",
            path,
        )
    return LABEL_TO_TRAIN[raw]


def open_cityscapes(path: str | Path, *, split: str | None = None,
                    on_error: str = "raise") -> FileDataset:
    """Open one split of a Cityscapes folder (the one holding ``leftImg8bit/``, ``gtFine/``).

    A split without ``gtFine/{split}`` is opened unlabelled (``has_labels`` False).
    """
    root = require_dir(Path(path).expanduser(), "a Cityscapes folder")
    images_root = require_dir(root / "leftImg8bit", "the Cityscapes image folder")
    splits = sorted(d.name for d in images_root.iterdir() if d.is_dir())
    if split is None:
        raise DataError(
            f"Expected a Cityscapes split (cityscapes:{root}:SPLIT), one of {splits}, but got none."
        )
    split_dir = images_root / split
    if not split_dir.is_dir():
        raise DataError(
            f"Expected the Cityscapes split folder {split_dir}, but it does not exist; "
            f"available splits: {splits}."
        )
    labels_dir = root / "gtFine" / split
    labelled = labels_dir.is_dir()
    suffix = "_leftImg8bit.png"
    items = []
    for image in split_dir.glob(f"*/*{suffix}"):
        city, stem = image.parent.name, image.name[: -len(suffix)]
        label = labels_dir / city / f"{stem}_gtFine_labelIds.png" if labelled else None
        items.append(FileItem(f"{city}/{stem}", image, label, stem.rsplit("_", 1)[0]))
    if not items:
        raise DataError(f"Expected Cityscapes images {split_dir}/CITY/*{suffix}, but found none.")
    items.sort(key=lambda it: natural_key(it.frame_id))
    return FileDataset(items, classes=CITYSCAPES, on_error=on_error, read_label=read_label_ids,
                       labelled=labelled,
                       spec=format_spec("cityscapes", [os.path.abspath(root), split]))
