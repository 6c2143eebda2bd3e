"""Softmax baselines per pixel, oriented like SA: higher = more uncertain / surprising.

The one home of the three dispersion formulas: the per-pixel baselines (`saseg.estimators.scores`)
and the per-class quality features (`saseg.quality.features`) both call `dispersion_maps`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import DataError, DegenerateDataError
from .base import as_tensor


class SoftmaxStats(NamedTuple):
    """What the dispersions need from the softmax along class dim `dim`: ``logp = log p``,
    ``p``, and the largest and second-largest ``p`` (``top1``, ``top2``, `dim` removed)."""

    logp: torch.Tensor
    p: torch.Tensor
    top1: torch.Tensor
    top2: torch.Tensor
    dim: int


def softmax_stats(logits: torch.Tensor, dim: int = 1) -> SoftmaxStats:
    """`SoftmaxStats` of checked logits: ``log_softmax`` once (stable), ``p = exp(logp)``, top-2 of p."""
    logp = torch.log_softmax(logits, dim=dim)
    p = logp.exp()
    top = p.topk(2, dim=dim).values
    return SoftmaxStats(logp, p, top.select(dim, 0), top.select(dim, 1), dim)


def max_softmax(stats: SoftmaxStats) -> torch.Tensor:
    """``1 - max_c p_c`` (Hendrycks & Gimpel's baseline, flipped), in [0, 1 - 1/C]."""
    return 1.0 - stats.top1


def entropy(stats: SoftmaxStats) -> torch.Tensor:
    """``-sum_c p_c log p_c`` in nats, in [0, log C]."""
    return -(stats.p * stats.logp).sum(stats.dim)


def margin(stats: SoftmaxStats) -> torch.Tensor:
    """``1 - (p_top1 - p_top2)``, in [0, 1]."""
    return 1.0 - (stats.top1 - stats.top2)


DISPERSION_FORMULAS = {"max_softmax": max_softmax, "entropy": entropy, "margin": margin}
"""The softmax dispersions by name, in the order runs list them."""


def dispersion_maps(stats: SoftmaxStats) -> dict[str, torch.Tensor]:
    """Every `DISPERSION_FORMULAS` map, each of the logits' shape without the class dim."""
    return {name: formula(stats) for name, formula in DISPERSION_FORMULAS.items()}


def from_softmax(formula):
    """A baseline ``(logits, dim) -> map`` from a formula of `SoftmaxStats` (one softmax per call)."""
    def compute(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return formula(softmax_stats(logits, dim))
    compute.__name__ = compute.__qualname__ = formula.__name__
    compute.__doc__ = formula.__doc__
    compute.formula = formula  # so `softmax_scores` can share one softmax among such baselines
    return compute


def check_logits(logits, dim: int, where: str) -> torch.Tensor:
    """`logits` as a finite float32 (or float64) tensor with >= 2 classes along `dim`; one
    line naming `where` otherwise."""
    logits = as_tensor(logits, "logits", where)
    if not logits.is_floating_point():
        raise DataError(f"{where}: expected floating-point logits, but got dtype {logits.dtype}.")
    if logits.ndim < 2 or not -logits.ndim <= dim < logits.ndim:
        raise DataError(f"{where}: expected logits of shape (N, C) or (B, C, H, W) with class dim {dim}, "
                        f"but got shape {tuple(logits.shape)}.")
    if logits.shape[dim] < 2:
        raise DataError(f"{where}: expected at least 2 classes along dim {dim}, but got {logits.shape[dim]}.")
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        raise DegenerateDataError(f"{where}: expected finite logits, but got {int(bad.sum())} NaN or Inf values.")
    return logits if logits.dtype == torch.float64 else logits.float()
