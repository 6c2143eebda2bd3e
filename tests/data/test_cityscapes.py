import numpy as np
import pytest
from PIL import Image

from saseg.data.cityscapes import CITYSCAPES, open_cityscapes
from saseg.errors import DataError

# The official Cityscapes table (labels.py): label id -> train id, name, colour.
OFFICIAL = {
    7: (0, "road", (128, 64, 128)), 8: (1, "sidewalk", (244, 35, 232)),
    11: (2, "building", (70, 70, 70)), 12: (3, "wall", (102, 102, 156)),
    13: (4, "fence", (190, 153, 153)), 17: (5, "pole", (153, 153, 153)),
    19: (6, "traffic light", (250, 170, 30)), 20: (7, "traffic sign", (220, 220, 0)),
    21: (8, "vegetation", (107, 142, 35)), 22: (9, "terrain", (152, 251, 152)),
    23: (10, "sky", (70, 130, 180)), 24: (11, "person", (220, 20, 60)),
    25: (12, "rider", (255, 0, 0)), 26: (13, "car", (0, 0, 142)), 27: (14, "truck", (0, 0, 70)),
    28: (15, "bus", (0, 60, 100)), 31: (16, "train", (0, 80, 100)),
    32: (17, "motorcycle", (0, 0, 230)), 33: (18, "bicycle", (119, 11, 32)),
}
STEMS = [("frankfurt", "frankfurt_000001_000010"), ("aachen", "aachen_000000_000019"),
         ("aachen", "aachen_000000_000002")]


@pytest.fixture
def cityscapes(tmp_path):
    rng = np.random.default_rng(0)
    written = {}
    for city, stem in STEMS:
        image = rng.integers(0, 256, (5, 8, 3), dtype=np.uint8)
        ids = rng.permutation(np.r_[np.arange(34), [255, 0, 7, 26, 40, 100]]).astype(np.uint8)
        label = ids.reshape(5, 8)
        for kind, name, array in (("leftImg8bit", "leftImg8bit", image),
                                  ("gtFine", "gtFine_labelIds", label)):
            folder = tmp_path / kind / "val" / city
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(folder / f"{stem}_{name}.png")
        written[f"{city}/{stem}"] = image, label
    (tmp_path / "leftImg8bit" / "test" / "aachen").mkdir(parents=True)
    Image.fromarray(image).save(tmp_path / "leftImg8bit" / "test" / "aachen" / "aachen_000000_000001_leftImg8bit.png")
    return tmp_path, written


def test_labels_map_to_train_ids(cityscapes):
    root, written = cityscapes
    ds = open_cityscapes(root, split="val")
    assert [ds.frame_id(i) for i in range(len(ds))] == [
        "aachen/aachen_000000_000002", "aachen/aachen_000000_000019",
        "frankfurt/frankfurt_000001_000010"]
    assert ds.sequence(0) == "aachen_000000"
    for frame in ds:
        image, raw = written[frame.frame_id]
        np.testing.assert_array_equal(frame.image, image)
        expected = np.array([[OFFICIAL.get(v, (255,))[0] for v in row] for row in raw.tolist()])
        assert frame.label.dtype == np.int64
        np.testing.assert_array_equal(frame.label, expected)
    assert ds.spec == f"cityscapes:{root}:val"


def test_class_metadata_is_official():
    table = sorted(OFFICIAL.values())
    assert CITYSCAPES.names == tuple(name for _, name, _ in table)
    assert CITYSCAPES.colours == tuple(colour for _, _, colour in table)
    assert CITYSCAPES.ignore_index == 255


def test_split_without_gtfine_is_unlabelled(cityscapes):
    root, _ = cityscapes
    ds = open_cityscapes(root, split="test")
    assert not ds.has_labels and ds[0].label is None and len(ds) == 1


def test_bad_split_and_folders(cityscapes, tmp_path):
    root, _ = cityscapes
    with pytest.raises(DataError, match=r"\['test', 'val'\]"):
        open_cityscapes(root)
    with pytest.raises(DataError, match="train.*does not exist"):
        open_cityscapes(root, split="train")
    with pytest.raises(DataError, match="leftImg8bit"):
        open_cityscapes(root / "gtFine", split="val")
    (root / "leftImg8bit" / "empty").mkdir()
    with pytest.raises(DataError, match="empty.*found none"):
        open_cityscapes(root, split="empty")


def test_missing_label(cityscapes):
    root, _ = cityscapes
    (root / "gtFine/val/aachen/aachen_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError, match="aachen_000000_000019"):
        open_cityscapes(root, split="val")
    ds = open_cityscapes(root, split="val", on_error="skip")
    assert len(ds) == 2 and ds.skipped[0][0] == "aachen/aachen_000000_000019"
