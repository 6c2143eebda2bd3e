"""SurpriseEstimator.score: unknown classes as NaN, the same as masking them out by hand."""

import numpy as np
import pytest
import torch

from saseg.errors import DataError, DegenerateDataError, NotFittedError, UnknownClassError
from saseg.estimators import DSA, LSA, MDSA


def fitted(cls, classes=(0, 2, 5), d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor(classes).repeat_interleave(50)
    return cls().fit(torch.randn(len(ids), d, generator=g) + ids[:, None].float(), ids)


def queries(n=120, d=4, classes=7, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g) * 2, torch.randint(0, classes, (n,), generator=g)


def masked_by_hand(est, x, c):
    """What callers did before `unknown="nan"`: NaN, then score only the known rows."""
    out = torch.full((len(c),), float("nan"), dtype=est.score(x[:0], c[:0]).dtype)
    ok = torch.isin(c, est.classes_)
    if ok.any():
        out[ok] = est.score(x[ok], c[ok])
    return out


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_unknown_nan_equals_manual_masking(cls, dtype):
    est = fitted(cls)
    x, c = queries()
    x = x.to(dtype)
    out = est.score(x, c, unknown="nan")
    assert bool(torch.isnan(out).any()) and not bool(torch.isnan(out).all())
    torch.testing.assert_close(out, masked_by_hand(est, x, c), rtol=0, atol=0, equal_nan=True)
    with pytest.raises(UnknownClassError, match=r"\[1, 3, 4, 6\]"):
        est.score(x, c)


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_unknown_nan_all_known_or_all_unknown(cls):
    est = fitted(cls)
    x, c = queries(classes=1)
    known = torch.full_like(c, 2)
    torch.testing.assert_close(est.score(x, known, unknown="nan"), est.score(x, known), rtol=0, atol=0)
    out = est.score(x, torch.full_like(c, 9), unknown="nan")
    assert out.shape == (len(x),) and out.dtype == est.score(x, known).dtype and torch.isnan(out).all()
    assert est.score(x[:0], c[:0], unknown="nan").shape == (0,)


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_unknown_nan_checks_only_the_scored_rows(cls):
    est = fitted(cls)
    x, c = queries(n=6)
    c = torch.tensor([0, 2, 9, 5, 9, 0])
    x[2, 1] = float("nan")  # in a row of an unknown class: never scored
    assert torch.isnan(est.score(x, c, unknown="nan")[[2, 4]]).all()
    x[3, 0] = float("inf")  # in a known row: an error, as without unknown="nan"
    with pytest.raises(DegenerateDataError, match="1 of 4 rows"):
        est.score(x, c, unknown="nan")


def test_unknown_option_is_validated_before_anything_else():
    x, c = queries()
    for bad in ("zero", None, "NaN"):
        with pytest.raises(DataError, match=r"expected unknown to be 'raise' or 'nan', but got"):
            fitted(MDSA).score(x, c, unknown=bad)
    with pytest.raises(DataError, match="unknown"):
        MDSA().score(x, c, unknown="zero")
    with pytest.raises(NotFittedError):
        MDSA().score(x, c, unknown="nan")
    with pytest.raises(DataError, match="d=4"):
        fitted(LSA).score(np.zeros((3, 2)), np.zeros(3, int), unknown="nan")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
def test_unknown_nan_follows_the_ats_device(cls):
    est = fitted(cls)
    x, c = queries()
    got = est.score(x.cuda(), c.cuda(), unknown="nan")
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), est.score(x, c, unknown="nan"), rtol=1e-6, atol=1e-8, equal_nan=True)
