"""Rendering per-pixel SA maps: one fixed colour scale per run, and thresholded masks.

The maps themselves come from ``saseg.estimators.pixel_sa_map``; here they only become colours,
so frames of one run compare (paper Figure 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import DataError

#: Colour of pixels whose SA is NaN (class unknown to the SA model): a neutral mid grey.
NAN_COLOUR = (160, 160, 160)


def threshold_mask(sa_map, threshold: float) -> np.ndarray:
    """Pixels more surprising than ``threshold``: (H, W) bool ndarray; NaN pixels are False."""
    sa = _to_numpy(sa_map)
    with np.errstate(invalid="ignore"):
        return np.asarray(sa > float(threshold))


def scale_from_values(values, lo: float = 1, hi: float = 99, *, cmap: str = "inferno"):
    """A colour scale spanning the ``lo``-th to ``hi``-th percentile of ``values``.

    Compute it once per run (e.g. from all class SAs in ``scores.parquet``) and render every
    frame with it, so colours mean the same SA in every frame of a video. Non-finite values are
    ignored; a constant input gets a unit-wide scale around its value.
    """
    v = _to_numpy(values).astype(np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise DataError("scale_from_values: expected at least one finite SA value, but got none.")
    if not 0 <= lo < hi <= 100:
        raise DataError(f"scale_from_values: expected 0 <= lo < hi <= 100, but got lo={lo}, hi={hi}.")
    vmin, vmax = (float(x) for x in np.percentile(v, [lo, hi]))
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    return SAColourScale(vmin, vmax, cmap=cmap)


@dataclass(frozen=True)
class SAColourScale:
    """Map SA values to colours with limits fixed across a run, so frames are comparable.

    Values are clipped to ``[vmin, vmax]`` and looked up in a 256-entry matplotlib colour map;
    NaN (pixels of a class unknown to the SA model) becomes a neutral grey.

    Parameters
    ----------
    vmin, vmax : float
        SA values rendered as the bottom and top colours; ``vmin < vmax``.
    cmap : str
        A matplotlib colour map name; "inferno" reads well in greyscale too.
    """

    vmin: float
    vmax: float
    cmap: str = "inferno"

    def __post_init__(self):
        object.__setattr__(self, "vmin", float(self.vmin))
        object.__setattr__(self, "vmax", float(self.vmax))
        if not (np.isfinite(self.vmin) and np.isfinite(self.vmax) and self.vmin < self.vmax):
            raise DataError(
                f"SAColourScale: expected finite vmin < vmax, but got vmin={self.vmin}, vmax={self.vmax}."
            )
        _lut(self.cmap)  # fail now, not on the first frame, for an unknown colour map

    @property
    def lut(self) -> np.ndarray:
        """(256, 3) uint8 colours from ``vmin`` to ``vmax``."""
        return _lut(self.cmap)

    def index(self, sa) -> np.ndarray:
        """(...) int LUT index per value (rounded, clipped to 0..255); 256 marks NaN."""
        sa = _to_numpy(sa).astype(np.float32, copy=False)
        t = (sa - np.float32(self.vmin)) * np.float32(255.0 / (self.vmax - self.vmin)) + np.float32(0.5)
        np.clip(t, 0.0, 255.5, out=t)  # truncating t then rounds to nearest
        t[np.isnan(sa)] = 256
        return t.astype(np.intp)

    def __call__(self, sa) -> np.ndarray:
        """Render SA values of shape (...) as RGB uint8 of shape (..., 3)."""
        return np.take(_lut_with_nan(self.cmap), self.index(sa), axis=0)


@lru_cache(maxsize=None)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib

    try:
        cm = matplotlib.colormaps[cmap]
    except KeyError:
        raise DataError(f"SAColourScale: expected a matplotlib colour map name, but got {cmap!r}.") from None
    lut = np.rint(cm(np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@lru_cache(maxsize=None)
def _lut_with_nan(cmap: str) -> np.ndarray:
    lut = np.concatenate([_lut(cmap), np.array([NAN_COLOUR], dtype=np.uint8)])
    lut.setflags(write=False)
    return lut


def _to_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)
