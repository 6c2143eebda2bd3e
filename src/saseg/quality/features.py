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
from .components import COMPONENT_COLUMNS, component_stats_batch

__all__ = ["quality_features", "batch_quality_features", "FEATURE_COLUMNS", "EXTRA_FEATURE_COLUMNS",
           "FEATURE_GROUPS", "DISPERSIONS", "boundary_mask"]

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
    """(..., H, W) bool: True where another predicted class lies within `k` px (Chebyshev).

    A window's max and min class id differ exactly when it holds two classes; pixels
    outside the frame do not count as another class. The (2k+1) x (2k+1) max and min are two
    1-D passes of shifted ``maximum``/``minimum`` (much faster than pooling on the CPU), over
    the last two dims, so a batch (B, H, W) is one call.
    """
    if k < 1:
        raise DataError(f"boundary_mask: expected k >= 1 pixel, but got {k}.")
    ids = pred.to(torch.int16 if int(pred.max()) < 2**15 else torch.int64)
    return _window(ids, k, torch.maximum) != _window(ids, k, torch.minimum)


def _window(x: torch.Tensor, k: int, op) -> torch.Tensor:
    """`op` (max or min) over the (2k+1)^2 window around each pixel, clipped at the edges."""
    rows = x.clone()
    for d in range(1, k + 1):
        rows[..., d:] = op(rows[..., d:], x[..., :-d])
        rows[..., :-d] = op(rows[..., :-d], x[..., d:])
    out = rows.clone()
    for d in range(1, k + 1):
        out[..., d:, :] = op(out[..., d:, :], rows[..., :-d, :])
        out[..., :-d, :] = op(out[..., :-d, :], rows[..., d:, :])
    return out


def quality_features(logits: torch.Tensor, *, boundary_px: int = 2, likely_p: float = 0.2,
                     min_likely_pixels: int = 16) -> pd.DataFrame:
    """Per-class quality features of one frame (see the module doc for each formula):
    `batch_quality_features` of a batch of one, as a table.

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
    columns = batch_quality_features(logits[None], boundary_px=boundary_px, likely_p=likely_p,
                                     min_likely_pixels=min_likely_pixels)
    del columns["frame"]
    return pd.DataFrame(columns)


def batch_quality_features(logits: torch.Tensor, *, pred: torch.Tensor | None = None, boundary_px: int = 2,
                           likely_p: float = 0.2, min_likely_pixels: int = 16,
                           frames_per_pass: int | None = None) -> dict[str, np.ndarray]:
    """Per-(frame, class) quality features of a batch, as columns (module doc: formulas).

    Within a pass every sum is one bincount over its frames, keyed by ``frame * C + class``
    (and interior or boundary), and the maps stay on the logits' device until the rows'
    values are read off. A pass takes `frames_per_pass` frames: by default the whole batch
    on a GPU (fewest kernel launches), one frame on the CPU, where a frame's maps stay in
    cache (480x360, 11 classes, 2 threads: 18 ms per frame one at a time against 30 ms in
    passes of 8, `benchmarks/bench_features.py`).

    Parameters
    ----------
    logits : float tensor of shape (B, C, H, W), finite
    pred : int tensor of shape (B, H, W), ``argmax`` of the logits over classes, if at hand
    boundary_px, likely_p, min_likely_pixels : as in `quality_features`
    frames_per_pass : int or None (the device's default above)

    Returns
    -------
    dict of arrays of shape (K,), one entry per row in frame, then class order: ``frame``
    (0..B-1), ``class_id``, ``n_pixels``, `FEATURE_COLUMNS`, then `COMPONENT_COLUMNS`.
    """
    if logits.ndim != 4 or logits.shape[1] < 2:
        raise DataError(f"quality_features: expected logits of shape (B, C, H, W) with C >= 2, but got "
                        f"{tuple(logits.shape)}.")
    batch = logits.shape[0]
    if pred is None:
        pred = logits.max(1).indices  # several times faster than argmax over the class dim on CPU
    step = frames_per_pass or (1 if logits.device.type == "cpu" else batch)
    passes = [_quality_pass(logits[i:i + step], pred[i:i + step], boundary_px, likely_p, min_likely_pixels)
              for i in range(0, batch, step)]
    for k, part in enumerate(passes):
        part["frame"] = part["frame"] + k * step
    return {name: np.concatenate([part[name] for part in passes]) for name in passes[0]}


def _quality_pass(logits: torch.Tensor, pred: torch.Tensor, boundary_px: int, likely_p: float,
                  min_likely_pixels: int) -> dict[str, np.ndarray]:
    """`batch_quality_features` of the frames of one pass."""
    batch, n_classes = logits.shape[:2]
    keys = batch * n_classes
    logp = torch.log_softmax(logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32), 1)
    p = logp.exp()
    # the second-largest p is the max after masking the largest (pred: the first maximal
    # logit, as argmax gives)
    top1 = p.gather(1, pred[:, None])[:, 0]
    top2 = p.scatter(1, pred[:, None], -1.0).max(1).values
    dispersion = dispersion_maps(SoftmaxStats(logp, p, top1, top2, 1))
    boundary = boundary_mask(pred, boundary_px)

    key = (pred + n_classes * torch.arange(batch, device=pred.device).view(batch, 1, 1)).flatten()
    n_pixels = torch.bincount(key, minlength=keys)
    # likely present: counted only for classes not predicted whose peak p reaches likely_p
    # (the (B, C, H, W) comparison map is the costly part, and a predicted class has a row anyway)
    maybe = torch.nonzero((n_pixels == 0) & (p.flatten(2).amax(2).flatten() >= likely_p)).flatten()
    likely = torch.zeros(keys, dtype=torch.bool, device=p.device)
    if maybe.numel():
        candidates = p.flatten(0, 1)[maybe]
        likely[maybe] = torch.count_nonzero(candidates >= likely_p, dim=(1, 2)) >= min_likely_pixels
    ids = torch.nonzero((n_pixels > 0) | likely).flatten()  # frame * C + class, ascending

    def rows(values: torch.Tensor) -> np.ndarray:
        return values[ids].cpu().numpy()

    # sums over (frame, class, interior|boundary) cells in one bincount per map
    cell = key * 2 + boundary.flatten().long()
    counts = torch.bincount(cell, minlength=2 * keys).reshape(keys, 2).double()
    ids_np = ids.cpu().numpy()
    out: dict[str, np.ndarray] = {"frame": ids_np // n_classes, "class_id": ids_np % n_classes,
                                  "n_pixels": rows(n_pixels).astype(np.int64)}
    for name, values in dispersion.items():
        sums = torch.bincount(cell, weights=values.flatten().double(), minlength=2 * keys)
        means = sums.reshape(keys, 2) / counts
        out[f"{name}_interior"] = rows(means[:, 0])
        out[f"{name}_boundary"] = rows(means[:, 1])

    # p_c summed over pixels predicted as c (the diagonal) and over all pixels
    # float64 accumulation: fn_mass is a difference of two sums of ~n_pixels, so a float32
    # sum's rounding (which depends on the thread count) would swamp a small false-negative mass
    mass_all = p.flatten(2).sum(2, dtype=torch.float64).flatten()
    mass_own = torch.bincount(key, weights=top1.flatten().double(), minlength=keys)
    fn_mass = (mass_all - mass_own).clamp(min=0.0)
    area = n_pixels.double()
    predicted = out["n_pixels"] > 0
    out["fn_mass"] = rows(fn_mass)
    with np.errstate(divide="ignore", invalid="ignore"):
        out["fn_ratio"] = np.where(predicted, rows(fn_mass / area), np.nan)
    out["plugin_iou"] = rows(mass_own / (area + fn_mass).clamp(min=1e-12))
    out["boundary_share"] = np.where(predicted, rows(counts[:, 1] / area.clamp(min=1)), np.nan)

    comps = component_stats_batch(pred, dispersion["entropy"], dispersion["margin"], boundary, n_classes)
    comps = {name: rows(values.flatten()) for name, values in comps.items()}
    out["n_components"] = comps["n_components"].astype(np.int64)
    out["largest_component"] = comps["largest_component"].astype(np.int64)
    for name in ("mean_component", *COMPONENT_COLUMNS):
        out[name] = comps[name]
    return {name: out[name] for name in ("frame", "class_id", "n_pixels", *FEATURE_COLUMNS, *COMPONENT_COLUMNS)}
