"""Label-free quality features of one frame's prediction, per class (MetaSeg-style).

From the full-resolution softmax ``p`` (C, H, W) and the prediction ``pred = argmax_c p``,
each class ``c`` that is predicted, or *likely present* (at least `min_likely_pixels` pixels
with ``p_c >= likely_p``, so a missed car still gets a row), gets:

- dispersion, averaged over the class's **interior** and **boundary** pixels separately:
  ``entropy`` (-sum p log p, nats), ``max_softmax`` (1 - max p) and ``margin``
  (1 - (p_top1 - p_top2)), from `saseg.estimators.softmax.dispersion_maps` (the per-pixel
  baselines' formulas). A pixel is on a boundary when another predicted class lies within
  `boundary_px` pixels of it (Chebyshev distance, a (2k+1) x (2k+1) window; default k = 2).
  Columns ``<name>_interior`` and ``<name>_boundary``; NaN where the set is empty.
- geometry: ``n_pixels`` (predicted count), ``n_components`` (8-connected),
  ``largest_component``, ``mean_component`` (pixels) and ``boundary_share``
  (boundary pixels / predicted pixels).
- ``fn_ratio``: false-negative mass ``sum_{pred != c} p_c`` divided by ``n_pixels`` (NaN when
  c is not predicted); ``fn_mass`` is the mass itself, in pixels.
- ``plugin_iou``: the plug-in expected IoU
  ``sum_{pred = c} p_c / (n_pixels + sum_{pred != c} p_c)``, 0 for a class not predicted.
- per connected component (MetaSeg): the worst and the area-weighted component of the
  class, `saseg.quality.components.COMPONENT_COLUMNS` (formulas there).

Everything runs as a few passes of torch ops on the logits' device; the connected components
are labelled by `scipy.ndimage.label` on the CPU and by torch elsewhere
(`saseg.quality.components.default_backend`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..errors import DataError
from ..estimators.softmax import SoftmaxStats, dispersion_maps
from .agreement import FLIP_COLUMN, TEMPORAL_COLUMN
from .components import COMPONENT_COLUMNS, component_stats

__all__ = ["quality_features", "FEATURE_COLUMNS", "EXTRA_FEATURE_COLUMNS", "FEATURE_GROUPS", "DISPERSIONS",
           "boundary_mask"]

DISPERSIONS = ("entropy", "max_softmax", "margin")
"""The `dispersion_maps` names, in the order of the feature columns."""
FEATURE_COLUMNS = (
    *[f"{d}_{part}" for d in DISPERSIONS for part in ("interior", "boundary")],
    "n_components", "largest_component", "mean_component", "boundary_share",
    "fn_mass", "fn_ratio", "plugin_iou",
)
"""The columns every run scored with features has, beside ``class_id`` and ``n_pixels``."""

EXTRA_FEATURE_COLUMNS = {"comp_worst_entropy": "max", "comp_worst_margin": "max",
                         "comp_worst_boundary_share": "max", "comp_min_size": "min",
                         "comp_aw_size": "min", FLIP_COLUMN: "min", TEMPORAL_COLUMN: "min"}
"""Feature columns a run may have (components, flip TTA, temporal) -> the direction in which
a class row looks worse ("max": larger is worse)."""

FEATURE_GROUPS = {"components": COMPONENT_COLUMNS, "flip": (FLIP_COLUMN,), "temporal": (TEMPORAL_COLUMN,)}
"""The optional feature groups a quality model can be asked to use, and their columns."""

def boundary_mask(pred: torch.Tensor, k: int = 2) -> torch.Tensor:
    """(H, W) bool: True where another predicted class lies within `k` px (Chebyshev).

    A window's max and min class id differ exactly when it holds two classes; pixels
    outside the frame do not count as another class. The (2k+1) x (2k+1) max and min are two
    1-D passes of shifted ``maximum``/``minimum`` (much faster than pooling on the CPU).
    """
    if k < 1:
        raise DataError(f"boundary_mask: expected k >= 1 pixel, but got {k}.")
    ids = pred.to(torch.int16 if int(pred.max()) < 2**15 else torch.int64)
    return _window(ids, k, torch.maximum) != _window(ids, k, torch.minimum)


def _window(x: torch.Tensor, k: int, op) -> torch.Tensor:
    """`op` (max or min) over the (2k+1)^2 window around each pixel, clipped at the edges."""
    rows = x.clone()
    for d in range(1, k + 1):
        rows[:, d:] = op(rows[:, d:], x[:, :-d])
        rows[:, :-d] = op(rows[:, :-d], x[:, d:])
    out = rows.clone()
    for d in range(1, k + 1):
        out[d:] = op(out[d:], rows[:-d])
        out[:-d] = op(out[:-d], rows[d:])
    return out


def quality_features(logits: torch.Tensor, *, boundary_px: int = 2, likely_p: float = 0.2,
                     min_likely_pixels: int = 16) -> pd.DataFrame:
    """Per-class quality features of one frame (see the module doc for each formula).

    Parameters
    ----------
    logits : float tensor of shape (C, H, W), finite
    boundary_px : int, the boundary width k in pixels
    likely_p, min_likely_pixels : a class not predicted gets a row when at least
        `min_likely_pixels` of its pixels have ``p_c >= likely_p``

    Returns
    -------
    DataFrame sorted by ``class_id``: ``class_id``, ``n_pixels``, `FEATURE_COLUMNS`, then
    `COMPONENT_COLUMNS` (float64, except the integer geometry counts).
    """
    if logits.ndim != 3 or logits.shape[0] < 2:
        raise DataError(f"quality_features: expected logits of shape (C, H, W) with C >= 2, but got "
                        f"{tuple(logits.shape)}.")
    n_classes = logits.shape[0]
    logp = torch.log_softmax(logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32), 0)
    p = logp.exp()
    # max over dim 0 is several times faster than argmax/topk there; the second-largest is the
    # max after masking the largest. Indices: the first maximal logit, as argmax(0) gives.
    pred = logits.max(0).indices
    top1 = p.gather(0, pred[None])[0]
    top2 = p.scatter(0, pred[None], -1.0).max(0).values
    dispersion = dispersion_maps(SoftmaxStats(logp, p, top1, top2, 0))
    boundary = boundary_mask(pred, boundary_px)

    n_pixels = torch.bincount(pred.flatten(), minlength=n_classes)
    # likely present: counted only for classes not predicted whose peak p reaches likely_p
    # (the (C, H, W) comparison map is the costly part, and a predicted class has a row anyway)
    maybe = torch.nonzero((n_pixels == 0) & (p.flatten(1).amax(1) >= likely_p)).flatten()
    likely = torch.zeros(n_classes, dtype=torch.bool, device=p.device)
    if maybe.numel():
        likely[maybe] = torch.count_nonzero(p[maybe] >= likely_p, dim=(1, 2)) >= min_likely_pixels
    ids = torch.nonzero((n_pixels > 0) | likely).flatten()

    # sums over (class, interior|boundary) cells in one bincount per map
    cell = (pred * 2 + boundary.long()).flatten()
    counts = torch.bincount(cell, minlength=2 * n_classes).reshape(n_classes, 2).double()
    out: dict[str, np.ndarray] = {"class_id": ids.cpu().numpy().astype(np.int64),
                                  "n_pixels": n_pixels[ids].cpu().numpy().astype(np.int64)}
    for name, values in dispersion.items():
        sums = torch.bincount(cell, weights=values.flatten().double(), minlength=2 * n_classes)
        means = sums.reshape(n_classes, 2) / counts
        out[f"{name}_interior"] = means[ids, 0].cpu().numpy()
        out[f"{name}_boundary"] = means[ids, 1].cpu().numpy()

    # p_c summed over pixels predicted as c (the diagonal) and over all pixels
    # float64 accumulation: fn_mass is a difference of two sums of ~n_pixels, so a float32
    # sum's rounding (which depends on the thread count) would swamp a small false-negative mass
    mass_all = p.flatten(1).sum(1, dtype=torch.float64)
    mass_own = torch.bincount(pred.flatten(), weights=top1.flatten().double(), minlength=n_classes)
    fn_mass = (mass_all - mass_own).clamp(min=0.0)
    area = n_pixels.double()
    out["fn_mass"] = fn_mass[ids].cpu().numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        fn_ratio = (fn_mass / area)[ids].cpu().numpy()
    out["fn_ratio"] = np.where(out["n_pixels"] > 0, fn_ratio, np.nan)
    out["plugin_iou"] = (mass_own / (area + fn_mass).clamp(min=1e-12))[ids].cpu().numpy()
    out["boundary_share"] = (counts[:, 1] / area.clamp(min=1))[ids].cpu().numpy()
    out["boundary_share"] = np.where(out["n_pixels"] > 0, out["boundary_share"], np.nan)

    comps = component_stats(pred, dispersion["entropy"], dispersion["margin"], boundary, n_classes)
    comps = {name: values[ids].cpu().numpy() for name, values in comps.items()}
    out["n_components"] = comps["n_components"].astype(np.int64)
    out["largest_component"] = comps["largest_component"].astype(np.int64)
    for name in ("mean_component", *COMPONENT_COLUMNS):
        out[name] = comps[name]
    return pd.DataFrame(out)[["class_id", "n_pixels", *FEATURE_COLUMNS, *COMPONENT_COLUMNS]]
