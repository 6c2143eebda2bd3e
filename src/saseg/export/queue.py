"""What every exporter shares: the queue's rows in priority order, their images and predictions.

The exporters need no model: the caller hands in ``prediction_for(frame_id)`` and, for frames
that are not image files (decoded from a video, generated), ``image_for(frame_id)``.
Such frames are written once to ``out/images/`` and reused by later exports when a file of
the right size is already there, so re-exporting never re-decodes a video.
"""

from __future__ import annotations

import filecmp
import io
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from ..columns import frame_score_columns
from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import atomic_path, check_not_unfinished, read_json, write_bytes, write_json
from ..layout import frame_stem

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("rank", "frame_id", "frame_index", "source", "score", "action")
ACCEPTED_COLUMN = "accepted_classes"  # a segment plan's accepted classes per frame, ";"-joined
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

CLASSES_FILE = "saseg_classes.json"  # in every export: the classes its masks and labels name
PredictionFn = Callable[[str], np.ndarray]
ImageFn = Callable[[str], np.ndarray]


@dataclass
class QueueItem:
    """One frame to label, resolved: where its image is and what the model predicted.

    Attributes
    ----------
    rank : int
        1 = label first.
    frame_id, frame_index, score
        As in the plan; ``score`` is the surprise value the queue was ranked by (None when
        not finite, so the JSON outputs stay valid).
    image : Path
        Absolute path of the image file the tool will show.
    prediction : ndarray of shape (H, W), int64
        Predicted class ids (the pre-annotation), the same size as the image.
    frame_scores : dict
        The queue's ``frame_<score>`` columns (``frame_mdsa``, ``frame_entropy``,
        ``frame_risk``, ...), so the tool shows every score beside the one ranked by; finite
        values only.
    accepted : list of str
        Classes whose model mask a segment plan accepted (not to be redrawn); from the
        queue's ``accepted_classes`` column (names joined by ";"), empty without one.
    """

    rank: int
    frame_id: str
    frame_index: int
    score: float | None
    image: Path
    prediction: np.ndarray
    frame_scores: dict = field(default_factory=dict)
    accepted: list = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.prediction.shape[0])

    @property
    def width(self) -> int:
        return int(self.prediction.shape[1])


def read_plan(path: str | os.PathLike):
    """Read a plan.csv with ids and sources kept as text (``00012`` must not become 12)."""
    check_not_unfinished(Path(path).parent)  # plan.csv and plan.json of one `saseg plan` run
    try:
        return pd.read_csv(path, dtype={"frame_id": str, "source": str}, keep_default_na=False)
    except FileNotFoundError:
        raise DataError(f"Expected a labelling plan at {path}, but it does not exist.") from None


def accepted_marks(segments) -> dict[str, str]:
    """frame_id -> ";"-joined names of the classes a segment plan accepted (``segments.csv``:
    ``frame_id``, ``class_name``, ``action``)."""
    missing = [c for c in ("frame_id", "class_name", "action") if c not in segments.columns]
    if missing:
        raise DataError(f"Expected the segment decisions to have columns frame_id, class_name, action, but "
                        f"they lack {missing}.")
    acc = segments[segments["action"].astype(str) == "accept"]
    return {str(f): ";".join(map(str, g)) for f, g in acc.groupby(acc["frame_id"].astype(str))["class_name"]}


def select_rows(queue, *, include_skipped: bool = False):
    """Rows to export, in rank order: only ``action == "label"`` unless `include_skipped`."""
    missing = [c for c in REQUIRED_COLUMNS if c not in queue.columns]
    if missing:
        raise DataError(
            f"Expected the labelling queue to have columns {list(REQUIRED_COLUMNS)}, but it lacks "
            f"{missing} (got {list(queue.columns)})."
        )
    for column in ("rank", "frame_index"):  # a hand-edited plan: one line, not a failure deep in an exporter
        values = pd.to_numeric(queue[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values) | (values != np.round(values)) | (np.abs(values) > 2**53)
        if bad.any():
            raise DataError(f"Expected integer {column} values in the labelling queue, but got "
                            f"{str(queue[column].iloc[int(np.argmax(bad))])!r}.")
    rows = queue if include_skipped else queue[queue["action"].astype(str) == "label"]
    rows = rows.sort_values("rank", kind="stable")
    ids = rows["frame_id"].astype(str)
    if ids.duplicated().any():
        raise DataError(
            "Expected each frame once in the labelling queue, but got duplicates "
            f"{sorted(set(ids[ids.duplicated()]))[:5]}."
        )
    if not len(rows):
        logger.warning("The labelling queue has no frames to export.")
    return rows


def iter_items(
    rows,
    *,
    out_dir: Path,
    classes: ClassInfo,
    prediction_for: PredictionFn,
    image_for: ImageFn | None,
    materialise: str = "reference",
    name_for: Callable[[int, str], str] | None = None,
) -> Iterator[QueueItem]:
    """Resolve each queue row to an image file and a checked prediction, in rank order.

    Parameters
    ----------
    materialise : {"reference", "copy", "link"}
        What to do with source images that are files: use them in place, copy them into
        ``out_dir/images``, or hard-link them there (copy when linking fails). Frames that
        are not files are always written there (PNG).
    name_for : callable (rank, frame_id) -> str, optional
        File-name stem in ``out_dir/images``; default `frame_stem` of the frame id (unique
        per id). Two frames given one stem are refused rather than one overwriting the other.
    """
    images_dir = out_dir / "images"
    score_columns = frame_score_columns(rows.columns)
    name_for = name_for or (lambda rank, frame_id: frame_stem(frame_id))
    stems: dict[str, str] = {}
    for row in rows.itertuples(index=False):
        frame_id = str(row.frame_id)
        prediction = check_prediction(prediction_for(frame_id), classes, frame_id)
        height, width = prediction.shape
        stem = name_for(int(row.rank), frame_id)
        if stems.setdefault(stem.lower(), frame_id) != frame_id:
            raise DataError(f"Expected one file name per frame, but frames {stems[stem.lower()]!r} and "
                            f"{frame_id!r} both map to {stem!r}.")
        source = Path(str(row.source))
        if source.suffix.lower() in IMAGE_SUFFIXES and source.is_file():
            size = image_size(source)
            if materialise == "reference":
                image = source.resolve()
            else:
                image = place_file(source, images_dir / (stem + source.suffix.lower()),
                                    link=materialise == "link")
        else:
            image = images_dir / f"{stem}.png"
            size = _write_frame(image, frame_id, str(row.source), (height, width), image_for)
        if size != (height, width):
            raise DataError(
                f"Frame {frame_id!r}: expected the prediction to match the image size "
                f"{size[0]}x{size[1]}, but got {height}x{width}."
            )
        score = float(row.score)
        frame_scores = {c: float(getattr(row, c)) for c in score_columns}
        yield QueueItem(rank=int(row.rank), frame_id=frame_id, frame_index=int(row.frame_index),
                        score=score if np.isfinite(score) else None, image=image.resolve(),
                        prediction=prediction,
                        frame_scores={c: v for c, v in frame_scores.items() if np.isfinite(v)},
                        accepted=[n for n in str(getattr(row, ACCEPTED_COLUMN, "") or "").split(";") if n])


def write_classes(out_dir: Path, classes: ClassInfo) -> None:
    """Record the export's class metadata (``saseg_classes.json``), for ``saseg labels import``."""
    write_json(Path(out_dir) / CLASSES_FILE, classes.to_dict())


def read_classes(export_dir: Path) -> ClassInfo:
    """The classes an export's masks use (``saseg_classes.json``)."""
    path = Path(export_dir) / CLASSES_FILE
    if not path.is_file():
        raise DataError(f"Expected {path} (written by `saseg export`), but it does not exist: "
                        "point --export at the folder `saseg export` wrote, or re-export it.")
    return ClassInfo.from_dict(read_json(path))



def check_prediction(prediction, classes: ClassInfo, frame_id: str) -> np.ndarray:
    """A (H, W) int64 class-id mask, or a DataError naming the frame."""
    prediction = np.asarray(prediction)
    if prediction.ndim != 2 or prediction.size == 0 or not (
        np.issubdtype(prediction.dtype, np.integer) or prediction.dtype == bool
    ):
        raise DataError(
            f"Frame {frame_id!r}: expected the prediction as an (H, W) integer class-id array, "
            f"but got shape {prediction.shape} and dtype {prediction.dtype}."
        )
    classes.validate_mask(prediction, where=f"Prediction for frame {frame_id!r}")
    return prediction.astype(np.int64)


def prune(folder: Path, keep: set[Path]) -> None:
    """Remove image files a previous export left in `folder` that this export did not write.

    Keeps an out dir from mixing two queues (CVAT would upload every file in ``images/``).
    """
    if not folder.is_dir():
        return
    keep = {p.resolve() for p in keep}
    for path in folder.iterdir():
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and path.resolve() not in keep:
            logger.info("Removing %s, left by an earlier export.", path)
            path.unlink()


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) uint8/uint16 or (H, W, 3) uint8 array (lossless)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_png(path: Path, array: np.ndarray) -> None:
    write_bytes(path, encode_png(array))


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"Expected a readable image at {path}, but got: {exc}") from None


def _write_frame(path: Path, frame_id: str, source: str, size: tuple[int, int],
                 image_for: ImageFn | None):
    """Write a non-file frame once; a file of the right size already there is reused."""
    if path.is_file():
        try:
            if image_size(path) == size:
                return size
        except DataError:
            pass
    if image_for is None:
        raise DataError(
            f"Frame {frame_id!r}: expected its source to be an image file, or an image_for "
            f"callable to render it, but source {source!r} is not a file and image_for is None."
        )
    image = np.asarray(image_for(frame_id))
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise DataError(
            f"Frame {frame_id!r}: expected image_for to return an (H, W, 3) uint8 array, but got "
            f"shape {image.shape} and dtype {image.dtype}."
        )
    write_png(path, image)
    return image.shape[:2]


def place_file(source: Path, target: Path, *, link: bool) -> Path:
    """Copy or hard-link `source` to `target` atomically; skip when identical already.

    A copy must not be the source's own inode (a link left by an earlier linking export).
    """
    if target.is_file():
        linked = os.path.samefile(source, target)
        identical = linked or filecmp.cmp(source, target, shallow=False)
        if identical and (link or not linked):
            return target
    if link:
        # A hard link is complete the moment it exists: link beside, then rename over.
        tmp = target.with_name(f".{target.name}.link.tmp")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
            os.replace(tmp, target)
            return target
        except OSError:
            tmp.unlink(missing_ok=True)
            logger.debug("Cannot hard-link %s; copying instead.", source)
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)
    return target
