"""Per connected-component quality proxies, aggregated to the class (MetaSeg).

MetaSeg (Rottmann, Colling, Hack, Chan, Hüger, Schlicht, Gottschalk; IJCNN 2020) predicts
the IoU of each *connected component* of a predicted class from its own dispersion and
geometry. Here each 8-connected component ``K`` of ``pred == c`` gets

- ``E_K``: mean entropy ``-sum_c p_c log p_c`` over its pixels (nats),
- ``M_K``: mean margin dispersion ``1 - (p_top1 - p_top2)`` over its pixels,
- ``B_K``: boundary share, its pixels within `boundary_px` of another predicted class
  (`saseg.quality.features.boundary_mask`) over ``|K|``,
- ``|K|``: its size in pixels,

and the class row gets the **worst** component and the **area-weighted** component:

- ``comp_worst_entropy = max_K E_K``, ``comp_worst_margin = max_K M_K``,
  ``comp_worst_boundary_share = max_K B_K``, ``comp_min_size = min_K |K|``;
- ``comp_aw_size = sum_K |K|^2 / sum_K |K|``: the size of the component a random pixel of
  the class falls in. (The area-weighted means of ``E_K``, ``M_K`` and ``B_K`` equal the
  class means the features already hold, so they are not repeated.)

A class that is not predicted gets NaN for all five. The geometry counts of
`saseg.quality.features` (``n_components``, ``largest_component``, ``mean_component``) come
from the same labelling, so scipy labels each class once.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["COMPONENT_COLUMNS", "component_stats", "label_components"]

COMPONENT_COLUMNS = ("comp_worst_entropy", "comp_worst_margin", "comp_worst_boundary_share",
                     "comp_min_size", "comp_aw_size")
"""The per-class columns `component_stats` returns beyond the geometry counts."""

_EIGHT = np.ones((3, 3), dtype=bool)


def label_components(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One id per 8-connected component of every predicted class.

    Parameters
    ----------
    pred : int array of shape (H, W), class ids

    Returns
    -------
    comp : int64 array of shape (H, W), component id in ``0..K-1`` of each pixel
    owner : int64 array of shape (K,), the class of each component (ids grow with the class)
    """
    comp = np.zeros(pred.shape, dtype=np.int64)
    owners, offset = [], 0
    for c in np.unique(pred):
        labels, n = ndimage.label(pred == c, structure=_EIGHT)
        inside = labels > 0
        comp[inside] = labels[inside] + (offset - 1)
        owners.append(np.full(n, c, dtype=np.int64))
        offset += n
    return comp, (np.concatenate(owners) if owners else np.zeros(0, dtype=np.int64))


def component_stats(pred: np.ndarray, entropy: np.ndarray, margin: np.ndarray, boundary: np.ndarray,
                    num_classes: int) -> dict[str, np.ndarray]:
    """Per-class aggregates of per-component proxies (formulas in the module doc).

    Parameters
    ----------
    pred : int array (H, W), predicted class ids in ``0..num_classes-1``
    entropy, margin : float arrays (H, W), per-pixel entropy and margin dispersion
    boundary : bool array (H, W), the boundary mask
    num_classes : int

    Returns
    -------
    dict of float64 arrays of shape (num_classes,): ``n_components``, ``largest_component``,
    ``mean_component`` and `COMPONENT_COLUMNS`; 0 components, 0 largest and NaN elsewhere
    for a class that is not predicted.
    """
    comp, owner = label_components(pred)
    k = len(owner)
    flat = comp.ravel()
    size = np.bincount(flat, minlength=k).astype(np.float64)
    per = {"E": np.bincount(flat, weights=entropy.ravel().astype(np.float64), minlength=k) / size,
           "M": np.bincount(flat, weights=margin.ravel().astype(np.float64), minlength=k) / size,
           "B": np.bincount(flat, weights=boundary.ravel().astype(np.float64), minlength=k) / size}
    nan = np.full(num_classes, np.nan)
    out = {"n_components": np.bincount(owner, minlength=num_classes).astype(np.float64),
           "largest_component": _reduce(np.maximum, owner, size, np.zeros(num_classes)),
           "mean_component": np.bincount(owner, weights=size, minlength=num_classes)}
    area = out["mean_component"].copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        out["mean_component"] = np.where(out["n_components"] > 0, area / out["n_components"], np.nan)
        aw = np.bincount(owner, weights=size ** 2, minlength=num_classes) / area
    out["comp_worst_entropy"] = _reduce(np.fmax, owner, per["E"], nan)
    out["comp_worst_margin"] = _reduce(np.fmax, owner, per["M"], nan)
    out["comp_worst_boundary_share"] = _reduce(np.fmax, owner, per["B"], nan)
    out["comp_min_size"] = _reduce(np.fmin, owner, size, nan)
    out["comp_aw_size"] = np.where(area > 0, aw, np.nan)
    return out


def _reduce(ufunc, owner: np.ndarray, values: np.ndarray, init: np.ndarray) -> np.ndarray:
    """``init`` with ``ufunc.at`` applied per owner (fmax/fmin keep the value over a NaN init)."""
    out = init.astype(np.float64).copy()
    ufunc.at(out, owner, values)
    return out
