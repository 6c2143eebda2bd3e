"""Distance-based surprise (DSA, Kim et al. ICSE 2019): nearest same-class reference versus the
distance from that reference to the nearest reference of another class."""

from __future__ import annotations

import torch

from ..errors import DegenerateDataError
from .base import BLOCK_BYTES, SurpriseEstimator, nearest


def dsa_scores(queries: torch.Tensor, same: torch.Tensor, others: torch.Tensor,
               block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """``DSA(x) = ||x - x_a|| / ||x_a - x_b||`` for queries of one class.

    ``x_a`` is the reference of the query's class nearest to ``x``; ``x_b`` is the reference of
    any other class nearest to ``x_a``. When ``x_a`` coincides with another class's reference
    the denominator is floored at the dtype's machine epsilon, so DSA is large but finite.

    Parameters
    ----------
    queries : Tensor of shape (N, d)
    same : Tensor of shape (M, d), references of the queries' class
    others : Tensor of shape (M', d), references of every other class

    Returns
    -------
    Tensor of shape (N,)
    """
    idx_a, dist_a = nearest(queries, same, block_bytes)
    used, inverse = torch.unique(idx_a, return_inverse=True)
    _, dist_b = nearest(same[used], others, block_bytes)
    return dist_a / dist_b.clamp_min(torch.finfo(dist_b.dtype).eps)[inverse]


class DSA(SurpriseEstimator):
    """Distance-based Surprise Adequacy (Kim, Feldt, Yoo, ICSE 2019).

    ``DSA(x) = dist_a / dist_b`` with ``dist_a = ||x - x_a||``, ``x_a`` the training AT of
    ``x``'s class nearest to ``x``, and ``dist_b = ||x_a - x_b||``, ``x_b`` the training AT of
    any other class nearest to ``x_a``. Large when ``x`` lies far from its class relative to
    how close that class's nearest AT is to the class boundary. Distances come from blocked
    matrix products (memory bounded by `block_bytes`) and are recomputed exactly for the winners.

    Parameters
    ----------
    block_bytes : int, default 8 MiB
        Memory bound of one (queries x references) distance block.

    Attributes
    ----------
    classes_, counts_ : int64 Tensors (K,); refs_ : (N, d) reference ATs sorted by class;
    offsets_ : int64 Tensor (K + 1,), class ``k`` owns ``refs_[offsets_[k]:offsets_[k+1]]``.
    """

    name = "dsa"
    _params = ("block_bytes",)
    independent_classes = False  # dist_b reads the other classes' ATs

    def __init__(self, *, block_bytes: int = BLOCK_BYTES):
        self.block_bytes = block_bytes

    def _fit(self, ats, classes):
        ids, counts = torch.unique(classes, return_counts=True)
        if len(ids) < 2:
            raise DegenerateDataError(
                f"DSA.fit: expected ATs of at least 2 classes (dist_b needs another class), but got "
                f"only class {ids.tolist()}."
            )
        order = torch.argsort(classes, stable=True)
        self.refs_ = ats[order].clone()
        self.classes_, self.counts_ = ids.cpu(), counts.cpu()
        self.offsets_ = torch.cat([torch.zeros(1, dtype=torch.int64), counts.cpu().cumsum(0)])

    def _prepare(self, device, dtype):
        return {"refs": self.refs_.to(device, dtype)}

    def _score_class(self, k, x, state):
        lo, hi = self.offsets_[k].item(), self.offsets_[k + 1].item()
        refs = state["refs"]
        others = torch.cat([refs[:lo], refs[hi:]])
        return dsa_scores(x, refs[lo:hi], others, int(self.block_bytes))

    def _state_tensors(self):
        return {"classes": self.classes_, "counts": self.counts_, "offsets": self.offsets_, "refs": self.refs_}

    def _expected_shapes(self, n_classes, d):
        return {**super()._expected_shapes(n_classes, d), "offsets": (n_classes + 1,), "refs": (None, d)}

    def _load_state(self, t):
        self.classes_, self.counts_, self.offsets_, self.refs_ = t["classes"], t["counts"], t["offsets"], t["refs"]
