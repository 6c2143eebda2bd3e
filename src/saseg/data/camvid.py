"""CamVid in the SegNet layout: ``PATH/{split}/*.png|jpg`` and ``PATH/{split}annot/*.png``.

Frames are named ``<sequence>_<frame number>`` (``0001TP_006690``, ``Seq05VD_f00030``) and
are ordered by sequence, then frame number, so each sequence plays back as a video.
Labels are uint8 class indices 0..10 with 11 = unlabelled (`saseg.data.classes.CAMVID`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError
from .classes import CAMVID
from .images import IMAGE_EXTENSIONS, FileDataset, FileItem, natural_key, require_dir
from .spec_format import format_spec


def camvid_splits(root: str | Path) -> list[str]:
    """Splits present under `root`: folders ``X`` that have an ``Xannot`` beside them."""
    root = Path(root)
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and (root / f"{d.name}annot").is_dir())


def _order(stem: str) -> tuple:
    sequence, _, number = stem.partition("_")
    return natural_key(sequence), natural_key(number)


def open_camvid(path: str | Path, *, split: str | None = None,
                on_error: str = "raise") -> FileDataset:
    """Open one split of a CamVid folder.

    Parameters
    ----------
    path : str or Path
        The folder holding ``train/``, ``trainannot/``, ``val/``, ...
    split : str
        Required: the folders are separate splits, and mixing them would leak test frames.

    Returns
    -------
    FileDataset
        Frame ids are file stems; ``dataset.sequence(i)`` gives the drive (``0001TP``).
    """
    root = require_dir(Path(path).expanduser(), "a CamVid folder")
    splits = camvid_splits(root)
    if split is None:
        raise DataError(
            f"Expected a CamVid split (camvid:{root}:SPLIT), one of {splits}, but got none."
        )
    images_dir = root / split
    if not images_dir.is_dir():
        raise DataError(
            f"Expected the CamVid split folder {images_dir}, but it does not exist; "
            f"available splits: {splits}."
        )
    labels_dir = require_dir(root / f"{split}annot", "the CamVid label folder")
    images = sorted((p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS),
                    key=lambda p: _order(p.stem))
    if not images:
        raise DataError(f"Expected CamVid images in {images_dir}, but the folder has none.")
    items = [FileItem(p.stem, p, labels_dir / f"{p.stem}.png", p.stem.partition("_")[0])
             for p in images]
    return FileDataset(items, classes=CAMVID, on_error=on_error,
                       spec=format_spec("camvid", [os.path.abspath(root), split]))
