"""Learn-then-Test thresholds against an independent binomial computation (scipy)."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

from saseg.analysis.guarantee import (binomial_cdf, clopper_pearson_upper, failures_from_iou, frames_needed,
                                      learn_then_test)
from saseg.errors import DataError


@pytest.mark.parametrize("n", [1, 7, 45, 200, 1000])
@pytest.mark.parametrize("p", [0.01, 0.05, 0.1, 0.5])
def test_binomial_cdf_matches_scipy(n, p):
    for k in sorted({0, 1, n // 10, n // 2, n - 1, n}):
        assert binomial_cdf(k, n, p) == pytest.approx(binom.cdf(k, n, p), rel=1e-9, abs=1e-300)


def test_clopper_pearson_solves_its_equation():
    for k, n in [(0, 45), (2, 100), (10, 50)]:
        u = clopper_pearson_upper(k, n, 0.1)
        assert binom.cdf(k, n, u) == pytest.approx(0.1, rel=1e-6)
    assert clopper_pearson_upper(5, 5, 0.1) == 1.0 and clopper_pearson_upper(0, 0, 0.1) == 1.0


def test_frames_needed():
    assert frames_needed(0.05, 0.1) == 45  # (0.95)^45 = 0.0994 <= 0.1 < (0.95)^44
    assert 0.95 ** 45 <= 0.1 < 0.95 ** 44
    assert frames_needed(0.1, 0.1) == 22


def _reference(scores, fails, alpha, delta):
    """Brute force: every distinct threshold ascending, scipy p-values, stop at first p > delta."""
    best = None
    needed = math.ceil(math.log(delta) / math.log(1 - alpha) - 1e-12)
    for lam in np.unique(scores):
        skip = scores <= lam
        if skip.sum() < needed:
            continue
        p = 0.0
        for f in fails.values():
            present = skip & np.isfinite(f)
            n, k = int(present.sum()), int((f[present] > 0).sum())
            p = max(p, binom.cdf(k, n, alpha) if n else 1.0)
        if p > delta:
            break
        best = lam
    return best


@pytest.mark.parametrize("seed", range(6))
def test_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 300
    scores = np.round(rng.normal(size=n), 1)  # ties on purpose
    risk = 1 / (1 + np.exp(-3 * (scores - 1.0)))  # failures concentrate at high scores
    fails = {"frame": (rng.random(n) < risk).astype(float)}
    cls = (rng.random(n) < risk * 0.5).astype(float)
    cls[rng.random(n) < 0.3] = np.nan  # class absent in some frames
    fails["Car"] = cls
    for alpha in (0.05, 0.1, 0.2):
        got = learn_then_test(scores, fails, alpha=alpha, delta=0.1)
        assert got.threshold == _reference(scores, fails, alpha, 0.1)
        if got.threshold is not None:
            skip = scores <= got.threshold
            assert got.n_skipped == skip.sum()
            assert got.p_value <= 0.1


def test_too_small_pilot_says_how_many_frames():
    scores = np.arange(30.0)
    g = learn_then_test(scores, {"frame": np.zeros(30)}, alpha=0.05, delta=0.1)
    assert g.threshold is None and g.needed == 45
    assert "at least 45 labelled pilot frames" in g.describe()
    g = learn_then_test(np.arange(50.0), {"frame": np.zeros(50)}, alpha=0.05, delta=0.1)
    assert g.threshold == 49.0 and g.n_skipped == 50  # no failure: everything certified
    assert g.upper_bound == pytest.approx(1 - 0.1 ** (1 / 50))
    assert "With 90% confidence, at most 5% of skipped frames" in g.describe()


def test_every_frame_fails():
    g = learn_then_test(np.arange(100.0), {"frame": np.ones(100)}, alpha=0.1, delta=0.1)
    assert g.threshold is None and len(g.tested) == 1
    first = g.tested.iloc[0]
    assert first["n_skipped"] == 22 and first["n_failed"] == 22 and first["p_value"] == 1.0


def test_nan_scores_left_out_and_bad_lengths():
    scores = np.r_[np.arange(60.0), np.nan]
    g = learn_then_test(scores, {"frame": np.zeros(61)}, alpha=0.05, delta=0.1)
    assert g.n_pilot == 60
    with pytest.raises(DataError, match="failure flags"):
        learn_then_test(scores, {"frame": np.zeros(3)})


def test_failures_from_iou():
    frames = pd.DataFrame({"frame_id": ["a", "b", "c"]})
    iou = pd.DataFrame({"frame_id": ["a", "a", "b", "b", "c"], "kind": ["class"] * 4 + ["class"],
                        "target": ["Car", "Road", "Car", "Road", "Road"], "class_id": [0, 1, 0, 1, 1],
                        "iou": [0.2, 0.9, 0.6, 0.8, 0.3]})
    f = failures_from_iou(frames, iou, ["frame", "Car"], 0.5)
    assert f["frame"].tolist() == [0.0, 0.0, 1.0]  # means 0.55, 0.7, 0.3
    assert f["Car"][:2].tolist() == [1.0, 0.0] and np.isnan(f["Car"][2])
    with pytest.raises(DataError, match="Bus"):
        failures_from_iou(frames, iou, ["Bus"], 0.5)


def test_cause_when_nothing_is_certified():
    """Too few frames (more would help) against too many failures among the lowest-scored (would not)."""
    scores = np.arange(30, dtype=float)
    g = learn_then_test(scores, {"frame": np.zeros(30)}, alpha=0.05, delta=0.1)
    assert g.threshold is None and "too few pilot frames (30 < 45)" in g.cause()
    fails = np.zeros(100)
    fails[[0, 5]] = 1  # 2 of the lowest 45 fail (4 % < 5 %): a larger pilot would certify
    g = learn_then_test(np.arange(100.0), {"frame": fails}, alpha=0.05, delta=0.1)
    assert g.threshold is None and "times larger" in g.cause()
    m = int(g.cause().split("about ")[1].split(" times")[0])
    assert binom.cdf(2 * m, 45 * m, 0.05) <= 0.1 < binom.cdf(2 * m // 2, 45 * m // 2, 0.05)
    fails[:10] = 1  # 10 of the lowest 45 fail: more frames alike would not help
    g = learn_then_test(np.arange(100.0), {"frame": fails}, alpha=0.05, delta=0.1)
    assert "would not help" in g.describe() and "--unit segment" in g.to_dict()["cause"]
