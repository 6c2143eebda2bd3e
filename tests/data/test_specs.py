
import numpy as np
import pytest
from PIL import Image

from saseg.data import open_dataset
from saseg.data.base import InMemoryDataset
from saseg.data.classes import from_names
from saseg.data import specs
from saseg.data.specs import format_spec, parse_spec, split_body
from saseg.errors import DataError


@pytest.fixture
def camvid(tmp_path):
    for split in ("train", "val"):
        for stem in ("s_1", "s_2"):
            for folder in (split, f"{split}annot"):
                (tmp_path / folder).mkdir(exist_ok=True)
                Image.fromarray(np.zeros((3, 4), np.uint8)).save(tmp_path / folder / f"{stem}.png")
    return tmp_path


def test_parse_spec():
    assert parse_spec("camvid:/d/camvid:test") == ("camvid", "/d/camvid:test", {})
    assert parse_spec("Video:drive.mp4?stride=5&fps=") == ("video", "drive.mp4", {"stride": "5", "fps": ""})
    assert split_body(r"C:\data\imgs:D:/labels") == [r"C:\data\imgs", "D:/labels"]
    assert split_body("a:b:c") == ["a", "b", "c"]
    assert format_spec("folder", ["/i", None], {"b": 2, "a": "x", "c": None}) == "folder:/i?a=x&b=2"


@pytest.mark.parametrize("spec, message", [
    ("/data/camvid", "camvid:PATH"), ("kitti:/data", "cityscapes:PATH"),
    ("video:a.mp4?stride", "key=value"), ("camvid:a:b:c", "camvid:PATH"),
    ("camvid::test", "camvid:PATH")])
def test_bad_specs(spec, message):
    with pytest.raises(DataError, match=message):
        open_dataset(spec)


def test_unknown_and_bad_options(tmp_path):
    with pytest.raises(DataError, match=r"stride.*'speed'"):
        open_dataset("video:x.mp4?speed=2")
    with pytest.raises(DataError, match=r"\[none\].*'stride'"):
        open_dataset("camvid:x:train", stride=2)
    with pytest.raises(DataError, match="positive int.*'-1'"):
        open_dataset("video:x.mp4?stride=-1")
    with pytest.raises(DataError, match="label_format.*'index' or 'colour'"):
        open_dataset(f"folder:{tmp_path}?label_format=rgb")
    with pytest.raises(DataError, match="no split"):
        open_dataset(f"folder:{tmp_path}", split="train")


def test_split_from_spec_wins_and_spec_reopens(camvid):
    ds = open_dataset(f"camvid:{camvid}:val", split="train")
    assert ds.spec == f"camvid:{camvid}:val"
    ds = open_dataset(f"camvid:{camvid}", split="train")
    assert ds.spec == f"camvid:{camvid}:train"
    again = open_dataset(ds.spec)
    assert [again.frame_id(i) for i in range(len(again))] == ["s_1", "s_2"]
    with pytest.raises(DataError, match=r"\['train', 'val'\]"):
        open_dataset(f"camvid:{camvid}")


def test_folder_options_from_spec_or_keywords(camvid):
    spec = f"folder:{camvid}/train:{camvid}/trainannot?ignore_index=none&names=a,b"
    a = open_dataset(f"folder:{camvid}/train:{camvid}/trainannot?names=a,b&ignore_index=none")
    # keyword None means "not given" (CLI defaults), so "none" spells a missing ignore index
    b = open_dataset(f"folder:{camvid}/train:{camvid}/trainannot", names="a,b",
                     ignore_index="none", image_suffix=None)
    assert a.spec == b.spec == spec and a.classes == b.classes
    assert a.classes.ignore_index is None and open_dataset(a.spec).classes == a.classes


def test_synthetic_dispatch(monkeypatch):
    calls = []

    def open_synthetic(options, *, split=None, on_error="raise"):
        calls.append((options, split, on_error))
        return InMemoryDataset([], from_names(["x"]), spec="")

    monkeypatch.setattr(specs, "open_synthetic", open_synthetic)
    ds = open_dataset("synthetic:n=5,seed=1:test?size=8", on_error="skip", seed=3)
    assert calls[-1] == ({"n": "5", "seed": "1", "size": "8"}, "test", "skip")
    ds = open_dataset("synthetic:seed=1,n=5:test", size=8)
    assert calls[-1] == ({"size": "8", "seed": "1", "n": "5"}, "test", "raise")
    assert ds.spec == ""  # the generator's own canonical spec is kept as it is
