"""Bounds for bounded means against independent computations (plain loops, scipy), and their
validity on generated exchangeable data over many splits."""

import math

import numpy as np
import pytest
from scipy.special import kl_div
from scipy.stats import binom

from saseg.analysis.bounds import (crc_index, fixed_sequence, hb_p_values, p_values, pilot_multiple_needed,
                                   wsr_p_values)
from saseg.errors import DataError


def _wsr_loop(losses, alpha, delta):
    """WSR p-value written out step by step (Bates et al. 2021, Prop. 5)."""
    n = len(losses)
    capital, best, total, sq = 1.0, 1.0, 0.0, 0.0
    sigma2_prev = 0.25
    for i, x in enumerate(losses, start=1):
        nu = min(1.0, math.sqrt(2 * math.log(1 / delta) / (n * sigma2_prev)))
        capital *= 1 - nu * (x - alpha)
        best = max(best, capital)
        total += x
        mu = (0.5 + total) / (i + 1)
        sq += (x - mu) ** 2
        sigma2_prev = (0.25 + sq) / (i + 1)
    return min(1.0, 1.0 / best)


def _hb_reference(losses, alpha):
    n, mean = len(losses), float(np.mean(losses))
    a = min(mean, alpha)
    # kl_div(x, y) = x ln(x/y) - x + y; the two terms' -x + y cancel in the sum
    h = kl_div(a, alpha) + kl_div(1 - a, 1 - alpha)
    k = math.ceil(round(n * mean, 9))
    return min(1.0, math.exp(-n * h), math.e * binom.cdf(k, n, alpha))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.3])
def test_wsr_and_hb_match_references(seed, alpha):
    rng = np.random.default_rng(seed)
    n = [5, 30, 100, 250, 60][seed]
    L = np.clip(rng.beta(0.3, 5, size=(n, 4)) * [0.5, 1, 2, 4], 0, 1)
    L[:, 0] = 0.0  # a loss-free column
    wsr, hb = wsr_p_values(L, alpha, 0.1), hb_p_values(L, alpha)
    for j in range(L.shape[1]):
        assert wsr[j] == pytest.approx(_wsr_loop(L[:, j], alpha, 0.1), rel=1e-9)
        assert hb[j] == pytest.approx(_hb_reference(L[:, j], alpha), rel=1e-9)


def test_too_small_pilot_cannot_certify_and_all_failing_pilot_neither():
    # no failures at all, but 20 frames: (1 + alpha)^20 < 10 and (1 - alpha)^20 > 0.1
    assert wsr_p_values(np.zeros(20), 0.05, 0.1)[0] > 0.1
    assert hb_p_values(np.zeros(20), 0.05)[0] > 0.1
    assert hb_p_values(np.zeros(20), 0.05)[0] == pytest.approx(0.95 ** 20)
    # 200 frames, all fail: p = 1 for both, and the sequence rejects nothing
    ones = np.ones((200, 3))
    for bound in ("wsr", "hb"):
        p = p_values(ones, 0.05, 0.1, bound)
        assert np.all(p == 1.0)
        assert fixed_sequence(p, 0.1) == -1
    # a clean large pilot certifies
    assert wsr_p_values(np.zeros(100), 0.05, 0.1)[0] < 0.1
    assert pilot_multiple_needed(np.zeros(20), 0.05, 0.1) in (4,)  # 80 frames: (1.05)^~ > 10
    assert pilot_multiple_needed(np.ones(50), 0.05, 0.1) is None


def test_fixed_sequence_stops_at_the_first_failure():
    assert fixed_sequence([0.01, 0.02, 0.5, 0.01], 0.1) == 1
    assert fixed_sequence([0.5, 0.01], 0.1) == -1
    assert fixed_sequence([0.01, 0.01], 0.1) == 1
    assert fixed_sequence([np.nan, 0.01], 0.1) == -1


def test_crc_against_brute_force():
    rng = np.random.default_rng(3)
    for n in (10, 19, 40, 120):
        L = np.sort(rng.uniform(0, 0.2, size=(n, 30)) * (rng.uniform(size=(n, 1)) < 0.5), axis=1)
        for alpha in (0.05, 0.1):
            best = -1
            for j in range(30):
                if (L[:, j].sum() + 1) / (n + 1) <= alpha:
                    best = j
                else:
                    break
            assert crc_index(L, alpha) == best
    assert crc_index(np.zeros((18, 3)), 0.05) == -1  # 1/19 > 0.05: too few frames
    assert crc_index(np.zeros((19, 3)), 0.05) == 2


def test_bad_input_is_one_clear_error():
    with pytest.raises(DataError, match="in \\[0, 1\\]"):
        wsr_p_values([0.5, 1.5], 0.1, 0.1)
    with pytest.raises(DataError, match="bound"):
        p_values([0.1], 0.1, 0.1, "bonferroni")


def _population(rng, n_units, n_seg=6):
    """Units with n_seg segments; segment score u ~ U(0, 1), wrong with probability u^2 / 2.
    Loss at threshold lambda: share of a unit's segments with u <= lambda that are wrong."""
    u = rng.uniform(size=(n_units, n_seg))
    wrong = rng.uniform(size=(n_units, n_seg)) < u ** 2 / 2
    grid = np.linspace(0, 1, 41)
    accepted = u[:, :, None] <= grid[None, None, :]
    return ((accepted & wrong[:, :, None]).sum(1) / n_seg), grid


@pytest.mark.parametrize("bound", ["wsr", "hb"])
def test_ltt_validity_over_many_splits(bound):
    """Violation rate of the certified threshold within Monte Carlo error of DELTA."""
    rng = np.random.default_rng(0)
    population, _ = _population(rng, 40_000)
    true_risk = population.mean(0)
    alpha, delta, n, splits = 0.05, 0.1, 150, 400
    violations, certified = 0, 0
    for _ in range(splits):
        pilot = population[rng.choice(len(population), n, replace=False)]
        j = fixed_sequence(p_values(pilot, alpha, delta, bound), delta)
        certified += j >= 0
        violations += j >= 0 and true_risk[j] > alpha
    assert certified > splits / 2  # the test has power, so the rate below means something
    assert violations / splits <= delta + 2 * math.sqrt(delta * (1 - delta) / splits)


def test_crc_validity_in_expectation():
    rng = np.random.default_rng(1)
    population, _ = _population(rng, 40_000)
    true_risk = population.mean(0)
    alpha, n, splits = 0.05, 60, 400
    risks = []
    for _ in range(splits):
        pilot = population[rng.choice(len(population), n, replace=False)]
        j = crc_index(pilot, alpha)
        risks.append(true_risk[j] if j >= 0 else 0.0)
    risks = np.array(risks)
    assert risks.mean() <= alpha + 2 * risks.std() / math.sqrt(splits)
    assert risks.mean() > alpha / 2  # not vacuous


def test_min_units_is_the_smallest_loss_free_pilot():
    from saseg.analysis.bounds import min_units
    for bound in ("wsr", "hb"):
        for alpha in (0.05, 0.1):
            m = min_units(alpha, 0.1, bound)
            assert p_values(np.zeros(m), alpha, 0.1, bound)[0] <= 0.1 < p_values(np.zeros(m - 1), alpha, 0.1, bound)[0]
    assert min_units(0.05, 0.1, "hb") == 45 and 0.95 ** 45 <= 0.1 < 0.95 ** 44
