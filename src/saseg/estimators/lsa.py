"""Likelihood-based surprise (LSA, Kim et al. 2020, Eqs. 1-2): per-class Gaussian KDE whose
bandwidth matches ``scipy.stats.gaussian_kde``, evaluated with blocked matrix products."""

from __future__ import annotations

import logging
import math

import torch

from ..errors import DataError, DegenerateDataError, FormatError
from .base import BLOCK_BYTES, SurpriseEstimator, block_shape
from .mdsa import whitener

logger = logging.getLogger(__name__)


def bandwidth_factor(n: int, d: int, method: str | float = "scott") -> float:
    """scipy's bandwidth factor: Scott ``n^(-1/(d+4))``, Silverman ``(n (d+2)/4)^(-1/(d+4))``,
    or a given float."""
    if method == "scott":
        return n ** (-1.0 / (d + 4))
    if method == "silverman":
        return (n * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    if isinstance(method, (int, float)) and not isinstance(method, bool) and method > 0:
        return float(method)
    raise DataError(f"LSA: expected bandwidth 'scott', 'silverman' or a float > 0, but got {method!r}.")


def kde_log_density(queries: torch.Tensor, refs: torch.Tensor, log_norm: float,
                    block_bytes: int = BLOCK_BYTES) -> torch.Tensor:
    """``log f(q) = logsumexp_j(-||q - r_j||^2 / 2) + log_norm`` for whitened queries/references.

    ``-||q - r||^2 / 2 = q.r - ||r||^2/2 - ||q||^2/2``: the first two terms come from one fused
    matmul per block and the last is added after the logsumexp, so far queries stay finite.

    Parameters
    ----------
    queries : Tensor of shape (N, d), already centred and whitened by the kernel covariance
    refs : Tensor of shape (M, d), same space and dtype
    log_norm : float
        ``-log M - sum(log diag L) - d/2 log(2 pi)`` with ``L`` the kernel covariance's Cholesky.

    Returns
    -------
    Tensor of shape (N,)
    """
    ref_chunk, q_chunk = block_shape(len(queries), len(refs), queries.element_size(), block_bytes)
    # exp of anything below this lands in denormals (very slow on CPUs); such terms are
    # < 1e-30 of the largest, so clamping them changes nothing measurable
    floor = -80.0 if queries.dtype == torch.float32 else -700.0
    half_r2 = 0.5 * (refs * refs).sum(1)
    out = torch.empty(len(queries), dtype=queries.dtype, device=queries.device)
    for qs in range(0, len(queries), q_chunk):
        q = queries[qs:qs + q_chunk]
        parts = []
        for rs in range(0, len(refs), ref_chunk):
            g = torch.addmm(half_r2[rs:rs + ref_chunk], q, refs[rs:rs + ref_chunk].T, beta=-1.0)
            top = g.amax(dim=1, keepdim=True)  # in-place logsumexp: the block stays in cache
            parts.append(g.sub_(top).clamp_(min=floor).exp_().sum(dim=1).log_().add_(top[:, 0]))
        lse = parts[0] if len(parts) == 1 else torch.logsumexp(torch.stack(parts, 1), dim=1)
        out[qs:qs + q_chunk] = lse - 0.5 * (q * q).sum(1)
    return out + log_norm


class LSA(SurpriseEstimator):
    """Likelihood-based Surprise Adequacy (Kim et al., ESEC/FSE 2020, Eqs. 1-2; ICSE 2019).

    ``LSA(x) = -log f_c(x)`` with ``f_c`` the Gaussian KDE of class ``c``'s training ATs,
    ``f_c(x) = 1/n sum_i N(x; x_i, H)``, ``H = factor^2 * cov(ATs, ddof=1)``: the bandwidth
    of ``scipy.stats.gaussian_kde`` (Scott's rule by default). Evaluated as a logsumexp, so it
    stays finite where scipy's ``logpdf`` returns inf.

    Parameters
    ----------
    bandwidth : "scott", "silverman" or float, default "scott"
        Bandwidth factor rule (as scipy's ``bw_method``), with ``n`` and the kept ``d`` per class.
    var_threshold : float or None, default 1e-5
        Per class, drop AT features whose variance (ddof=0) over that class's ATs is below this,
        as the original SA code does; None keeps every feature.
    ridge : float, default 0.0
        If > 0, add ``ridge * tr(C)/d * I`` to the data covariance ``C`` before factoring;
        with 0 (exact scipy bandwidth) a singular covariance raises `DegenerateDataError`.
    dtype : "float64" or "float32", default "float64"
        Evaluation precision; float32 is 2-3x faster and agrees with float64 to about 1e-6
        relative on well-scaled ATs (tested to 1e-4).
    block_bytes : int, default 8 MiB
        Memory bound of one (queries x references) block (about three such buffers are live).

    Attributes
    ----------
    classes_, counts_ : int64 Tensors (K,); kept_ : list of int64 Tensors (feature indices);
    means_ : list of (d_k,) ; whiteners_ : list of (d_k, d_k) ``L^{-T}`` of ``H``;
    refs_ : list of (n_k, d_k) centred, whitened references; log_norms_, factors_ : (K,) float64.
    """

    name = "lsa"
    _params = ("bandwidth", "var_threshold", "ridge", "dtype", "block_bytes")
    independent_classes = True  # each class: a KDE over its own ATs only

    def __init__(self, *, bandwidth: str | float = "scott", var_threshold: float | None = 1e-5,
                 ridge: float = 0.0, dtype: str = "float64", block_bytes: int = BLOCK_BYTES):
        self.bandwidth = bandwidth
        self.var_threshold = var_threshold
        self.ridge = ridge
        self.dtype = dtype
        self.block_bytes = block_bytes

    def _fit(self, ats, classes):
        if self.dtype not in ("float64", "float32"):
            raise DataError(f"LSA: expected dtype 'float64' or 'float32', but got {self.dtype!r}.")
        ids, counts = torch.unique(classes, return_counts=True)
        few = ids[counts < 2].tolist()
        if few:
            raise DegenerateDataError(f"LSA.fit: expected at least 2 ATs per class, but classes {few} have fewer.")
        x64 = ats.to(torch.float64)
        fitted = [self._fit_class(c, x64[classes == c]) for c in ids.tolist()]
        self.classes_, self.counts_ = ids.cpu(), counts.cpu()
        self.kept_, self.means_, self.whiteners_, self.refs_ = (list(v) for v in zip(*[f[:4] for f in fitted]))
        self.log_norms_ = torch.tensor([f[4] for f in fitted], dtype=torch.float64)
        self.factors_ = torch.tensor([f[5] for f in fitted], dtype=torch.float64)

    def _fit_class(self, c: int, x: torch.Tensor):
        n = len(x)
        if self.var_threshold is None:
            kept = torch.arange(x.shape[1], device=x.device)
        else:
            kept = (x.var(0, correction=0) >= float(self.var_threshold)).nonzero()[:, 0]
        if len(kept) == 0:
            raise DegenerateDataError(
                f"LSA.fit: expected class {c} to keep at least 1 feature, but all {x.shape[1]} have "
                f"variance below var_threshold={self.var_threshold}."
            )
        if len(kept) < x.shape[1]:
            logger.info("LSA: class %d keeps %d of %d features (var_threshold=%s).", c, len(kept), x.shape[1], self.var_threshold)
        x = x[:, kept]
        d = x.shape[1]
        mean = x.mean(0)
        xc = x - mean
        cov = xc.T @ xc / (n - 1)
        if self.ridge:
            cov = cov + float(self.ridge) * cov.diagonal().sum() / d * torch.eye(d, dtype=cov.dtype, device=cov.device)
        factor = bandwidth_factor(n, d, self.bandwidth)
        whiten, info = whitener(cov * factor**2)
        if int(info) > 0:
            raise DegenerateDataError(
                f"LSA.fit: expected a non-singular KDE covariance for class {c}, but its {n} ATs span "
                f"fewer than the {d} kept dimensions; raise var_threshold, set ridge > 0 or use MDSA."
            )
        # diag(L) of the kernel covariance is 1 / diag(W)
        log_norm = -math.log(n) + float(torch.log(whiten.diagonal()).sum()) - 0.5 * d * math.log(2 * math.pi)
        return kept.cpu(), mean, whiten, xc @ whiten, log_norm, factor

    def _score_dtype(self, dtype):
        return getattr(torch, self.dtype)

    def _prepare(self, device, dtype):
        move = lambda ts: [t.to(device, dtype) for t in ts]  # noqa: E731
        return {"kept": [k.to(device) for k in self.kept_], "means": move(self.means_),
                "whiten": move(self.whiteners_), "refs": move(self.refs_), "log_norms": self.log_norms_.tolist()}

    def _score_class(self, k, x, state):
        q = (x[:, state["kept"][k]] - state["means"][k]) @ state["whiten"][k]
        return -kde_log_density(q, state["refs"][k], state["log_norms"][k], int(self.block_bytes))

    def _state_tensors(self):
        out = {"classes": self.classes_, "counts": self.counts_, "log_norms": self.log_norms_, "factors": self.factors_}
        for k in range(len(self.classes_)):
            out.update({f"kept.{k}": self.kept_[k], f"means.{k}": self.means_[k],
                        f"whiteners.{k}": self.whiteners_[k], f"refs.{k}": self.refs_[k]})
        return out

    def _expected_shapes(self, n_classes, d):
        out = {**super()._expected_shapes(n_classes, d), "log_norms": (n_classes,), "factors": (n_classes,)}
        for k in range(n_classes):
            out.update({f"kept.{k}": (None,), f"means.{k}": (None,), f"refs.{k}": (None, None),
                        f"whiteners.{k}": (None, None)})
        return out

    def _check_loaded(self, d, where):
        """Each class's kept feature indices are distinct, ascending and in [0, d), and its mean,
        whitener and references have that many columns: a tampered index would score other
        features (silently), or fail inside the kernel."""
        for k, kept in enumerate(self.kept_):
            n = len(kept)
            ok = (kept.dtype == torch.int64 and kept.ndim == 1 and n >= 1 and int(kept.min()) >= 0
                  and int(kept.max()) < d and bool((kept[1:] > kept[:-1]).all()))
            shapes = (tuple(self.means_[k].shape), tuple(self.whiteners_[k].shape), self.refs_[k].shape[1:])
            if not ok or shapes != ((n,), (n, n), (n,)) or len(self.refs_[k]) < 1:
                raise FormatError(f"{where}: expected class {k}'s kept features as ascending indices in [0, {d}) "
                                  "with a mean, whitener and references over them, but they disagree; the file "
                                  "is corrupt: refit it (`saseg fit`).")

    def _load_state(self, t):
        self.classes_, self.counts_, self.log_norms_, self.factors_ = t["classes"], t["counts"], t["log_norms"], t["factors"]
        n = range(len(self.classes_))
        self.kept_ = [t[f"kept.{k}"] for k in n]
        self.means_ = [t[f"means.{k}"] for k in n]
        self.whiteners_ = [t[f"whiteners.{k}"] for k in n]
        self.refs_ = [t[f"refs.{k}"] for k in n]
