"""Per-pixel adapter: an SA map of a whole frame from its (d, h0, w0) feature map.

A frame's SA map scores every pixel's activation trace against the SA model of the class the
network predicted there (paper Section 3.2 and Figure 8), at output resolution. Features are
upsampled a band of rows at a time, so memory stays bounded by ``d * rows * W`` rather than
``d * H * W``.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import DataError
from ..tracing import upsample_features_chunked
from .base import SurpriseEstimator, check_unknown


def pixel_sa_map(features, pred, estimator: SurpriseEstimator, *, align_corners: bool = False,
                 rows_per_chunk: int | None = None, unknown: str = "nan") -> torch.Tensor:
    """Score every pixel of one frame against the SA model of its predicted class.

    Parameters
    ----------
    features : tensor of shape (d, h0, w0)
        The frame's feature map (the AT layer's output, at its own resolution).
    pred : tensor or ndarray of shape (H, W), integer
        Predicted class per pixel, at output resolution; the features are upsampled to it
        bilinearly, as the network's own head does.
    estimator : fitted SurpriseEstimator
        Anything with ``score(ats (N, d), classes (N,), *, unknown) -> (N,)``.
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
        The estimator's SA per pixel (for MDSA, the Mahalanobis distance (Eq. 3, not
        squared)); NaN where the predicted class is unknown to the estimator.
    """
    check_unknown(unknown, "pixel_sa_map")
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
    pred = pred.to(device=features.device, dtype=torch.int64)
    H, W = pred.shape
    d = features.shape[0]

    out = torch.empty((H, W), dtype=torch.float32, device=features.device)
    for y0, y1, chunk in upsample_features_chunked(
        features, (H, W), align_corners=align_corners, rows_per_chunk=rows_per_chunk
    ):
        ats = chunk.reshape(d, -1).T.contiguous()  # (rows * W, d): one AT per pixel
        sa = estimator.score(ats, pred[y0:y1].reshape(-1), unknown=unknown)
        out[y0:y1] = sa.to(torch.float32).view(y1 - y0, W)
    return out


def _describe(x) -> str:
    shape = tuple(getattr(x, "shape", ()))
    return f"{type(x).__name__} of shape {shape} and dtype {getattr(x, 'dtype', None)}"
