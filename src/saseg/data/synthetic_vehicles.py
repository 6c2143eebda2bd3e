"""Traffic for `synthetic_render`: which vehicles are in view, their shadows, paint and lamps.

Vehicles are drawn after the scene, far to near, so nearer ones occlude farther ones and
the lane lines under them; they overwrite the label with ``VEHICLE``.
"""

from __future__ import annotations

import numpy as np

from .synthetic_world import FPS, VEHICLE, View, headlight

CAR_COLOURS = np.array([(235, 235, 235), (180, 182, 186), (40, 40, 45), (160, 30, 30),
                        (30, 60, 140), (90, 95, 100), (200, 170, 60), (60, 110, 70)], np.float32)


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
        boost = [headlight(v, x, zc) for x, zc in zip(X.tolist(), z.tolist())]
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


def draw_lamps(drive, v: View, cars, img) -> None:
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
