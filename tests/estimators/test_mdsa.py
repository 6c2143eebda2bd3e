import logging

import numpy as np
import pytest
import torch
from scipy.spatial.distance import mahalanobis

from saseg.errors import DataError, DegenerateDataError, NotFittedError, UnknownClassError
from saseg.estimators import MDSA


def make_data(n=400, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, k, n)
    mix = rng.normal(size=(k, d, d))
    x = np.einsum("nd,nde->ne", rng.normal(size=(n, d)), mix[classes]) + 2.0 * classes[:, None] + 1.0
    return x, classes


def lw_reference(x):
    """scikit-learn's LedoitWolf covariance (ledoit_wolf_shrinkage formula), in plain numpy."""
    n, d = x.shape
    xc = x - x.mean(0)
    emp = xc.T @ xc / n
    x2 = xc ** 2
    mu = np.trace(emp) / d
    beta_ = np.sum(x2.T @ x2)
    delta_ = np.sum((xc.T @ xc) ** 2) / n ** 2
    beta = 1.0 / (d * n) * (beta_ / n - delta_)
    delta = (delta_ - 2.0 * mu * x2.sum(0).sum() / n + d * mu ** 2) / d
    beta = min(beta, delta)
    a = 0.0 if beta == 0 else beta / delta
    return (1 - a) * emp + a * mu * np.eye(d), a


def scipy_mdsa(x, classes, covs, means):
    return np.array([mahalanobis(xi, means[c], np.linalg.inv(covs[c])) for xi, c in zip(x, classes)])


def test_ledoit_wolf_matches_sklearn_formula_and_scipy_mahalanobis():
    x, c = make_data()
    q, qc = make_data(n=50, seed=1)
    est = MDSA().fit(x, c)
    covs, means = {}, {}
    for k in range(3):
        covs[k], a = lw_reference(x[c == k])
        means[k] = x[c == k].mean(0)
        assert 0 < a < 1
        np.testing.assert_allclose(est.shrinkage_[k].item(), a, rtol=1e-9)
        np.testing.assert_allclose(est.covariances_[k].numpy(), covs[k], rtol=1e-9, atol=1e-12)
    ref = scipy_mdsa(q, qc, covs, means)
    np.testing.assert_allclose(est.score(torch.tensor(q, dtype=torch.float32), qc).numpy(), ref, rtol=1e-5)
    np.testing.assert_allclose(est.score(q, qc).numpy(), ref, rtol=1e-10)


def test_float_shrinkage_matches_numpy_regularised_covariance():
    x, c = make_data(d=5)
    q, qc = make_data(n=40, d=5, seed=2)
    a = 0.05
    covs, means = {}, {}
    for k in range(3):
        s = np.cov(x[c == k], rowvar=False)
        covs[k] = (1 - a) * s + a * np.trace(s) / 5 * np.eye(5)
        means[k] = x[c == k].mean(0)
    out = MDSA(shrinkage=a).fit(torch.tensor(x), torch.tensor(c)).score(torch.tensor(q, dtype=torch.float32), qc)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), scipy_mdsa(q, qc, covs, means), rtol=1e-5)


def test_partial_fit_over_chunks_equals_one_fit():
    x, c = make_data(n=600, seed=3)
    c[:250][c[:250] == 2] = 1  # class 2 first appears in a later chunk
    full = MDSA().fit(x, c)
    part = MDSA()
    for s in range(0, 600, 97):
        part.partial_fit(x[s:s + 97], c[s:s + 97])
    assert part.finalize() is part
    assert torch.equal(part.classes_, full.classes_) and torch.equal(part.counts_, full.counts_)
    torch.testing.assert_close(part.means_, full.means_, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(part.covariances_, full.covariances_, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(part.score(x, c), full.score(x, c), rtol=1e-10, atol=0)


def test_merged_workers_equal_one_fit_to_1e10():
    """Four 'workers' each stream a shard (own shifts, one lacks a class); merged pairwise in
    any order, the model equals the single-process fit on all ATs, Ledoit-Wolf included."""
    x, c = make_data(n=800, d=8, seed=5)
    x[:, 0] += 1e3  # far from 0: the re-shifting must stay exact
    full = MDSA().fit(x, c)
    shards = [slice(0, 130), slice(130, 400), slice(400, 401), slice(401, 800)]
    workers = []
    for shard in shards:
        xs, cs = x[shard], c[shard]
        if shard.start == 130:
            keep = cs != 2  # this worker never sees class 2
            xs, cs = xs[keep], cs[keep]
            x2, c2 = x[shard][~keep], c[shard][~keep]
        workers.append(MDSA().partial_fit(xs, cs))
    workers.append(MDSA().partial_fit(x2, c2))
    for order in ([0, 1, 2, 3, 4], [4, 2, 3, 0, 1]):
        merged = MDSA()
        for i in order:
            merged.merge(workers[i])
        merged.finalize()
        assert torch.equal(merged.classes_, full.classes_) and torch.equal(merged.counts_, full.counts_)
        for attr in ("means_", "covariances_", "shrinkage_", "whiteners_"):
            torch.testing.assert_close(getattr(merged, attr), getattr(full, attr), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(merged.score(x, c), full.score(x, c), rtol=1e-10, atol=0)


def test_merge_refuses_other_widths_settings_and_empty():
    x, c = make_data(n=100, d=4)
    with pytest.raises(NotFittedError):
        MDSA().merge(MDSA())
    with pytest.raises(DataError, match="d=4"):
        MDSA().partial_fit(x, c).merge(MDSA().partial_fit(np.hstack([x, x]), c))
    with pytest.raises(DataError, match="shrinkage"):
        MDSA().partial_fit(x, c).merge(MDSA(shrinkage=0.1).partial_fit(x, c))


def test_partial_fit_keeps_a_one_sample_class_pending(caplog):
    x, c = make_data(n=100)
    c[0] = 7
    est = MDSA()
    with caplog.at_level(logging.WARNING):
        est.partial_fit(x[:50], c[:50], class_names={k: f"c{k}" for k in (0, 1, 2, 7)}).finalize()
        assert 7 not in est.classes_.tolist() and "[7]" in caplog.text
    assert est.class_names_ == {0: "c0", 1: "c1", 2: "c2"}
    with pytest.raises(UnknownClassError, match="7"):
        est.score(x[:1], c[:1])
    est.partial_fit(x[:1] + 1.0, np.array([7])).finalize()
    assert 7 in est.classes_.tolist() and est.class_names_[7] == "c7"
    assert np.isfinite(est.score(x[:1], c[:1]).numpy()).all()


def test_fewer_ats_than_dimensions_is_finite_and_warns(caplog):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 16))
    c = np.repeat([0, 1], [30, 10])  # class 1: n=10 < d=16
    with caplog.at_level(logging.WARNING):
        est = MDSA().fit(x, c)
    assert "fewer ATs than d=16" in caplog.text
    cov, _ = lw_reference(x[c == 1])
    q = rng.normal(size=(5, 16)) * 3
    ref = [mahalanobis(v, x[c == 1].mean(0), np.linalg.inv(cov)) for v in q]
    np.testing.assert_allclose(est.score(q, np.ones(5, int)).numpy(), ref, rtol=1e-8)


def test_two_ats_constant_feature_and_help():
    x = np.array([[0.0, 1.0, 5.0], [1.0, 2.0, 5.0], [3.0, 3.0, 3.0], [4.0, 1.0, 3.0], [5.0, 0.0, 3.0]])
    c = np.array([0, 0, 1, 1, 1])  # class 0: two ATs (LW gives 0, floor applies); feature 2 constant
    out = MDSA().fit(x, c).score(x + 0.5, c)
    assert torch.isfinite(out).all()
    assert "Eq. 3" in MDSA.__doc__ and "sqrt" in MDSA.__doc__


def test_degenerate_inputs_raise_clear_errors():
    x, c = make_data(n=60)
    with pytest.raises(NotFittedError, match="MDSA"):
        MDSA().score(x, c)
    bad = x.copy()
    bad[[3, 8], 1] = np.nan
    bad[9, 0] = np.inf
    with pytest.raises(DegenerateDataError, match="3 of 60 rows"):
        MDSA().fit(bad, c)
    est = MDSA().fit(x, c)
    with pytest.raises(DegenerateDataError, match="3 of 60 rows"):
        est.score(bad, c)
    with pytest.raises(UnknownClassError, match=r"\[0, 1, 2\].*\[5, 9\]"):
        est.score(x[:3], np.array([0, 9, 5]))
    with pytest.raises(DegenerateDataError, match=r"classes \[4\]"):
        MDSA().fit(np.vstack([x, x[:1]]), np.append(c, 4))
    with pytest.raises(DegenerateDataError, match=r"identical"):
        MDSA().fit(np.vstack([x, np.ones((5, 6))]), np.append(c, [3] * 5))
    with pytest.raises(DataError, match="d=6"):
        est.score(x[:, :4], c)
    with pytest.raises(DataError, match="shape"):
        est.score(x, c[:-1])
    with pytest.raises(DataError, match="integer class ids"):
        est.score(x, c.astype(float))
    with pytest.raises(DataError, match=r"shape \(N, d\)"):
        est.score(x[0], c[:1])
    with pytest.raises(DataError, match="shrinkage"):
        MDSA(shrinkage=1.5).fit(x, c)
    rng = np.random.default_rng(5)
    with pytest.raises(DegenerateDataError, match="singular"):
        MDSA(shrinkage=0.0).fit(rng.normal(size=(5, 8)), np.zeros(5, int))
    with pytest.raises(DegenerateDataError, match="at least one AT"):
        MDSA().fit(np.zeros((0, 3)), np.zeros(0, int))
    assert est.score(np.zeros((0, 6)), np.zeros(0, int)).shape == (0,)
    with pytest.raises(DegenerateDataError, match="1 of 2 overflowed"):
        est.score(torch.tensor([[1e30] * 6, [1.0] * 6], dtype=torch.float32), np.array([0, 0]))


def test_finalize_is_explicit_and_score_save_finalize_pending_moments(tmp_path):
    x, c = make_data(n=300, seed=6)
    est = MDSA().partial_fit(x[:150], c[:150])
    with pytest.raises(AttributeError):
        est.means_  # nothing factored yet
    torch.testing.assert_close(est.score(x, c), MDSA().fit(x[:150], c[:150]).score(x, c), rtol=0, atol=0)
    est.partial_fit(x[150:], c[150:])
    assert not hasattr(est, "classes_")
    est.save(tmp_path)  # factors the pending moments first
    assert torch.equal(MDSA.load(tmp_path).score(x, c), est.score(x, c))
    torch.testing.assert_close(est.score(x, c), MDSA().fit(x, c).score(x, c), rtol=1e-10, atol=0)
    means = est.means_
    assert est.finalize() is est and est.means_ is means  # nothing pending: a no-op
    with pytest.raises(NotFittedError, match="MDSA"):
        MDSA().finalize()


def test_a_failed_fit_leaves_nothing_to_finalize():
    x, c = make_data(n=60)
    est = MDSA()
    with pytest.raises(DegenerateDataError):
        est.fit(np.vstack([x, x[:1]]), np.append(c, 4))  # class 4 has one AT
    with pytest.raises(NotFittedError):
        est.score(x, c)


def test_float32_scores_by_onednn_equal_addmm_and_scipy():
    """float32 on CPU runs oneDNN's linear on packed whiteners (the fast path the benchmark
    measures); it must equal the addmm path and scipy, per class, NaN rows included."""
    x, c = make_data(n=600, d=16)
    q, qc = make_data(n=300, d=16, seed=1)
    est = MDSA().fit(x, c)
    q32 = torch.tensor(q, dtype=torch.float32)
    fast = est.score(q32, qc)
    state = est._device_cache[("cpu", torch.float32)]
    if torch.backends.mkldnn.is_available():  # the x86/ARM wheels: a silent fallback is a defect
        assert state["packed"] is not None and len(state["packed"]) == 3
    covs = {k: est.covariances_[k].numpy() for k in range(3)}
    means = {k: est.means_[k].numpy() for k in range(3)}
    np.testing.assert_allclose(fast.numpy(), scipy_mdsa(q, qc, covs, means), rtol=2e-5)
    state["packed"] = None  # the addmm path every other device and dtype takes
    np.testing.assert_allclose(est.score(q32, qc).numpy(), fast.numpy(), rtol=1e-5)
    est._device_cache.clear()
    bad = q32.clone()
    bad[[4, 7], 2] = float("nan")
    bad[9, 0] = float("inf")
    with pytest.raises(DegenerateDataError, match="3 of 300 rows"):
        est.score(bad, qc)


def test_scored_estimator_pickles_without_its_device_cache():
    import pickle

    x, c = make_data()
    est = MDSA().fit(x, c)
    before = est.score(torch.tensor(x, dtype=torch.float32), c)  # fills the cache (oneDNN tensors)
    copy = pickle.loads(pickle.dumps(est))
    assert "_device_cache" not in copy.__dict__
    torch.testing.assert_close(copy.score(torch.tensor(x, dtype=torch.float32), c), before, rtol=0, atol=0)
