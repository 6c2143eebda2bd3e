"""Image and label decoding shared by the file-based readers, and the dataset they share.

Every failure names the file: a reader may meet thousands of frames, and "cannot decode"
without a path is useless. Errors carry ``where`` (the frame id) so that
``on_error="skip"`` can record what it skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
from PIL import Image

from ..errors import DataError
from .base import Dataset, Frame
from .classes import ClassInfo

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def data_error(message: str, where: str | Path) -> DataError:
    """A DataError that remembers which frame or file it is about."""
    exc = DataError(message)
    exc.where = str(where)
    return exc


def natural_key(text: str) -> list:
    """Sort key that orders ``frame_2`` before ``frame_10``.

    ``re.split`` with a capture group alternates text and digits, so keys of any two strings
    compare str with str and int with int.
    """
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", text))]


MAX_PIXELS_ENV = "SASEG_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000
"""Largest image decoded (pixels, from the header, before decoding): an 8K frame is 33 M.

PIL's own bomb limit is 179 M pixels, 540 MB of RGB for a file of a few hundred bytes; a
driving frame needs far less. ``$SASEG_MAX_IMAGE_PIXELS`` raises or lowers the cap."""


def max_image_pixels() -> int:
    text = os.environ.get(MAX_PIXELS_ENV)
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"Expected ${MAX_PIXELS_ENV} to be a positive integer, but got {text!r}.")
    return value


def _open(path: Path):
    """Fully decode an image file; PIL is lazy, so ``load()`` is what finds truncation.

    The size is checked from the header before any pixel is decoded, and a PNG whose image
    data ends before its last row is an error (PIL would pad it with black).
    """
    cap = max_image_pixels()
    if Image.MAX_IMAGE_PIXELS is not None and cap > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = cap  # PIL refuses beyond twice its own limit: saseg's cap decides
    try:
        with warnings.catch_warnings():  # PIL warns from the header on; the cap below decides
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            try:
                img = Image.open(path)
            except Image.DecompressionBombError as exc:  # beyond PIL's own limit (179 M pixels)
                declared = re.search(r"\((\d+) pixels\)", str(exc))
                size = f"{int(declared.group(1)):,} pixels" if declared else "more pixels"
                raise data_error(f"Expected an image of at most {cap:,} pixels at {path}, but its "
                                 f"header declares {size}; set ${MAX_PIXELS_ENV} to allow larger "
                                 "images.", path) from None
        with img:
            w, h = img.size
            if w * h > cap:
                raise data_error(f"Expected an image of at most {cap:,} pixels at {path}, "
                                 f"but its header declares {w}x{h} ({w * h:,}); set "
                                 f"${MAX_PIXELS_ENV} to allow larger images.", path)
            img.load()
            if img.format == "PNG":
                check_png_rows(path)
            return img.copy()
    except FileNotFoundError:
        raise data_error(
            f"Expected an image file at {path}, but it does not exist.", path) from None
    except (OSError, ValueError, SyntaxError, zlib.error, Image.DecompressionBombError) as exc:
        raise data_error(
            f"Expected a readable image at {path}, but it is unreadable or truncated ({exc}).", path
        ) from None


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def check_png_rows(path: Path) -> None:
    """Raise unless a PNG's compressed data holds every row its header declares.

    The inflated IDAT stream must be ``sum over passes of rows * (1 + bytes per row)`` long
    (one pass, or Adam7's seven when interlaced).
    """
    data = Path(path).read_bytes()
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body[:13])
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise data_error(f"Expected a PNG header (IHDR) in {path}, but found none.", path)
    width, height, depth, colour, _, _, interlace = header
    bits = depth * _PNG_CHANNELS.get(colour, 1)
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        w, h = max(0, (width - x0 + dx - 1) // dx), max(0, (height - y0 + dy - 1) // dy)
        if w and h:
            expected += h * (1 + (w * bits + 7) // 8)
    inflater = zlib.decompressobj()
    got = len(inflater.decompress(b"".join(idat), expected + 1))
    if got < expected:
        rows = got * height // max(expected, 1)
        raise data_error(f"Expected {height} rows of image data in {path}, as its header declares, "
                         f"but the file holds only about {rows}: it is truncated.", path)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array (grey, palette and alpha converted)."""
    img = _open(Path(path))
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def read_index_label(path: str | Path) -> np.ndarray:
    """Read a single-channel class-index PNG as an (H, W) int64 array.

    Palette PNGs give their indices, not their colours: that is how index labels are
    commonly stored.
    """
    img = _open(Path(path))
    if img.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
        raise data_error(
            f"Expected a single-channel class-index label at {path}, but got mode {img.mode}"
            " (use label_format=colour for colour-coded labels).", path
        )
    return np.asarray(img).astype(np.int64)


def read_colour_label(path: str | Path, classes: ClassInfo) -> np.ndarray:
    """Read a colour-coded label and map each RGB colour to its class id, (H, W) int64.

    Black maps to the ignore index when black is no class colour (the inverse of
    `ClassInfo.colourise`). Any other colour that no class declares is an error.
    """
    rgb = np.asarray(_open(Path(path)).convert("RGB")).astype(np.int64)
    keys = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    lookup = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(classes.colours)}
    if classes.ignore_index is not None:
        lookup.setdefault(0, classes.ignore_index)
    values, inverse = np.unique(keys, return_inverse=True)
    unknown = [v for v in values.tolist() if v not in lookup]
    if unknown:
        shown = [((v >> 16) & 255, (v >> 8) & 255, v & 255) for v in unknown[:5]]
        raise data_error(
            f"{path}: expected only the class colours {list(classes.colours)}, but got "
            f"{len(unknown)} unknown colour(s) {shown}.", path
        )
    ids = np.array([lookup[v] for v in values.tolist()], dtype=np.int64)
    return ids[inverse].reshape(keys.shape)


class FileItem(NamedTuple):
    """Where one frame lives: its id, image file, label file (or None) and sequence name."""

    frame_id: str
    image: Path
    label: Path | None
    sequence: str = ""


class FileDataset(Dataset):
    """Frames read lazily from image files, with labels matched to them when there are any.

    Parameters
    ----------
    items : sequence of FileItem
        In sequence order; ``items[i]`` becomes frame ``i``.
    classes : ClassInfo or None
        What label values mean; None only for unlabelled data whose classes come later
        (from the model).
    read_label : callable Path -> ndarray of shape (H, W), int64, optional
        Decoder for label files; default `read_index_label`.
    labelled : bool
        Whether every frame must have a label. Images whose label file is missing fail
        at open (``on_error="raise"``) or are recorded in ``skipped`` and left out.
    """

    def __init__(
        self,
        items: Sequence[FileItem],
        *,
        classes: ClassInfo | None,
        spec: str = "",
        on_error: str = "raise",
        read_label: Callable[[Path], np.ndarray] | None = None,
        labelled: bool = True,
    ):
        super().__init__(classes=classes, spec=spec, on_error=on_error)
        self.read_label = read_label or read_index_label
        self.labelled = labelled
        items = list(items)
        seen: dict[str, Path] = {}
        for it in items:
            if it.frame_id in seen:
                raise data_error(
                    f"Expected unique frame ids, but {seen[it.frame_id]} and {it.image} "
                    f"both give {it.frame_id!r}.", it.image
                )
            seen[it.frame_id] = it.image
        if labelled:
            missing = [it for it in items if it.label is None or not it.label.is_file()]
            if missing and on_error == "raise":
                raise data_error(
                    f"Expected a label for every image, but {len(missing)} image(s) have none, "
                    f"e.g. {missing[0].image} has no {missing[0].label}.", missing[0].frame_id
                )
            for it in missing:
                self.skipped.append((it.frame_id, f"no label file {it.label} for {it.image}"))
                logger.warning("Skipping %s: no label file %s", it.image, it.label)
            gone = {it.frame_id for it in missing}
            items = [it for it in items if it.frame_id not in gone]
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def fingerprint(self) -> dict:
        """Adds ``files_sha256``: a hash of each image file's size and modification time.

        A ``stat`` per file (4 ms for CamVid's 1,403 files), not a read: hashing the content
        would read the whole pool at every start and resume (211 MB/s measured, so about 2.5
        minutes for a 30 GB pool). Size and mtime catch a frame replaced or re-exported
        between a crash and the resume; a file rewritten with the same size and mtime is not.
        """
        out = super().fingerprint()
        digest = hashlib.sha256()
        for it in self.items:
            try:
                stat = it.image.stat()
                key = f"{stat.st_size}:{stat.st_mtime_ns}"
            except OSError:
                key = "missing"
            digest.update(f"{it.frame_id}\0{key}\0".encode("utf-8", "surrogatepass"))
        out["files_sha256"] = digest.hexdigest()
        return out

    def frame_id(self, i: int) -> str:
        return self.items[i].frame_id

    def sequence(self, i: int) -> str:
        """Name of the sequence (drive, folder) that frame i belongs to."""
        return self.items[i].sequence

    @property
    def has_labels(self) -> bool:
        return self.labelled

    def _load(self, i: int) -> Frame:
        item = self.items[i]
        try:
            image = read_image(item.image)
            label = None
            if self.labelled:
                label = self.read_label(item.label)
                if label.shape != image.shape[:2]:
                    raise data_error(
                        f"Expected the label {item.label} to have its image's size "
                        f"{image.shape[1]}x{image.shape[0]} (WxH, {item.image}), but got "
                        f"{label.shape[1]}x{label.shape[0]}.", item.frame_id
                    )
                self.classes.validate_mask(label, where=str(item.label))
        except DataError as exc:  # UnknownClassError included
            exc.where = item.frame_id
            raise
        return Frame(frame_id=item.frame_id, index=i, image=image, label=label,
                     source=str(item.image))


def require_dir(path: Path, what: str) -> Path:
    """Return `path` if it is a folder, else a DataError naming it."""
    if not path.is_dir():
        raise data_error(f"Expected {what} at {path}, but there is no such folder.", path)
    return path
