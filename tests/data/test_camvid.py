import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saseg.data.camvid import open_camvid
from saseg.data.classes import CAMVID
from saseg.errors import DataError, UnknownClassError

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "camvid"
H, W = 12, 16


def _write(root, split, stem, seed, label=None, ext="png"):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if label is None:
        label = rng.integers(0, 12, (H, W), dtype=np.uint8)
    (root / split).mkdir(parents=True, exist_ok=True)
    (root / f"{split}annot").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / split / f"{stem}.{ext}")
    Image.fromarray(label).save(root / f"{split}annot" / f"{stem}.png")
    return image, label


@pytest.fixture
def camvid(tmp_path):
    written = {}
    for seed, stem in enumerate(["Seq05VD_f00030", "0001TP_000120", "0001TP_000090", "Seq05VD_f00000"]):
        written[stem] = _write(tmp_path, "train", stem, seed)
    _write(tmp_path, "val", "0016E5_00001", 9)
    return tmp_path, written


def test_reads_frames_in_sequence_order(camvid):
    root, written = camvid
    ds = open_camvid(root, split="train")
    assert [ds.frame_id(i) for i in range(len(ds))] == [
        "0001TP_000090", "0001TP_000120", "Seq05VD_f00000", "Seq05VD_f00030"]
    assert [ds.sequence(i) for i in range(len(ds))] == ["0001TP", "0001TP", "Seq05VD", "Seq05VD"]
    for i, frame in enumerate(ds):
        image, label = written[frame.frame_id]
        assert frame.index == i
        np.testing.assert_array_equal(frame.image, image)
        assert frame.label.dtype == np.int64
        np.testing.assert_array_equal(frame.label, label.astype(np.int64))
        assert frame.source.endswith(f"{frame.frame_id}.png")
    assert ds.classes == CAMVID and ds.has_labels
    assert ds.spec == f"camvid:{root}:train"


def test_split_is_required_and_must_exist(camvid):
    root, _ = camvid
    with pytest.raises(DataError, match=r"\['train', 'val'\]"):
        open_camvid(root)
    with pytest.raises(DataError, match=r"test.*does not exist.*\['train', 'val'\]"):
        open_camvid(root, split="test")
    with pytest.raises(DataError, match="no such folder"):
        open_camvid(root / "nowhere", split="train")


def test_empty_split_folder(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "testannot").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "test"))):
        open_camvid(tmp_path, split="test")


def test_missing_label_raises_or_is_recorded(camvid):
    root, _ = camvid
    (root / "trainannot" / "0001TP_000120.png").unlink()
    with pytest.raises(DataError, match="0001TP_000120"):
        open_camvid(root, split="train")
    ds = open_camvid(root, split="train", on_error="skip")
    assert len(ds) == 3 and ds.skipped[0][0] == "0001TP_000120"


def test_truncated_image(camvid):
    root, _ = camvid
    path = root / "train" / "0001TP_000120.png"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    ds = open_camvid(root, split="train")
    with pytest.raises(DataError, match=re.escape(str(path))):
        ds[1]
    ds = open_camvid(root, split="train", on_error="skip")
    assert [f.frame_id for f in ds] == ["0001TP_000090", "Seq05VD_f00000", "Seq05VD_f00030"]
    assert ds.skipped[0][0] == "0001TP_000120" and str(path) in ds.skipped[0][1]


def test_label_size_mismatch(tmp_path):
    _write(tmp_path, "val", "a_1", 0)
    Image.fromarray(np.zeros((H + 1, W), np.uint8)).save(tmp_path / "valannot" / "a_1.png")
    with pytest.raises(DataError, match=r"16x12.*a_1\.png.*16x13") as info:
        open_camvid(tmp_path, split="val")[0]
    assert str(tmp_path / "val" / "a_1.png") in str(info.value)
    assert str(tmp_path / "valannot" / "a_1.png") in str(info.value)


def test_unknown_class_ids(tmp_path):
    label = np.zeros((H, W), np.uint8)
    label[0, :2] = [12, 200]
    _write(tmp_path, "val", "a_1", 0, label=label)
    _write(tmp_path, "val", "a_2", 1)
    with pytest.raises(UnknownClassError, match=r"valannot/a_1\.png.*\[12, 200\]"):
        open_camvid(tmp_path, split="val")[0]
    ds = open_camvid(tmp_path, split="val", on_error="skip")
    assert [f.frame_id for f in ds] == ["a_2"] and ds.skipped[0][0] == "a_1"


@pytest.mark.camvid
@pytest.mark.skipif(not REAL.is_dir(), reason="../shared/data/camvid is absent")
@pytest.mark.parametrize("split, count, first", [
    ("train", 367, "0001TP_006690"), ("val", 101, "0016E5_07959"), ("test", 233, "0001TP_008550")])
def test_real_camvid(split, count, first):
    ds = open_camvid(REAL, split=split)
    ids = [ds.frame_id(i) for i in range(len(ds))]
    stems = [p.stem for p in (REAL / split).iterdir()]
    reference = sorted(stems, key=lambda s: (s.split("_")[0], int(re.sub(r"\D", "", s.split("_")[1]))))
    assert len(ds) == count and ids[0] == first and ids == reference
    for i in (0, len(ds) // 2, len(ds) - 1):
        frame = ds[i]
        assert frame.image.shape == (360, 480, 3) and frame.image.dtype == np.uint8
        assert frame.label.shape == (360, 480)
        assert 0 <= frame.label.min() and frame.label.max() <= 11
        assert ds.sequence(i) == frame.frame_id.split("_")[0]
