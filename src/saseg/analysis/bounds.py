"""Bounds for the mean of a loss in [0, 1] over exchangeable units, and the rules built on them.

Each labelled pilot unit i (a frame) has, per candidate threshold lambda_j, a loss
``L[i, j]`` in [0, 1] that does not decrease with j. Three ways to pick a threshold:

- **Learn-then-Test, fixed sequence** (Angelopoulos, Bates, Candès, Jordan, Lei, "Learn then
  Test", 2021): per threshold a p-value for the null ``E[L(lambda)] > alpha``; thresholds are
  tested from the most conservative and testing stops at the first ``p > delta``; the last
  rejected one holds with confidence 1 - delta.
- p-values: **WSR** betting (Waudby-Smith and Ramdas, "Estimating means of bounded random
  variables by betting", JRSS-B 2024; in the form of Bates et al., "Distribution-free
  risk-controlling prediction sets", 2021, Prop. 5): the capital of a bettor against the null,
  ``K_i = prod_{k<=i} (1 - nu_k (L_k - alpha))`` with the predictable bet
  ``nu_k = min(1, sqrt(2 ln(1/delta) / (n sigma2_{k-1})))``, ``mu_k = (1/2 + sum_{m<=k} L_m) / (k + 1)``,
  ``sigma2_k = (1/4 + sum_{m<=k} (L_m - mu_m)^2) / (k + 1)``; ``p = min(1, 1 / max_i K_i)``
  (Ville's inequality). **HB**, Hoeffding-Bentkus (LTT, eq. 9):
  ``p = min(exp(-n h(min(Lbar, alpha), alpha)), e P(Bin(n, alpha) <= ceil(n Lbar)))`` with
  ``h(a, b) = a ln(a/b) + (1-a) ln((1-a)/(1-b))``.
- **Conformal risk control** (Angelopoulos, Bates, Fisch, Lei, Schuster, ICLR 2024), a promise
  in expectation over pilot and new unit: the largest lambda with
  ``(n Lbar(lambda) + 1) / (n + 1) <= alpha`` (loss bound B = 1, monotone loss).

Units are assumed exchangeable (frames, never the correlated segments inside one frame).
The WSR capital depends on the order of the units; `wsr_p_values` uses the order given, so
callers fix it (a seeded permutation) before looking at the losses.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import binom

from ..errors import DataError

__all__ = ["BOUNDS", "wsr_p_values", "hb_p_values", "p_values", "fixed_sequence", "crc_index",
           "pilot_multiple_needed", "min_units"]

BOUNDS = ("wsr", "hb")


def _check(losses, alpha: float, delta: float) -> np.ndarray:
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim == 1:
        L = L[:, None]
    if L.ndim != 2:
        raise DataError(f"bounds: expected losses of shape (n_units, n_thresholds), but got {L.shape}.")
    if L.size and (not np.isfinite(L).all() or L.min() < 0 or L.max() > 1):
        raise DataError("bounds: expected finite losses in [0, 1], but got values outside.")
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise DataError(f"bounds: expected alpha and delta in (0, 1), but got {alpha}, {delta}.")
    return L


def wsr_p_values(losses, alpha: float, delta: float) -> np.ndarray:
    """WSR betting p-values for ``E[L] > alpha``, one per column (see the module doc).

    Parameters
    ----------
    losses : array of shape (n_units,) or (n_units, n_thresholds), values in [0, 1]
    alpha, delta : the risk level tested and the error level the bet is tuned for

    Returns
    -------
    (n_thresholds,) p-values in (0, 1]; 1 for an empty pilot.
    """
    L = _check(losses, alpha, delta)
    n = L.shape[0]
    if n == 0:
        return np.ones(L.shape[1])
    k = np.arange(1, n + 1, dtype=np.float64)[:, None]
    mu = (0.5 + np.cumsum(L, axis=0)) / (k + 1)
    sigma2 = (0.25 + np.cumsum((L - mu) ** 2, axis=0)) / (k + 1)
    prev = np.vstack([np.full((1, L.shape[1]), 0.25), sigma2[:-1]])
    nu = np.minimum(1.0, np.sqrt(2 * math.log(1 / delta) / (n * prev)))
    with np.errstate(divide="ignore"):
        log_capital = np.cumsum(np.log(np.maximum(1 - nu * (L - alpha), 0.0)), axis=0)
    return np.minimum(1.0, np.exp(-np.max(log_capital, axis=0)))


def hb_p_values(losses, alpha: float, delta: float = 0.1) -> np.ndarray:
    """Hoeffding-Bentkus p-values for ``E[L] > alpha``, one per column (LTT eq. 9).

    `delta` is unused (the p-value does not depend on it); it keeps the signature of
    `wsr_p_values`.
    """
    L = _check(losses, alpha, delta)
    n = L.shape[0]
    if n == 0:
        return np.ones(L.shape[1])
    mean = L.mean(axis=0)
    a = np.minimum(mean, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = np.where(a > 0, a * np.log(a / alpha), 0.0) + (1 - a) * np.log((1 - a) / (1 - alpha))
    hoeffding = np.exp(-n * h)
    bentkus = math.e * binom.cdf(np.ceil(n * mean - 1e-9), n, alpha)
    return np.minimum(1.0, np.minimum(hoeffding, bentkus))


def p_values(losses, alpha: float, delta: float, bound: str = "wsr") -> np.ndarray:
    """The p-values of `bound` ("wsr" or "hb")."""
    if bound == "wsr":
        return wsr_p_values(losses, alpha, delta)
    if bound == "hb":
        return hb_p_values(losses, alpha, delta)
    raise DataError(f"bounds: expected a bound in {BOUNDS}, but got {bound!r}.")


def fixed_sequence(p, delta: float) -> int:
    """Index of the last threshold rejected before the first ``p > delta``; -1 if none."""
    p = np.asarray(p, dtype=np.float64)
    above = np.flatnonzero(~(p <= delta))
    return int(above[0]) - 1 if len(above) else len(p) - 1


def crc_index(losses, alpha: float) -> int:
    """Conformal risk control: the last column j with ``(n Lbar_j' + 1)/(n + 1) <= alpha`` for
    every j' <= j (losses in [0, 1], nondecreasing along the columns); -1 if none."""
    L = _check(losses, alpha, 0.5)
    n = L.shape[0]
    adjusted = (L.sum(axis=0) + 1.0) / (n + 1)
    return fixed_sequence(np.where(adjusted <= alpha, 0.0, 1.0), 0.5)


def pilot_multiple_needed(losses, alpha: float, delta: float, bound: str = "wsr",
                          max_multiple: int = 64) -> int | None:
    """How many copies of this pilot the first threshold would need to be certified.

    Tiles the (n_units,) losses m = 1, 2, 4, ... times and returns the smallest m whose
    p-value is <= delta, or None when even `max_multiple` copies fail (the losses are too
    high: more frames alike would not help). A reading of the pilot, not a guarantee.
    """
    L = np.asarray(losses, dtype=np.float64).ravel()
    if L.size == 0:
        return None
    m = 1
    while m <= max_multiple:
        if p_values(np.tile(L, m), alpha, delta, bound)[0] <= delta:
            return m
        m *= 2
    return None


def min_units(alpha: float, delta: float, bound: str = "wsr", limit: int = 100_000) -> int:
    """Fewest pilot units with which a loss-free pilot is certified at (alpha, delta): the floor
    under any pilot, whatever its failures: 45 for HB at alpha 5 %, delta 10 % (its Hoeffding
    part, ``(1 - alpha)^n <= delta``); 48 for WSR, whose bet starts cautious, a little above
    ``ln(1/delta) / ln(1 + alpha)`` = 47.2."""
    lo, hi = 1, 1
    while p_values(np.zeros(hi), alpha, delta, bound)[0] > delta:
        lo, hi = hi, hi * 2
        if hi > limit:
            raise DataError(f"min_units: no pilot up to {limit} units certifies alpha={alpha}, delta={delta}.")
    while lo < hi:  # p of a loss-free pilot falls with n: bisect
        mid = (lo + hi) // 2
        if p_values(np.zeros(mid), alpha, delta, bound)[0] <= delta:
            hi = mid
        else:
            lo = mid + 1
    return hi
