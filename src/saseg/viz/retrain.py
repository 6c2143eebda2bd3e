"""The retraining figure (RQ3, paper Tables 4-5 as curves): target IoU against frames added.

matplotlib is imported inside the function and used without pyplot (a bare ``Figure`` on
the Agg canvas), so nothing here touches global plotting state or needs a display.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path

__all__ = ["plot_retrain"]


def plot_retrain(summary: pd.DataFrame, path: str | PathLike, *, dpi: int = 100) -> Path:
    """One panel per target class: test IoU against frames added, one line per level.

    Each line is the mean over seeds with error bars of one sample std; lines are dodged
    by 2% in x so bars at equal sizes stay apart. The base models (``level == "base"``)
    are a dashed grey line with a +-1 std band.

    Parameters
    ----------
    summary : DataFrame from `saseg.experiment.summarise`
        ``target``, ``level``, ``n_added``, ``target_iou_mean``, ``target_iou_std``.
    path : output PNG path (written atomically)
    dpi : int

    Returns
    -------
    Path of the PNG.
    """
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(summary["target"]))
    fig = Figure(figsize=(5 * len(targets), 4))
    axes = fig.subplots(1, len(targets), squeeze=False)
    for ax, target in zip(axes[0], targets):
        part = summary[summary["target"] == target]
        base = part[part["level"] == "base"]
        if len(base):
            m, s = float(base["target_iou_mean"].iloc[0]), float(np.nan_to_num(base["target_iou_std"].iloc[0]))
            ax.axhline(m, color="grey", ls="--", label="base")
            ax.axhspan(m - s, m + s, color="grey", alpha=0.15)
        levels = [lv for lv in dict.fromkeys(part["level"]) if lv != "base"]
        for j, level in enumerate(levels):
            rows = part[part["level"] == level].sort_values("n_added")
            dodge = 1 + 0.02 * (j - (len(levels) - 1) / 2)
            ax.errorbar(rows["n_added"] * dodge, rows["target_iou_mean"],
                        yerr=rows["target_iou_std"].fillna(0), marker="o", capsize=3, label=level)
        ax.set(title=f"{target}: IoU after retraining", xlabel="frames added", ylabel="test IoU")
        ax.legend()
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path
