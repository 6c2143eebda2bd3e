"""The numpy renderer behind `saseg.data.synthetic`: one road-scene frame from a drive state.

The static scene (sky, facades, trees, road, lane lines, markings) is labelled and shaded
here, on the geometry of `synthetic_world`; `synthetic_vehicles` paints traffic on top, then
weather and sensor noise are applied. The image is composed planar, (3, H, W) float32 in
0..255, because numpy broadcasts over a leading axis many times faster than over a trailing
one; it is interleaved once at the end. Everything is a function of the drive parameters and
the frame number alone.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from .synthetic_vehicles import draw_lamps, draw_vehicles, vehicle_shadows, visible_vehicles
from .synthetic_world import (BUILDING, CAM_H, DASH_ON, DASH_PERIOD, EDGE_X, LANE_DASHED,
                              LANE_W, LANE_WHITE, LANE_YELLOW, MARK_AT, MARK_CYCLE,
                              MARKING_CROSSING, MARKING_SYMBOL, N_CLASSES, N_MARK, N_SEG,
                              PAVEMENT, ROAD, ROAD_HALF, SEG_LEN, SKY, VEGETATION, WALL_X, View,
                              headlight, make_view)

CONDITIONS = ("day", "shadows", "traffic", "night", "dusk", "rain")
TILE = 1024                         # texture tile side (cells), a power of two

# Per condition: sun gain, RGB tint, zenith and horizon sky colours, fog distance (m),
# sensor noise sigma (grey levels).
_LIGHT = {
    "day": (1.0, (1.0, 1.0, 1.0), (70, 125, 200), (185, 205, 225), 450.0, 3.0),
    "shadows": (1.05, (1.0, 1.0, 0.97), (60, 120, 205), (180, 205, 230), 450.0, 3.0),
    "traffic": (1.0, (1.0, 1.0, 1.0), (75, 125, 195), (190, 205, 220), 400.0, 3.0),
    "dusk": (0.62, (1.2, 0.85, 0.62), (55, 55, 110), (245, 150, 85), 300.0, 4.0),
    "night": (0.14, (0.9, 0.95, 1.15), (4, 6, 16), (22, 22, 38), 220.0, 6.0),
    "rain": (0.72, (0.95, 0.98, 1.0), (110, 115, 122), (160, 163, 167), 95.0, 9.0),
}


def _frac(a):
    """a - floor(a): numpy's float ``%`` is an order of magnitude slower."""
    return a - np.floor(a)


@lru_cache(maxsize=4)
def smooth_tile(n: int = TILE, beta: float = 1.6, seed: int = 12345) -> np.ndarray:
    """(n * n,) float32 periodic band-limited 1/f^beta noise, zero mean, unit std; flat."""
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(n) * n
    k = np.hypot(freq[:, None], freq[None, :])
    # No wavelengths longer than a quarter tile: texture, not slow brightness drifts.
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) * np.where(k < 4, 0, np.maximum(k, 1) ** -beta)
    tile = np.fft.ifft2(spectrum).real
    tile = ((tile - tile.mean()) / tile.std()).astype(np.float32).ravel()
    tile.flags.writeable = False
    return tile


def _texture(u, v):
    """Tile value at world coordinates (u, v) in tile cells (any shapes that broadcast)."""
    i = (np.asarray(u) + 65536).astype(np.intp) & (TILE - 1)
    j = (np.asarray(v) + 65536).astype(np.intp) & (TILE - 1)
    return np.take(smooth_tile(), i * TILE + j)


@lru_cache(maxsize=8)
def _screen_tiles(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-size sensor noise (unit std) and rain streaks (0..1), 64 px larger for offsets."""
    rng = np.random.default_rng(777)
    noise = rng.standard_normal((h + 64, w + 64)).astype(np.float32)
    drops = (rng.random((h + 64, w + 64)) < 0.0015).astype(np.float32)
    streaks = drops.copy()
    for step in range(1, 9):   # smear each drop into a short, slightly slanted streak
        streaks += np.roll(np.roll(drops, step, axis=0), step // 4, axis=1) * (1 - step / 10)
    streaks = np.minimum(streaks, 1.0)
    noise.flags.writeable = streaks.flags.writeable = False
    return noise, streaks


def label_scene(drive, v: View) -> np.ndarray:
    """(H, W) uint8 class ids of sky, facades, trees, pavement, road, lanes and markings."""
    yc = np.arange(v.g0, dtype=np.float32) + 0.5
    wall_cls = np.where(v.building, BUILDING, VEGETATION).astype(np.uint8)
    lab = np.empty((v.h, v.w), np.uint8)
    ytop = v.yh - v.f * (v.top - CAM_H) / v.zw
    lab[: v.g0] = np.where(yc[:, None] >= ytop[None, :], wall_cls[None, :], np.uint8(SKY))
    A = np.abs(v.X)
    ground = np.where(A < ROAD_HALF, np.uint8(ROAD),
                      np.where(A < WALL_X, np.uint8(PAVEMENT), wall_cls[None, :]))
    hw = 0.55 * v.z / v.f                                      # keep far lines >= 1 px wide
    Z = v.z + v.odo
    dash = _frac(Z / DASH_PERIOD) < DASH_ON / DASH_PERIOD
    ground[np.abs(A - EDGE_X) < np.maximum(hw, 0.1)[:, None]] = LANE_WHITE
    ground[np.abs(A - 0.18) < np.maximum(hw, 0.07)[:, None]] = LANE_YELLOW   # double line
    ground[(np.abs(A - LANE_W) < np.maximum(hw, 0.08)[:, None]) & dash[:, None]] = LANE_DASHED
    _markings(drive, v, Z, ground)
    lab[v.g0:] = ground
    return lab


def _markings(drive, v: View, Z: np.ndarray, ground: np.ndarray) -> None:
    """Arrows, text blocks, stop lines and zebra crossings, one kind per MARK_CYCLE metres."""
    cycle = np.floor(Z / MARK_CYCLE)
    p = Z - cycle * MARK_CYCLE - MARK_AT
    kind = drive.marks[cycle.astype(np.intp) % N_MARK]
    rows = np.nonzero((p >= 0) & (p < 5.5) & (kind > 0) & (v.z < 120))[0]
    if rows.size == 0:
        return
    X, p, kind = v.X[rows], p[rows, None], kind[rows, None]
    lane = np.abs(_frac(X / LANE_W) - 0.5) * LANE_W           # distance from a lane centre
    right = (X > 0) & (X < EDGE_X)
    arrow = right & (((p < 3.2) & (lane < 0.15)) | ((p >= 3.2) & (p < 5) & (lane < 0.33 * (5 - p))))
    col = np.clip(((X - 0.55) / 0.15).astype(np.intp), 0, 15)
    glyph = drive.text[np.clip((p / 0.3).astype(np.intp), 0, 7), col]
    text = (p < 2.4) & (X > 0.55) & (X < 2.95) & glyph
    stop = right & (p < 0.5)
    zebra = (p >= 1.5) & (p < 5.5) & (np.abs(X) < EDGE_X) & (_frac(X / 1.2) < 0.5)
    sub = ground[rows]
    sub[((kind == 1) & arrow) | ((kind == 3) & text)] = MARKING_SYMBOL
    sub[(kind == 2) & (stop | zebra)] = MARKING_CROSSING
    ground[rows] = sub


def shade_scene(drive, v: View, lab: np.ndarray) -> np.ndarray:
    """(H, W) float32 brightness factor: asphalt and leaf texture, windows, cast shadows."""
    shade = np.ones((v.h, v.w), np.float32)
    Z = v.z + v.odo
    A = np.abs(v.X)
    g = 1 + 0.09 * _texture(Z[:, None] * 24, v.X * 24)
    side = np.nonzero(np.maximum(A[:, 0], A[:, -1]) > ROAD_HALF)[0]   # rows seeing pavement
    if side.size:
        p1, Ap = side[-1] + 1, A[: side[-1] + 1]
        seam = (_frac(Ap * 0.7) < 0.06) | (_frac(Z[:p1] * 0.7) < 0.06)[:, None]
        g[:p1] *= 1 - 0.2 * (seam & (lab[v.g0:v.g0 + p1] == PAVEMENT))
        g[:p1] *= 1 + 0.15 * ((Ap > ROAD_HALF) & (Ap < ROAD_HALF + 0.25))   # kerb
    if drive.shadow[0] or drive.shadow[1]:
        g *= _cast_shadows(drive, v, Z)
    if drive.condition == "night":
        g *= 1 + headlight(v, v.X, v.z[:, None])
    shade[v.g0:] = g
    wall = (lab == BUILDING) | (lab == VEGETATION)
    rows = np.nonzero(wall.any(1))[0]
    if rows.size:
        r0, r1 = rows[0], rows[-1] + 1
        height = CAM_H - (np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - v.yh) * (v.zw / v.f)
        storey = _frac(height / 3.2)
        window = _windows(drive, v, height, storey)
        floor = (storey < 0.04) & v.building
        facade = 1 - 0.5 * window - 0.15 * floor
        trees = np.nonzero(~v.building)[0]
        if trees.size:
            leaves = _texture(height[:, trees] * 24, (v.zw[trees] + v.odo) * 24)
            facade[:, trees] = 1 + 0.35 * leaves
        if drive.condition == "night":                         # some windows are lit
            spacing = drive.seg_window[v.side, v.seg]
            cell = (np.floor(v.pos / spacing) * 7 + v.seg * 5).astype(np.intp)
            lit = (cell + np.floor(height / 3.2).astype(np.intp) * 13) % 10 < 3
            facade = np.where(window & lit, 6.0, facade)
        edge = v.building & ((v.pos < 0.4) | (v.pos > drive.seg_build[v.side, v.seg] - 0.4))
        facade *= np.where(edge, 0.8, np.where(v.side == 0, 1.0, 0.88))
        shade[r0:r1] = np.where(wall[r0:r1], facade, shade[r0:r1])
    return shade


def _windows(drive, v: View, height: np.ndarray, storey: np.ndarray) -> np.ndarray:
    """Bool window mask over facade rows: a grid in (position along facade, height)."""
    across = _frac(v.pos / drive.seg_window[v.side, v.seg])
    cols = v.building & (across > 0.3) & (across < 0.75)
    cols &= (v.pos > 0.8) & (v.pos < drive.seg_build[v.side, v.seg] - 0.8)
    return cols & (storey > 0.31) & (storey < 0.78) & (height > 3) & (height < v.top - 0.6)


def _cast_shadows(drive, v: View, Z: np.ndarray):
    """Ground brightness factor under tree-canopy blobs and building shadows (1 = sunlit)."""
    trees, buildings, slope, sun = drive.shadow
    dark = np.zeros_like(v.X)
    if trees:
        blob = _texture(Z[:, None] * 12 + 397, (v.X + Z[:, None] * 0.5 * sun) * 16)
        dark = trees * np.clip(blob * 2.5, 0, 1)
    if buildings:                      # facade on the sun side throws height * slope across
        s = 1 if sun > 0 else 0
        Zs = Z + 4.0
        seg_f = np.floor(Zs / SEG_LEN)
        seg, pos = seg_f.astype(np.intp) % N_SEG, Zs - seg_f * SEG_LEN
        tall = np.where(pos < drive.seg_build[s, seg], drive.seg_height[s, seg],
                        drive.tree_height[s, seg] * 0.7)
        mask = (v.X * sun > (WALL_X - tall * slope)[:, None]) & (np.abs(v.X) < WALL_X)
        dark = np.maximum(dark, buildings * mask)
    return 1 - dark


def render(drive, frame: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render frame number `frame` of `drive` at ``size = (H, W)``.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8 RGB
    label : ndarray of shape (H, W), uint8 class ids (the constants of `synthetic_world`)
    """
    h, w = size
    v = make_view(drive, frame, h, w)
    lab = label_scene(drive, v)
    shade = shade_scene(drive, v, lab)
    cars = visible_vehicles(drive, v, frame)
    vehicle_shadows(drive, v, cars, shade)
    gain, tint, zenith, horizon, fog_dist, sigma = _LIGHT[drive.condition]
    light = np.float32(gain) * np.asarray(tint, np.float32)
    zenith, horizon = np.asarray(zenith, np.float32), np.asarray(horizon, np.float32)
    img = _albedo(drive, v, lab, light, zenith, horizon)
    img *= shade
    sky = lab[: v.g0] == SKY
    fog = np.exp(-v.zw / fog_dist)[None, :]
    fog_up = np.maximum(fog, sky)
    fog_down = np.maximum(fog, np.exp(-v.z / fog_dist)[:, None])
    img -= horizon[:, None, None]
    img[:, : v.g0] *= fog_up
    img[:, v.g0:] *= fog_down
    img += horizon[:, None, None]
    if drive.condition not in ("night", "rain"):
        _clouds(drive, v, frame, img, sky)
    draw_vehicles(drive, v, cars, img, lab, light, horizon, fog_dist)
    if drive.condition in ("night", "dusk", "rain"):
        draw_lamps(drive, v, cars, img)
    if drive.condition == "rain":
        _rain(v, frame, img, lab)
    noise, _ = _screen_tiles(h, w)
    oy, ox = (frame * 37) % 64, (frame * 23 + 11) % 64
    img += sigma * noise[oy:oy + h, ox:ox + w]
    np.clip(img, 0, 255, out=img)
    out = np.empty((h, w, 3), np.uint8)
    for c in range(3):
        out[..., c] = img[c]
    return out, lab


def _albedo(drive, v: View, lab, light, zenith, horizon) -> np.ndarray:
    """(3, H, W) base colours: class palette, facade and tree colours per column, sky gradient.

    One gather per channel from a table [classes | columns | sky rows] does it all.
    """
    facade = np.where(v.building[:, None], drive.seg_colour[v.side, v.seg],
                      drive.tree_colour[v.side, v.seg]) * light
    t = ((np.arange(v.g0, dtype=np.float32) + 0.5) / v.yh)[:, None] ** 1.5
    table = np.concatenate([drive.palette * light, facade, zenith + (horizon - zenith) * t]).T
    cols = np.arange(N_CLASSES, N_CLASSES + v.w)[None, :]
    idx = np.where((lab == BUILDING) | (lab == VEGETATION), cols, lab)      # intp, like cols
    sky_rows = np.arange(N_CLASSES + v.w, N_CLASSES + v.w + v.g0)[:, None]
    np.copyto(idx[: v.g0], sky_rows, where=lab[: v.g0] == SKY)
    img = np.empty((3, v.h, v.w), np.float32)
    for c in range(3):
        np.take(table[c].astype(np.float32), idx, out=img[c])
    return img


def _clouds(drive, v: View, frame: int, img, sky) -> None:
    """Soft white clouds drifting slowly across the sky."""
    shift = int(frame * 0.5 + drive.speed * 40) % 256
    cloud = _cloud_field(v.h, v.w, v.g0, v.yh)[:, shift:shift + v.w] * sky
    white = 250 * np.asarray(_LIGHT[drive.condition][1], np.float32)
    for c in range(3):
        img[c, : v.g0] += cloud * (white[c] - img[c, : v.g0])


@lru_cache(maxsize=8)
def _cloud_field(h: int, w: int, g0: int, yh: float) -> np.ndarray:
    """(g0, w + 256) cloud opacity, fading towards the horizon; sliced to drift."""
    rows = np.arange(g0)[:, None] * 400 / h
    cols = np.arange(w + 256)[None, :] * 400 / h
    t = ((np.arange(g0, dtype=np.float32) + 0.5) / yh)[:, None]
    field = (np.clip(_texture(rows, cols) - 0.4, 0, 1.5) * (1 - t) * 0.5).astype(np.float32)
    field.flags.writeable = False
    return field


def _rain(v: View, frame: int, img, lab) -> None:
    """Wet road mirroring the scene above it, washed-out colour, soft focus, streaks."""
    n = min(v.g0, v.h - v.g0)
    wet = (lab[v.g0:v.g0 + n] >= ROAD) & (lab[v.g0:v.g0 + n] <= MARKING_CROSSING)
    fade = 0.35 * np.exp(-np.arange(n, dtype=np.float32) / (0.12 * v.h))[:, None]
    img[:, v.g0:v.g0 + n] += (wet * fade) * img[:, v.g0 - 1::-1][:, :n]
    grey = (img[0] + img[1] + img[2]) * (0.45 / 3)
    img *= 0.55
    img += grey
    img[:, :, 1:] = 0.5 * (img[:, :, 1:] + img[:, :, :-1])
    img[:, 1:] = 0.5 * (img[:, 1:] + img[:, :-1])
    _, streaks = _screen_tiles(v.h, v.w)
    oy, ox = (frame * 41) % 64, (frame * 7) % 64
    img += 70 * streaks[oy:oy + v.h, ox:ox + v.w]
