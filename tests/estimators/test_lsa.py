import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import gaussian_kde

from saseg.errors import DataError, DegenerateDataError, NotFittedError
from saseg.estimators import LSA


def correlated(rng, n, d):
    return rng.normal(size=(n, d)) @ (np.eye(d) + 0.3 * rng.normal(size=(d, d))) + 1.0


def analytic_lsa(q, ref, factor, ridge=0.0):
    """-log of the KDE written out: mean of Gaussians N(q; r_i, factor^2 * cov)."""
    cov = np.cov(ref, rowvar=False)
    d = cov.shape[0]
    cov = cov + ridge * np.trace(cov) / d * np.eye(d)
    h = factor ** 2 * cov
    diff = q[:, None, :] - ref[None, :, :]
    maha = np.einsum("qnd,de,qne->qn", diff, np.linalg.inv(h), diff)
    _, logdet = np.linalg.slogdet(2 * np.pi * h)
    return -(logsumexp(-0.5 * maha - 0.5 * logdet, axis=1) - np.log(len(ref)))


@pytest.mark.parametrize("d,n", [(2, 300), (8, 800), (64, 5000)])
def test_matches_scipy_gaussian_kde(d, n):
    rng = np.random.default_rng(d)
    ref = correlated(rng, n, d)
    other = correlated(rng, 2 * d + 40, d) - 3.0
    x = np.vstack([ref, other])
    c = np.repeat([4, 1], [n, len(other)])
    q = np.vstack([correlated(rng, 10, d), correlated(rng, 5, d) - 3.0])
    qc = np.repeat([4, 1], [10, 5])[[*range(0, 15, 2), *range(1, 15, 2)]]
    q = q[[*range(0, 15, 2), *range(1, 15, 2)]]
    est = LSA(var_threshold=None).fit(x, c)
    out = est.score(q, qc).numpy()
    for cls, pts in ((4, ref), (1, other)):
        expected = -gaussian_kde(pts.T).logpdf(q[qc == cls].T)
        np.testing.assert_allclose(out[qc == cls], expected, rtol=1e-6)


def test_silverman_small_blocks_and_float32():
    rng = np.random.default_rng(1)
    ref = correlated(rng, 400, 3)
    q = correlated(rng, 30, 3) * 1.5
    c, qc = np.zeros(400, int), np.zeros(30, int)
    expected = -gaussian_kde(ref.T, bw_method="silverman").logpdf(q.T)
    out = LSA(bandwidth="silverman", block_bytes=2048).fit(ref, c).score(q, qc)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-9)
    out32 = LSA(bandwidth="silverman", dtype="float32").fit(ref, c).score(q, qc)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), expected, rtol=1e-4)


def test_far_queries_are_finite_and_match_the_analytic_kde():
    ref = np.array([[0.0, 0.0], [1.0, 0.5], [0.3, 1.2]])
    q = np.array([[300.0, -200.0], [1e3, 1e3]])
    factor = 3 ** (-1 / 6)
    kde = gaussian_kde(ref.T)
    with np.errstate(divide="ignore"):
        assert np.isinf(-np.log(kde.pdf(q.T))).all()  # the naive -log(pdf) underflows
    out = LSA().fit(ref, np.zeros(3, int)).score(q, np.zeros(2, int)).numpy()
    assert np.isfinite(out).all() and (out > 1e4).all()
    np.testing.assert_allclose(out, analytic_lsa(q, ref, factor), rtol=1e-9)
    np.testing.assert_allclose(out, -kde.logpdf(q.T), rtol=1e-9)


def test_variance_filter_drops_low_variance_features_per_class():
    rng = np.random.default_rng(2)
    a = correlated(rng, 200, 4)
    a[:, 1] = 0.5  # constant
    a[:, 3] = 2.0 + 1e-4 * rng.normal(size=200)  # variance 1e-8 < 1e-5
    b = correlated(rng, 200, 4)
    est = LSA().fit(np.vstack([a, b]), np.repeat([0, 1], 200))
    assert est.kept_[0].tolist() == [0, 2] and est.kept_[1].tolist() == [0, 1, 2, 3]
    q = correlated(rng, 6, 4)
    expected = -gaussian_kde(a[:, [0, 2]].T).logpdf(q[:, [0, 2]].T)
    np.testing.assert_allclose(est.score(q, np.zeros(6, int)).numpy(), expected, rtol=1e-6)
    with pytest.raises(DegenerateDataError, match="class 0 to keep at least 1 feature"):
        LSA().fit(np.ones((10, 3)), np.zeros(10, int))


def test_singular_covariance_raises_or_uses_documented_ridge():
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(5, 8))  # 5 ATs span at most 4 dimensions of 8
    with pytest.raises(DegenerateDataError, match="class 2"):
        LSA().fit(ref, np.full(5, 2))
    q = rng.normal(size=(4, 8))
    out = LSA(ridge=1e-2).fit(ref, np.full(5, 2)).score(q, np.full(4, 2)).numpy()
    np.testing.assert_allclose(out, analytic_lsa(q, ref, 5 ** (-1 / 12), ridge=1e-2), rtol=1e-8)


def test_bad_inputs():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(20, 2))
    c = np.zeros(20, int)
    with pytest.raises(NotFittedError):
        LSA().score(x, c)
    with pytest.raises(DegenerateDataError, match=r"classes \[3\]"):
        LSA().fit(np.vstack([x, x[:1]]), np.append(c, 3))
    x_nan = x.copy()
    x_nan[5, 0] = np.nan
    with pytest.raises(DegenerateDataError, match="1 of 20 rows"):
        LSA().fit(x_nan, c)
    with pytest.raises(DataError, match="bandwidth"):
        LSA(bandwidth="wide").fit(x, c)
    with pytest.raises(DataError, match="dtype"):
        LSA(dtype="float16").fit(x, c)
