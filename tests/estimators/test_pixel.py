"""pixel_sa_map: every pixel's AT, upsampled in row bands, scored against its predicted class."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saseg.errors import DataError, NotFittedError, UnknownClassError
from saseg.estimators import DSA, LSA, MDSA, pixel_sa_map
from saseg.tracing import upsample_features_chunked


def _fitted(d=4, classes=(0, 1, 2), seed=0, cls=MDSA):
    g = torch.Generator().manual_seed(seed)
    ats = torch.randn(60 * len(classes), d, generator=g)
    ids = torch.tensor(classes).repeat_interleave(60)
    ats = ats + ids[:, None].float()
    return cls().fit(ats, ids)


def _frame(d=4, h0=5, w0=6, H=17, W=23, n_classes=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(d, h0, w0, generator=g)
    pred = torch.randint(0, n_classes, (H, W), generator=g)
    return features, pred


def _reference(features, pred, est, align_corners):
    """Every pixel's AT from one full F.interpolate, scored pixel by pixel."""
    H, W = pred.shape
    up = F.interpolate(features[None], size=(H, W), mode="bilinear", align_corners=align_corners)[0]
    ref = torch.empty(H, W)
    for y in range(H):
        ref[y] = est.score(up[:, y, :].T.contiguous(), pred[y])
    return ref


@pytest.mark.parametrize("cls", [MDSA, LSA, DSA])
@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("rows_per_chunk", [None, 1, 5])
def test_pixel_sa_map_equals_scores_of_fully_upsampled_ats(cls, align_corners, rows_per_chunk):
    est = _fitted(cls=cls)
    features, pred = _frame()
    sa = pixel_sa_map(features, pred, est, align_corners=align_corners, rows_per_chunk=rows_per_chunk)
    assert sa.shape == pred.shape and sa.dtype == torch.float32
    torch.testing.assert_close(sa, _reference(features, pred, est, align_corners), rtol=1e-4, atol=1e-4)


def test_pixel_sa_map_accepts_numpy_pred():
    est = _fitted()
    features, pred = _frame()
    torch.testing.assert_close(pixel_sa_map(features, pred.numpy().astype(np.int32), est),
                               pixel_sa_map(features, pred, est))


def test_unknown_class_gives_nan_or_raises():
    est = _fitted(classes=(0, 1))
    features, pred = _frame(n_classes=3)
    sa = pixel_sa_map(features, pred, est, rows_per_chunk=4)
    unseen = pred == 2
    assert unseen.any() and (~unseen).any()
    assert torch.isnan(sa[unseen]).all()
    ref = _reference(features, torch.where(unseen, 0, pred), est, False)
    torch.testing.assert_close(sa[~unseen], ref[~unseen], rtol=1e-4, atol=1e-4)
    with pytest.raises(UnknownClassError, match=r"\[2\]"):
        pixel_sa_map(features, pred, est, unknown="raise")


def test_all_pixels_unknown_gives_all_nan():
    est = _fitted(classes=(0, 1))
    features, _ = _frame()
    assert torch.isnan(pixel_sa_map(features, torch.full((7, 9), 5), est)).all()


def test_unfitted_estimator_raises():
    features, pred = _frame()
    with pytest.raises(NotFittedError):
        pixel_sa_map(features, pred, MDSA())


@pytest.mark.parametrize("features, pred, kwargs, match", [
    (torch.randn(1, 4, 5, 6), torch.zeros(8, 8, dtype=torch.long), {}, "features"),
    (np.zeros((4, 5, 6), np.float32), torch.zeros(8, 8, dtype=torch.long), {}, "features"),
    (torch.randn(4, 5, 6), torch.zeros(8, 8), {}, "pred"),
    (torch.randn(4, 5, 6), torch.zeros(8, dtype=torch.long), {}, "pred"),
    (torch.randn(4, 5, 6), torch.zeros(8, 8, dtype=torch.bool), {}, "pred"),
    (torch.randn(4, 5, 6), torch.zeros(8, 8, dtype=torch.long), {"unknown": "zero"}, "unknown"),
])
def test_bad_inputs_raise(features, pred, kwargs, match):
    with pytest.raises(DataError, match=match):
        pixel_sa_map(features, pred, _fitted(), **kwargs)




@pytest.mark.parametrize("cls", [MDSA, LSA])
def test_unknown_pixels_are_the_nan_of_score(cls):
    est = _fitted(classes=(0, 2), cls=cls)
    features, pred = _frame(n_classes=3)
    sa = pixel_sa_map(features, pred, est, rows_per_chunk=3)
    ats = torch.cat([chunk.reshape(4, -1).T
                     for _, _, chunk in upsample_features_chunked(features, pred.shape, rows_per_chunk=3)])
    expected = est.score(ats, pred.reshape(-1), unknown="nan").to(torch.float32).view(pred.shape)
    torch.testing.assert_close(sa, expected, rtol=0, atol=0, equal_nan=True)
