"""Label Studio's exports read back: JSON (brush RLE) and PNG (one 0/255 file per region).

* JSON (Export > JSON): the task list; each task's ``data.frame_id`` is the one saseg wrote,
  each annotation's ``brushlabels`` regions decode with `saseg.export.rle`.
* PNG (Export > Brush labels to PNG): ``task-<task id>-annotation-<id>-by-<user>-<from name>-
  <label>-<n>.png`` per region (``label_studio_sdk.converter.brush``; ``/`` in a label becomes
  ``-``), in a zip or a folder. The names hold Label Studio's task ids, not frame ids: the
  map comes from ``labelstudio_tasks.json``, which ``import_labelstudio.py`` writes into the
  export, or from a JSON export of the same project (`task_frames`).

Regions paint in the order Label Studio draws them: a later region covers an earlier one
(JSON: result order). The PNG export keeps no such order, so a task whose regions of two
classes overlap is refused there (import the JSON export).
Skipped (cancelled) annotations are not labels.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from collections import defaultdict
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

import numpy as np
from PIL import Image

from ..data.classes import ClassInfo
from ..errors import DataError, FormatError
from ..io import read_json
from . import rle
from .labels import Annotated, ExportedFrame, exported_frame, pick_annotation
from .labelstudio import FROM_NAME, LOCAL_FILES_URL, TASK_MAP, brush_results, document_root, storage_settings
from .queue import read_classes

PNG_NAME = re.compile(r"task-(\d+)-annotation-(\d+)-by-[A-Za-z0-9@.]*-(.+)-(\d+)\.png")


def labelstudio_frames(export_dir: Path, root: str | os.PathLike | None = None) -> dict[str, ExportedFrame]:
    """Frame id -> image of each task in the export's ``tasks.json``.

    Image paths must lie below the document root, as Label Studio serves them: an edited
    ``?d=`` that is absolute or climbs out with ``..`` is refused, so an export cannot pull
    another file of the machine into the label set.
    """
    path = export_dir / "tasks.json"
    tasks = read_json(path)
    if not isinstance(tasks, list) or not all(
            isinstance(t, dict) and isinstance(t.get("data"), dict) and isinstance(t["data"].get("image"), str)
            and isinstance(t["data"].get("frame_id"), (str, int)) for t in tasks):
        raise FormatError(f"{path}: expected the task list `saseg export --to labelstudio` writes (data.frame_id "
                          "and data.image in every task), but got another layout.")
    base = document_root(export_dir, root)
    prefix = (storage_settings(export_dir).get("url_prefix") or "").rstrip("/")
    starts = [LOCAL_FILES_URL] + ([prefix + "/"] if prefix else [])
    frames = {}
    for task in tasks:
        frame_id, url = str(task["data"]["frame_id"]), task["data"]["image"]
        start = next((s for s in starts if url.startswith(s)), None)
        if start is None:
            raise DataError(f"Expected image URLs starting with {starts} in {path}, but frame {frame_id!r} "
                            f"has {url!r}.")
        image = Path(os.path.normpath(base / unquote(url[len(start):])))
        if not image.is_relative_to(base) or image == base:
            raise DataError(f"Expected image paths below the document root {base} in {path}, but frame "
                            f"{frame_id!r} has {url!r} (Label Studio serves no file outside it).")
        frames[frame_id] = exported_frame(image, frame_id)
    return frames


def read_json_export(path: Path, classes: ClassInfo, *, pick: str = "refuse") -> Iterator[Annotated | str]:
    """Decode each task of a Label Studio JSON export (a str is a refused task's line)."""
    tasks = read_json(path)
    if not isinstance(tasks, list) or not all(isinstance(t, dict) and "data" in t for t in tasks):
        raise FormatError(f"Expected Label Studio's JSON export (a list of tasks with data and "
                          f"annotations) in {path}, but got another layout (JSON_MIN? use JSON).")
    for task in tasks:
        name = f"task {task.get('id')}"
        frame_id = task["data"].get("frame_id") if isinstance(task["data"], dict) else None
        if frame_id is None:
            yield f"{name}: no data.frame_id (not a task saseg exported)"
            continue
        try:
            yield _decode_task(task, str(frame_id), name, classes, pick)
        except (DataError, FormatError) as exc:
            yield Annotated(str(frame_id), name, None, problem=str(exc))
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:  # an edited export
            yield Annotated(str(frame_id), name, None, problem=f"{name}: not the layout of Label Studio's JSON "
                            f"export ({type(exc).__name__}: {' '.join(str(exc).split())})")


def _decode_task(task: dict, frame_id: str, name: str, classes: ClassInfo, pick: str) -> Annotated:
    """One task of a JSON export: its annotation painted, or unlabelled."""
    done = [a for a in task.get("annotations") or [] if not (a.get("was_cancelled") or a.get("skipped"))]
    if not done:
        return Annotated(frame_id, name, None)
    annotation = pick_annotation(done, pick, name, key=lambda a: int(a.get("id") or 0))
    mask = paint_results(annotation.get("result") or [], classes, name)
    return Annotated(frame_id, name, mask, str(annotation.get("id")))


def paint_results(results: list, classes: ClassInfo, task: str) -> np.ndarray:
    """Class ids (H, W) from an annotation's brush regions, -1 where none; DataError if bad."""
    regions = [r for r in results if r.get("from_name") == FROM_NAME]
    if not regions:
        raise DataError(f"{task}: the annotation has no brush regions")
    sizes = {(int(r["original_height"]), int(r["original_width"])) for r in regions}
    if len(sizes) != 1:
        raise DataError(f"{task}: regions of different image sizes {sorted(sizes)}")
    (height, width), = sizes
    if not (0 < height and 0 < width and height * width <= Image.MAX_IMAGE_PIXELS):
        raise DataError(f"{task}: regions of an image of {width}x{height} pixels (expected a frame's size, at "
                        f"most PIL's {Image.MAX_IMAGE_PIXELS:,} pixels)")
    mask = np.full((height, width), -1, dtype=np.int64)
    for region in regions:
        value = region.get("value") or {}
        if region.get("type") != "brushlabels" or value.get("format") != "rle":
            raise DataError(f"{task}: expected brush (RLE) regions, but got a {region.get('type')!r} "
                            "region")
        names = value.get("brushlabels") or []
        if len(names) != 1:
            raise DataError(f"{task}: expected one label per brush region, but got {names}")
        try:
            painted = rle.decode(value["rle"], height, width)
        except (DataError, FormatError) as exc:
            raise DataError(f"{task}: {exc}") from None
        mask[painted] = class_by_name(names[0], classes, task)
    return mask


def class_by_name(name: str, classes: ClassInfo, task: str) -> int:
    if name not in classes.names:
        raise DataError(f"{task}: label {name!r} is not a class of the export {list(classes.names)}")
    return classes.names.index(name)


def task_frames(export_dir: Path, tasks: str | os.PathLike | None = None) -> dict[int, str]:
    """Label Studio task id -> frame id: from a JSON export `tasks`, or the import's record."""
    if tasks is not None:
        exported = read_json(tasks)
        try:
            return {int(t["id"]): str(t["data"]["frame_id"]) for t in exported
                    if "id" in t and "frame_id" in (t.get("data") or {})}
        except (AttributeError, KeyError, TypeError, ValueError):
            raise FormatError(f"Expected Label Studio's JSON export (a task list with ids) in {tasks}, but "
                              "got another layout.") from None
    path = export_dir / TASK_MAP
    if not path.is_file():
        raise DataError(f"Expected {path} (written by import_labelstudio.py) to map Label Studio "
                        "task ids to frames, but it does not exist: pass --tasks with a JSON "
                        "export of the same project.")
    try:
        return {int(k): str(v) for k, v in read_json(path)["tasks"].items()}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise FormatError(f"{path}: expected {{\"tasks\": {{task id: frame id}}}} as import_labelstudio.py "
                          "writes it, but got another layout.") from None


def read_png_export(path: Path, classes: ClassInfo, frames_of: dict[int, str], *,
                    pick: str = "refuse") -> Iterator[Annotated | str]:
    """Decode a Label Studio PNG export (zip or folder) task by task."""
    files = _png_files(path)
    by_task: dict[int, dict[int, list]] = defaultdict(lambda: defaultdict(list))
    for name in files:
        match = PNG_NAME.fullmatch(Path(name).name)
        if not match or not match.group(3).startswith(FROM_NAME + "-"):
            yield f"{name}: not a Label Studio brush PNG of this export's config"
            continue
        task, annotation, label, n = match.groups()
        by_task[int(task)][int(annotation)].append((label[len(FROM_NAME) + 1:], int(n), name))
    # "/" in a label becomes "-" in the file name; two classes may not then share a name.
    sanitized = {n.replace("/", "-").replace("\\", "-"): n for n in classes.names}
    for task in sorted(by_task):
        name = f"task {task}"
        frame_id = frames_of.get(task)
        if frame_id is None:
            yield f"{name}: not a task of this export (no frame id recorded for it)"
            continue
        try:
            annotation = pick_annotation(sorted(by_task[task]), pick, name)
            regions = by_task[task][annotation]
            mask = None
            for label, _, file in sorted(regions, key=lambda r: r[1]):
                class_id = _class_of_file_label(label, sanitized, classes, name)
                with Image.open(io.BytesIO(files[file]())) as png:
                    layer = np.asarray(png.convert("L")) > 0
                if mask is None:
                    mask = np.full(layer.shape, -1, dtype=np.int64)
                elif layer.shape != mask.shape:
                    raise DataError(f"{name}: region PNGs of different sizes")
                clash = layer & (mask >= 0) & (mask != class_id)
                if clash.any():
                    raise DataError(
                        f"{name}: regions of {classes.names[int(mask[clash][0])]!r} and "
                        f"{classes.names[class_id]!r} overlap on {int(clash.sum())} pixels, and the PNG "
                        "export keeps no drawing order: import the JSON export instead")
                mask[layer] = class_id
        except (DataError, OSError, Image.DecompressionBombError) as exc:
            problem = str(exc) if isinstance(exc, DataError) else f"{name}: unreadable PNG {file} ({exc})"
            yield Annotated(frame_id, name, None, problem=problem)
            continue
        yield Annotated(frame_id, name, mask, str(annotation))
    for task, frame_id in frames_of.items():
        if task not in by_task:
            yield Annotated(frame_id, f"task {task}", None)


def _class_of_file_label(label: str, sanitized: dict, classes: ClassInfo, task: str) -> int:
    if label not in sanitized:
        raise DataError(f"{task}: label {label!r} is not a class of the export {list(classes.names)}")
    return classes.names.index(sanitized[label])


def _png_files(path: Path) -> dict:
    """File name -> reader of its bytes, from a zip or a folder."""
    path = Path(path)
    if path.is_dir():
        return {p.name: p.read_bytes for p in sorted(path.rglob("*.png"))}
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FormatError(f"Expected Label Studio's PNG export (a zip or a folder) at {path}, "
                          f"but got: {exc}") from None
    return {n: (lambda n=n: archive.read(n)) for n in archive.namelist() if n.endswith(".png")}


def detect_format(path: Path) -> str:
    """``json`` or ``png``, from what `path` holds."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"Expected Label Studio's export at {path}, but it does not exist.")
    return "png" if path.is_dir() or zipfile.is_zipfile(path) else "json"


def simulated_json_export(export_dir: Path, label_for, *, first_task_id: int = 1) -> list[dict]:
    """What Label Studio's JSON export holds when labellers submit ``label_for(frame_id)`` for
    every task of an export (simulated labellers: the demo, tests).

    Parameters
    ----------
    label_for : callable frame_id -> ndarray of shape (H, W), int, or None
        The submitted class ids (ignore index unpainted); None: the task is skipped.
    """
    tasks = read_json(Path(export_dir) / "tasks.json")
    classes = read_classes(Path(export_dir))
    exported = []
    for n, task in enumerate(tasks):
        label = label_for(str(task["data"]["frame_id"]))
        annotation = {"id": first_task_id + n, "was_cancelled": label is None,
                      "result": [] if label is None else brush_results(np.asarray(label), classes,
                                                                         region_prefix=f"a{n}")}
        exported.append({"id": first_task_id + n, "data": task["data"],
                         "annotations": [annotation], "predictions": task.get("predictions", [])})
    return exported
