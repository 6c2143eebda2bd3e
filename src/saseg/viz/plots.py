"""Analysis figures: IoU against SA (paper Figure 7) and the trade-off curves (Figure 9).

matplotlib is imported inside the functions and used without pyplot (a bare ``Figure`` on the
Agg canvas), so nothing here touches global plotting state or needs a display.
"""

from __future__ import annotations

import logging
import math
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..columns import require_columns
from ..errors import DataError
from ..io import atomic_path
from ..metrics import spearman

log = logging.getLogger(__name__)

__all__ = ["plot_iou_vs_sa", "plot_tradeoff", "plot_risk_coverage"]


def plot_iou_vs_sa(pairs: pd.DataFrame, path: str | PathLike, *, score: str = "mdsa",
                   correlations: pd.DataFrame | None = None, ncols: int = 3,
                   dpi: int = 110) -> Path:
    """Scatter each target's IoU against its SA, one panel per class or group.

    Parameters
    ----------
    pairs : DataFrame from `saseg.analysis.correlation.paired_table`
        ``target``, ``kind``, ``score``, ``sa``, ``iou``.
    path : output PNG path (written atomically)
    score : str
        Which score to plot.
    correlations : DataFrame from `correlation_table`, optional
        Source of rho and p for the titles; computed from ``pairs`` when None.
    ncols : int
        Panels per row.

    Returns
    -------
    Path of the PNG.
    """
    from matplotlib.figure import Figure

    require_columns(pairs, ["target", "kind", "score", "sa", "iou"], "pairs table")
    sub = pairs[pairs["score"] == score]
    if sub.empty:
        raise DataError(f"plot_iou_vs_sa: expected pairs for score {score!r}, but got scores "
                        f"{sorted(pairs['score'].unique().tolist())}.")
    targets = list(dict.fromkeys(zip(sub["target"], sub["kind"])))
    ncols = max(1, min(ncols, len(targets)))
    nrows = math.ceil(len(targets) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.4 * nrows), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, (target, kind) in zip(axes, targets):
        g = sub[(sub["target"] == target) & (sub["kind"] == kind)]
        ax.scatter(g["sa"], g["iou"], s=10, alpha=0.6, color="tab:green", edgecolors="none")
        rho, p = _rho(correlations, target, kind, score)
        if correlations is None:
            rho, p, _ = spearman(g["sa"], g["iou"])
        rho_text = "ρ undefined" if not np.isfinite(rho) else f"ρ = {rho:.3f} (p = {p:.1e})"
        ax.set_title(f"{target} ({kind}), n = {len(g)}\n{rho_text}", fontsize=10)
        ax.set_xlabel(f"{score} ({'class' if kind == 'class' else 'z-scored group'} SA)")
        ax.set_ylabel("IoU")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    fig.suptitle(f"IoU against {score}: expect a negative correlation")
    return _save(fig, path)


def plot_tradeoff(table: pd.DataFrame, path: str | PathLike, *, score: str = "mdsa",
                  targets: Sequence[str] | None = None, references: bool = True,
                  dpi: int = 110) -> Path:
    """Inaccuracy of the skipped frames against the skip ratio: one panel per IoU threshold
    plus the mean 1 - IoU panel.

    Parameters
    ----------
    table : DataFrame from `saseg.analysis.tradeoff.tradeoff_table`
    path : output PNG path (written atomically)
    score : str
        Which score's curves to draw.
    targets : sequence of str, optional
        Targets to draw (default all).
    references : bool
        Draw each target's random (dashed) and oracle (dotted) reference in its colour.

    Returns
    -------
    Path of the PNG.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    require_columns(table, ["target", "score", "order", "skip_ratio", "metric", "threshold", "value"],
             "trade-off table")
    sub = table[table["score"] == score]
    if targets is not None:
        sub = sub[sub["target"].isin(list(targets))]
    if sub.empty:
        raise DataError(f"plot_tradeoff: expected curves for score {score!r}"
                        + (f" and targets {list(targets)}" if targets is not None else "")
                        + f", but the table holds scores {sorted(table['score'].unique().tolist())}.")
    thresholds = sorted(sub.loc[sub["metric"] == "below_t", "threshold"].dropna().unique())
    panels = [("below_t", t) for t in thresholds] + [("mean_1_minus_iou", None)]
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.4 * nrows), dpi=dpi, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    names = list(dict.fromkeys(sub["target"]))
    colours = {t: f"C{i % 10}" for i, t in enumerate(names)}
    styles = {"sa": ("-", 1.8, 1.0), "random": ("--", 1.0, 0.7), "oracle": (":", 1.2, 0.8)}
    for ax, (metric, t) in zip(axes, panels):
        rows = sub[sub["metric"] == metric]
        if t is not None:
            rows = rows[np.isclose(rows["threshold"], t)]
        for target in names:
            for order, (ls, lw, alpha) in styles.items():
                if order != "sa" and not references:
                    continue
                c = rows[(rows["target"] == target) & (rows["order"] == order)]
                if "n_skipped" in c.columns:  # the 0-frame point is 0 by convention: not drawn
                    c = c[c["n_skipped"] > 0]
                c = c.sort_values("skip_ratio")
                ax.plot(100 * c["skip_ratio"], c["value"], ls=ls, lw=lw, alpha=alpha,
                        color=colours[target])
        ax.set_title(f"share of skipped frames with IoU < {t:g}" if t is not None
                     else "mean 1 - IoU of skipped frames", fontsize=10)
        ax.set_xlabel("frames skipped (lowest SA first), %")
        ax.set_ylabel("inaccuracy")
        ax.set_xlim(0, 100)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=colours[t], lw=2, label=t) for t in names]
    if references:
        labels = {"sa": "SA order", "random": "random (expected)", "oracle": "oracle (best)"}
        handles += [Line2D([], [], color="grey", ls=ls, lw=lw, label=labels[order])
                    for order, (ls, lw, _) in styles.items()]
    fig.legend(handles=handles, loc="outside right center", fontsize=9)
    fig.suptitle(f"Labelling cost saved against inaccuracy accepted ({score})")
    return _save(fig, path)


def plot_risk_coverage(curve: pd.DataFrame, path: str | PathLike, *, alpha: float, confidence: float,
                       iou_below: float, score: str, threshold: float | None) -> Path:
    """The chosen rule on the pilot: failing share of skipped frames against the share skipped,
    with its Clopper-Pearson bound, the bound alpha and the calibrated threshold."""
    from matplotlib.figure import Figure

    require_columns(curve, ["threshold", "coverage", "risk", "upper"], "risk-coverage curve")
    fig = Figure(figsize=(5.5, 3.6), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    ax.step(curve["coverage"], curve["risk"], where="post", label=f"pilot: skipped with IoU < {iou_below:g}")
    ax.step(curve["coverage"], curve["upper"], where="post", ls="--",
            label=f"Clopper-Pearson {confidence:.0%} upper bound")
    ax.axhline(alpha, color="k", lw=0.8, label=f"max risk {alpha:.0%}")
    if threshold is not None:
        chosen = curve.loc[curve["threshold"] <= threshold, "coverage"].max()
        ax.axvline(chosen, color="tab:green", lw=1.2, label=f"guaranteed skip: {chosen:.0%} of pilot")
    ax.set(xlabel=f"share of pilot frames skipped (lowest {score} first)", ylabel="failing share of skipped",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def _rho(correlations: pd.DataFrame | None, target: str, kind: str, score: str) -> tuple[float, float]:
    if correlations is None:
        return float("nan"), float("nan")
    row = correlations[(correlations["target"] == target) & (correlations["kind"] == kind)
                       & (correlations["score"] == score)]
    return (float(row["rho"].iloc[0]), float(row["p"].iloc[0])) if len(row) else (float("nan"), float("nan"))


def _save(fig, path: str | PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("wrote %s", path)
    return path

