"""The one estimator registry: names, make_estimator."""

import pytest

from saseg.errors import DataError
from saseg.estimators import DSA, ESTIMATOR_NAMES, ESTIMATORS, LSA, MDSA, make_estimator


def test_names_follow_the_registry():
    assert ESTIMATOR_NAMES == ("mdsa", "lsa", "dsa") == tuple(ESTIMATORS)
    assert [ESTIMATORS[n] for n in ESTIMATOR_NAMES] == [MDSA, LSA, DSA]


def test_make_estimator_passes_options():
    est = make_estimator("lsa", ridge=0.1, dtype="float32")
    assert type(est) is LSA and est.ridge == 0.1 and est.dtype == "float32"
    assert make_estimator("mdsa").get_params() == MDSA().get_params()
    assert not hasattr(make_estimator("dsa"), "classes_")


def test_make_estimator_rejects_unknown_names_and_options():
    with pytest.raises(DataError, match=r"Expected estimators from \['mdsa', 'lsa', 'dsa'\], but got 'knn'"):
        make_estimator("knn")
    expected = r"Expected MDSA options from \['shrinkage', 'min_shrinkage'\], but got \['bandwidth'\]"
    with pytest.raises(DataError, match=expected):
        make_estimator("mdsa", bandwidth="scott")
