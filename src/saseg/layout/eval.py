"""An evaluation folder (``saseg evaluate -o EVAL``): the one place that spells its file names::

    EVAL/iou.parquet          one row per (frame, class or group): IoU, intersection, union
    EVAL/correlation.csv      RQ1: Spearman rho of every score with IoU (paper Table 3)
    EVAL/agreement.csv        rho of MDSA with LSA (when both were scored)
    EVAL/tradeoff.csv         RQ2: the cost of skipping the least surprising frames (Figure 9)
    EVAL/max_skip.csv         the largest skip ratio at a risk, per target and score
    EVAL/eval.json            summary: the run's scores path, data spec, mean and dataset IoU
    EVAL/iou_vs_<score>.png, EVAL/tradeoff_<score>.png
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import DataError, FormatError
from ..io import check_not_unfinished, read_json

__all__ = ["EvalDir"]


class EvalDir:
    """Paths and tables of one evaluation folder (layout in the module docstring)."""

    IOU = "iou.parquet"
    SUMMARY = "eval.json"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"EvalDir({str(self.root)!r})"

    @property
    def iou_path(self) -> Path:
        return self.root / self.IOU

    @property
    def summary_path(self) -> Path:
        return self.root / self.SUMMARY

    @property
    def correlation_path(self) -> Path:
        return self.root / "correlation.csv"

    @property
    def agreement_path(self) -> Path:
        return self.root / "agreement.csv"

    @property
    def tradeoff_path(self) -> Path:
        return self.root / "tradeoff.csv"

    @property
    def max_skip_path(self) -> Path:
        return self.root / "max_skip.csv"

    def iou_plot_path(self, score: str) -> Path:
        return self.root / f"iou_vs_{score}.png"

    def tradeoff_plot_path(self, score: str) -> Path:
        return self.root / f"tradeoff_{score}.png"

    @property
    def is_evaluated(self) -> bool:
        """Whether `evaluate` finished here (it writes ``eval.json`` last)."""
        return self.iou_path.is_file() and self.summary_path.is_file()

    def require(self, what: str = "a pilot eval dir") -> "EvalDir":
        """Self, or one `DataError` saying which files are missing."""
        if not self.is_evaluated:
            raise DataError(f"Expected {what} with {self.IOU} and {self.SUMMARY} (from `saseg "
                            f"evaluate`), but {self.root} lacks them.")
        return self

    def iou(self) -> pd.DataFrame:
        """``iou.parquet`` (`saseg.metrics.frame_iou` rows with ``frame_id`` and ``frame_index``);
        refused while `evaluate` writes the folder or after it was killed halfway."""
        check_not_unfinished(self.root)
        if not self.iou_path.is_file():
            raise DataError(f"Expected {self.iou_path} (from `saseg evaluate`), but it does not exist.")
        try:
            return pd.read_parquet(self.iou_path)
        except (OSError, ValueError) as exc:
            raise FormatError(f"Expected a Parquet table in {self.iou_path}, but it cannot be read: "
                              f"{exc}") from None

    def summary(self) -> dict:
        """``eval.json``: the summary `evaluate` returned."""
        summary = read_json(self.summary_path)
        if not isinstance(summary, dict):
            raise FormatError(f"{self.summary_path}: expected a JSON object, but got "
                              f"{type(summary).__name__}.")
        return summary
