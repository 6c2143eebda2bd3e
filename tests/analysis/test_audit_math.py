"""Audit maths: the design's inclusion probabilities, PPI++ against Monte Carlo and ppi-python."""

import numpy as np
import pytest

from saseg.analysis.audit_math import (hajek_variance, inclusion_probabilities, mean_estimate,
                                       ratio_estimates, systematic_sample, tune_lambda)
from saseg.errors import DataError


def make_pool(rng, m=300, k=3, bias=0.1, shape=4.0):
    """True and predicted (intersection, union) pixels per frame and class; predictions biased.

    Unions are gamma (`shape`) and a class is absent from 10 % of frames; heavier tails (smaller
    `shape`) need more frames for the normal approximation.
    """
    union = rng.gamma(shape, 500.0, size=(m, k)) * (rng.uniform(size=(m, k)) < 0.9)
    quality = rng.beta(6, 2, size=(m, k))
    inter = np.round(union * quality)
    union = np.round(union)
    union_hat = union * rng.lognormal(0.0, 0.15, size=(m, k))
    inter_hat = np.clip(union_hat * (quality + bias + rng.normal(0, 0.08, size=(m, k))), 0, union_hat)
    return inter, union, inter_hat, union_hat


def test_inclusion_probabilities_sum_to_n_and_favour_uncertain():
    u = np.r_[np.zeros(50), np.linspace(0, 100, 50)]
    for n in (1, 10, 60, 100):
        pi = inclusion_probabilities(u, n)
        assert pi.sum() == pytest.approx(n)
        assert ((pi >= 0) & (pi <= 1)).all()
    pi = inclusion_probabilities(u, 10)
    assert pi[-1] > pi[0] > 0  # active, but every frame keeps the uniform floor
    assert pi[0] == pytest.approx(10 * 0.5 / 100)
    assert np.allclose(inclusion_probabilities(np.zeros(20), 5), 0.25)
    with pytest.raises(DataError, match="1 <= n <= 20"):
        inclusion_probabilities(np.ones(20), 21)


def test_systematic_sample_has_size_n_and_inclusion_probabilities_pi():
    rng = np.random.default_rng(0)
    pi = inclusion_probabilities(rng.gamma(1.0, size=40), 8)
    counts = np.zeros(40)
    reps = 4000
    for seed in range(reps):
        s = systematic_sample(pi, seed=seed)
        assert len(s) == 8 and len(set(s)) == 8
        counts[s] += 1
    # each frame's draw rate within 4 binomial standard errors of its pi
    se = np.sqrt(pi * (1 - pi) / reps) + 1e-9
    assert (np.abs(counts / reps - pi) <= 4 * se + 1e-3).all()
    assert np.array_equal(systematic_sample(pi, seed=3), systematic_sample(pi, seed=3))


def test_one_labelled_frame_is_refused_with_a_clear_message():
    with pytest.raises(DataError, match="at least 2 labelled frames"):
        ratio_estimates(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)),
                        np.ones(2), np.ones(2), np.array([0.1]))
    with pytest.raises(DataError, match="at least 2 labelled frames"):
        hajek_variance(np.ones(1), np.array([0.5]))


def test_census_has_no_sampling_error():
    rng = np.random.default_rng(1)
    inter, union, ih, uh = make_pool(rng, m=30)
    pi = np.ones(30)
    per_class, miou = ratio_estimates(inter, union, ih, uh, ih.sum(0), uh.sum(0), pi)
    assert np.allclose(per_class.estimate, inter.sum(0) / union.sum(0))
    assert np.allclose(per_class.se, 0.0)


@pytest.mark.parametrize("active", [False, True])
def test_coverage_matches_monte_carlo(active):
    """Brute force: draw 600 samples from one generated pool, count how often the 90 % CI covers."""
    rng = np.random.default_rng(2)
    inter, union, ih, uh = make_pool(rng, m=400, k=3, bias=0.1)
    truth = inter.sum(0) / union.sum(0)
    u = (uh - ih).sum(1) if active else np.zeros(len(uh))
    pi_all = inclusion_probabilities(u, 60)
    reps, covered, covered_m, widths, widths_lo = 600, np.zeros(3), 0, [], []
    for seed in range(reps):
        s = systematic_sample(pi_all, seed=seed)
        per_class, miou = ratio_estimates(inter[s], union[s], ih[s], uh[s], ih.sum(0), uh.sum(0), pi_all[s])
        labels_only, _ = ratio_estimates(inter[s], union[s], ih[s], uh[s], ih.sum(0), uh.sum(0),
                                         pi_all[s], lam=0.0)
        covered += (per_class.low <= truth) & (truth <= per_class.high)
        covered_m += miou.low <= truth.mean() <= miou.high
        widths.append(per_class.high - per_class.low)
        widths_lo.append(labels_only.high - labels_only.low)
    mc_error = 3 * np.sqrt(0.9 * 0.1 / reps)  # 3 Monte Carlo standard errors
    assert (covered / reps >= 0.9 - mc_error).all(), covered / reps
    assert covered_m / reps >= 0.9 - mc_error
    # the predictions carry information here, so the interval is narrower than labels-only
    assert np.mean(widths) < 0.8 * np.mean(widths_lo)
    # the plain predictions are biased by +0.1 IoU: without correction they would miss the truth
    assert (ih.sum(0) / uh.sum(0) - truth > 0.05).all()


def test_mean_estimate_covers_a_share():
    rng = np.random.default_rng(3)
    y = (rng.uniform(size=500) < 0.3).astype(float)
    y_hat = np.clip(y * 0.7 + rng.uniform(0, 0.4, size=500), 0, 1)
    pi_all = inclusion_probabilities(np.ones(500), 50)
    hits = 0
    for seed in range(400):
        s = systematic_sample(pi_all, seed=seed)
        est = mean_estimate(y[s], y_hat[s], y_hat, pi_all[s], pool_size=500)
        hits += est.low <= y.mean() <= est.high
    assert hits / 400 >= 0.9 - 3 * np.sqrt(0.09 / 400)


def test_tune_lambda_minimises_the_variance():
    rng = np.random.default_rng(4)
    b = rng.normal(size=60)
    a = 0.6 * b + rng.normal(scale=0.5, size=60)
    pi = np.full(60, 0.2)
    lam = float(tune_lambda(a, b, pi))
    grid = np.linspace(0, 1, 201)
    variances = [hajek_variance(a - g * b, pi) for g in grid]
    assert lam == pytest.approx(grid[int(np.argmin(variances))], abs=0.006)


# ---- against the reference package (dev extra: ppi-python) ---------------------------------
def test_mean_matches_ppi_python_mean_ci():
    ppi = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(5)
    m, n = 400, 40
    y_pool = rng.normal(1.0, 1.0, size=m)
    yhat_pool = y_pool + rng.normal(0.3, 0.5, size=m)
    s = rng.choice(m, n, replace=False)
    pi = np.full(n, n / m)
    for lam in (0.0, 0.7, 1.0):
        ours = mean_estimate(y_pool[s], yhat_pool[s], yhat_pool, pi, pool_size=m, lam=lam)
        low, high = ppi.ppi_mean_ci(y_pool[s], yhat_pool[s], yhat_pool, alpha=0.1, lam=lam)
        centre = ppi.ppi_mean_pointestimate(y_pool[s], yhat_pool[s], yhat_pool, lam=lam)
        assert float(ours.estimate) == pytest.approx(float(np.squeeze(centre)), rel=1e-10)
        # ppi-python: sd^2 = var0(lam yhat_pool)/M + var0(y - lam yhat)/n (super-population, no FPC);
        # ours: the rectifier term only, ddof 1 and the finite-pool correction (module doc)
        half = float(np.squeeze(high - low)) / 2 / 1.6448536269514722
        imputed = np.var(lam * yhat_pool) / m
        ours_as_ppi = ours.se**2 / (1 - n / m) * (n - 1) / n + imputed
        assert ours_as_ppi == pytest.approx(half**2, rel=1e-8)


def test_iou_ratio_matches_ppboot():
    ppi = pytest.importorskip("ppi_py")
    rng = np.random.default_rng(6)
    inter, union, ih, uh = make_pool(rng, m=20_000, k=1, bias=0.05)
    n = 400
    s = rng.choice(len(union), n, replace=False)
    pi = np.full(n, n / len(union))
    ours, _ = ratio_estimates(inter[s], union[s], ih[s], uh[s], ih.sum(0), uh.sum(0), pi, lam=1.0)
    y = np.c_[inter[s, 0], union[s, 0]]
    yh = np.c_[ih[s, 0], uh[s, 0]]
    yh_pool = np.c_[ih[:, 0], uh[:, 0]]
    ratio = lambda v: v[:, 0].mean() / v[:, 1].mean()
    np.random.seed(0)
    low, high = ppi.ppboot(ratio, y, yh, yh_pool, lam=1.0, n_resamples=1000, alpha=0.1)
    assert float(ours.estimate[0]) == pytest.approx((low + high) / 2, abs=0.25 * (high - low))
    assert float(ours.high[0] - ours.low[0]) == pytest.approx(high - low, rel=0.12)


def test_jackknife_equals_hajek_for_a_linear_statistic():
    rng = np.random.default_rng(7)
    e = rng.normal(size=25)
    pi = inclusion_probabilities(rng.gamma(1.0, size=25), 10)
    from saseg.analysis.audit_math import jackknife_variance
    v = jackknife_variance(lambda w: w @ e, pi, rescale=False)
    assert v == pytest.approx(hajek_variance(e, pi), rel=1e-10)
    uniform = np.full(25, 0.4)
    v = jackknife_variance(lambda w: w @ e, uniform, rescale=True)
    assert v == pytest.approx(hajek_variance(e, uniform), rel=1e-10)


# ---- unseen tails: the anticipated-variance ratio --------------------------------------------
def test_anticipation_ratio_denominator_is_unbiased_and_only_widens():
    from saseg.analysis.audit_math import anticipation_ratio
    rng = np.random.default_rng(9)
    v = rng.gamma(0.5, size=60)
    pi = inclusion_probabilities(rng.gamma(1.0, size=60), 12)
    total = ((1 - pi) * v / pi).sum()
    seen = [((1 - pi[s]) * v[s] / pi[s] ** 2).sum() for s in (systematic_sample(pi, seed=k) for k in range(4000))]
    assert np.mean(seen) == pytest.approx(total, rel=0.03)  # Horvitz-Thompson: unbiased for the pool's
    s = systematic_sample(pi, seed=0)
    rho = anticipation_ratio(v[s], pi[s], total)
    assert rho >= 1.0 and rho == pytest.approx(max(1.0, total / seen[0]))
    assert anticipation_ratio(np.zeros(3), np.full(3, 0.5), 2.0) == np.inf  # the sample saw none of it
    assert anticipation_ratio(np.ones(3), np.full(3, 0.5), 0.0) == 1.0


def test_anticipated_variance_scales_each_class_and_the_miou_by_its_own_ratio():
    """var = plain jackknife var x max(1, ρ): per class ρ_c from v_c; for the mIoU from the
    diagonal model Σ_c v_c / T_c² (T_c the class's predicted pool union)."""
    from saseg.analysis.audit_math import anticipation_ratio
    rng = np.random.default_rng(21)
    inter, union, ih, uh = make_pool(rng, m=120, k=2)
    pi = inclusion_probabilities(rng.gamma(2.0, size=120), 15)
    s = systematic_sample(pi, seed=3)
    v = uh * np.maximum(uh - ih, 0.0)
    seen = ((1 - pi[s])[:, None] * v[s] / pi[s][:, None] ** 2).sum(0)
    total = seen * np.array([3.0, 0.5])  # class 0: the sample holds a third of it; class 1: more than its share
    args = (inter[s], union[s], ih[s], uh[s], ih.sum(0), uh.sum(0), pi[s])
    plain, plain_miou = ratio_estimates(*args)
    scaled, scaled_miou = ratio_estimates(*args, anticipated=(v[s], total))
    np.testing.assert_allclose(scaled.se ** 2, plain.se ** 2 * [3.0, 1.0], rtol=1e-12)
    weight = uh.sum(0) ** -2.0
    by_hand = (total @ weight) / (((1 - pi[s]) * (v[s] @ weight) / pi[s] ** 2).sum())
    assert by_hand > 1.0
    assert scaled_miou.se ** 2 == pytest.approx(plain_miou.se ** 2 * by_hand, rel=1e-12)
    assert by_hand == pytest.approx(float(anticipation_ratio(v[s] @ weight, pi[s], total @ weight)))
    np.testing.assert_array_equal(scaled.estimate, plain.estimate)  # it moves the interval's width only
    # a sample holding none of the anticipated variance leaves the whole range
    blind, blind_miou = ratio_estimates(*args, anticipated=(np.zeros_like(v[s]), total))
    assert np.all(blind.low == 0.0) and np.all(blind.high == 1.0) and blind_miou.high == 1.0


def test_a_tail_of_large_confidently_wrong_frames_is_covered_by_an_active_design():
    """Five large frames hold half the error while the predictions call them good: a uniform sample
    of 20 mostly misses them and its interval under-covers; a design that favours large doubtful
    areas samples them (the model sees their area, not their error)."""
    from saseg.analysis.audit import PoolPredictions
    rng = np.random.default_rng(8)
    m, n, reps = 240, 20, 500
    union = rng.gamma(4.0, 500.0, size=(m, 1))
    quality = rng.beta(8, 2, size=(m, 1))
    heavy = rng.choice(m, 5, replace=False)
    union[heavy] *= 10
    quality[heavy] = 0.4
    inter, union = np.round(union * quality), np.round(union)
    uh = union * rng.lognormal(0, 0.15, size=(m, 1))
    ih = uh * np.clip(quality + 0.1, 0, 0.95)
    ih[heavy] = 0.85 * uh[heavy]
    truth = inter.sum() / union.sum()
    pool = PoolPredictions(np.arange(m).astype(str), np.arange(m), np.full(m, "", object), ih, uh, np.full(m, 0.8))
    v = pool.residual_model()
    coverage = {}
    for design, u in (("uniform", np.zeros(m)), ("active", pool.uncertainty())):
        pi = inclusion_probabilities(u, n)
        total = ((1 - pi)[:, None] * v / pi[:, None]).sum(0)
        hits = 0
        for seed in range(reps):
            s = systematic_sample(pi, seed=seed)
            est, _ = ratio_estimates(inter[s], union[s], ih[s], uh[s], ih.sum(0), uh.sum(0), pi[s],
                                     anticipated=(v[s], total))
            hits += est.low[0] <= truth <= est.high[0]
        coverage[design] = hits / reps
    assert coverage["active"] >= 0.9 - 3 * np.sqrt(0.09 / reps), coverage
    assert coverage["uniform"] < 0.6, coverage  # the pool is hard: without the design the interval misses


def test_a_sample_without_the_anticipated_variance_has_no_interval_and_no_warning():
    """Every sampled frame drawn with π = 1 (spread 0) while the pool's model says variance
    sits elsewhere: ρ = ∞ gives an infinite variance, without computing 0 x ∞."""
    import warnings

    inter = np.array([[5.0], [6.0], [7.0]])
    union = np.array([[10.0], [10.0], [10.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        per_class, miou = ratio_estimates(inter, union, inter, union, np.array([30.0]), np.array([40.0]),
                                          np.ones(3), anticipated=(np.zeros((3, 1)), np.array([5.0])))
    assert np.isinf(per_class.se[0]) and np.isinf(miou.se)
