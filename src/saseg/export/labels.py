"""Labels back from a labelling tool: the tool's own export to a folder saseg opens.

`saseg.export.labels_import.import_labels` reads what Label Studio (`saseg.export.labels_ls`),
CVAT (`saseg.export.labels_cvat`) or FiftyOne (`saseg.export.labels_fo`) exported, maps each
task back to its frame id through the saseg export it was made from, and `write_labels`
writes a label set:

* ``images/<frame id>.<ext>`` - the frame the labeller saw (hard-linked or copied from the
  export);
* ``labels/<frame id>.png`` - class ids (8-bit, 16-bit past 255); pixels no region covers hold
  the ignore index;
* ``classes.json`` - the class metadata of the export (`ClassInfo.to_dict`);
* ``labels.json`` - per frame: the tool, task and annotation it came from.

``folder:OUT/images:OUT/labels?classes=OUT/classes.json`` (`LabelSet.spec`) opens it, so
``evaluate``, ``quality fit``, ``plan --calibration`` and ``train`` take it directly.
Frame ids become paths only through `frame_relpath`.

Rules. Only labelled tasks come back: a task with no annotation, or only skipped
(cancelled) ones, is counted as unlabelled. Two annotations for one task are refused, or with
``pick="latest"`` the most recently created one (highest annotation id) is taken. Classes
map by name. A task is refused, with one line, for: a class the export does not know, a
mask whose size is not the image's, a frame id the export does not hold, an annotation
with no regions. A refused task changes nothing already imported; importing the same export
twice writes the same files.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import read_json, write_json
from ..layout import frame_relpath
from .queue import image_size, place_file, write_png

logger = logging.getLogger(__name__)

PICK_RULES = ("refuse", "latest")


@dataclass
class Annotated:
    """One task as the tool exported it, decoded.

    Attributes
    ----------
    frame_id : str
    task : str
        The tool's name for the task (``task 12``, ``000003_frame.png``), for messages.
    mask : ndarray of shape (H, W), int64, or None
        Class ids, -1 where no region covers the pixel; None when unlabelled.
    annotation : str or None
        The tool's annotation id.
    problem : str or None
        Why the task is refused (one line), when it is.
    """

    frame_id: str
    task: str
    mask: np.ndarray | None
    annotation: str | None = None
    problem: str | None = None


@dataclass
class ImportReport:
    """What one import did: counts and one line per refused task."""

    tool: str
    out_dir: Path
    imported: list[str] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.refused

    def describe(self) -> str:
        line = (f"{self.tool}: {len(self.imported)} labelled frames imported, "
                f"{len(self.unlabelled)} unlabelled (no annotation, skipped, or not in the "
                f"tool's export), {len(self.refused)} refused")
        if self.unlabelled:
            line += f"\n  unlabelled: {self.unlabelled[:5]}" + (" ..." if len(self.unlabelled) > 5 else "")
        return line + "".join(f"\n  refused: {p}" for p in self.refused)


@dataclass
class ExportedFrame:
    """A frame of the saseg export: its image file, its size (H, W)."""

    image: Path
    size: tuple[int, int]


class LabelSet:
    """The label folder an import writes (layout in the module docstring)."""

    def __init__(self, root: str | os.PathLike, classes: ClassInfo):
        self.root = Path(root)
        self.classes = classes
        saved = self.root / "classes.json"
        if saved.is_file() and ClassInfo.from_dict(read_json(saved)) != classes:
            raise DataError(f"Expected the classes of {saved} to be the export's "
                            f"{list(classes.names)}, but they differ: import into another folder.")
        self.record = read_json(self.root / "labels.json") if (self.root / "labels.json").is_file() \
            else {"frames": {}}

    @property
    def spec(self) -> str:
        return label_spec(self.root)

    def write(self, frame_id: str, image: Path, label: np.ndarray, source: dict) -> None:
        """Place the frame's image and write its label; existing frames stay as they are."""
        stored_image = self.root / "images" / frame_relpath(frame_id, image.suffix.lower())
        stored_label = self.root / "labels" / frame_relpath(frame_id, ".png")
        place_file(image, stored_image, link=True)
        write_png(stored_label, label.astype(np.uint8 if label.max() < 256 else np.uint16))
        self.record["frames"][frame_id] = source

    def close(self) -> None:
        write_json(self.root / "classes.json", self.classes.to_dict())
        self.record["frames"] = dict(sorted(self.record["frames"].items()))
        write_json(self.root / "labels.json", self.record)


def label_spec(root: str | os.PathLike) -> str:
    """The dataset spec that opens a label folder (images, labels and their classes)."""
    root = Path(root).resolve()
    return f"folder:{root / 'images'}:{root / 'labels'}?classes={root / 'classes.json'}"


def to_label(mask: np.ndarray, classes: ClassInfo) -> np.ndarray:
    """Decoded class ids (-1 = no region) to a label: -1 becomes the ignore index.

    Raises
    ------
    DataError
        When pixels are unpainted and the classes have no ignore index.
    """
    unpainted = mask < 0
    if unpainted.any() and classes.ignore_index is None:
        raise DataError(f"{int(unpainted.sum())} pixels have no class and the classes have no "
                        "ignore index to mark them")
    return np.where(unpainted, classes.ignore_index if classes.ignore_index is not None else 0, mask)


def pick_annotation(candidates: list, pick: str, task: str, key=lambda a: a):
    """One of a task's annotations by the rule `pick`; DataError (one line) when refused."""
    if pick not in PICK_RULES:
        raise DataError(f"Expected pick in {list(PICK_RULES)}, but got {pick!r}.")
    if len(candidates) > 1 and pick == "refuse":
        raise DataError(f"{task}: {len(candidates)} annotations for one task (pass --pick latest "
                        "to take the most recent, or delete all but one in the tool)")
    return max(candidates, key=key)


def write_labels(tool: str, annotated: Iterable[Annotated | str], frames: dict[str, ExportedFrame],
                 classes: ClassInfo, out_dir: str | os.PathLike) -> ImportReport:
    """Check each decoded task against the export and write the good ones to `out_dir`.

    Parameters
    ----------
    annotated : iterable of Annotated, or str
        Decoded tasks; a str is a task the reader already refused (its one line).
    frames : dict frame_id -> ExportedFrame
        The frames the saseg export holds.
    """
    labels = LabelSet(out_dir, classes)
    report = ImportReport(tool, Path(out_dir))
    seen: set[str] = set()
    try:
        _write_each(annotated, frames, classes, labels, report, seen, tool)
    finally:  # what was written is recorded, even when a later task stops the import
        labels.close()
    report.unlabelled += sorted(set(frames) - seen)  # tasks the tool's export left out
    logger.info("Imported %d labels from %s into %s", len(report.imported), tool, out_dir)
    return report


def _write_each(annotated, frames, classes, labels, report, seen, tool) -> None:
    for item in annotated:
        if isinstance(item, str):
            report.refused.append(item)
            continue
        frame = frames.get(item.frame_id)
        if frame is None:
            report.refused.append(f"{item.task}: frame {item.frame_id!r} is not in the export "
                                  "(another queue's task?)")
            continue
        if item.problem is not None:
            seen.add(item.frame_id)
            report.refused.append(item.problem)
            continue
        if item.frame_id in seen:
            report.refused.append(f"{item.task}: frame {item.frame_id!r} comes twice in the tool's export")
            continue
        seen.add(item.frame_id)
        if item.mask is None:
            report.unlabelled.append(item.frame_id)
            continue
        if item.mask.shape != frame.size:
            report.refused.append(f"{item.task} (frame {item.frame_id!r}): mask is "
                                  f"{item.mask.shape[1]}x{item.mask.shape[0]}, the image "
                                  f"{frame.size[1]}x{frame.size[0]}")
            continue
        try:
            label = to_label(item.mask, classes)
        except DataError as exc:
            report.refused.append(f"{item.task} (frame {item.frame_id!r}): {exc}")
            continue
        labels.write(item.frame_id, frame.image, label,
                     {"tool": tool, "task": item.task, "annotation": item.annotation})
        report.imported.append(item.frame_id)


def exported_frame(image: Path, frame_id: str) -> ExportedFrame:
    """The export's image of a frame, checked readable."""
    if not image.is_file():
        raise DataError(f"Expected the image of frame {frame_id!r} at {image}, but it is missing "
                        "(moved export? pass --root, the folder the image paths are relative to).")
    return ExportedFrame(image, image_size(image))
