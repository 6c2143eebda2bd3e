"""The world frame and the camera: what the scene and vehicle renderers both build on.

World frame: ``X`` is lateral (metres, right positive, 0 on the yellow centre line), ``Z``
runs along the road from the start of the drive, heights are metres above the road. The
pinhole camera (focal length ``0.65 W`` px, about 75 degrees wide; horizon at ``0.45 H``)
rides ``CAM_H`` above the right-hand ego lane. The road bends by ``x_c(z) = curv z^2 / 2`` at
depth ``z``, so a ground pixel maps to ``X`` by one affine map per row, and the facade planes
``X = +-WALL_X`` give one depth per column: every scene element is a few vectorised masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Label class ids, in the order of `saseg.data.synthetic.SYNTHETIC_CLASSES`.
SKY, BUILDING, VEGETATION, PAVEMENT, ROAD = 0, 1, 2, 3, 4
LANE_WHITE, LANE_YELLOW, LANE_DASHED, MARKING_SYMBOL, MARKING_CROSSING, VEHICLE = 5, 6, 7, 8, 9, 10
N_CLASSES = 11

FPS = 10.0
CAM_H = 1.4
LANE_W = 3.5
EDGE_X, ROAD_HALF, WALL_X = 7.0, 7.5, 11.0
SEG_LEN, N_SEG = 16.0, 128          # facade segments along Z (building, then trees)
MARK_CYCLE, MARK_AT, N_MARK = 30.0, 8.0, 64
DASH_PERIOD, DASH_ON = 12.0, 4.0
Z_MAX = 1000.0


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
    """The camera pose and the per-row and per-column geometry of frame `frame`."""
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


def headlight(v: View, X, z):
    """Extra light from the ego car's headlights at (X, z); 0 far away.

    They ride with the camera, so they light the road and the vehicles alike.
    """
    width = 0.9 + 0.12 * z
    return 6 * np.exp(-0.5 * ((X - v.cam_x) / width) ** 2 - z / 28)

