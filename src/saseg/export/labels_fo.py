"""A FiftyOne dataset export read back: its segmentation field, sample by sample.

The source is ``dataset.export(DIR, dataset_type=fo.types.FiftyOneDataset)``: ``samples.json``
(``{"samples": [...]}``) and ``metadata.json``. Each sample keeps the ``frame_id`` field saseg
exported; its segmentation field (``--field``, default ``ground_truth``) holds the mask in
the database (``mask``: FiftyOne's zlib-compressed ``.npy`` bytes, read with
``allow_pickle=False``) or as a file (``mask_path``, relative to DIR or absolute). Mask values
map to classes by name through the field's mask targets (``mask_targets[field]``, else
``default_mask_targets``, else the saseg export's own). 0 without a target is FiftyOne's
background, and the ignore index is unlabelled: both stay unpainted; any other value without a
target refuses the sample. A sample whose field is empty is unlabelled.
"""

from __future__ import annotations

import base64
import io
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..data.classes import ClassInfo
from ..errors import DataError, FormatError
from ..io import read_json
from .labels import Annotated, ExportedFrame, exported_frame

DEFAULT_FIELD = "ground_truth"


def fiftyone_frames(export_dir: Path) -> dict[str, ExportedFrame]:
    """Frame id -> image of each sample of the saseg FiftyOne export."""
    samples = read_json(export_dir / "samples.json")["samples"]
    return {str(s["frame_id"]): exported_frame(export_dir / s["filepath"], str(s["frame_id"]))
            for s in samples}


def read_fiftyone_export(path: Path, classes: ClassInfo, *, field: str = DEFAULT_FIELD,
                         targets: dict | None = None) -> Iterator[Annotated | str]:
    """Decode the segmentation `field` of each sample of a FiftyOneDataset export.

    `targets` (value -> class name) applies when the export declares none; default: the
    class ids themselves.
    """
    path = Path(path)
    if not (path / "samples.json").is_file():
        raise DataError(f"Expected a FiftyOneDataset export (samples.json) at {path}, but there is none.")
    metadata = read_json(path / "metadata.json") if (path / "metadata.json").is_file() else {}
    targets = _mask_targets(metadata, field) or targets or dict(enumerate(classes.names))
    lookup = _value_to_class(targets, classes)
    for sample in read_json(path / "samples.json").get("samples", []):
        name = f"sample {Path(str(sample.get('filepath', '?'))).name}"
        frame_id = sample.get("frame_id")
        if frame_id is None:
            yield f"{name}: no frame_id field (not a sample saseg exported)"
            continue
        frame_id, label = str(frame_id), sample.get(field)
        if not label:
            yield Annotated(frame_id, name, None)
            continue
        try:
            values = _mask(label, path, name)
            # 0 without a target is FiftyOne's background; the ignore index is unlabelled.
            unpainted = ((values == 0) & (0 not in lookup)) | (values == classes.ignore_index)
            unknown = np.unique(values[~np.isin(values, list(lookup)) & ~unpainted])
            if unknown.size:
                raise DataError(f"{name}: mask values {unknown[:5].tolist()} have no mask target "
                                f"among the classes {list(classes.names)}")
            mask = np.full(values.shape, -1, dtype=np.int64)
            for value, class_id in lookup.items():
                mask[values == value] = class_id
        except (DataError, FormatError) as exc:
            yield Annotated(frame_id, name, None, problem=str(exc))
            continue
        yield Annotated(frame_id, name, mask)


def _mask_targets(metadata: dict, field: str) -> dict:
    for targets in ((metadata.get("mask_targets") or {}).get(field),
                    metadata.get("default_mask_targets"),
                    (metadata.get("info") or {}).get("default_mask_targets")):
        if targets:
            return targets
    return {}


def _value_to_class(targets: dict, classes: ClassInfo) -> dict[int, int]:
    """Mask value -> class id, by name; a target naming no class is refused."""
    lookup = {}
    for value, name in targets.items():
        if name not in classes.names:
            raise DataError(f"Expected the mask targets to name classes of the export "
                            f"{list(classes.names)}, but {value} is {name!r}.")
        lookup[int(value)] = classes.names.index(name)
    return lookup


def _mask(label: dict, root: Path, name: str) -> np.ndarray:
    if label.get("mask_path"):
        file = root / label["mask_path"]
        try:
            with Image.open(file) as png:
                values = np.asarray(png)
        except OSError as exc:
            raise DataError(f"{name}: cannot read its mask {file}: {exc}") from None
    elif label.get("mask") is not None:
        raw = label["mask"].get("$binary") if isinstance(label["mask"], dict) else label["mask"]
        raw = raw.get("base64") if isinstance(raw, dict) else raw
        try:
            with io.BytesIO(zlib.decompress(base64.b64decode(raw))) as buffer:
                values = np.load(buffer, allow_pickle=False)
        except (ValueError, TypeError, zlib.error) as exc:
            raise FormatError(f"{name}: unreadable mask ({exc})") from None
    else:
        raise DataError(f"{name}: the segmentation holds neither mask nor mask_path")
    if values.ndim != 2:
        raise DataError(f"{name}: expected a 2-D class-value mask, but got shape {values.shape} "
                        "(RGB masks are not read)")
    return values.astype(np.int64)
