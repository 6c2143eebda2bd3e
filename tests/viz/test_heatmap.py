import numpy as np
import pytest
import torch
import torch.nn.functional as F

from saseg.errors import DataError, NotFittedError, UnknownClassError
from saseg.viz.heatmap import (NAN_COLOUR, SAColourScale, pixel_sa_map, scale_from_values,
                               threshold_mask)

from saseg.estimators import MDSA


def _fitted(d=4, classes=(0, 1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    ats = torch.randn(60 * len(classes), d, generator=g)
    cls = torch.tensor(classes).repeat_interleave(60)
    ats = ats + cls[:, None].float()
    return MDSA().fit(ats, cls)


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


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("rows_per_chunk", [None, 1, 5])
def test_pixel_sa_map_equals_scores_of_fully_upsampled_ats(align_corners, rows_per_chunk):
    est = _fitted()
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


def test_colour_scale_maps_through_the_matplotlib_colour_map():
    import matplotlib

    ref_lut = np.rint(matplotlib.colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    scale = SAColourScale(2.0, 12.0, cmap="viridis")
    values = np.array([[-5.0, 2.0, 4.0, 7.0], [9.9, 12.0, 40.0, np.nan]], np.float32)
    rgb = scale(values)
    assert rgb.shape == (2, 4, 3) and rgb.dtype == np.uint8
    for (i, j), v in np.ndenumerate(values):
        expected = NAN_COLOUR if np.isnan(v) else ref_lut[int(np.floor(min(max((v - 2) / 10 * 255, 0), 255) + 0.5))]
        assert tuple(rgb[i, j]) == tuple(expected), (v, rgb[i, j], expected)
    np.testing.assert_array_equal(scale(torch.tensor(values)), rgb)


@pytest.mark.parametrize("vmin, vmax, cmap", [(1, 1, "inferno"), (2, 1, "inferno"),
                                               (0, float("nan"), "inferno"), (0, 1, "no-such-map")])
def test_bad_colour_scale_raises(vmin, vmax, cmap):
    with pytest.raises(DataError):
        SAColourScale(vmin, vmax, cmap=cmap)


def test_scale_from_values_uses_percentiles_of_finite_values():
    rng = np.random.default_rng(0)
    v = rng.gamma(2.0, 3.0, 1000)
    with_nan = np.concatenate([v, [np.nan, np.inf]])
    scale = scale_from_values(torch.tensor(with_nan), lo=5, hi=95)
    assert scale.vmin == pytest.approx(np.percentile(v, 5))
    assert scale.vmax == pytest.approx(np.percentile(v, 95))
    assert scale_from_values(v).vmax == pytest.approx(np.percentile(v, 99))


def test_scale_from_constant_values_is_widened():
    scale = scale_from_values([3.0, 3.0, 3.0])
    assert scale.vmin < 3.0 < scale.vmax


@pytest.mark.parametrize("values, lo, hi", [([], 1, 99), ([np.nan, np.inf], 1, 99),
                                            ([1.0, 2.0], 50, 50), ([1.0, 2.0], -1, 99), ([1.0, 2.0], 1, 101)])
def test_scale_from_bad_values_raises(values, lo, hi):
    with pytest.raises(DataError):
        scale_from_values(values, lo=lo, hi=hi)


def test_threshold_mask():
    sa = np.array([[0.5, 1.0, 1.5], [np.nan, 3.0, -1.0]], np.float32)
    expected = np.array([[False, False, True], [False, True, False]])
    np.testing.assert_array_equal(threshold_mask(sa, 1.0), expected)
    np.testing.assert_array_equal(threshold_mask(torch.tensor(sa), 1.0), expected)
