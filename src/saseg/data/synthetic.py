"""Embedded procedural road scenes: ``synthetic:n=200,seed=0,size=240x180,split=test``.

saseg's default data set needs no download. Each *drive* is a short video of a car in the
right-hand lane of a four-lane road (yellow double centre line, dashed white lane lines,
solid white edge lines) with pavements, facades, trees, road markings and traffic. A drive
has one *condition*; the conditions mirror what the paper found surprising (complex
shadows, many vehicles, night-time glare), so a model trained on the ``train`` mix meets
genuinely surprising frames in the ``test`` mix:

===========  ==================================================================
``day``      plain daylight, a few vehicles
``shadows``  tree-canopy and building shadows across road and lane lines
``traffic``  14-20 vehicles, occluding each other and the lanes
``night``    dark scene lit by the ego headlights, glare and bloom of oncoming lamps
``dusk``     warm low light, long building shadows
``rain``     washed-out colour, wet-road reflections, blur, streaks, sensor noise
===========  ==================================================================

Spec options (all optional): ``n`` frames, ``seed``, ``size=WxH`` (width first, like video
tools), ``split`` (a preset of `PRESETS`), ``conditions`` (a preset name, one condition, or
weights such as ``day@0.8+shadows@0.2``; ``:`` works instead of ``@`` after ``?``), and
``drive_len`` frames per drive. Frame ``i`` is frame ``i % drive_len`` of drive
``i // drive_len`` and renders from (seed, split, drive, frame) alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import numpy as np

from ..errors import DataError
from . import synthetic_render
from .base import Dataset, Frame
from .classes import ClassInfo
from .synthetic_render import CONDITIONS
from .synthetic_vehicles import CAR_COLOURS
from .synthetic_world import FPS, LANE_W, N_MARK, N_SEG, SEG_LEN

__all__ = ["CONDITIONS", "PRESETS", "SYNTHETIC_CLASSES", "SyntheticDataset", "open_synthetic",
           "parse_conditions", "render_frame", "sample_drive"]

#: Class ids follow the constants of `synthetic_world`; groups mirror the paper's lanes
#: (its classes 1-3), road markers (4-8) and vehicles (10).
SYNTHETIC_CLASSES = ClassInfo(
    names=("sky", "building", "vegetation", "pavement", "road", "lane_white", "lane_yellow",
           "lane_dashed", "marking_symbol", "marking_crossing", "vehicle"),
    colours=((70, 130, 180), (70, 70, 70), (107, 142, 35), (244, 35, 232), (128, 64, 128),
             (255, 255, 255), (250, 170, 30), (0, 220, 220), (220, 20, 60), (255, 120, 0),
             (0, 0, 142)),
    ignore_index=255,
    groups={"lanes": (5, 6, 7), "road_markings": (8, 9), "vehicles": (10,)},
)

#: Condition weights per split: train/val are plain daytime, test is shifted.
PRESETS: dict[str, dict[str, float]] = {
    "train": {"day": 0.85, "dusk": 0.15},
    "val": {"day": 0.85, "dusk": 0.15},
    "test": {"day": 0.25, "shadows": 0.15, "traffic": 0.15, "night": 0.15, "dusk": 0.15,
             "rain": 0.15},
}
_SPLIT_SALT = {None: 0, "train": 1, "val": 2, "test": 3}
DEFAULT_N, DEFAULT_SIZE, DEFAULT_DRIVE_LEN = 200, (180, 240), 20
_OPTIONS = ("n", "seed", "size", "split", "conditions", "drive_len")


@dataclass(frozen=True)
class Drive:
    """Everything random about one drive, drawn once from its seed (see `sample_drive`)."""

    condition: str
    speed: float                 # m/s
    curv: tuple                  # (amplitude 1/m, period s, phase)
    sway: tuple                  # (amplitude m, phase)
    palette: np.ndarray          # (N_CLASSES, 3) albedo, 0..255
    seg_build: np.ndarray        # (2, N_SEG) length of the building part of each segment (m)
    seg_height: np.ndarray       # (2, N_SEG) building height (m)
    seg_window: np.ndarray       # (2, N_SEG) window spacing (m)
    tree_height: np.ndarray      # (2, N_SEG)
    seg_colour: np.ndarray       # (2, N_SEG, 3) facade colour; trees use tree_colour
    tree_colour: np.ndarray      # (2, N_SEG, 3)
    marks: np.ndarray            # (N_MARK,) 0 none, 1 arrows, 2 crossing, 3 text
    text: np.ndarray             # (8, 16) bool glyph bitmap for text markings
    vehicles: np.ndarray         # (n, 9): X, z0, vrel (m/s), zmin, zmax, width, height, length, kind
    vehicle_colours: np.ndarray  # (n, 3)
    shadow: tuple                # (tree strength, building strength, sun slope, side)


def sample_drive(key, condition: str) -> Drive:
    """Draw a drive's parameters from `key` (anything `np.random.default_rng` accepts).

    Draws happen in a fixed order whatever the condition, so one key under "day" and under
    "shadows", "night" or "rain" gives the same road, buildings and vehicles (and labels).
    """
    rng = np.random.default_rng(key)
    speed = rng.uniform(8.0, 14.0)
    curv = (rng.uniform(0.0, 1 / 350) * rng.choice([-1, 1]), rng.uniform(20, 45), rng.uniform(0, 6.3))
    sway = (rng.uniform(0.05, 0.3), rng.uniform(0, 6.3))
    palette = np.array([(0, 0, 0), (255, 255, 255), (255, 255, 255), (150, 146, 140),
                        (92, 92, 96), (228, 228, 222), (225, 178, 40), (226, 226, 220),
                        (218, 218, 212), (230, 230, 226), (0, 0, 0)], np.float32)
    palette[3:10] *= rng.uniform(0.85, 1.12, size=(7, 1)).astype(np.float32)
    palette[4] *= rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    seg_build = np.where(rng.random((2, N_SEG)) < 0.75, rng.uniform(8, SEG_LEN, (2, N_SEG)), 0.0)
    seg_height = rng.uniform(5, 26, (2, N_SEG))
    seg_window = rng.uniform(2.2, 3.6, (2, N_SEG))
    tree_height = rng.uniform(4, 9, (2, N_SEG))
    base = np.array([(170, 150, 130), (200, 190, 170), (140, 90, 70), (150, 155, 160),
                     (215, 205, 185), (110, 105, 100)], np.float32)
    seg_colour = base[rng.integers(0, len(base), (2, N_SEG))] * rng.uniform(0.85, 1.1, (2, N_SEG, 1))
    tree_colour = np.array([70, 105, 45], np.float32) * rng.uniform(0.7, 1.2, (2, N_SEG, 3))
    marks = rng.choice(4, N_MARK, p=[0.1, 0.35, 0.3, 0.25])
    text = rng.random((8, 16)) < 0.55
    text[:, 3::4] = False
    n_max = 20
    lane = rng.choice(4, n_max, p=[0.2, 0.25, 0.3, 0.25])
    lane_x = (lane - 1.5) * LANE_W + rng.uniform(-0.3, 0.3, n_max)
    lane_vrel = np.array([-speed - rng.uniform(8, 14), -speed - rng.uniform(8, 14),
                          rng.uniform(-1.5, 1.5), rng.uniform(-3, 3)])
    zmin = np.array([2.0, 2.0, 9.0, 2.0])[lane]
    zmax = np.full(n_max, 100.0 if condition == "traffic" else 180.0)     # dense queues
    rank = np.array([np.sum(lane[:i] == lane[i]) for i in range(n_max)])   # slot within lane
    z0 = zmin + (rank + rng.uniform(0, 0.6, n_max)) * (zmax - zmin) / 7
    kind = rng.choice(3, n_max, p=[0.75, 0.15, 0.1])
    dims = np.array([(1.8, 1.5, 4.5), (2.0, 2.1, 5.0), (2.5, 3.4, 9.0)])[kind]
    colours = CAR_COLOURS[rng.integers(0, len(CAR_COLOURS), n_max)] * rng.uniform(0.85, 1.1, (n_max, 1))
    n_day, n_traffic = rng.integers(2, 6), rng.integers(14, 21)
    n = n_traffic if condition == "traffic" else n_day
    vehicles = np.column_stack([lane_x, z0, lane_vrel[lane], zmin, zmax, dims, kind])[:n]
    slope, sun = (rng.uniform(0.6, 1.2), rng.uniform(1.8, 3.0)), int(rng.choice([-1, 1]))
    shadow = {"shadows": (0.55, 0.5, slope[0], sun), "dusk": (0.0, 0.45, slope[1], sun)}.get(
        condition, (0.0, 0.0, 1.0, 1))
    arrays = [palette, seg_build, seg_height, seg_window, tree_height, seg_colour.astype(np.float32),
              tree_colour.astype(np.float32), marks, text, vehicles, colours[:n].astype(np.float32)]
    for a in arrays:                # drives are cached and shared: make them immutable
        a.flags.writeable = False
    return Drive(condition, speed, curv, sway, *arrays, shadow)


@lru_cache(maxsize=128)
def cached_drive(key: tuple, condition: str) -> Drive:
    """`sample_drive` memoised per process: consecutive frames of a drive share its geometry."""
    return sample_drive(list(key), condition)


def render_frame(seed, frame: int, *, size: tuple[int, int] = DEFAULT_SIZE,
                 condition: str = "day") -> tuple[np.ndarray, np.ndarray]:
    """Render frame number `frame` of the drive drawn from `seed` under `condition`.

    Parameters
    ----------
    seed : int or tuple of int
        Drive seed (non-negative); one seed gives one road, its buildings and vehicles.
    frame : int
        Frame number within the drive, at 10 frames per second.
    size : (H, W)
    condition : str
        One of `CONDITIONS`.

    Returns
    -------
    image : ndarray of shape (H, W, 3), uint8 RGB
    label : ndarray of shape (H, W), int64 ids of `SYNTHETIC_CLASSES`
    """
    if condition not in CONDITIONS:
        raise DataError(f"Expected a condition from {list(CONDITIONS)}, but got {condition!r}.")
    key = tuple(int(s) for s in np.atleast_1d(seed))
    if min(key) < 0:
        raise DataError(f"Expected a non-negative synthetic drive seed, but got {seed!r}.")
    image, label = synthetic_render.render(cached_drive(key, condition), int(frame), _size(size))
    return image, label.astype(np.int64)


def parse_conditions(text: str) -> dict[str, float]:
    """``"test"``, ``"night"`` or ``"day@0.8+shadows@0.2"`` (``:`` also allowed) -> weights."""
    text = str(text).strip()
    if text in PRESETS:
        return dict(PRESETS[text])
    weights: dict[str, float] = {}
    for item in text.split("+"):
        name, _, value = item.replace(":", "@").partition("@")
        name = name.strip()
        if name not in CONDITIONS:
            raise DataError(f"Expected synthetic conditions from {list(CONDITIONS)} or a preset "
                            f"from {list(PRESETS)}, but got {name!r} in {text!r}.")
        if name in weights:
            raise DataError(f"Expected each synthetic condition once, but got {name!r} twice "
                            f"in {text!r}.")
        try:
            weights[name] = float(value) if value else 1.0
        except ValueError:
            raise DataError(f"Expected a number as weight of {name!r}, but got {value!r}.") from None
    return _check_weights(weights)


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    out = {}
    for name, w in dict(weights).items():
        if name not in CONDITIONS:
            raise DataError(f"Expected synthetic conditions from {list(CONDITIONS)}, but got {name!r}.")
        if not (math.isfinite(float(w)) and float(w) >= 0):
            raise DataError(f"Expected a finite weight >= 0 for condition {name!r}, but got {w!r}.")
        out[name] = float(w)
    if not out or sum(out.values()) <= 0:
        raise DataError(f"Expected condition weights with a positive sum, but got {dict(weights)!r}.")
    return out


def _size(size) -> tuple[int, int]:
    try:
        h, w = (int(s) for s in size)
    except (TypeError, ValueError):
        raise DataError(f"Expected size as (H, W) integers, but got {size!r}.") from None
    if not (24 <= h <= 4096 and 32 <= w <= 4096):
        raise DataError(f"Expected a synthetic frame size between 32x24 and 4096x4096 (WxH), "
                        f"but got {w}x{h}.")
    return h, w


def _allocate(weights: Mapping[str, float], n_drives: int, rng) -> list[str]:
    """Largest-remainder quotas of drives per condition, in a seeded random order."""
    names = list(weights)
    share = np.array([weights[c] for c in names]) / sum(weights.values()) * n_drives
    count = np.floor(share).astype(int)
    for j in np.argsort(-(share - count), kind="stable")[: n_drives - count.sum()]:
        count[j] += 1
    drives = [c for c, k in zip(names, count) for _ in range(k)]
    return [drives[j] for j in rng.permutation(n_drives)]


class SyntheticDataset(Dataset):
    """Frames of generated drives, rendered on demand (``frame i`` never depends on ``i - 1``).

    Parameters
    ----------
    n_frames : int
    size : (H, W)
        Frame size in pixels (spec strings write it ``WxH``).
    seed : int
        Non-negative; with `split` it fixes every drive.
    conditions : mapping of str to float, or str, optional
        Condition weights (see `parse_conditions`); default: the split's preset, else day.
        Drives get conditions in proportion to the weights (largest remainder).
    frames_per_drive : int
        Consecutive frames (10 per second) per drive.
    split : {"train", "val", "test"} or None
        Picks the condition preset and salts the seed, so splits never share drives.
    """

    def __init__(self, n_frames: int = DEFAULT_N, *, size: tuple[int, int] = DEFAULT_SIZE,
                 seed: int = 0, conditions: Mapping[str, float] | str | None = None,
                 frames_per_drive: int = DEFAULT_DRIVE_LEN, split: str | None = None,
                 on_error: str = "raise"):
        if split not in _SPLIT_SALT:
            raise DataError(f"Expected a synthetic split from {list(PRESETS)}, but got {split!r}.")
        for name, value, low in (("n_frames", n_frames, 1), ("seed", seed, 0),
                                 ("frames_per_drive", frames_per_drive, 1)):
            if not isinstance(value, (int, np.integer)) or value < low:
                raise DataError(f"Expected {name} to be an integer >= {low}, but got {value!r}.")
        self.n_frames, self.seed, self.split = int(n_frames), int(seed), split
        self.size, self.frames_per_drive = _size(size), int(frames_per_drive)
        default = PRESETS.get(split, {"day": 1.0})
        if isinstance(conditions, str):
            conditions = parse_conditions(conditions)
        self.conditions = _check_weights(default if conditions is None else conditions)
        n_drives = -(-self.n_frames // self.frames_per_drive)
        rng = np.random.default_rng([self.seed, _SPLIT_SALT[split], 1])
        self.drive_conditions = _allocate(self.conditions, n_drives, rng)
        super().__init__(classes=SYNTHETIC_CLASSES, spec=self._canonical_spec(default),
                         on_error=on_error)

    def _canonical_spec(self, default: Mapping[str, float]) -> str:
        h, w = self.size
        spec = f"synthetic:n={self.n_frames},seed={self.seed},size={w}x{h}"
        if self.split:
            spec += f",split={self.split}"
        if self.conditions != _check_weights(default):
            spec += ",conditions=" + "+".join(f"{c}@{w!r}" for c, w in self.conditions.items())
        if self.frames_per_drive != DEFAULT_DRIVE_LEN:
            spec += f",drive_len={self.frames_per_drive}"
        return spec

    def __len__(self) -> int:
        return self.n_frames

    def drive(self, i: int) -> int:
        """Drive index of frame i."""
        return self._index(i) // self.frames_per_drive

    def condition(self, i: int) -> str:
        """Condition of frame i (that of its drive), e.g. ``"night"``."""
        return self.drive_conditions[self.drive(i)]

    def frame_id(self, i: int) -> str:
        i = self._index(i)
        return f"d{i // self.frames_per_drive:03d}/{i % self.frames_per_drive:05d}"

    def _index(self, i: int) -> int:
        if not -self.n_frames <= i < self.n_frames:
            raise IndexError(i)
        return int(i) % self.n_frames

    def _load(self, i: int) -> Frame:
        drive, k = divmod(i, self.frames_per_drive)
        image, label = render_frame((self.seed, _SPLIT_SALT[self.split], 0, drive), k,
                                    size=self.size, condition=self.drive_conditions[drive])
        return Frame(frame_id=self.frame_id(i), index=i, image=image, label=label,
                     source=f"{self.spec}#{i}", timestamp=k / FPS)


def open_synthetic(options: Mapping[str, str], *, split: str | None = None,
                   on_error: str = "raise") -> SyntheticDataset:
    """Open generated drives from spec options (string values), e.g. ``{"n": "200",
    "size": "240x180", "conditions": "day@0.8+rain@0.2"}``; see the module docstring."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise DataError(f"Expected synthetic options from {list(_OPTIONS)}, but got {unknown}.")
    given = options.get("split")
    if given is not None and split is not None and str(given) != split:
        raise DataError(f"Expected one synthetic split, but got split={given!r} and {split!r}.")
    split = split if given is None else str(given)
    if split not in PRESETS and split is not None:
        raise DataError(f"Expected a synthetic split from {list(PRESETS)}, but got {split!r}.")
    size = DEFAULT_SIZE
    if "size" in options:
        w, _, h = str(options["size"]).lower().partition("x")
        size = (_int_option("size height", h, 1), _int_option("size width", w, 1))
    conditions = options.get("conditions")
    return SyntheticDataset(
        _int_option("n", options.get("n", DEFAULT_N), 1), size=size,
        seed=_int_option("seed", options.get("seed", 0), 0),
        conditions=None if conditions is None else parse_conditions(conditions),
        frames_per_drive=_int_option("drive_len", options.get("drive_len", DEFAULT_DRIVE_LEN), 1),
        split=split, on_error=on_error)


def _int_option(name: str, value, low: int) -> int:
    try:
        number = int(str(value).strip())
    except ValueError:
        number = None
    if number is None or number < low:
        raise DataError(f"Expected synthetic option {name} to be an integer >= {low} "
                        f"(size as WxH, e.g. 240x180), but got {value!r}.")
    return number
