"""Softmax baselines per pixel, oriented like SA: higher = more uncertain / surprising."""

from __future__ import annotations

import torch

from ..errors import DataError, DegenerateDataError
from .base import as_tensor

SOFTMAX_NAMES = ("max_softmax", "entropy", "margin")
"""The keys of `softmax_scores`, in the order runs list them."""


def softmax_scores(logits, dim: int = 1) -> dict[str, torch.Tensor]:
    """Uncertainty scores from logits, each oriented so that higher means more uncertain.

    - ``max_softmax = 1 - max_c p_c`` (Hendrycks & Gimpel's baseline, flipped);
    - ``entropy = -sum_c p_c log p_c`` in nats, via ``log_softmax`` (stable, in [0, log C]);
    - ``margin = 1 - (p_top1 - p_top2)``, in [0, 1].

    Parameters
    ----------
    logits : Tensor or ndarray of shape (N, C) or (B, C, H, W)
        Finite logits; C >= 2 along `dim`.
    dim : int, default 1
        The class dimension.

    Returns
    -------
    dict of str to Tensor, each of the logits' shape without `dim` ((N,) or (B, H, W)), float32
    (float64 for float64 logits), on the logits' device.
    """
    logits = as_tensor(logits, "logits", "softmax_scores")
    if not logits.is_floating_point():
        raise DataError(f"softmax_scores: expected floating-point logits, but got dtype {logits.dtype}.")
    if logits.ndim < 2 or not -logits.ndim <= dim < logits.ndim:
        raise DataError(f"softmax_scores: expected logits of shape (N, C) or (B, C, H, W) with class dim {dim}, "
                        f"but got shape {tuple(logits.shape)}.")
    if logits.shape[dim] < 2:
        raise DataError(f"softmax_scores: expected at least 2 classes along dim {dim}, but got {logits.shape[dim]}.")
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        raise DegenerateDataError(f"softmax_scores: expected finite logits, but got {int(bad.sum())} NaN or Inf values.")
    if logits.dtype != torch.float64:
        logits = logits.float()
    logp = torch.log_softmax(logits, dim=dim)
    p = logp.exp()
    top = p.topk(2, dim=dim).values
    top1, top2 = top.select(dim, 0), top.select(dim, 1)
    return {
        "max_softmax": 1.0 - top1,
        "entropy": -(p * logp).sum(dim),
        "margin": 1.0 - (top1 - top2),
    }
