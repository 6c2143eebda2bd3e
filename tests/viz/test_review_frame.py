import numpy as np
import pytest
import torch
from PIL import Image

from saseg.data.classes import ClassInfo
from saseg.errors import DataError
from saseg.viz import review_frame as rf
from saseg.viz.heatmap import NAN_COLOUR, SAColourScale
from saseg.viz.review_frame import review_frame, save_png

# Colours chosen so no two are alike and none equals a UI colour (red, yellow, grey, black).
CLASSES = ClassInfo(names=("road", "car", "tree", "sky"),
                    colours=((128, 64, 128), (0, 0, 142), (20, 140, 35), (70, 130, 180)),
                    ignore_index=255)
H, W = 12, 16
SCALE = SAColourScale(0.0, 10.0)


def _inputs():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    label = np.zeros((H, W), np.int64)
    label[:, 8:] = 1
    label[0, :] = 255
    pred = label.copy()
    pred[0, :] = 0
    pred[5:8, 6:10] = 2          # wrong where the label says 0 or 1
    sa = np.linspace(-2.0, 14.0, H * W, dtype=np.float32).reshape(H, W)
    sa[11, 15] = np.nan
    return image, pred, label, sa


def _panel(out, k, ncols, ph=H, pw=W):
    """Panel k of the grid (row-major), located from the module's layout constants."""
    x = rf.GAP + (k % ncols) * (pw + rf.GAP)
    y = rf.CAPTION_H + (k // ncols) * (rf.TITLE_H + ph + rf.GAP) + rf.TITLE_H
    return out[y:y + ph, x:x + pw]


def _dimmed(image):
    out = np.empty_like(image)
    for (y, x), _ in np.ndenumerate(image[..., 0]):
        r, g, b = image[y, x].astype(np.float64)
        out[y, x] = int((0.299 * r + 0.587 * g + 0.114 * b) * rf.DIM)  # BT.601 luma, dimmed
    return out


def test_labelled_frame_is_a_2x3_grid_of_the_papers_panels():
    image, pred, label, sa = _inputs()
    out = review_frame(image, torch.from_numpy(pred), torch.from_numpy(sa), CLASSES, label=label,
                       threshold=6.0, scale=SCALE, frame_id="f1", frame_sa=1.5, panel_width=None)
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    assert out.shape[1] == rf.GAP + 3 * (W + rf.GAP)
    palette = np.array(CLASSES.colours, np.uint8)

    np.testing.assert_array_equal(_panel(out, 0, 3), image)
    label_panel, pred_panel = _panel(out, 1, 3), _panel(out, 2, 3)
    diff, above, heat = _panel(out, 3, 3), _panel(out, 4, 3), _panel(out, 5, 3)
    grey = _dimmed(image)
    for y in range(H):
        for x in range(W):
            lab, p, v = label[y, x], pred[y, x], sa[y, x]
            assert tuple(label_panel[y, x]) == ((0, 0, 0) if lab == 255 else tuple(palette[lab]))
            assert tuple(pred_panel[y, x]) == tuple(palette[p])
            if lab == 255:
                assert tuple(diff[y, x]) == (0, 0, 0)
            elif lab != p:
                assert tuple(diff[y, x]) == rf.WRONG
            else:
                assert tuple(diff[y, x]) == tuple(grey[y, x])
            want = rf.SURPRISING if v > 6.0 else tuple(grey[y, x])
            assert tuple(above[y, x]) == tuple(want)
            if np.isnan(v):
                assert tuple(heat[y, x]) == NAN_COLOUR
            else:
                assert tuple(heat[y, x]) == tuple(SCALE.lut[int(np.clip(np.floor(v / 10 * 255 + 0.5), 0, 255))])


def test_unlabelled_frame_is_one_row_or_2x2_with_a_threshold():
    image, pred, _, sa = _inputs()
    out = review_frame(image, pred, sa, CLASSES, scale=SCALE, panel_width=None)
    assert out.shape[1] == rf.GAP + 3 * (W + rf.GAP)
    np.testing.assert_array_equal(_panel(out, 1, 3), CLASSES.palette()[pred])
    np.testing.assert_array_equal(_panel(out, 2, 3), SCALE(sa))
    one_row_h = out.shape[0]

    out = review_frame(image, pred, sa, CLASSES, scale=SCALE, threshold=3.0, panel_width=None)
    assert out.shape[1] == rf.GAP + 2 * (W + rf.GAP)
    assert out.shape[0] == one_row_h + rf.TITLE_H + H + rf.GAP
    np.testing.assert_array_equal(_panel(out, 3, 2), SCALE(sa))


def test_panels_are_resized_to_panel_width():
    image, pred, label, sa = _inputs()
    out = review_frame(image, pred, sa, CLASSES, label=label, scale=SCALE, panel_width=32)
    assert out.shape[1] == rf.GAP + 3 * (32 + rf.GAP)
    pred_panel = _panel(out, 2, 3, ph=24, pw=32)
    np.testing.assert_array_equal(pred_panel, CLASSES.palette()[np.kron(pred, np.ones((2, 2), int))])


def _footer(out):
    return out[rf.CAPTION_H + 2 * (rf.TITLE_H + H + rf.GAP):]


def _has_colour(region, colour):
    return bool((region == np.array(colour, np.uint8)).all(-1).any())


def test_legend_shows_only_present_classes():
    image, pred, label, sa = _inputs()
    out = review_frame(image, pred, sa, CLASSES, label=label, scale=SCALE, panel_width=None)
    footer = _footer(out)
    for c in (0, 1, 2):
        assert _has_colour(footer, CLASSES.colours[c])
    assert not _has_colour(footer, CLASSES.colours[3])      # sky is nowhere in the frame
    assert _has_colour(footer, NAN_COLOUR)                  # "no SA model" entry for the NaN pixel


def test_without_scale_or_finite_sa_it_still_renders():
    image, pred, label, _ = _inputs()
    out = review_frame(image, pred, np.full((H, W), np.nan), CLASSES, label=label)
    assert out.dtype == np.uint8
    out = review_frame(image, pred, np.ones((H, W)), CLASSES)
    assert out.dtype == np.uint8


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "image": a["image"].astype(np.float32)}, "image"),
    (lambda a: {**a, "image": a["image"][..., 0]}, "image"),
    (lambda a: {**a, "pred": a["pred"][:-1]}, "pred"),
    (lambda a: {**a, "pred": a["pred"].astype(np.float32)}, "pred"),
    (lambda a: {**a, "sa_map": a["sa_map"][:, :-1]}, "sa_map"),
    (lambda a: {**a, "label": a["label"][:-1]}, "label"),
    (lambda a: {**a, "label": a["label"].astype(float)}, "label"),
    (lambda a: {**a, "classes": ["road", "car"]}, "ClassInfo"),
    (lambda a: {**a, "panel_width": 0}, "panel_width"),
    (lambda a: {**a, "panel_width": 12.5}, "panel_width"),
])
def test_bad_inputs_raise(change, match):
    image, pred, label, sa = _inputs()
    args = change({"image": image, "pred": pred, "sa_map": sa, "label": label, "classes": CLASSES,
                   "panel_width": 480})
    with pytest.raises(DataError, match=match):
        review_frame(args["image"], args["pred"], args["sa_map"], args["classes"], label=args["label"],
                     panel_width=args["panel_width"])


def test_save_png_round_trips(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / "sub" / "frame.png"
    save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)


@pytest.mark.parametrize("bad", [np.zeros((5, 7, 3), np.float32), np.zeros((5, 7, 4), np.uint8)])
def test_save_png_rejects_bad_arrays_and_writes_nothing(tmp_path, bad):
    with pytest.raises(DataError):
        save_png(tmp_path / "frame.png", bad)
    assert list(tmp_path.iterdir()) == []
