"""The embedded road-scene generator: determinism, labels, conditions, options."""

import math

import numpy as np
import pytest

from saseg.data import synthetic_render as R
from saseg.data import synthetic_world as W
from saseg.data.synthetic import (CONDITIONS, PRESETS, SYNTHETIC_CLASSES, SyntheticDataset,
                                  cached_drive, open_synthetic, parse_conditions, render_frame)
from saseg.errors import DataError

SMALL = (72, 96)            # (H, W): every test renders tiny frames


def _luma(image):
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def _spec_options(spec):
    """Independent parse of 'synthetic:k=v,k=v' into the option dict open_synthetic takes."""
    kind, body = spec.split(":", 1)
    assert kind == "synthetic"
    return dict(item.split("=", 1) for item in body.split(","))


def test_same_seed_same_frames_and_different_seed_differs():
    a = SyntheticDataset(6, size=SMALL, seed=4, frames_per_drive=3)
    b = SyntheticDataset(6, size=SMALL, seed=4, frames_per_drive=3)
    c = SyntheticDataset(6, size=SMALL, seed=5, frames_per_drive=3)
    for i in (0, 4):
        np.testing.assert_array_equal(a[i].image, b[i].image)
        np.testing.assert_array_equal(a[i].label, b[i].label)
        assert not np.array_equal(a[i].image, c[i].image)
        assert not np.array_equal(a[i].label, c[i].label)


def test_random_access_equals_sequential_order():
    ds = SyntheticDataset(8, size=SMALL, seed=2, frames_per_drive=4, split="test")
    sequential = list(ds)
    cached_drive.cache_clear()                   # no state may carry over between frames
    for i in (7, 2, 5):
        frame = SyntheticDataset(8, size=SMALL, seed=2, frames_per_drive=4, split="test")[i]
        np.testing.assert_array_equal(frame.image, sequential[i].image)
        np.testing.assert_array_equal(frame.label, sequential[i].label)
        assert frame.frame_id == sequential[i].frame_id


def test_frames_have_declared_shapes_dtypes_ids_and_sources():
    ds = open_synthetic({"n": "5", "size": "96x72", "drive_len": "2", "seed": "3"})
    frame = ds[-1]
    assert frame.image.shape == (72, 96, 3) and frame.image.dtype == np.uint8
    assert frame.label.shape == (72, 96) and frame.label.dtype == np.int64
    assert frame.frame_id == "d002/00000" and frame.index == 4
    assert frame.source == ds.spec + "#4"
    assert frame.timestamp == pytest.approx(0.0)
    assert ds[3].timestamp == pytest.approx(0.1)
    assert [ds.frame_id(i) for i in range(3)] == ["d000/00000", "d000/00001", "d001/00000"]
    with pytest.raises(IndexError):
        ds[5]


@pytest.mark.parametrize("size", [(24, 32), (120, 160), (75, 333)])
def test_sizes_are_honoured(size):
    image, label = render_frame(1, 3, size=size, condition="traffic")
    assert image.shape == size + (3,) and label.shape == size


def test_labels_hold_only_declared_ids_and_every_class_appears():
    seen = np.zeros(SYNTHETIC_CLASSES.num_classes, int)
    ds = SyntheticDataset(48, size=(90, 120), seed=0, frames_per_drive=4, split="test")
    for i in range(0, 48, 2):
        label = ds[i].label
        SYNTHETIC_CLASSES.validate_mask(label)
        assert label.min() >= 0 and label.max() < SYNTHETIC_CLASSES.num_classes
        seen += np.bincount(label.ravel(), minlength=SYNTHETIC_CLASSES.num_classes)
    missing = [SYNTHETIC_CLASSES.names[c] for c in np.nonzero(seen == 0)[0]]
    assert not missing


def test_class_metadata_groups_mirror_the_paper():
    names = SYNTHETIC_CLASSES.names
    lanes = [names[i] for i in SYNTHETIC_CLASSES.groups["lanes"]]
    assert lanes == ["lane_white", "lane_yellow", "lane_dashed"]
    assert all(names[i].startswith("marking") for i in SYNTHETIC_CLASSES.groups["road_markings"])
    assert [names[i] for i in SYNTHETIC_CLASSES.groups["vehicles"]] == ["vehicle"]
    assert SYNTHETIC_CLASSES.ignore_index == 255
    assert names.index("vehicle") == W.VEHICLE and names.index("road") == W.ROAD


def _frames(condition, seeds=(0, 1, 2), frames=(0, 5)):
    return [render_frame(s, k, size=SMALL, condition=condition) for s in seeds for k in frames]


def test_night_is_darker_than_day_and_labels_do_not_change():
    day, night = _frames("day"), _frames("night")
    for (di, dl), (ni, nl) in zip(day, night):
        np.testing.assert_array_equal(dl, nl)
    brightness = {name: np.mean([_luma(i).mean() for i, _ in frames])
                  for name, frames in (("day", day), ("night", night))}
    assert brightness["night"] < 0.4 * brightness["day"]


def test_rain_is_noisier_than_day():
    def noise(image, label):             # std of horizontal neighbour differences on road
        road = (label == W.ROAD)[:, 1:] & (label == W.ROAD)[:, :-1]
        return np.diff(_luma(image), axis=1)[road].std()

    day, rain = _frames("day"), _frames("rain")
    assert np.mean([noise(*f) for f in rain]) > 2 * np.mean([noise(*f) for f in day])


def test_traffic_has_more_vehicle_pixels():
    def vehicle_share(frames):
        return np.mean([(label == W.VEHICLE).mean() for _, label in frames])

    seeds, frames = range(6), (0, 10, 20)
    traffic, day = _frames("traffic", seeds, frames), _frames("day", seeds, frames)
    assert vehicle_share(traffic) > 1.5 * vehicle_share(day)


def test_shadows_darken_road_but_keep_its_label():
    for (di, dl), (si, sl) in zip(_frames("day"), _frames("shadows")):
        np.testing.assert_array_equal(dl, sl)
        road = dl == W.ROAD
        assert _luma(si)[road].mean() < 0.9 * _luma(di)[road].mean()


def test_consecutive_frames_are_closer_than_frames_of_other_drives():
    ds = SyntheticDataset(12, size=SMALL, seed=7, frames_per_drive=6)
    assert ds.condition(0) == ds.condition(6) == "day"
    near = np.abs(ds[2].image.astype(int) - ds[3].image).mean()
    far = np.abs(ds[2].image.astype(int) - ds[8].image).mean()
    assert near < 0.6 * far


def test_dashed_lane_scrolls_towards_the_camera():
    """Dash phase advances with the distance driven: dashes move down the image."""
    drive = cached_drive((11,), "day")
    rows = []
    for k in (0, 1):
        v = W.make_view(drive, k, 180, 240)
        label = R.label_scene(drive, v)
        rows.append(np.nonzero((label == W.LANE_DASHED).any(1))[0])
    assert rows[0].size and rows[1].size and not np.array_equal(rows[0], rows[1])


def test_facade_depth_matches_polynomial_roots():
    """Brute force: np.roots of curv/2 z^2 - u z + (X_wall - cam_x) for every column."""
    u = np.linspace(-0.8, 0.8, 41)
    for curv, cam_x in ((1 / 400, 1.6), (-1 / 500, 2.0), (0.0, 1.75)):
        depth, side = W._facade_depth(u, curv, cam_x)
        for j, uj in enumerate(u):
            best, best_side = W.Z_MAX, 0
            for s, wall in enumerate((-W.WALL_X, W.WALL_X)):
                for root in np.roots([curv / 2, -uj, wall - cam_x]):
                    if abs(root.imag) < 1e-9 and 0.5 < root.real < best:
                        best, best_side = root.real, s
            assert depth[j] == pytest.approx(best, rel=1e-4)
            if best < W.Z_MAX:
                assert side[j] == best_side


def test_ground_coordinates_project_back_to_their_columns():
    drive = cached_drive((5,), "day")
    v = W.make_view(drive, 13, 90, 120)
    assert v.curv != 0
    rows, cols = np.array([0, 10, 30, v.X.shape[0] - 1]), np.array([0, 37, 60, 119])
    for r in rows:
        for c in cols:
            assert v.px(float(v.X[r, c]), float(v.z[r])) == pytest.approx(c + 0.5, abs=1e-2)
        assert v.py(0.0, float(v.z[r])) == pytest.approx(v.g0 + r + 0.5, abs=1e-3)


def test_condition_mix_follows_the_weights():
    ds = SyntheticDataset(200, size=SMALL, split="test", frames_per_drive=20)
    counts = {c: ds.drive_conditions.count(c) for c in CONDITIONS}
    weights = PRESETS["test"]
    for c, w in weights.items():
        share = w / sum(weights.values()) * 10
        assert math.floor(share) <= counts[c] <= math.ceil(share)
    assert sum(counts.values()) == 10
    first, second = ds.drive_conditions[:2]
    assert [ds.condition(i) for i in (0, 19, 20)] == [first, first, second]
    train = SyntheticDataset(100, size=SMALL, split="train")
    assert set(train.drive_conditions) <= {"day", "dusk"}


def test_splits_salt_the_seed():
    train = SyntheticDataset(1, size=SMALL, split="train", conditions="day")
    val = SyntheticDataset(1, size=SMALL, split="val", conditions="day")
    assert not np.array_equal(train[0].label, val[0].label)


@pytest.mark.parametrize("options", [
    {"n": "7", "seed": "2", "size": "96x72", "split": "test"},
    {"n": "3", "size": "64x48", "conditions": "night@0.25+rain@0.75", "drive_len": "2"},
    {"n": "2", "conditions": "rain", "size": "64x48"},
])
def test_spec_reopens_the_same_frames(options):
    ds = open_synthetic(options)
    again = open_synthetic(_spec_options(ds.spec))
    assert again.spec == ds.spec and len(again) == len(ds)
    assert again.drive_conditions == ds.drive_conditions
    np.testing.assert_array_equal(again[len(ds) - 1].image, ds[len(ds) - 1].image)


def test_split_keyword_and_option_agree():
    assert open_synthetic({"n": "1", "size": "64x48"}, split="val").split == "val"
    assert open_synthetic({"n": "1", "size": "64x48", "split": "val"}, split="val").split == "val"
    assert "split=test" in open_synthetic({"n": "1", "split": "test"}).spec


def test_parse_conditions():
    assert parse_conditions("test") == PRESETS["test"]
    assert parse_conditions("night") == {"night": 1.0}
    assert parse_conditions("day@0.8+shadows:0.2") == {"day": 0.8, "shadows": 0.2}


@pytest.mark.parametrize("options, match", [
    ({"frames": "3"}, "options from"),
    ({"n": "0"}, "n to be an integer >= 1"),
    ({"n": "many"}, "n to be an integer"),
    ({"seed": "-1"}, "seed to be an integer >= 0"),
    ({"size": "240by180"}, "size"),
    ({"size": "240x"}, "size"),
    ({"size": "8x8"}, "between"),
    ({"drive_len": "0"}, "drive_len"),
    ({"split": "holdout"}, "split from"),
    ({"split": "train"}, "one synthetic split"),
    ({"conditions": "fog"}, "conditions from"),
    ({"conditions": "day@x"}, "weight"),
    ({"conditions": "day@-1"}, "finite weight"),
    ({"conditions": "day@nan"}, "finite weight"),
    ({"conditions": "day@0+night@0"}, "positive sum"),
    ({"conditions": "day+day"}, "once"),
])
def test_bad_options_raise_data_error(options, match):
    with pytest.raises(DataError, match=match):
        open_synthetic(options, split="test" if options.get("split") == "train" else None)


@pytest.mark.parametrize("kwargs, match", [
    ({"size": (10, 10)}, "between"),
    ({"size": "big"}, "size as"),
    ({"seed": 1.5}, "seed"),
    ({"frames_per_drive": 0}, "frames_per_drive"),
    ({"conditions": {"snow": 1.0}}, "conditions from"),
    ({"split": "dev"}, "split from"),
    ({"on_error": "ignore"}, "on_error"),
])
def test_bad_dataset_arguments_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match):
        SyntheticDataset(3, **kwargs)


def test_render_frame_rejects_unknown_condition_and_negative_seed():
    with pytest.raises(DataError, match="condition from"):
        render_frame(0, 0, size=SMALL, condition="snow")
    with pytest.raises(DataError, match="non-negative"):
        render_frame((1, -2), 0, size=SMALL)


def test_conditions_may_be_given_as_text():
    ds = SyntheticDataset(4, size=SMALL, conditions="night", frames_per_drive=2)
    assert ds.drive_conditions == ["night", "night"] and ds.condition(3) == "night"
    assert ",conditions=night@1.0" in ds.spec
