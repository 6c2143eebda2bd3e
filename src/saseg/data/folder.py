"""Any folder of images, optionally with a parallel folder of labels.

Images are found recursively; the frame id is the path relative to IMAGES without the
image suffix (``drive0/frame_12``), and the label is ``LABELS/<frame id><label_suffix>``.
Frames are sorted naturally (``frame_2`` before ``frame_10``) so sequences play in order.
Without LABELS the folder is an unlabelled pool, the main use: frames to rank for labelling.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

from ..errors import DataError
from ..io import read_json
from .classes import ClassInfo, from_names
from .images import (IMAGE_EXTENSIONS, FileDataset, FileItem, natural_key, read_colour_label,
                     read_index_label, require_dir)
from .spec_format import format_spec


def load_classes(classes: str | Path | None = None, names: str | None = None,
                 ignore_index: int | None = 255) -> ClassInfo | None:
    """Class metadata from a JSON file (`ClassInfo.from_dict`) or comma-separated names.

    `ignore_index` applies to `names`; a metadata file declares its own. None when neither
    is given.
    """
    if classes is not None and names is not None:
        raise DataError(f"Expected class metadata from classes= or names=, but got both "
                        f"({classes} and {names!r}).")
    if classes is not None:
        if not Path(classes).is_file():
            raise DataError(f"Expected a class metadata JSON file at {classes}, but there is none.")
        return ClassInfo.from_dict(read_json(classes))
    if names is not None:
        parsed = [n.strip() for n in str(names).split(",") if n.strip()]
        if not parsed:
            raise DataError(f"Expected comma-separated class names, but got {names!r}.")
        return from_names(parsed, ignore_index=ignore_index)
    return None


def class_options(classes, names, ignore_index) -> dict:
    """The class options as they appear in a canonical spec (defaults left out)."""
    return {
        "classes": os.path.abspath(classes) if classes is not None else None,
        "names": names,
        "ignore_index": ("none" if ignore_index is None else ignore_index)
        if names is not None and ignore_index != 255 else None,
    }


def _walk_files(root: Path):
    """Every file below `root`, entering symlinked folders (a split is often assembled from
    links to sequence folders; ``Path.rglob`` on Python < 3.13 does not follow them). A folder
    already being walked (same device and inode: a link loop) is not entered again."""
    active: set[tuple[int, int]] = set()

    def walk(folder: Path):
        try:
            stat = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        key = (stat.st_dev, stat.st_ino)
        if key in active:
            return
        active.add(key)
        for entry in entries:
            path = folder / entry.name
            if entry.is_dir(follow_symlinks=True):
                yield from walk(path)
            else:
                yield path
        active.discard(key)

    yield from walk(root)


def _find_images(root: Path, image_suffix: str | None) -> list[tuple[str, Path]]:
    found = []
    for path in _walk_files(root):
        rel = path.relative_to(root).as_posix()
        if image_suffix is not None:
            if rel.endswith(image_suffix) and path.is_file():
                found.append((rel[: -len(image_suffix)], path))
        elif path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            found.append((rel[: -len(path.suffix)], path))
    return sorted(found, key=lambda pair: natural_key(pair[0]))


def open_folder(images: str | Path, labels: str | Path | None = None, *,
                image_suffix: str | None = None, label_suffix: str = ".png",
                classes: str | Path | None = None, names: str | None = None,
                ignore_index: int | None = 255, label_format: str = "index",
                on_error: str = "raise") -> FileDataset:
    """Open a folder of images (and labels).

    Parameters
    ----------
    images, labels : str or Path
        Image root and (optional) label root, searched recursively.
    image_suffix : str, optional
        File name ending that marks images, e.g. ``_image.jpg``; default any image extension.
    label_suffix : str
        Appended to the frame id to find its label, e.g. ``_label.png``.
    classes, names, ignore_index
        Class metadata (see `load_classes`); required when there are labels.
    label_format : {"index", "colour"}
        Labels as single-channel class-index PNGs, or RGB images in the class colours.
    """
    root = require_dir(Path(images).expanduser(), "an image folder")
    info = load_classes(classes, names, ignore_index)
    labels_root = None
    if labels is not None:
        labels_root = require_dir(Path(labels).expanduser(), "a label folder")
        if info is None:
            raise DataError(f"Expected class metadata (classes=meta.json or names=a,b,...) for the "
                            f"labels in {labels_root}, but got none.")
    if label_format not in ("index", "colour"):
        raise DataError(f"Expected label_format 'index' or 'colour', but got {label_format!r}.")
    found = _find_images(root, image_suffix)
    if not found:
        raise DataError(f"Expected images ({image_suffix or '/'.join(IMAGE_EXTENSIONS)}) under "
                        f"{root}, but found none.")
    items = [FileItem(fid, path, labels_root / f"{fid}{label_suffix}" if labels_root else None,
                      fid.rpartition("/")[0]) for fid, path in found]
    read_label = read_index_label
    if label_format == "colour":
        read_label = partial(read_colour_label, classes=info)
    options = {
        "image_suffix": image_suffix,
        "label_suffix": label_suffix if label_suffix != ".png" else None,
        "label_format": label_format if label_format != "index" else None,
        **class_options(classes, names, ignore_index),
    }
    spec = format_spec("folder", [os.path.abspath(root),
                                  os.path.abspath(labels_root) if labels_root else None], options)
    return FileDataset(items, classes=info, spec=spec, on_error=on_error, read_label=read_label,
                       labelled=labels_root is not None)
