"""CVAT's "Segmentation mask 1.1" export read back (its documented layout, as datumaro writes it).

The zip (or its unzipped folder) holds ``labelmap.txt`` (``name:r,g,b:parts:actions`` lines,
``background`` black), ``ImageSets/Segmentation/default.txt`` (the frame names) and
``SegmentationClass/<name>.png`` (RGB, each pixel the colour of its label). A frame without a
class PNG, or painted only with background, is unlabelled. Names map to frame ids through
the export's ``cvat_frames.json``; colours map to classes through ``labelmap.txt`` by label
name, so a label recoloured in CVAT still lands on its class.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from ..data.classes import ClassInfo
from ..errors import DataError, FormatError
from ..io import read_json
from .labels import Annotated, ExportedFrame, exported_frame

BACKGROUND = "background"


def cvat_frames(export_dir: Path) -> tuple[dict[str, ExportedFrame], dict[str, str]]:
    """The export's frames (frame id -> image) and CVAT's frame names (name -> frame id)."""
    names = read_json(export_dir / "cvat_frames.json")
    if not isinstance(names, dict):
        raise FormatError(f"{export_dir / 'cvat_frames.json'}: expected {{CVAT frame name: frame id}} as "
                          "`saseg export --to cvat` writes it, but got another layout.")
    path = export_dir / "images" / "manifest.jsonl"
    try:
        manifest = path.read_text(encoding="utf-8").splitlines()
        suffix = {e["name"]: e["extension"] for e in map(json.loads, manifest[2:]) if "name" in e}
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as exc:
        raise FormatError(f"{path}: expected CVAT's image manifest as `saseg export --to cvat` writes it, but it "
                          f"cannot be read ({type(exc).__name__}).") from None
    frames = {str(fid): exported_frame(export_dir / "images" / f"{name}{suffix.get(name, '.png')}", fid)
              for name, fid in names.items()}
    return frames, {str(k): str(v) for k, v in names.items()}


def read_segmentation_mask(path: Path, classes: ClassInfo, names: dict[str, str]) -> Iterator[Annotated | str]:
    """Decode each frame of a Segmentation mask 1.1 export (a str is a refused frame's line)."""
    read = _reader(Path(path))
    try:
        labelmap = parse_labelmap(read("labelmap.txt").decode("utf-8"))
        listed = read("ImageSets/Segmentation/default.txt").decode("utf-8").split()
    except KeyError as exc:
        raise FormatError(f"Expected CVAT's Segmentation mask 1.1 export at {path}, but it lacks "
                          f"{exc}.") from None
    except UnicodeDecodeError as exc:
        raise FormatError(f"Expected CVAT's Segmentation mask 1.1 export at {path}, but its labelmap.txt or "
                          f"default.txt is not UTF-8 text ({exc.reason} at byte {exc.start}).") from None
    lookup, unknown = {}, {}
    for name, colour in labelmap.items():
        key = (colour[0] << 16) | (colour[1] << 8) | colour[2]
        if name == BACKGROUND:
            lookup[key] = -1
        elif name in classes.names:
            lookup[key] = classes.names.index(name)
        else:
            unknown[key] = name
    for name in listed:
        task = f"frame {name}"
        frame_id = names.get(name) or names.get(Path(name).name)
        if frame_id is None:
            yield f"{task}: not in this export's cvat_frames.json (another task's frame?)"
            continue
        try:
            data = read(f"SegmentationClass/{name}.png")
        except KeyError:
            yield Annotated(frame_id, task, None)
            continue
        try:
            with Image.open(io.BytesIO(data)) as png:
                mode = png.mode
                rgb = np.asarray(png.convert("RGB")).astype(np.int64)
        except (OSError, Image.DecompressionBombError) as exc:
            yield Annotated(frame_id, task, None, problem=f"{task}: unreadable class PNG ({exc})")
            continue
        if mode not in ("RGB", "RGBA", "P", "L"):  # PIL would clip 16-bit values onto some colour
            yield Annotated(frame_id, task, None, problem=f"{task}: expected an 8-bit colour class PNG, but it "
                            f"is {mode!r}")
            continue
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        values, inverse = np.unique(packed, return_inverse=True)
        strangers = [int(v) for v in values if int(v) not in lookup]
        if strangers:
            named = [unknown[v] for v in strangers if v in unknown]
            problem = (f"{task}: label {named[0]!r} is not a class of the export {list(classes.names)}"
                       if named else f"{task}: colours {[f'#{v:06x}' for v in strangers[:3]]} are "
                       "not in labelmap.txt")
            yield Annotated(frame_id, task, None, problem=problem)
            continue
        mask = np.array([lookup[int(v)] for v in values], dtype=np.int64)[inverse.reshape(packed.shape)]
        yield Annotated(frame_id, task, None if (mask < 0).all() else mask, name)


def parse_labelmap(text: str) -> dict[str, tuple[int, int, int]]:
    """``labelmap.txt`` to label name -> RGB colour."""
    colours = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        try:
            colour = tuple(int(v) for v in parts[1].split(","))
            if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
                raise ValueError(colour)
            colours[parts[0]] = colour
        except (IndexError, ValueError):
            raise FormatError(f"Expected labelmap.txt lines 'name:r,g,b:parts:actions', but got "
                              f"{line!r}.") from None
    return colours


def _reader(path: Path):
    """name -> bytes from the export zip or its unzipped folder; KeyError when absent."""
    if path.is_dir():
        def read(name: str) -> bytes:
            file = path / name
            if not file.is_file():
                raise KeyError(name)
            return file.read_bytes()
        return read
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"Expected CVAT's Segmentation mask 1.1 export (a zip or a folder) at "
                        f"{path}, but got: {exc}") from None
    return archive.read
