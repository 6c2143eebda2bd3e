import json
import re

import numpy as np
import pytest
from PIL import Image

from saseg.data.folder import open_folder
from saseg.errors import DataError, UnknownClassError

NAMES = ["road", "car", "sky"]
COLOURS = [(128, 64, 128), (0, 0, 142), (70, 130, 180)]


def _save(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def tree(tmp_path):
    """imgs/{drive_a,drive_b}/frame_N_image.jpg with labels/.../frame_N_label.png."""
    rng = np.random.default_rng(0)
    labels = {}
    for fid in ["drive_b/frame_1", "drive_a/frame_10", "drive_a/frame_2", "drive_a/frame_1"]:
        _save(tmp_path / "imgs" / f"{fid}_image.jpg", rng.integers(0, 256, (6, 7, 3), dtype=np.uint8))
        labels[fid] = rng.choice([0, 1, 2, 255], (6, 7)).astype(np.uint8)
        _save(tmp_path / "labels" / f"{fid}_label.png", labels[fid])
    (tmp_path / "meta.json").write_text(json.dumps({"names": NAMES, "colours": COLOURS}))
    return tmp_path, labels


def _open(root, **kw):
    return open_folder(root / "imgs", root / "labels", image_suffix="_image.jpg",
                       label_suffix="_label.png", **kw)


def test_nested_suffixed_pairs_in_natural_order(tree):
    root, labels = tree
    ds = _open(root, classes=root / "meta.json")
    assert [ds.frame_id(i) for i in range(len(ds))] == [
        "drive_a/frame_1", "drive_a/frame_2", "drive_a/frame_10", "drive_b/frame_1"]
    assert ds.sequence(2) == "drive_a" and ds.classes.names == tuple(NAMES)
    for frame in ds:
        reference = np.asarray(Image.open(root / "imgs" / f"{frame.frame_id}_image.jpg").convert("RGB"))
        np.testing.assert_array_equal(frame.image, reference)
        np.testing.assert_array_equal(frame.label, labels[frame.frame_id].astype(np.int64))
    assert ds.spec == (f"folder:{root}/imgs:{root}/labels?classes={root}/meta.json"
                       "&image_suffix=_image.jpg&label_suffix=_label.png")


def test_names_option_and_unlabelled_pool(tree):
    root, _ = tree
    ds = _open(root, names="road,car,sky", ignore_index=None)
    assert ds.classes.names == tuple(NAMES) and ds.classes.ignore_index is None
    with pytest.raises(UnknownClassError, match=r"frame_1_label\.png.*\[255\]"):
        ds[0]
    pool = open_folder(root / "imgs")
    assert not pool.has_labels and pool.classes is None and len(pool) == 4
    assert pool[0].label is None and pool.frame_id(0) == "drive_a/frame_1_image"


def test_colour_labels(tmp_path):
    ids = np.array([[0, 1, 2], [2, 1, 0]])
    rgb = np.array(COLOURS + [(0, 0, 0)], dtype=np.uint8)[ids]
    rgb[1, 2] = 0  # black -> ignore
    _save(tmp_path / "imgs" / "a.png", np.zeros((2, 3, 3), np.uint8))
    _save(tmp_path / "labels" / "a.png", rgb)
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps({"names": NAMES, "colours": COLOURS, "ignore_index": 255}))
    ds = open_folder(tmp_path / "imgs", tmp_path / "labels", classes=meta, label_format="colour")
    np.testing.assert_array_equal(ds[0].label, [[0, 1, 2], [2, 1, 255]])
    rgb[0, 0] = (1, 2, 3)
    _save(tmp_path / "labels" / "a.png", rgb)
    with pytest.raises(DataError, match=r"labels/a\.png.*\(1, 2, 3\)"):
        ds[0]
    with pytest.raises(DataError, match="mode RGB"):
        open_folder(tmp_path / "imgs", tmp_path / "labels", classes=meta)[0]


def test_unreadable_images(tmp_path):
    (tmp_path / "garbage.png").parent.mkdir(exist_ok=True)
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    _save(tmp_path / "ok.jpg", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "cut.jpg", np.full((32, 32, 3), 90, np.uint8))
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    ds = open_folder(tmp_path)
    for i, name in [(0, "cut.jpg"), (1, "garbage.png")]:
        with pytest.raises(DataError, match=re.escape(str(tmp_path / name))):
            ds[i]
    ds = open_folder(tmp_path, on_error="skip")
    assert [f.frame_id for f in ds] == ["ok"]
    assert [s[0] for s in ds.skipped] == ["cut", "garbage"]


def test_bad_inputs(tree, tmp_path):
    root, _ = tree
    with pytest.raises(DataError, match="class metadata"):
        _open(root)
    with pytest.raises(DataError, match="missing.json"):
        _open(root, classes=root / "missing.json")
    with pytest.raises(DataError, match="both"):
        _open(root, classes=root / "meta.json", names="a")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "empty"))):
        open_folder(tmp_path / "empty")
    with pytest.raises(DataError, match="no such folder"):
        open_folder(root / "imgs", root / "nope", names="a")
    (root / "labels/drive_a/frame_2_label.png").unlink()
    with pytest.raises(DataError, match="frame_2_image.jpg"):
        _open(root, classes=root / "meta.json")
    ds = _open(root, classes=root / "meta.json", on_error="skip")
    assert len(ds) == 3 and ds.skipped[0][0] == "drive_a/frame_2"


def test_label_size_mismatch(tmp_path):
    _save(tmp_path / "imgs" / "a.png", np.zeros((4, 5, 3), np.uint8))
    _save(tmp_path / "labels" / "a.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(DataError, match=r"imgs/a\.png.*4x5") as info:
        open_folder(tmp_path / "imgs", tmp_path / "labels", names="x")[0]
    assert "5x4" in str(info.value) and str(tmp_path / "labels" / "a.png") in str(info.value)


def test_symlinked_sequence_folders_are_found_and_loops_do_not_hang(tree, tmp_path):
    """#23 item 7: a split assembled from links to sequence folders (rglob skipped them)."""
    root, labels = tree
    split = tmp_path / "split"
    (split / "imgs").mkdir(parents=True)
    (split / "labels").mkdir()
    for drive in ("drive_a", "drive_b"):
        (split / "imgs" / drive).symlink_to(root / "imgs" / drive, target_is_directory=True)
        (split / "labels" / drive).symlink_to(root / "labels" / drive, target_is_directory=True)
    (root / "imgs" / "drive_a" / "loop").symlink_to(split / "imgs", target_is_directory=True)  # a cycle
    ds = _open(split, classes=root / "meta.json")
    ids = [ds.frame_id(i) for i in range(len(ds))]
    assert ids[:3] == ["drive_a/frame_1", "drive_a/frame_2", "drive_a/frame_10"] and "drive_b/frame_1" in ids
    for frame in ds:
        if frame.frame_id in labels:
            np.testing.assert_array_equal(frame.label, labels[frame.frame_id].astype(np.int64))
