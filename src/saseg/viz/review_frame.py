"""Review frames: one image per video frame that shows why it is (or is not) surprising.

The layout follows the paper's Figure 6. With a manual label, a 2x3 grid::

    input                 | manual label           | prediction
    label vs prediction   | pixels with SA > t     | SA heatmap

Without a label, one row: input | prediction | SA heatmap (plus "SA > t" as a 2x2 grid when a
threshold is given, since unlabelled footage is where the thresholded view helps most).
Below the grid sit a legend of the classes present and a colour bar of the SA scale; above it a
caption with the frame id and frame SA.

Composed with numpy and PIL only (no matplotlib figure), because it is rendered for every frame
of a video: a 2x3 frame of 480x360 panels takes a few tens of milliseconds.
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..data.classes import ClassInfo
from ..errors import DataError
from ..io import atomic_path
from .heatmap import NAN_COLOUR, SAColourScale, scale_from_values

logger = logging.getLogger(__name__)

BACKGROUND = 24  # grey level of the canvas
TEXT = (235, 235, 235)
#: Difference panel: pixels the prediction gets wrong.
WRONG = (230, 40, 40)
#: Threshold panel: pixels whose SA exceeds the threshold.
SURPRISING = (255, 215, 0)
#: Brightness kept by the dimmed greyscale input under the difference and threshold panels.
DIM = 0.45

GAP = 6
TITLE_H = 18
CAPTION_H = 24
SWATCH = 11
BAR_W, BAR_H = 260, 10
FONT, BIG = 13, 15  # text sizes (px) of titles and legend, and of the caption


def review_frame(image, pred, sa_map, classes: ClassInfo, *, label=None, threshold=None,
                 scale: SAColourScale | None = None, frame_id: str = "", frame_sa=None,
                 panel_width: int | None = 480) -> np.ndarray:
    """Render the paper's Figure 6 review frame.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    pred : ndarray or tensor of shape (H, W), integer
        Predicted class ids.
    sa_map : ndarray or tensor of shape (H, W), float
        Per-pixel SA (``pixel_sa_map``); NaN renders grey ("no SA model" for that class).
    classes : ClassInfo
        Names and colours for the legend and the class panels.
    label : ndarray of shape (H, W), integer, or None
        Manual label; its ignore index renders black, and such pixels are black in the
        difference panel too.
    threshold : float or None
        SA above which pixels count as surprising; defaults to ``scale.vmax`` when a label is
        given (only the top of the run's scale lights up). Drawn as a tick on the colour bar.
    scale : SAColourScale or None
        The run's fixed colour scale. None derives one from this frame alone (1st-99th
        percentile), which makes colours incomparable across frames: pass one for videos.
    frame_id : str
    frame_sa : float or None
        Shown in the caption.
    panel_width : int or None
        Width each panel is resized to (aspect kept); None keeps the frame's own size.

    Returns
    -------
    ndarray of shape (H', W', 3), uint8 RGB

    Notes
    -----
    The difference panel shows the input dimmed to greyscale where prediction and label agree,
    red where they disagree and black where the label is ignored, so errors stand out whatever
    the class colours. The threshold panel shows the dimmed input with surprising pixels in
    yellow.
    """
    image, pred, sa, label = _validate(image, pred, sa_map, label, classes, panel_width)
    if scale is None:
        finite = sa[np.isfinite(sa)]
        scale = scale_from_values(finite) if finite.size else SAColourScale(0.0, 1.0)
        logger.debug("review_frame %s: no run-wide scale given; using this frame's own.", frame_id)
    if threshold is None and label is not None:
        threshold = scale.vmax

    H, W = pred.shape
    pw = int(panel_width) if panel_width else W
    ph = max(1, round(H * pw / W))
    rows, cols = np.arange(ph) * H // ph, np.arange(pw) * W // pw

    def small(a):  # nearest-neighbour resize
        return a if a.shape[:2] == (ph, pw) else a[rows[:, None], cols[None, :]]

    C = classes.num_classes
    palette = classes.palette()
    img = _resize_image(image, pw, ph)
    pred_s, sa_s = _ids(small(pred), C), small(sa)
    counts = np.bincount(pred_s.ravel(), minlength=C + 1)
    grey = _dim(img)

    panels = [("input", img)]
    if label is not None:
        label_s = _ids(small(label), C)
        counts += np.bincount(label_s.ravel(), minlength=C + 1)
        valid = label_s < C
        agree = valid & (pred_s == label_s)
        diff = grey.copy()
        diff[~agree] = WRONG
        diff[~valid] = 0
        acc = 100.0 * agree.sum() / max(int(valid.sum()), 1)
        panels += [("manual label", np.take(palette, label_s, axis=0)),
                   ("prediction", np.take(palette, pred_s, axis=0)),
                   (f"label vs prediction: {acc:.1f}% right, red wrong", diff)]
    else:
        panels.append(("prediction", np.take(palette, pred_s, axis=0)))
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            hot = sa_s > float(threshold)
        above = grey.copy()
        above[hot] = SURPRISING
        panels.append((f"SA > {threshold:.4g}: {100.0 * hot.mean():.1f}% of pixels", above))
    panels.append(("SA heatmap", scale(sa_s)))

    legend = [(classes.colours[c], classes.names[c]) for c in np.flatnonzero(counts[:C])]
    if counts[C]:
        legend.append(((0, 0, 0), "ignored"))
    if np.isnan(sa_s).any():
        legend.append((NAN_COLOUR, "no SA model"))
    caption = f"frame {frame_id}" if frame_id else "frame"
    if frame_sa is not None:
        caption += f"    frame SA {float(frame_sa):.4g}"
    return _compose(panels, legend, scale, threshold, caption)


def _compose(panels, legend, scale: SAColourScale, threshold, caption: str) -> np.ndarray:
    """Lay out equal-size panels (3 columns for 3 or 6, else 2), legend, colour bar, caption."""
    ph, pw = panels[0][1].shape[:2]
    ncols = 3 if len(panels) in (3, 6) else 2
    nrows = -(-len(panels) // ncols)
    font = _font(FONT)
    width = GAP + ncols * (pw + GAP)
    bar_w = min(BAR_W, width - 2 * GAP)
    beside = width - 2 * GAP - bar_w - 40 >= 150  # room for the legend left of the colour bar
    spots, legend_h = _flow(legend, font, width - 2 * GAP - (bar_w + 40 if beside else 0))
    foot_top = CAPTION_H + nrows * (TITLE_H + ph + GAP)
    bx = width - GAP - bar_w if beside else GAP
    by = foot_top + (0 if beside else legend_h) + TITLE_H
    height = max(foot_top + legend_h, by + BAR_H + TITLE_H) + GAP

    canvas = np.empty((height, width, 3), np.uint8)
    canvas.fill(BACKGROUND)
    texts = [((GAP, 4), caption, BIG)]
    for k, (title, arr) in enumerate(panels):
        x = GAP + (k % ncols) * (pw + GAP)
        y = CAPTION_H + (k // ncols) * (TITLE_H + ph + GAP) + TITLE_H
        canvas[y:y + ph, x:x + pw] = arr
        texts.append(((x, y - TITLE_H + 2), _fit(title, font, pw), FONT))
    for (colour, name), (x, y) in zip(legend, spots):
        x, y = x + GAP, y + foot_top
        canvas[y:y + SWATCH, x:x + SWATCH] = (200, 200, 200)
        canvas[y + 1:y + SWATCH - 1, x + 1:x + SWATCH - 1] = colour
        texts.append(((x + SWATCH + 4, y - 3), name, FONT))

    canvas[by:by + BAR_H, bx:bx + bar_w] = scale.lut[np.arange(bar_w) * 256 // bar_w][None]
    if threshold is not None and scale.vmin <= threshold <= scale.vmax:
        tx = bx + min(int((threshold - scale.vmin) / (scale.vmax - scale.vmin) * bar_w), bar_w - 1)
        canvas[by - 4:by + BAR_H + 4, max(tx - 1, bx):tx + 1] = SURPRISING
    vmax_txt = f"{scale.vmax:.4g}"
    texts += [((bx, by - TITLE_H + 2), "pixel SA (fixed scale, clipped)", FONT),
              ((bx, by + BAR_H + 1), f"{scale.vmin:.4g}", FONT),
              ((bx + bar_w - font.getlength(vmax_txt), by + BAR_H + 1), vmax_txt, FONT)]
    return _draw_texts(canvas, texts)


def save_png(path, array) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array as a PNG, atomically."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise DataError(
            f"save_png({path}): expected a uint8 array of shape (H, W, 3) or (H, W), but got "
            f"{array.dtype} of shape {array.shape}."
        )
    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")


def _validate(image, pred, sa_map, label, classes, panel_width):
    if panel_width is not None and (isinstance(panel_width, bool) or not isinstance(panel_width, int)
                                    or panel_width < 1):
        raise DataError(f"review_frame: expected panel_width as a positive int or None, but got {panel_width!r}.")
    if not isinstance(classes, ClassInfo):
        raise DataError(f"review_frame: expected classes as a ClassInfo, but got {type(classes).__name__}.")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DataError(
            f"review_frame: expected image as uint8 of shape (H, W, 3), but got {image.dtype} of shape {image.shape}."
        )
    hw = image.shape[:2]
    pred = _as_numpy(pred)
    sa = _as_numpy(sa_map).astype(np.float32, copy=False)
    out = [image, pred, sa]
    for name, arr in (("pred", pred), ("sa_map", sa), ("label", None if label is None else _as_numpy(label))):
        if arr is None:
            out.append(None)
            continue
        if arr.shape != hw:
            raise DataError(f"review_frame: expected {name} of shape {hw} like the image, but got {arr.shape}.")
        if name in ("pred", "label") and not np.issubdtype(arr.dtype, np.integer):
            raise DataError(f"review_frame: expected {name} as integer class ids, but got {arr.dtype}.")
        if name == "label":
            out.append(arr.astype(np.int64, copy=False))
    return out


def _as_numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if torch.is_tensor(x) else np.asarray(x)


def _fit(text: str, font, width: int) -> str:
    """``text``, shortened with an ellipsis to fit ``width`` pixels (tiny panels)."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _ids(mask: np.ndarray, C: int) -> np.ndarray:
    """Class ids as intp, with anything outside 0..C-1 (ignore index, bad ids) set to C."""
    ids = mask.astype(np.intp, copy=False)
    if ids.size and (ids.min() < 0 or ids.max() >= C):
        ids = np.where((ids >= 0) & (ids < C), ids, C)
    return ids


def _resize_image(image: np.ndarray, w: int, h: int) -> np.ndarray:
    if image.shape[:2] == (h, w):
        return image

    return np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))


def _dim(img: np.ndarray) -> np.ndarray:
    """Greyscale copy at DIM brightness, as the quiet background of overlay panels."""
    g = img.astype(np.float32) @ np.array([0.299 * DIM, 0.587 * DIM, 0.114 * DIM], np.float32)
    return np.repeat(g.astype(np.uint8)[..., None], 3, axis=2)


def _flow(items, font, width: int):
    """Positions of legend entries flowing left to right, wrapping at ``width``; and height."""
    spots, x, y, row_h = [], 0, 0, SWATCH + 7
    for _, name in items:
        w = SWATCH + 4 + int(font.getlength(name)) + 14
        if x and x + w > width:
            x, y = 0, y + row_h
        spots.append((x, y + 4))
        x += w
    return spots, (y + row_h + 4 if items else 0)


@lru_cache(maxsize=None)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: bitmap font
        return ImageFont.load_default()


def _draw_texts(canvas: np.ndarray, texts) -> np.ndarray:
    """Blend text into the canvas in place (a PIL round trip of the whole frame costs more)."""
    for (x, y), text, size in texts:
        alpha = _text_mask(text, size)
        x, y = int(round(x)), int(round(y))
        h = min(alpha.shape[0], canvas.shape[0] - y)
        w = min(alpha.shape[1], canvas.shape[1] - x)
        if h <= 0 or w <= 0:
            continue
        a = alpha[:h, :w, None].astype(np.float32) / 255.0
        region = canvas[y:y + h, x:x + w]
        region[:] = np.rint(region * (1.0 - a) + np.array(TEXT, np.float32) * a)
    return canvas


@lru_cache(maxsize=4096)
def _text_mask(text: str, size: int) -> np.ndarray:
    """(h, w) uint8 coverage of ``text`` drawn at (0, 0); cached, since most texts repeat."""
    font = _font(size)
    left, top, right, bottom = font.getbbox(text)
    im = Image.new("L", (max(int(right), 1), max(int(bottom), 1)), 0)
    ImageDraw.Draw(im).text((0, 0), text, fill=255, font=font)
    mask = np.asarray(im)
    mask.setflags(write=False)
    return mask
