"""fit_per_class: too-rare classes and degenerate classes are left out, the rest fitted as usual."""

import logging

import numpy as np
import pytest
import torch

from saseg.errors import DataError, DegenerateDataError
from saseg.estimators import DSA, LSA, MDSA, PerClassFit, fit_per_class

NAMES = ["sky", "road", "car", "sign", "pole"]


def blobs(counts=(80, 80, 80), d=4, seed=0):
    """ATs of classes 0..K-1, `counts[k]` each, shifted by the class id."""
    g = torch.Generator().manual_seed(seed)
    cls = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return torch.randn(len(cls), d, generator=g) + cls[:, None].float(), cls


def same_model(a, b, x, c):
    return torch.equal(a.classes_, b.classes_) and torch.equal(a.score(x, c), b.score(x, c))


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_clean_data_is_one_plain_fit(cls):
    x, c = blobs()
    est = cls()
    result = fit_per_class(est, x, c, class_names=NAMES, min_ats_per_class=10)
    assert isinstance(result, PerClassFit) and result.estimator is est
    assert result.too_few == {} and result.failed == {}
    assert est.class_names_ == {0: "sky", 1: "road", 2: "car"}
    assert same_model(est, cls().fit(x, c), x, c)


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_classes_with_too_few_ats_are_left_out_with_their_count(cls, caplog):
    x, c = blobs(counts=(80, 3, 80, 9))
    with caplog.at_level(logging.WARNING):
        est, too_few, failed = fit_per_class(cls(), x, c, class_names=NAMES, min_ats_per_class=10)
    assert too_few == {1: 3, 3: 9} and list(too_few) == [1, 3] and failed == {}
    assert "'road': 3" in caplog.text and "'sign': 9" in caplog.text
    keep = (c == 0) | (c == 2)
    assert same_model(est, cls().fit(x[keep], c[keep]), x[keep], c[keep])


@pytest.mark.parametrize("cls", [MDSA, LSA])
def test_a_constant_class_of_an_independent_estimator_is_left_out(cls):
    x, c = blobs(counts=(80, 80, 80, 80))
    x[c == 2] = 1.5  # every AT of class 2 identical: no covariance, no KDE
    est, too_few, failed = fit_per_class(cls(), x, c, class_names=NAMES)
    assert too_few == {} and list(failed) == [2]
    with pytest.raises(DegenerateDataError) as alone:
        cls().fit(x[c == 2], c[c == 2])
    assert failed[2] == str(alone.value)
    keep = c != 2
    assert same_model(est, cls().fit(x[keep], c[keep], class_names=NAMES), x[keep], c[keep])
    assert est.class_names_ == {0: "sky", 1: "road", 3: "sign"}


def test_too_few_come_first_then_failed_and_both_are_reported():
    x, c = blobs(counts=(80, 80, 4, 80))
    x[c == 0] = -2.0
    est, too_few, failed = fit_per_class(MDSA(), x, c, min_ats_per_class=5)
    assert too_few == {2: 4} and list(failed) == [0] and "identical" in failed[0]
    assert est.classes_.tolist() == [1, 3]


def test_an_estimator_with_dependent_classes_raises_as_is():
    x, c = blobs(counts=(80, 80, 80))
    x[5, 1] = float("nan")  # MDSA leaves class 0 out; DSA's dist_b would read it, so it raises
    est, _, failed = fit_per_class(MDSA(), x, c)
    assert list(failed) == [0] and est.classes_.tolist() == [1, 2]
    with pytest.raises(DegenerateDataError, match="finite ATs"):
        fit_per_class(DSA(), x, c)
    x, c = blobs(counts=(80, 3))  # one class left after the too-few rule: DSA needs two
    with pytest.raises(DegenerateDataError, match="at least 2 classes"):
        fit_per_class(DSA(), x, c, min_ats_per_class=10)


def test_the_retry_follows_independent_classes_not_the_name():
    class CoupledMDSA(MDSA):
        independent_classes = False

    x, c = blobs()
    x[c == 1] = 0.0
    with pytest.raises(DegenerateDataError, match="identical"):
        fit_per_class(CoupledMDSA(), x, c)
    assert MDSA.independent_classes and LSA.independent_classes and not DSA.independent_classes


def test_nothing_left_raises():
    x, c = blobs(counts=(4, 6))
    with pytest.raises(DegenerateDataError, match=r"at least 10 ATs.*\{'sky': 4, 'road': 6\}"):
        fit_per_class(MDSA(), x, c, class_names=NAMES, min_ats_per_class=10)
    x, c = blobs()
    x[:] = 1.0
    with pytest.raises(DegenerateDataError, match="every class failed"):
        fit_per_class(LSA(), x, c)


def test_accepts_arrays_and_validates_min_ats_per_class():
    x, c = blobs(counts=(40, 2))
    est, too_few, _ = fit_per_class(MDSA(), x.numpy(), c.numpy().astype(np.int32), min_ats_per_class=np.int64(5))
    assert too_few == {1: 2} and est.classes_.tolist() == [0]
    with pytest.raises(DataError, match="min_ats_per_class"):
        fit_per_class(MDSA(), x, c, min_ats_per_class=2.5)
