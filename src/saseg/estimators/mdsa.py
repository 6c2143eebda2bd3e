"""Mahalanobis-distance surprise (MDSA, Kim et al. 2020, Eq. 3) with streamed float64 moments."""

from __future__ import annotations

import logging

import torch

from ..errors import DataError, DegenerateDataError, FormatError, NotFittedError
from .base import SurpriseEstimator, check_inputs

logger = logging.getLogger(__name__)
PACK_ROWS = 4096  # batch size oneDNN packs the whiteners for; any other size runs too

_MOMENTS = ("classes", "count", "shift", "s1", "s2", "s3", "s4")
_FITTED = ("classes_", "counts_", "means_", "covariances_", "shrinkage_", "whiteners_")


def centred_moments(count, shift, s1, s2, s3, s4):
    """Mean, scatter and fourth-moment sum from sums of shifted data ``y = x - shift``.

    Parameters
    ----------
    count : Tensor of shape (K,)
    shift : Tensor of shape (K, d)
    s1, s2, s3, s4 : Tensors of shape (K, d), (K, d, d), (K, d), (K,)
        ``sum y``, ``sum y y^T``, ``sum ||y||^2 y`` and ``sum ||y||^4`` per class.

    Returns
    -------
    mean : (K, d); scatter : (K, d, d) ``sum (x-m)(x-m)^T``; fourth : (K,) ``sum ||x-m||^4``.
        Exact algebraic re-centring (with ``e = m - shift``), so chunked sums give one fit.
    """
    n = count.to(s1.dtype)
    e = s1 / n[:, None]
    ee = (e * e).sum(1)
    scatter = s2 - n[:, None, None] * e[:, :, None] * e[:, None, :]
    fourth = (s4 - 4 * (e * s3).sum(1) + 4 * torch.einsum("ki,kij,kj->k", e, s2, e)
              + 2 * ee * s2.diagonal(dim1=1, dim2=2).sum(1) - 3 * n * ee * ee)
    return shift + e, scatter, fourth


def reshift_moments(count, s1, s2, s3, s4, delta):
    """Sums of ``y' = y + delta`` from sums of ``y`` (per class), exactly, so two moment sets
    taken about different shifts can be added (Chan et al.'s pairwise update, to 4th order).

    With ``q = ||y||^2``, ``t = tr(s2) = sum q`` and ``a = s1 . delta``:
    ``s1' = s1 + n delta``; ``s2' = s2 + s1 delta^T + delta s1^T + n delta delta^T``;
    ``s3' = s3 + t delta + 2 s2 delta + 2 a delta + ||delta||^2 s1 + n ||delta||^2 delta``;
    ``s4' = s4 + 4 s3 . delta + 2 ||delta||^2 t + 4 delta^T s2 delta + 4 ||delta||^2 a
    + n ||delta||^4``. Shapes as in `centred_moments`; delta (K, d).
    """
    n = count.to(s1.dtype)
    dd = (delta * delta).sum(1)
    a = (s1 * delta).sum(1)
    t = s2.diagonal(dim1=1, dim2=2).sum(1)
    s2_delta = torch.einsum("kij,kj->ki", s2, delta)
    new_s1 = s1 + n[:, None] * delta
    new_s2 = (s2 + s1[:, :, None] * delta[:, None, :] + delta[:, :, None] * s1[:, None, :]
              + n[:, None, None] * delta[:, :, None] * delta[:, None, :])
    new_s3 = (s3 + t[:, None] * delta + 2 * s2_delta + 2 * a[:, None] * delta
              + dd[:, None] * s1 + (n * dd)[:, None] * delta)
    new_s4 = (s4 + 4 * (s3 * delta).sum(1) + 2 * dd * t + 4 * (s2_delta * delta).sum(1)
              + 4 * dd * a + n * dd * dd)
    return new_s1, new_s2, new_s3, new_s4


def ledoit_wolf_shrinkage(count, scatter, fourth):
    """Ledoit-Wolf shrinkage intensity, the formula of scikit-learn's ``ledoit_wolf_shrinkage``.

    With ``E = scatter / n`` (biased covariance), ``mu = tr(E) / d``:
    ``beta = (fourth / n - ||E||_F^2) / (d n)``, ``delta = ||E - mu I||_F^2 / d``,
    shrinkage ``= min(beta, delta) / delta`` (0 when ``delta == 0``). Shapes (K,), (K, d, d), (K,).
    """
    n = count.to(scatter.dtype)
    d = scatter.shape[-1]
    emp = scatter / n[:, None, None]
    mu = emp.diagonal(dim1=1, dim2=2).sum(1) / d
    delta_ = (emp * emp).sum((1, 2))
    beta = (fourth / n - delta_) / (d * n)
    delta = (delta_ - d * mu * mu) / d
    beta = torch.minimum(beta, delta)
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    return torch.where(delta > 0, (beta / safe).clamp(0.0, 1.0), torch.zeros_like(delta))


def whitener(cov: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``W = L^{-T}`` with ``cov = L L^T`` (Cholesky), so ``(x-m)^T cov^{-1} (x-m) = ||(x-m) W||^2``.

    Batched over leading dims; uses a triangular solve, never an explicit inverse of `cov`.
    Returns ``(W, info)``; ``info > 0`` marks matrices that are not positive-definite.
    """
    chol, info = torch.linalg.cholesky_ex(cov)
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device).expand_as(cov)
    chol = torch.where((info > 0)[..., None, None], eye, chol)  # keep the solve finite
    return torch.linalg.solve_triangular(chol, eye, upper=False).mT, info


def pack_whiteners(whiten: torch.Tensor) -> list[torch.Tensor] | None:
    """Each class's ``W^T`` in oneDNN's packed layout for `mahalanobis`, or None where oneDNN
    cannot run it (not float32 on CPU, a build without oneDNN, an op that changed)."""
    if whiten.device.type != "cpu" or whiten.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return None
    try:
        return [torch.ops.mkldnn._reorder_linear_weight(w.T.contiguous(), PACK_ROWS) for w in whiten]
    except (AttributeError, RuntimeError, NotImplementedError) as exc:
        logger.info("MDSA scores with addmm: oneDNN's packed linear is unavailable (%s).", exc)
        return None


def mahalanobis(x: torch.Tensor, whiten: torch.Tensor, bias: torch.Tensor,
                packed: torch.Tensor | None = None) -> torch.Tensor:
    """Mahalanobis distance (not squared) ``||x W + c||`` with ``c = -mu W``: one GEMM, one norm.

    ``c`` is added inside the GEMM, so the norm is the only other pass over the (N, d) product;
    subtracting after the product reads and writes it once more (0.59-0.71x the bare ``x @ W``
    at d = 64, against 0.84-0.90x now: benchmarks/bench_estimators.py). With `packed`
    (`pack_whiteners`, float32 CPU) the GEMM is oneDNN's linear with ``c`` as a fused bias, on
    a weight packed once (what torch.compile's CPU backend runs for a frozen ``nn.Linear``);
    else ``addmm``, which first broadcasts ``c`` into the output (one write pass).

    x : (N, d); whiten : (d, d); bias : (d,). Returns (N,).
    """
    if packed is not None:
        try:
            return torch.linalg.vector_norm(torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""), dim=1)
        except RuntimeError as exc:  # an input oneDNN refuses: the same product by addmm
            logger.debug("oneDNN linear refused the ATs (%s); using addmm.", exc)
    return torch.linalg.vector_norm(torch.addmm(bias, x, whiten), dim=1)


class MDSA(SurpriseEstimator):
    """Mahalanobis-distance Surprise Adequacy (Kim et al., ESEC/FSE 2020, Eq. 3).

    ``MDSA(x) = sqrt((x - mu_c)^T S_c^{-1} (x - mu_c))`` for an AT ``x`` of class ``c``, with
    ``mu_c``, ``S_c`` the mean and (shrunk) covariance of class ``c``'s training ATs. Moments
    stream in float64 (`partial_fit`, then `finalize`); ``S_c`` is regularised by shrinkage
    towards ``tr(S)/d * I`` and factored by Cholesky; scoring is one matrix product per class.

    Parameters
    ----------
    shrinkage : "ledoit-wolf" or float in [0, 1], default "ledoit-wolf"
        "ledoit-wolf": scikit-learn's LedoitWolf covariance (biased covariance ``E``, shrunk to
        ``(1-a) E + a tr(E)/d I`` with the LW ``a``, computed exactly from streamed moments).
        A float ``a``: ``(1-a) S + a tr(S)/d I`` with ``S`` the ddof=1 sample covariance.
    min_shrinkage : float, default 1e-6
        Floor on the Ledoit-Wolf ``a``: LW gives 0 for e.g. two ATs, a singular covariance.

    Attributes
    ----------
    Set by `fit`, or by `finalize` after `partial_fit`:
    classes_ : int64 Tensor (K,); counts_ : int64 Tensor (K,); means_ : (K, d) float64;
    covariances_ : (K, d, d) float64 (shrunk); shrinkage_ : (K,) float64;
    whiteners_ : (K, d, d) float64, ``L^{-T}`` of each covariance.

    Notes
    -----
    A class needs at least 2 ATs; with fewer ATs than dimensions the shrinkage keeps ``S_c``
    positive-definite (a warning is logged). Constant features are handled by the shrinkage;
    a class whose ATs are all identical raises `DegenerateDataError`. Scores are computed in
    the ATs' dtype (float32 or float64) on their device; `score` returns the distance of
    Eq. 3 itself, not its square.
    """

    name = "mdsa"
    _params = ("shrinkage", "min_shrinkage")
    independent_classes = True  # each class: its own mean and covariance
    _propagates_nonfinite = True  # W has a non-zero diagonal: NaN/Inf reach the norm

    def __init__(self, *, shrinkage: str | float = "ledoit-wolf", min_shrinkage: float = 1e-6):
        self.shrinkage = shrinkage
        self.min_shrinkage = min_shrinkage

    def _fit(self, ats, classes):
        self._moments = None
        self._pending = False  # a failed fit leaves nothing for `finalize` to factor
        self._names_arg = None
        self._accumulate(ats, classes)
        self._finalize(strict=True)

    def partial_fit(self, ats, classes, *, class_names=None):
        """Add a chunk of ATs to the streamed moments (the same model as one `fit` on all chunks).

        Cheap per call: it only accumulates. The covariances are factored by `finalize`, which
        `score` and `save` call when moments are pending; until then the fitted attributes
        (``classes_``, ``means_``...) are absent.

        Returns
        -------
        self
        """
        where = "MDSA.partial_fit"
        ats, classes = check_inputs(ats, classes, where)
        if getattr(self, "n_features_in_", ats.shape[1]) != ats.shape[1]:
            raise DataError(f"{where}: expected ATs with d={self.n_features_in_} features, but got {ats.shape[1]}.")
        self._accumulate(ats, classes)
        self.n_features_in_ = int(ats.shape[1])
        if class_names is not None:
            self._names_arg = class_names
        for name in _FITTED:
            self.__dict__.pop(name, None)
        self._device_cache = {}
        self._pending = True
        return self

    def merge(self, other: "MDSA") -> "MDSA":
        """Add another MDSA's streamed moments to this one's (e.g. from another worker).

        The result is the model one process would fit on both sets of ATs: each of `other`'s
        classes is re-expressed about this model's shift (`reshift_moments`) and summed, in
        float64. Both must have seen ATs of the same width; settings must match. Like
        `partial_fit`, it leaves the factoring to `finalize`.

        Returns
        -------
        self
        """
        theirs = getattr(other, "_moments", None)
        if theirs is None:
            raise NotFittedError(type(other).__name__)
        if (self.shrinkage, self.min_shrinkage) != (other.shrinkage, other.min_shrinkage):
            raise DataError("MDSA.merge: expected the same shrinkage settings in both models.")
        mine = getattr(self, "_moments", None)
        if mine is None:
            self._moments = {k: v.clone() for k, v in theirs.items()}
        else:
            if mine["shift"].shape[1] != theirs["shift"].shape[1]:
                raise DataError(f"MDSA.merge: expected ATs of d={mine['shift'].shape[1]} in both "
                                f"models, but the other has d={theirs['shift'].shape[1]}.")
            index = {c: i for i, c in enumerate(mine["classes"].tolist())}
            common = [j for j, c in enumerate(theirs["classes"].tolist()) if c in index]
            fresh = [j for j, c in enumerate(theirs["classes"].tolist()) if c not in index]
            if common:
                j = torch.tensor(common)
                i = torch.tensor([index[c] for c in theirs["classes"][j].tolist()])
                delta = theirs["shift"][j].to(mine["shift"]) - mine["shift"][i]
                sums = reshift_moments(theirs["count"][j], *(theirs[k][j].to(mine["shift"])
                                                             for k in _MOMENTS[3:]), delta)
                for key, value in zip(_MOMENTS[3:], sums):
                    mine[key][i] += value
                mine["count"][i] += theirs["count"][j].to(mine["count"])
            if fresh:
                j = torch.tensor(fresh)
                merged = {k: torch.cat([mine[k], theirs[k][j].to(mine[k])]) for k in _MOMENTS}
                order = torch.argsort(merged["classes"])
                mine = {k: v[order] for k, v in merged.items()}
            self._moments = mine
        self.n_features_in_ = int(self._moments["shift"].shape[1])
        if getattr(other, "_names_arg", None) is not None and getattr(self, "_names_arg", None) is None:
            self._names_arg = other._names_arg
        for name in _FITTED:
            self.__dict__.pop(name, None)
        self._device_cache = {}
        self._pending = True
        return self

    def finalize(self):
        """Factor the moments streamed by `partial_fit` into the fitted attributes.

        Classes that cannot be fitted yet (fewer than 2 ATs, or all identical) stay in the
        moments, are left out of ``classes_`` and logged; `DegenerateDataError` if no class
        can be fitted. A no-op when nothing is pending (after `fit`, `load` or `finalize`).

        Returns
        -------
        self
        """
        if getattr(self, "_moments", None) is None:
            raise NotFittedError(type(self).__name__)
        if getattr(self, "_pending", False):
            self._finalize(strict=False)
            self._after_fit(self.n_features_in_, getattr(self, "_names_arg", None), "MDSA.partial_fit")
            self._pending = False
        return self

    def score(self, ats, classes, *, unknown: str = "raise"):
        """`SurpriseEstimator.score`, after `finalize` when `partial_fit` left moments pending."""
        if getattr(self, "_pending", False):
            self.finalize()
        return super().score(ats, classes, unknown=unknown)

    def save(self, path_dir, name=None, *, provenance=None):
        """`SurpriseEstimator.save`, after `finalize` when `partial_fit` left moments pending."""
        if getattr(self, "_pending", False):
            self.finalize()
        return super().save(path_dir, name, provenance=provenance)

    def _accumulate(self, ats, classes):
        """Add per-class count and sums of y, y y^T, ||y||^2 y, ||y||^4 with y = x - shift."""
        m = getattr(self, "_moments", None)
        device = m["shift"].device if m is not None else ats.device
        x = ats.to(device=device, dtype=torch.float64)
        classes = classes.to(device)
        new = {k: [] for k in _MOMENTS}
        index = {} if m is None else {c: i for i, c in enumerate(m["classes"].tolist())}
        for c in torch.unique(classes).tolist():
            xc = x[classes == c]
            shift = m["shift"][index[c]] if c in index else xc.mean(0)
            y = xc - shift
            sq = (y * y).sum(1)
            stats = (len(xc), y.sum(0), y.T @ y, sq @ y, (sq * sq).sum())
            if c in index:
                for key, v in zip(_MOMENTS[3:], stats[1:]):
                    m[key][index[c]] += v
                m["count"][index[c]] += stats[0]
            else:
                for key, v in zip(_MOMENTS, (c, stats[0], shift) + stats[1:]):
                    new[key].append(torch.as_tensor(v, device=device))
        if new["classes"]:
            stacked = {k: torch.stack(v) for k, v in new.items()}
            if m is None:
                m = stacked
            else:
                m = {k: torch.cat([m[k], stacked[k]]) for k in _MOMENTS}
            order = torch.argsort(m["classes"])
            m = {k: v[order] for k, v in m.items()}
        self._moments = m

    def _finalize(self, strict: bool):
        m = self._moments
        where = "MDSA.fit" if strict else "MDSA.partial_fit"
        mean, scatter, fourth = centred_moments(*(m[k] for k in _MOMENTS[1:]))
        count = m["count"]
        trace = scatter.diagonal(dim1=1, dim2=2).sum(1)
        ids = m["classes"].tolist()
        few = [c for c, n in zip(ids, count.tolist()) if n < 2]
        const = [c for c, n, t in zip(ids, count.tolist(), trace.tolist()) if n >= 2 and t <= 0]
        if few or const:
            parts = [f"expected at least 2 ATs per class, but classes {few} have fewer"] if few else []
            parts += [f"expected varying ATs, but all ATs of classes {const} are identical"] if const else []
            msg = f"{where}: " + "; ".join(parts) + "."
            if strict or len(few) + len(const) == len(ids):
                raise DegenerateDataError(msg)
            logger.warning("%s Those classes stay unfitted until more ATs arrive.", msg)
        keep = (count >= 2) & (trace > 0)
        count, mean, scatter, fourth, trace = count[keep], mean[keep], scatter[keep], fourth[keep], trace[keep]
        classes = m["classes"][keep]
        d = scatter.shape[-1]
        eye = torch.eye(d, dtype=scatter.dtype, device=scatter.device)
        n = count.to(scatter.dtype)[:, None, None]
        if self.shrinkage == "ledoit-wolf":
            a = ledoit_wolf_shrinkage(count, scatter, fourth).clamp_min(float(self.min_shrinkage))
            cov = scatter / n
        elif isinstance(self.shrinkage, (int, float)) and 0.0 <= float(self.shrinkage) <= 1.0:
            a = torch.full_like(trace, float(self.shrinkage))
            cov = scatter / (n - 1)
        else:
            raise DataError(f"{where}: expected shrinkage 'ledoit-wolf' or a float in [0, 1], but got {self.shrinkage!r}.")
        mu = cov.diagonal(dim1=1, dim2=2).sum(1) / d
        cov = (1 - a)[:, None, None] * cov + (a * mu)[:, None, None] * eye
        whiten, info = whitener(cov)
        if bool((info > 0).any()):
            bad = classes[info > 0].tolist()
            raise DegenerateDataError(
                f"{where}: expected a positive-definite covariance, but classes {bad} give a singular "
                f"one (shrinkage={self.shrinkage!r}); use shrinkage='ledoit-wolf' or a float > 0."
            )
        small = [c for c, k in zip(classes.tolist(), count.tolist()) if k < d]
        if small:
            logger.warning("%s: classes %s have fewer ATs than d=%d; their covariance relies on shrinkage.", where, small, d)
        self.classes_, self.counts_ = classes.cpu(), count.cpu()
        self.means_, self.covariances_, self.shrinkage_, self.whiteners_ = mean, cov, a, whiten

    def _prepare(self, device, dtype):
        bias = -torch.einsum("kd,kde->ke", self.means_, self.whiteners_)
        whiten = self.whiteners_.to(device, dtype)
        return {"whiten": whiten, "bias": bias.to(device, dtype), "packed": pack_whiteners(whiten)}

    def _score_class(self, k, x, state):
        packed = state["packed"]
        return mahalanobis(x, state["whiten"][k], state["bias"][k], None if packed is None else packed[k])

    def _state_tensors(self):
        out = {f"moments.{k}": v for k, v in self._moments.items()}
        out.update(classes=self.classes_, counts=self.counts_, means=self.means_, covariances=self.covariances_,
                   shrinkage=self.shrinkage_, whiteners=self.whiteners_)
        return out

    def _expected_shapes(self, n_classes, d):
        k = n_classes
        return {**super()._expected_shapes(k, d), "means": (k, d), "covariances": (k, d, d),
                "shrinkage": (k,), "whiteners": (k, d, d), "moments.shift": (None, d),
                "moments.s2": (None, d, d)}

    def _check_loaded(self, d, where):
        """One float dtype for the fitted tensors: they meet in one matrix product."""
        dtypes = {t.dtype for t in (self.means_, self.covariances_, self.shrinkage_, self.whiteners_)}
        if len(dtypes) != 1:
            raise FormatError(f"{where}: expected the means, covariances, shrinkage and whiteners in one float "
                              f"dtype, but got {sorted(map(str, dtypes))}; the file is corrupt: refit it.")

    def _load_state(self, t):
        self._moments = {k: t[f"moments.{k}"] for k in _MOMENTS}
        self.classes_, self.counts_, self.means_ = t["classes"], t["counts"], t["means"]
        self.covariances_, self.shrinkage_, self.whiteners_ = t["covariances"], t["shrinkage"], t["whiteners"]
