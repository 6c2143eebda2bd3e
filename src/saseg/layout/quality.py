"""A quality folder (``saseg quality fit -o Q``): the one place that spells its file names::

    Q/run_quality.json          targets and their folders, classes, score columns, the pilot
    Q/<target>/                 one `saseg.quality.QualityModel` per target (``class``,
                                ``frame``, ``group<i>``; the model writes its own files)
    Q/<target>/oof.parquet      out-of-fold predictions on the pilot (``key``, ``oof``)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import FormatError

__all__ = ["QualityDir"]


class QualityDir:
    """Paths of one quality folder (layout in the module docstring)."""

    SUMMARY = "run_quality.json"
    OOF = "oof.parquet"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"QualityDir({str(self.root)!r})"

    @property
    def summary_path(self) -> Path:
        return self.root / self.SUMMARY

    @staticmethod
    def target_folder(target: str, position: int) -> str:
        """The folder name of a target: ``class``, ``frame``, or ``group<position>``."""
        return target if target in ("class", "frame") else f"group{position}"

    def model_dir(self, folder: str) -> Path:
        """A target's model folder, refusing any name `target_folder` would not write."""
        if not re.fullmatch(r"class|frame|group\d+", str(folder)):
            raise FormatError(f"{self.summary_path}: bad target folder {folder!r}.")
        return self.root / folder

    def oof_path(self, folder: str) -> Path:
        return self.model_dir(folder) / self.OOF
