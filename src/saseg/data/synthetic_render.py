"""The numpy renderer behind `saseg.data.synthetic`: one road-scene frame from a drive state.

World frame: ``X`` is lateral (metres, right positive, 0 on the yellow centre line), ``Z``
runs along the road from the start of the drive, heights are metres above the road. The
pinhole camera (focal length ``0.65 W`` px, about 75 degrees wide; horizon at ``0.45 H``)
rides ``CAM_H`` above the right-hand ego lane. The road bends by ``x_c(z) = curv z^2 / 2`` at
depth ``z``, so a ground pixel maps to ``X`` by one affine map per row, and the facade planes
``X = +-WALL_X`` give one depth per column: every scene element is a few vectorised masks.

The image is composed planar, (3, H, W) float32 in 0..255, because numpy broadcasts over a
leading axis many times faster than over a trailing one; it is interleaved once at the end.
Everything is a function of the drive parameters and the frame number alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SKY, BUILDING, VEGETATION, PAVEMENT, ROAD = 0, 1, 2, 3, 4
LANE_WHITE, LANE_YELLOW, LANE_DASHED, MARKING_SYMBOL, MARKING_CROSSING, VEHICLE = 5, 6, 7, 8, 9, 10
N_CLASSES = 11
CONDITIONS = ("day", "shadows", "traffic", "night", "dusk", "rain")

FPS = 10.0
CAM_H = 1.4
LANE_W = 3.5
EDGE_X, ROAD_HALF, WALL_X = 7.0, 7.5, 11.0
SEG_LEN, N_SEG = 16.0, 128          # facade segments along Z (building, then trees)
MARK_CYCLE, MARK_AT, N_MARK = 40.0, 10.0, 64
DASH_PERIOD, DASH_ON = 12.0, 4.0
Z_MAX = 1000.0

# Per condition: sun gain, RGB tint, zenith and horizon sky colours, fog distance (m),
# sensor noise sigma (grey levels).
_LIGHT = {
    "day": (1.0, (1.0, 1.0, 1.0), (70, 125, 200), (185, 205, 225), 450.0, 3.0),
    "shadows": (1.1, (1.0, 1.0, 0.97), (60, 120, 205), (180, 205, 230), 450.0, 3.0),
    "traffic": (1.0, (1.0, 1.0, 1.0), (75, 125, 195), (190, 205, 220), 400.0, 3.0),
    "dusk": (0.62, (1.2, 0.85, 0.62), (55, 55, 110), (245, 150, 85), 300.0, 4.0),
    "night": (0.14, (0.9, 0.95, 1.15), (4, 6, 16), (22, 22, 38), 220.0, 6.0),
    "rain": (0.72, (0.95, 0.98, 1.0), (110, 115, 122), (160, 163, 167), 95.0, 9.0),
}
CAR_COLOURS = np.array([(235, 235, 235), (180, 182, 186), (40, 40, 45), (160, 30, 30),
                        (30, 60, 140), (90, 95, 100), (200, 170, 60), (60, 110, 70)], np.float32)


def _frac(a):
    """a - floor(a): numpy's float ``%`` is an order of magnitude slower."""
    return a - np.floor(a)


@lru_cache(maxsize=4)
def smooth_tile(n: int = 256, beta: float = 1.6, seed: int = 12345) -> np.ndarray:
    """(n * n,) float32 periodic 1/f^beta noise, zero mean, unit std; flat for np.take."""
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(n) * n
    k = np.hypot(freq[:, None], freq[None, :])
    spectrum = np.fft.fft2(rng.standard_normal((n, n))) / np.maximum(k, 1.0) ** beta
    spectrum[0, 0] = 0
    tile = np.fft.ifft2(spectrum).real
    tile = ((tile - tile.mean()) / tile.std()).astype(np.float32).ravel()
    tile.flags.writeable = False
    return tile


def _texture(u, v):
    """Tile value at world coordinates (u, v) in tile cells (any shapes that broadcast)."""
    i = (np.asarray(u) + 4096).astype(np.intp) & 255
    j = (np.asarray(v) + 4096).astype(np.intp) & 255
    return np.take(smooth_tile(), i * 256 + j)


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


@dataclass
class View:
    """Camera and scene geometry of one frame; rows ``g0:`` see the ground below the horizon."""

    h: int
    w: int
    f: float                # focal length (px)
    yh: float               # horizon row
    odo: float              # distance driven (m)
    curv: float             # road curvature (1/m)
    cam_x: float            # camera lateral position (m)
    g0: int
    z: np.ndarray           # (H - g0,) ground depth of each ground row (m)
    X: np.ndarray           # (H - g0, W) lateral position of each ground pixel (m)
    zw: np.ndarray          # (W,) depth of the facade or tree line each column sees (Z_MAX: none)
    side: np.ndarray        # (W,) 0 left facade, 1 right facade
    seg: np.ndarray         # (W,) facade segment index into the drive's tables
    pos: np.ndarray         # (W,) position within the segment (m)
    building: np.ndarray    # (W,) bool: facade (else trees)
    top: np.ndarray         # (W,) facade height (m)

    def px(self, x, z):
        """Screen column of world point (x, z); z is depth ahead of the camera."""
        return self.w / 2 + self.f * (x + 0.5 * self.curv * z * z - self.cam_x) / z

    def py(self, height, z):
        """Screen row of a point `height` metres above the road at depth z."""
        return self.yh + self.f * (CAM_H - height) / z


def make_view(drive, frame: int, h: int, w: int) -> View:
    t = frame / FPS
    amp, period, phase = drive.curv
    curv = float(amp * np.sin(2 * np.pi * t / period + phase))
    cam_x = LANE_W / 2 + drive.sway[0] * np.sin(2 * np.pi * t / 9.0 + drive.sway[1])
    f, yh, odo = 0.65 * w, 0.45 * h, drive.speed * t
    yc = np.arange(h, dtype=np.float32) + 0.5
    g0 = int(np.searchsorted(yc, yh + 0.25, side="right"))
    z = np.minimum(f * CAM_H / (yc[g0:] - yh), Z_MAX).astype(np.float32)
    xs = np.arange(w, dtype=np.float32) + 0.5 - w / 2
    X = xs[None, :] * (z / f)[:, None] + (cam_x - 0.5 * curv * z * z)[:, None]
    zw, side = _facade_depth(xs / f, curv, cam_x)
    Zw = zw + odo
    seg_f = np.floor(Zw / SEG_LEN)
    seg, pos = seg_f.astype(np.intp) % N_SEG, Zw - seg_f * SEG_LEN
    building = pos < drive.seg_build[side, seg]
    trees = drive.tree_height[side, seg] * (0.85 + 0.15 * np.sin(pos * 1.9 + seg))
    top = np.where(building, drive.seg_height[side, seg], trees)
    return View(h, w, f, yh, odo, curv, cam_x, g0, z, X.astype(np.float32), zw, side, seg, pos,
                building, top)


def _facade_depth(u: np.ndarray, curv: float, cam_x: float):
    """Nearest depth > 0 at which the ray of each column meets X = -WALL_X or +WALL_X.

    Column ray ``u = (x - W/2) / f`` meets the bent facade where
    ``curv/2 z^2 - u z + (X_wall - cam_x) = 0``; the roots use the stable form q / a, c / q.
    """
    best, side = np.full(u.shape, Z_MAX), np.zeros(u.shape, np.intp)
    with np.errstate(divide="ignore", invalid="ignore"):
        for s, wall in enumerate((-WALL_X, WALL_X)):
            c = wall - cam_x
            if abs(curv) < 1e-9:
                roots, ok = [c / u], np.ones(u.shape, bool)
            else:
                disc = u * u - 2 * curv * c
                ok = disc >= 0
                q = 0.5 * (u + np.copysign(np.sqrt(np.maximum(disc, 0)), u))
                roots = [q / (0.5 * curv), c / q]
            for r in roots:
                r = np.where(ok & np.isfinite(r) & (r > 0.5), r, Z_MAX)
                closer = r < best
                best, side = np.where(closer, r, best), np.where(closer, s, side)
    return best.astype(np.float32), side


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
    g = 1 + 0.09 * _texture(Z[:, None] * 5, v.X * 5)
    seam = (_frac(A * 0.7) < 0.06) | (_frac(Z * 0.7) < 0.06)[:, None]
    g *= 1 - 0.2 * (seam & (lab[v.g0:] == PAVEMENT))
    g *= 1 + 0.15 * ((A > ROAD_HALF) & (A < ROAD_HALF + 0.25))            # kerb
    g *= _cast_shadows(drive, v, Z)
    if drive.condition == "night":
        g *= 1 + _headlight(v, v.X, v.z[:, None])
    shade[v.g0:] = g
    wall = (lab == BUILDING) | (lab == VEGETATION)
    rows = np.nonzero(wall.any(1))[0]
    if rows.size:
        r0, r1 = rows[0], rows[-1] + 1
        height = CAM_H - (np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5 - v.yh) * (v.zw / v.f)
        storey = _frac(height / 3.2)
        window = _windows(drive, v, height, storey)
        floor = (storey < 0.04) & v.building
        leaves = _texture(height * 4, (v.zw + v.odo) * 4)
        facade = np.where(v.building, 1 - 0.5 * window - 0.15 * floor, 1 + 0.35 * leaves)
        if drive.condition == "night":                         # some windows are lit
            spacing = drive.seg_window[v.side, v.seg]
            lit = (np.floor(v.pos / spacing) * 7 + v.seg * 5 + np.floor(height / 3.2) * 13) % 10 < 3
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
    if trees == 0 and buildings == 0:
        return np.float32(1.0)
    dark = np.zeros_like(v.X)
    if trees:
        blob = _texture(Z[:, None] * 0.8 + 97, v.X * 0.9 + Z[:, None] * 0.25 * sun)
        dark = trees * np.clip((blob - 0.2) * 2.5, 0, 1)
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


def _headlight(v: View, X, z):
    """Extra light from the ego car's headlights at ground point (X, z); 0 far away."""
    width = 0.9 + 0.12 * z
    return 6 * np.exp(-0.5 * ((X - v.cam_x) / width) ** 2 - z / 28)
