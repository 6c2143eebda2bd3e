"""The audit's plot: how wide the mIoU interval is for each number of labelled frames."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import pandas as pd

from ..io import atomic_path

__all__ = ["plot_widths"]


def plot_widths(widths: pd.DataFrame, path: str | PathLike, *, level: float, n: int, dpi: int = 110) -> Path:
    """Interval width against labelled frames, PPI++ beside labels-only (``widths.csv`` of an audit).

    widths : DataFrame with ``n``, ``ppi_width``, ``labels_only_width``; the measured n is marked.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.6, 3.6), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    ax.plot(widths["n"], widths["ppi_width"], color="tab:green", label="labels + predictions (PPI++)")
    ax.plot(widths["n"], widths["labels_only_width"], color="tab:grey", ls="--", label="labels only")
    at = widths[widths["n"] == n]
    ax.scatter(at["n"], at["ppi_width"], color="tab:green", zorder=3, label=f"measured, n = {n}")
    ax.set_xscale("log")
    ax.set_xlabel("labelled frames")
    ax.set_ylabel(f"width of the {level * 100:g} % interval (mIoU)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path
