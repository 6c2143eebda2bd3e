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
MARK_CYCLE, MARK_AT, N_MARK = 30.0, 8.0, 64
DASH_PERIOD, DASH_ON = 12.0, 4.0
Z_MAX = 1000.0
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
CAR_COLOURS = np.array([(235, 235, 235), (180, 182, 186), (40, 40, 45), (160, 30, 30),
                        (30, 60, 140), (90, 95, 100), (200, 170, 60), (60, 110, 70)], np.float32)


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
    cam_x = float(LANE_W / 2 + drive.sway[0] * np.sin(2 * np.pi * t / 9.0 + drive.sway[1]))
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


def _headlight(v: View, X, z):
    """Extra light from the ego car's headlights at ground point (X, z); 0 far away."""
    width = 0.9 + 0.12 * z
    return 6 * np.exp(-0.5 * ((X - v.cam_x) / width) ** 2 - z / 28)


def visible_vehicles(drive, v: View, frame: int) -> list[tuple[float, int]]:
    """(depth of the near face, row of drive.vehicles), far to near, for vehicles in view.

    Each lane moves at one relative speed, so vehicles in a lane keep their spacing; depth
    wraps around ``[zmin, zmax)`` so traffic keeps coming for any drive length.
    """
    veh = drive.vehicles
    zmin, zmax = veh[:, 3], veh[:, 4]
    z = zmin + (veh[:, 1] - zmin + veh[:, 2] * frame / FPS) % (zmax - zmin)
    out = []
    for i in np.argsort(-z, kind="stable"):
        X, wd = veh[i, 0], veh[i, 5]
        if z[i] > 1.0 and v.px(X + wd / 2, z[i]) > 0 and v.px(X - wd / 2, z[i]) < v.w:
            out.append((float(z[i]), int(i)))
    return out


def vehicle_shadows(drive, v: View, cars, shade: np.ndarray) -> None:
    """Darken the road under and just behind each vehicle (contact shadow)."""
    keep = 0.7 if drive.condition == "night" else 0.45
    for z, i in cars:
        X, _, _, _, _, wd, _, ln, _ = drive.vehicles[i].tolist()
        za = max(z - 0.3, 1.0)
        y0 = max(int(round(v.py(0, z + 0.8 * ln))), v.g0)
        y1 = min(int(round(v.py(0, za))), v.h)
        x0 = max(int(round(v.px(X - wd / 2 - 0.1, za))), 0)
        x1 = min(int(round(v.px(X + wd / 2 + 0.1, za))), v.w)
        if y0 < y1 and x0 < x1:
            shade[y0:y1, x0:x1] *= keep


class _Painter:
    """Paints camera-facing rectangles and side planes of vehicles into image and label.

    Dense traffic makes about 150 calls per frame, so each call keeps its numpy calls few and
    touches only the pixels it covers. Colours are (3, 1, 1) float32, ready to broadcast.
    """

    def __init__(self, v: View, img, lab):
        self.v, self.img, self.lab = v, img, lab
        self.centres = np.arange(max(v.h, v.w)) + 0.5            # of pixel rows and columns

    def fill(self, y0, y1, x0, x1, colour):
        v = self.v
        x0, x1 = max(int(min(x0, x1) + 0.5), 0), min(int(max(x0, x1) + 0.5), v.w)
        y0, y1 = max(int(y0 + 0.5), 0), min(int(y1 + 0.5), v.h)
        if y0 < y1 and x0 < x1:
            self.img[:, y0:y1, x0:x1] = colour
            self.lab[y0:y1, x0:x1] = VEHICLE

    def rect(self, xa, xb, z, h0, h1, colour):
        """Rectangle facing the camera at depth z, from xa to xb and h0 to h1 metres."""
        v = self.v
        self.fill(v.py(h1, z), v.py(h0, z), v.px(xa, z), v.px(xb, z), colour)

    def side(self, x, za, zb, h0, h1, colour):
        """Vertical plane X = x from depth za to zb; its edges are straight lines on screen."""
        v = self.v
        xa, xb = v.px(x, za), v.px(x, zb)
        c0, c1 = max(int(min(xa, xb)), 0), min(int(max(xa, xb)) + 1, v.w)
        if c1 - c0 < 1 or abs(xb - xa) < 0.5:
            return
        ta, tb, ba, bb = v.py(h1, za), v.py(h1, zb), v.py(h0, za), v.py(h0, zb)
        r0, r1 = max(int(min(ta, tb)), 0), min(int(max(ba, bb)) + 1, v.h)
        if r0 >= r1:
            return
        s = (self.centres[c0:c1] - xa) / (xb - xa)               # 0..1 from za to zb
        k0, k1 = 0, c1 - c0       # s is monotonic: columns outside 0..1 lie at the ends
        while k0 < k1 and not 0 <= s[k0] <= 1:
            k0 += 1
        while k1 > k0 and not 0 <= s[k1 - 1] <= 1:
            k1 -= 1
        if k0 == k1:
            return
        s, c0, c1 = s[k0:k1], c0 + k0, c0 + k1
        rows = self.centres[r0:r1, None]
        m = (rows >= ta + s * (tb - ta)) & (rows < ba + s * (bb - ba))
        np.copyto(self.img[:, r0:r1, c0:c1], colour, where=m)
        np.copyto(self.lab[r0:r1, c0:c1], np.uint8(VEHICLE), where=m)


_GLASS, _DARK, _PLATE = (48, 58, 70), (22, 22, 22), (210, 210, 210)
_HEAD, _TAIL = (235, 235, 215), (190, 25, 20)
_SHADES = np.float32([1, 0.75, 0.88, 0.92])[:, None]         # body, side, lid, cabin


def _lit_colours(drive, v: View, cars, light, horizon, fog_dist) -> np.ndarray:
    """(n, 9, 3, 1, 1) float32 lit, fogged colours of each car's body, side, lid, cabin, glass,
    dark parts, plate, lamps and side glass.

    One go for all cars: a dozen numpy calls per car took a quarter of the time spent drawing
    dense traffic. Each step keeps the dtypes of colouring one car at a time (body shades in
    float32, the rest in float64), so the colours are the same to the bit.
    """
    z = np.array([z for z, _ in cars])
    rows = [i for _, i in cars]
    X = drive.vehicles[rows, 0]
    base = np.empty((len(cars), 9, 3))
    base[:, :4] = drive.vehicle_colours[rows][:, None] * _SHADES
    base[:, 4:7] = _GLASS, _DARK, _PLATE
    base[:, 7] = np.where(X[:, None] < 0, _HEAD, _TAIL)
    base[:, 8] = np.multiply(_GLASS, 1.3)
    lit = light
    if drive.condition == "night":     # Python floats: x ** 2 may round unlike numpy's
        boost = [_headlight(v, x, zc) for x, zc in zip(X.tolist(), z.tolist())]
        lit = light * (1 + np.array(boost))[:, None, None]
    fog = np.exp(-z / fog_dist)[:, None, None]
    return (horizon + (base * lit - horizon) * fog).astype(np.float32)[..., None, None]


def draw_vehicles(drive, v: View, cars, img, lab, light, horizon, fog_dist) -> None:
    """Paint cars, vans and trucks far to near: side, wheels, body, cabin, window, lamps."""
    if not cars:
        return
    paint = _Painter(v, img, lab)
    vehicles = drive.vehicles[[i for _, i in cars]].tolist()
    colours = _lit_colours(drive, v, cars, light, horizon, fog_dist)
    for (z, _), (X, _, _, _, _, wd, ht, ln, kind), c in zip(cars, vehicles, colours):
        body, side, lid, cabin, glass, dark, plate, lamp, side_glass = c
        edge = X - wd / 2 if X - wd / 2 > v.cam_x else X + wd / 2 if X + wd / 2 < v.cam_x else None
        inward = -0.1 * wd if edge is not None and edge > X else 0.1 * wd
        near = v.f * wd / z
        if near < 8:                                             # a few pixels: just a box
            paint.rect(X - wd / 2, X + wd / 2, z, 0, ht, body)
            continue
        if kind == 2:                                            # truck: a tall box
            if edge is not None:
                paint.side(edge, z, z + ln, 0.3 * ht, ht, side)
                for a in (0.1, 0.75):
                    paint.side(edge, z + a * ln, z + (a + 0.15) * ln, 0, 0.3 * ht, dark)
            for s in (-1, 1):
                paint.rect(X + s * 0.45 * wd, X + s * 0.2 * wd, z + 0.5, 0, 0.16 * ht, dark)
            paint.rect(X - 0.45 * wd, X + 0.45 * wd, z, 0.12 * ht, 0.3 * ht, dark)
            paint.rect(X - wd / 2, X + wd / 2, z, 0.3 * ht, ht, body)
            paint.rect(X - 0.01 * wd, X + 0.01 * wd + 0.02, z, 0.32 * ht, 0.97 * ht, side)
            lamp_h = (0.2 * ht, 0.28 * ht)
        else:                                                    # car or van
            cab = 0.55 if kind == 0 else 0.45
            zc = z + 0.18 * ln
            if edge is not None:
                paint.side(edge, z, z + ln, 0.12 * ht, cab * ht, side)
                paint.side(edge + inward, zc, z + 0.8 * ln, cab * ht, ht, side_glass)
                for a in (0.12, 0.7) if near > 30 else ():
                    paint.side(edge, z + a * ln, z + (a + 0.17) * ln, 0, 0.3 * ht, dark)
            for s in (-1, 1):
                paint.rect(X + s * 0.47 * wd, X + s * 0.25 * wd, z + 0.4, 0, 0.25 * ht, dark)
            paint.fill(v.py(cab * ht, zc), v.py(cab * ht, z), v.px(X - wd / 2, z),
                       v.px(X + wd / 2, z), lid)                 # bonnet or boot lid
            paint.rect(X - wd / 2, X + wd / 2, z, 0.12 * ht, cab * ht, body)
            paint.rect(X - 0.42 * wd, X + 0.42 * wd, zc, cab * ht, ht, cabin)
            paint.rect(X - 0.36 * wd, X + 0.36 * wd, zc, (cab + 0.05) * ht, 0.93 * ht, glass)
            paint.rect(X - 0.12 * wd, X + 0.12 * wd, z, 0.22 * ht, 0.32 * ht, plate)
            lamp_h = (0.38 * ht, 0.5 * ht)
        for s in (-1, 1):
            paint.rect(X + s * 0.48 * wd, X + s * 0.3 * wd, z, lamp_h[0], lamp_h[1], lamp)


def render(drive, frame: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Render frame number `frame` of `drive` at ``size = (H, W)``.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8 RGB
    label : ndarray of shape (H, W), uint8 class ids (the constants of this module)
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
        _lamps(drive, v, cars, img)
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


def _lamps(drive, v: View, cars, img) -> None:
    """Glare blobs and bloom around head lamps (oncoming) and tail lamps (ahead)."""
    strength = {"night": 1.0, "rain": 0.6, "dusk": 0.45}[drive.condition]
    for z, i in cars:
        X, _, _, _, _, wd, ht, _, kind = drive.vehicles[i].tolist()
        head = X < 0
        y = v.py((0.24 if kind == 2 else 0.44) * ht, z)
        colour = np.array([255, 245, 215] if head else [255, 40, 25], np.float32) * strength
        for s in (-1, 1):
            x = v.px(X + s * 0.39 * wd, z)
            sigma = max(0.8, (0.12 if head else 0.06) * v.f / z)
            _blob(img, y, x, sigma, colour)
            if head:
                _blob(img, y, x, min(4 * sigma, 0.05 * v.w), colour * 0.3)


def _blob(img, cy: float, cx: float, sigma: float, colour) -> None:
    """Add a Gaussian light of peak `colour` (3,) at (cy, cx) to the planar image."""
    _, h, w = img.shape
    r = int(3 * sigma) + 1
    y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
    x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
    if y0 < y1 and x0 < x1:
        dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy)[:, None]
        dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx)[None, :]
        g = np.exp(-(dy * dy + dx * dx) / (2 * sigma * sigma))
        img[:, y0:y1, x0:x1] += g * colour[:, None, None]


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
