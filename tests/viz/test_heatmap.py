"""Colour scales and thresholded masks of per-pixel SA maps."""

import numpy as np
import pytest
import torch

from saseg.errors import DataError
from saseg.viz.heatmap import NAN_COLOUR, SAColourScale, scale_from_values, threshold_mask


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
