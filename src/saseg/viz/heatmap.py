"""Per-pixel SA maps of whole frames, and one fixed colour scale to render them with.

A frame's SA map scores every pixel's activation trace against the SA model of the class the
network predicted there (paper Section 3.2 and Figure 8), at output resolution. Features are
upsampled a band of rows at a time, so memory stays bounded by ``d * rows * W`` rather than
``d * H * W``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..errors import DataError, NotFittedError, UnknownClassError

logger = logging.getLogger(__name__)

#: Colour of pixels whose SA is NaN (class unknown to the SA model): a neutral mid grey.
NAN_COLOUR = (160, 160, 160)


def pixel_sa_map(features, pred, estimator, *, align_corners=False, rows_per_chunk=None,
                 unknown="nan"):
    """Score every pixel of one frame against the SA model of its predicted class.

    Parameters
    ----------
    features : tensor of shape (d, h0, w0)
        The frame's feature map (the AT layer's output, at its own resolution).
    pred : tensor or ndarray of shape (H, W), integer
        Predicted class per pixel, at output resolution; the features are upsampled to it
        bilinearly, as the network's own head does.
    estimator : fitted SA estimator
        Anything with ``score(ats (N, d), classes (N,)) -> (N,)`` and ``classes_``.
    align_corners : bool
        Must match the network's upsampling, so ATs are those the network used.
    rows_per_chunk : int or None
        Rows upsampled and scored at once; None lets ``upsample_features_chunked`` choose.
    unknown : {"nan", "raise"}
        What to do with pixels predicted as a class the estimator never saw in training
        (e.g. a rare class absent from the fitting frames): give them NaN, so one rare
        prediction does not stop a whole video, or raise ``UnknownClassError``.

    Returns
    -------
    sa_map : tensor of shape (H, W), float32, on the features' device
        The estimator's SA per pixel (for MDSA, the Mahalanobis distance (Eq. 3, not squared)); NaN where
        the predicted class is unknown to the estimator.
    """
    from ..tracing import upsample_features_chunked

    if unknown not in ("nan", "raise"):
        raise DataError(f"pixel_sa_map: expected unknown to be 'nan' or 'raise', but got {unknown!r}.")
    if not torch.is_tensor(features) or features.ndim != 3:
        raise DataError(
            "pixel_sa_map: expected features as a tensor of shape (d, h0, w0), but got "
            f"{_describe(features)}."
        )
    pred = torch.as_tensor(np.asarray(pred) if not torch.is_tensor(pred) else pred)
    if pred.ndim != 2 or pred.dtype.is_floating_point or pred.dtype == torch.bool:
        raise DataError(
            f"pixel_sa_map: expected pred as integer class ids of shape (H, W), but got {_describe(pred)}."
        )
    known = getattr(estimator, "classes_", None)
    if known is None:
        raise NotFittedError(type(estimator).__name__)
    pred = pred.to(device=features.device, dtype=torch.int64)
    known = torch.as_tensor(known, dtype=torch.int64, device=features.device).reshape(-1)
    H, W = pred.shape
    d = features.shape[0]

    out = torch.full((H, W), float("nan"), dtype=torch.float32, device=features.device)
    for y0, y1, chunk in upsample_features_chunked(
        features, (H, W), align_corners=align_corners, rows_per_chunk=rows_per_chunk
    ):
        cls = pred[y0:y1].reshape(-1)
        ok = torch.isin(cls, known)
        if not bool(ok.all()):
            missing = torch.unique(cls[~ok]).tolist()
            if unknown == "raise":
                raise UnknownClassError(
                    f"pixel_sa_map: expected predicted classes in the SA model's {known.tolist()}, "
                    f"but got {missing}."
                )
            logger.debug("Rows %d-%d: classes %s unknown to the SA model, set to NaN.", y0, y1, missing)
        if not bool(ok.any()):
            continue
        ats = chunk.reshape(d, -1).T[ok]
        out[y0:y1].view(-1)[ok] = estimator.score(ats, cls[ok]).to(torch.float32)
    return out


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


def _describe(x) -> str:
    shape = tuple(getattr(x, "shape", ()))
    return f"{type(x).__name__} of shape {shape} and dtype {getattr(x, 'dtype', None)}"
