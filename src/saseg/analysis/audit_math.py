"""Audit maths: a fixed-size sample with known inclusion probabilities, and PPI++ estimates.

A pool holds M frames; frame i has predicted parts ``ŷ_i`` (e.g. the plug-in intersection
and union of each class, in pixels) for every frame, and true parts ``y_k`` for the n frames
k of a sample s drawn with inclusion probabilities ``π_k`` (``Σ_i π_i = n``). The target is a
smooth function of pool totals, ``θ = g(T)`` with ``T = Σ_i y_i`` (class IoU ``T_I / T_U``,
mIoU, the share of frames below a frame-IoU threshold).

**Estimator** (prediction-powered, PPI++ with power tuning; Angelopoulos, Duchi and Zrnic
2023, arXiv:2311.01453; with inclusion probabilities as in active statistical inference,
Zrnic and Candès, ICML 2024)::

    T̂(λ) = λ Σ_{i in pool} ŷ_i + Σ_{k in s} (y_k - λ ŷ_k) / π_k        (Horvitz-Thompson rectifier)
    θ̂    = g(T̂(λ))

λ = 0 is the labels-only (Horvitz-Thompson) estimate, λ = 1 plain PPI. The pool's
predictions are known exactly, so the only randomness is which frames were drawn (the
design-based view: the target is this pool's value, not a super-population's).

**Interval: a jackknife, not the delta method nor a bootstrap.** For a linear statistic
``Σ_s e_k/π_k`` the design variance is estimated by Hájek's (1964) approximation for
fixed-size, high-entropy designs (Berger 2004, eq. 9)::

    v = n/(n-1) Σ_k c_k (e_k/π_k - Â)²,   c_k = 1 - π_k,   Â = Σ c_k e_k/π_k / Σ c_k

Under uniform π = n/M this is exactly the simple-random-sampling variance with the finite
population correction ``(1 - n/M) s_e² / n`` (s_e² with ddof 1), i.e. ppi-python's rectifier
term times ``(1 - n/M) n/(n-1)``, without its imputed term (the pool is fixed here). IoU is a
ratio and λ is tuned on the sample, so the delta method (``e_k = ∇g · (y_k - λ ŷ_k)``)
underestimates the variance at small n; `jackknife_variance` (Berger and Skinner 2005) gives
Hájek's variance for linear statistics and, re-estimating the ratio and λ with each frame
left out, carries both. The interval is ``θ̂ ± t_{n-1, 1-α/2} √v``, clipped to [0, 1].

**Power tuning**: v is a quadratic in λ; with ``a_k = ∇g·y_k/π_k`` and ``b_k = ∇g·ŷ_k/π_k`` its
minimiser is ``λ* = Σ c (a-Ā)(b-B̄) / Σ c (b-B̄)²`` (c-weighted means), clipped to [0, 1] as
ppi-python does; ∇g is taken at the λ = 1 estimate, as ppi-python does.

**Unseen tails: the anticipated-variance ratio.** A pool whose error sits in a few frames (a
handful of large, badly segmented cars) makes the estimate's sampling distribution skewed: most
small samples miss those frames, estimate too high, and show a small spread, so no interval built
from the sample alone sees what it lacks. The pool's predictions can see such frames: with a
model ``E[e_i²] ∝ v_i`` for the frames' linearised residuals (``v_i`` known for every frame of
the pool; `saseg.analysis.audit` sets ``v_ic = Û_ic (Û_ic - Î_ic)``), the design variance the
sample should show is anticipated (Isaki and Fuller 1982) as ``Σ_pool (1 - π_i) v_i / π_i``, and
its Horvitz-Thompson estimate from the sample is ``Σ_s (1 - π_k) v_k / π_k²`` (unbiased for it).
Their ratio ρ measures how much of the anticipated variance the sample represents; the variance
used is ``v_J · max(1, ρ)`` (`anticipation_ratio`), a ratio estimator of the variance with the
model as auxiliary variable: ρ → 1 as n grows, so the interval stays design-consistent, and it
only widens, because the hazard it corrects (an unseen tail) is one-sided. It widens only as
far as the model sees the tail: frames whose errors the predictions miss stay unseen (README,
the CamVid audit). For the mIoU the residual is ``mean_c e_ic / T_c`` (T_c the class's pool
total; the mean's 1/K² is common to both sums of ρ and cancels), so its model is the diagonal
``Σ_c v_ic / T_c²`` over the estimated classes (covariances between classes left out). The
labels-only interval is left without it: it uses no predictions.

**Design**: randomised systematic πps sampling (Goodman and Kish 1950; Hartley and Rao 1962):
frames in random order, cumulative π, a uniform start u and picks at u, u+1, ..., u+n-1. It
gives exactly n distinct frames, each with probability π_i (π_i <= 1), and in random order it
is close to the maximum-entropy design Hájek's approximation assumes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import norm
from scipy.stats import t as t_dist

from ..errors import DataError

__all__ = ["inclusion_probabilities", "systematic_sample", "hajek_variance", "tune_lambda",
           "jackknife_variance", "Estimate", "ratio_estimates", "mean_estimate", "z_value", "t_value",
           "anticipation_ratio", "UNIFORM_SHARE"]

UNIFORM_SHARE = 0.5
"""Default share of uniform sampling in the mix: every weight 1/π_i stays below
``M / (n · share)``, i.e. at most 2x its uniform weight, so a misleading uncertainty score can at
most double the variance against uniform sampling (Zrnic and Candès 2024 mix for the same reason)."""


def inclusion_probabilities(uncertainty, n: int, *, uniform_share: float = UNIFORM_SHARE) -> np.ndarray:
    """(M,) inclusion probabilities summing to n: active where uncertain, mixed with uniform.

    ``π_i = n [(1 - η) u_i / Σ u + η / M]`` with η = `uniform_share`; values above 1 are set to
    1 (such frames are always labelled) and the rest rescaled to keep ``Σ π = n`` (repeated
    until none exceeds 1). Non-finite or negative uncertainties count as 0; all-zero
    uncertainty gives uniform sampling.
    """
    u = np.asarray(uncertainty, dtype=np.float64)
    m = len(u)
    if not 1 <= n <= m:
        raise DataError(f"audit sample: expected 1 <= n <= {m} (the pool's frames), but got n = {n}.")
    if not 0.0 <= uniform_share <= 1.0:
        raise DataError(f"audit sample: expected a uniform share in [0, 1], but got {uniform_share}.")
    u = np.where(np.isfinite(u) & (u > 0), u, 0.0)
    share = np.full(m, 1.0 / m) if u.sum() <= 0 else (1 - uniform_share) * u / u.sum() + uniform_share / m
    pi = n * share
    fixed = np.zeros(m, dtype=bool)
    for _ in range(m):
        over = (pi >= 1.0 - 1e-12) & ~fixed
        if not over.any():
            break
        fixed |= over
        pi[fixed] = 1.0
        free = ~fixed
        pi[free] = share[free] * (n - fixed.sum()) / share[free].sum() if free.any() else pi[free]
    return np.clip(pi, 0.0, 1.0)


def systematic_sample(pi, *, seed: int) -> np.ndarray:
    """Indices (n,), ascending, of a randomised systematic πps sample; n = round(Σ π).

    Frame i is drawn with probability exactly ``π_i`` (each in [0, 1]).
    """
    pi = np.asarray(pi, dtype=np.float64)
    n = int(round(pi.sum()))
    if abs(pi.sum() - n) > 1e-6 or (pi < 0).any() or (pi > 1 + 1e-12).any():
        raise DataError(f"audit sample: expected inclusion probabilities in [0, 1] summing to a whole "
                        f"number, but they sum to {pi.sum():.6f}.")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pi))
    edges = np.concatenate([[0.0], np.cumsum(pi[order])])
    edges[-1] = n  # exact, against rounding
    picks = rng.uniform() + np.arange(n)
    positions = np.searchsorted(edges, picks, side="right") - 1
    return np.sort(order[positions])


def z_value(level: float) -> float:
    """The two-sided normal quantile ``z_{1-α/2}`` for a confidence level 1 - α in (0, 1)."""
    if not 0.0 < level < 1.0:
        raise DataError(f"audit: expected a confidence level in (0, 1), but got {level}.")
    return float(norm.ppf(0.5 + level / 2))


def hajek_variance(e, pi) -> np.ndarray:
    """Hájek's variance of ``Σ_k e_k/π_k`` (module doc); e (n,) or (n, q) -> scalar or (q,)."""
    e = np.asarray(e, dtype=np.float64)
    pi = np.asarray(pi, dtype=np.float64)
    n = len(pi)
    if n < 2:
        raise DataError(f"audit: expected at least 2 labelled frames to estimate a variance, but got {n}.")
    c = (1.0 - pi).reshape((n,) + (1,) * (e.ndim - 1))
    z = e / pi.reshape(c.shape)
    if c.sum() <= 0:  # every frame was certain to be drawn: a census, no sampling error
        return np.zeros(e.shape[1:])
    centre = (c * z).sum(0) / c.sum()
    return n / (n - 1) * (c * (z - centre) ** 2).sum(0)


def tune_lambda(a, b, pi) -> np.ndarray:
    """Power-tuning λ* in [0, 1] minimising the Hájek variance of ``Σ (a_k - λ b_k)/π_k``.

    a, b : (n,) or (n, q) linearised true and predicted values (before the /π); -> scalar or (q,).
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    w = 1.0 / np.asarray(pi, np.float64)
    return _tune(a.reshape(len(w), -1)[None], b.reshape(len(w), -1)[None], w[None])[0].reshape(a.shape[1:])


def _tune(a, b, w):
    """λ* of `tune_lambda` for R weightings at once: a, b (R, n, q), w (R, n) (0 drops a frame) -> (R, q)."""
    c = np.where(w > 0, 1.0 - 1.0 / np.where(w > 0, w, 1.0), 0.0)[..., None]
    a, b = a * w[..., None], b * w[..., None]
    total = c.sum(1, keepdims=True)
    safe = np.where(total > 0, total, 1.0)
    da = a - (c * a).sum(1, keepdims=True) / safe
    db = b - (c * b).sum(1, keepdims=True) / safe
    den = (c * db**2).sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(den > 0, (c * da * db).sum(1) / np.where(den > 0, den, 1.0), 0.0)
    lam = np.where(total[:, 0] > 0, lam, 1.0)  # a census: nothing to tune
    return np.clip(lam, 0.0, 1.0)


@dataclass(frozen=True)
class Estimate:
    """Point estimate(s), jackknife standard error and the (low, high) interval.

    Arrays of shape (K,) for per-class results, scalars otherwise; ``lam`` is the
    power-tuning λ used (0: labels only; NaN for the mIoU, which uses each class's).
    """

    estimate: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    lam: np.ndarray


def t_value(level: float, n: int) -> float:
    """The interval's quantile ``t_{n-1, 1-α/2}`` for a confidence level 1 - α and n frames."""
    z_value(level)  # checks the level
    return float(t_dist.ppf(0.5 + level / 2, n - 1))


def _interval(est, var, lam, level, n) -> Estimate:
    se = np.sqrt(np.maximum(var, 0.0))
    q = t_value(level, n)
    return Estimate(estimate=est, se=se, low=np.clip(est - q * se, 0.0, 1.0),
                    high=np.clip(est + q * se, 0.0, 1.0), lam=lam)


def jackknife_variance(statistic, pi, *, rescale: bool = True) -> np.ndarray:
    """Delete-one jackknife variance for unequal-probability samples (Berger and Skinner 2005).

    `statistic(weights)` -> (R, q) estimates for weights (R, n): each row the frames' Horvitz-
    Thompson weights 1/π (a zero drops a frame). Replicate k drops frame k; with `rescale`
    (for ratios, which are self-normalising) the others are scaled by ``1 / (1 - w̃_k)``,
    ``w̃_k = π_k^-1 / Σ_l π_l^-1``, and ``ε_k = (1 - w̃_k)(θ̂ - θ̂_(k))``; without it (for totals
    and means) ``ε_k = θ̂ - θ̂_(k)``. Then, with ``c_k = 1 - π_k``::

        v_J = n/(n-1) Σ_k c_k (ε_k - Σ c ε / Σ c)²

    For a linear total ``Σ w e`` (fixed λ), ``rescale=False`` gives exactly Hájek's variance
    (`hajek_variance`), and so does ``rescale=True`` under equal π; for ratios and a re-tuned
    λ the replicates also carry their small-sample variability.
    """
    pi = np.asarray(pi, dtype=np.float64)
    n = len(pi)
    if n < 2:
        raise DataError(f"audit: expected at least 2 labelled frames to estimate a variance, but got {n}.")
    w = 1.0 / pi
    share = w / w.sum() if rescale else np.zeros(n)
    weights = np.vstack([w, w[None, :] / (1.0 - share[:, None])])
    weights[1 + np.arange(n), np.arange(n)] = 0.0
    values = np.asarray(statistic(weights), dtype=np.float64).reshape(n + 1, -1)
    eps = (1.0 - share)[:, None] * (values[0] - values[1:])
    return hajek_variance(eps * pi[:, None], pi)


def anticipation_ratio(v_sample, pi, v_pool_total) -> np.ndarray:
    """``max(1, ρ)``, ``ρ = v_pool_total / Σ_s (1 - π_k) v_k / π_k²`` (module doc: unseen tails).

    v_sample : (n,) or (n, q) the variance model of the sampled frames; pi : (n,) their
    inclusion probabilities; v_pool_total : scalar or (q,) ``Σ_pool (1 - π_i) v_i / π_i``.
    A sample holding none of the anticipated variance of a pool that has some gives ∞ (no
    interval can be anchored); a pool with none gives 1.
    """
    v = np.asarray(v_sample, np.float64)
    pi = np.asarray(pi, np.float64).reshape((-1,) + (1,) * (v.ndim - 1))
    seen = ((1.0 - pi) * v / pi**2).sum(0)
    total = np.asarray(v_pool_total, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # total / 0 = ∞; 0 / 0 is masked
        rho = np.where(total > 0, total / seen, 1.0)
    return np.maximum(rho, 1.0)


def _ratio_point(inter, union, inter_hat, union_hat, pool_i, pool_u, w, lam):
    """(R, K) PPI++ ratios ``T̂_I / T̂_U`` for HT weights w (R, n), λ tuned when `lam` is None; and λ (R, K)."""
    if lam is None:
        r1 = _safe_ratio(pool_i + w @ (inter - inter_hat), pool_u + w @ (union - union_hat), 0.0)
        lam = _tune(inter[None] - r1[:, None] * union[None], inter_hat[None] - r1[:, None] * union_hat[None], w)
    lam = np.broadcast_to(np.asarray(lam, np.float64), (len(w), len(pool_i)))
    t_i = lam * pool_i + w @ inter - lam * (w @ inter_hat)
    t_u = lam * pool_u + w @ union - lam * (w @ union_hat)
    return _safe_ratio(t_i, t_u, np.nan), lam


def _safe_ratio(num, den, fill):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), fill)


def ratio_estimates(inter, union, inter_hat, union_hat, pool_inter_hat, pool_union_hat, pi, *,
                    level: float = 0.9, lam=None, anticipated=None) -> tuple[Estimate, Estimate]:
    """Per-class pool IoU ``Σ I / Σ U`` and the mIoU (their mean), by PPI++ with a jackknife interval.

    Parameters
    ----------
    inter, union : array of shape (n, K), true intersection and union (pixels) of each sampled frame
    inter_hat, union_hat : array of shape (n, K), their predictions on the same frames
    pool_inter_hat, pool_union_hat : array of shape (K,), the predictions summed over the whole pool
    pi : array of shape (n,), the sampled frames' inclusion probabilities
    level : confidence level of the intervals (``θ̂ ± t_{n-1} se``)
    lam : None (tune per class, again in each jackknife replicate), or a scalar / (K,) λ
        (0: labels only, 1: plain PPI)
    anticipated : None, or ``(v_sample, v_pool_total)``: the variance model of the sampled
        frames (n, K) and ``Σ_pool (1 - π_i) v_i / π_i`` per class (K,); each variance is then
        scaled by `anticipation_ratio` (module doc: unseen tails)

    Returns
    -------
    (per_class, miou): `Estimate` with (K,) arrays, and one with scalars. A class with
    ``T̂_U <= 0`` is NaN and left out of the mIoU; the mIoU is the mean of the others.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (inter, union, inter_hat, union_hat)]
    inter, union, inter_hat, union_hat = [x.reshape(len(x), -1) for x in arrays]
    pool_i, pool_u = (np.asarray(x, np.float64).reshape(-1) for x in (pool_inter_hat, pool_union_hat))
    pi = np.asarray(pi, dtype=np.float64)
    if len(pi) < 2:
        raise DataError(f"audit: expected at least 2 labelled frames to estimate a variance, but got {len(pi)}.")
    ratio, lam_used = (x[0] for x in _ratio_point(inter, union, inter_hat, union_hat, pool_i, pool_u,
                                                   (1.0 / pi)[None], lam))
    ok = np.isfinite(ratio)

    def statistic(w):
        r = _ratio_point(inter, union, inter_hat, union_hat, pool_i, pool_u, w, lam)[0]
        r = np.where(ok, np.nan_to_num(r), 0.0)
        miou = r[:, ok].mean(1) if ok.any() else np.zeros(len(w))
        return np.c_[r, miou]

    var = jackknife_variance(statistic, pi)
    if anticipated is not None:
        v_sample, v_total = (np.asarray(x, np.float64) for x in anticipated)
        v_sample, v_total = v_sample.reshape(len(pi), -1), v_total.reshape(-1)
        scale = np.where(pool_u > 0, pool_u, 1.0) ** -2.0 * ok  # the mIoU's model: Σ_c v_c / T_c²
        rho = np.r_[anticipation_ratio(v_sample, pi, v_total), anticipation_ratio(v_sample @ scale, pi, v_total @ scale)]
        # ρ = ∞ (the sample holds none of the anticipated variance) leaves no interval, even
        # where the sampled frames' own spread is 0 (every one drawn with π = 1)
        var = np.where(np.isinf(rho), np.inf, var * np.where(np.isinf(rho), 1.0, rho))  # no 0 x inf
    n = len(pi)
    per_class = _interval(np.clip(ratio, 0.0, 1.0), np.where(ok, var[:-1], np.nan), lam_used.copy(), level, n)
    if not ok.any():
        nan = np.float64(np.nan)
        return per_class, Estimate(nan, nan, nan, nan, nan)
    miou = _interval(np.float64(per_class.estimate[ok].mean()), var[-1], np.float64(np.nan), level, n)
    return per_class, miou


def mean_estimate(y, y_hat, pool_y_hat, pi, *, pool_size: int, level: float = 0.9, lam=None) -> Estimate:
    """Pool mean ``Σ_i y_i / M`` (e.g. the share of frames below a threshold), PPI++ as in the module doc.

    y, y_hat : (n,) true and predicted values of the sampled frames; pool_y_hat : (M,) or its
    sum; pi : (n,). ``θ̂ = (λ Σ_pool ŷ + Σ_s (y - λŷ)/π) / M``, jackknife interval.
    """
    y, y_hat, pi = (np.asarray(x, np.float64) for x in (y, y_hat, pi))
    total_hat = float(np.sum(pool_y_hat))

    def point(w):  # (R, n) -> (R,) estimates and λs
        lam_ = _tune(y[None, :, None], y_hat[None, :, None], w)[:, 0] if lam is None else np.full(len(w), float(lam))
        return (lam_ * total_hat + w @ y - lam_ * (w @ y_hat)) / pool_size, lam_

    est, lam_used = point((1.0 / pi)[None])
    var = jackknife_variance(lambda w: point(w)[0], pi, rescale=False)[0]
    return _interval(np.float64(est[0]), var, np.float64(lam_used[0]), level, len(pi))
