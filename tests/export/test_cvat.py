"""CVAT export: rank-named images, manifest order, Segmentation mask 1.1 masks decode exactly."""

import io
import json
import os
import zipfile

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saseg.data.classes import ClassInfo
from saseg.layout import frame_stem
from saseg.errors import DataError
from saseg.export import export_cvat

CLASSES = ClassInfo(names=("Road", "Lane", "Car"),
                    colours=((128, 64, 128), (255, 255, 0), (64, 0, 128)), ignore_index=255)
SIZES = {"d003/00012": (7, 9), "d003/00001": (5, 13), "still": (6, 4), "d004/00002": (3, 3)}
# Pascal VOC palette, first entries as published with the VOC devkit.
VOC = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0), (0, 0, 128)]


def _setup(tmp_path, ranks=(3, 1, 2, 4)):
    rng = np.random.default_rng(0)
    still = tmp_path / "src" / "still.png"
    still.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)).save(still)
    queue = pd.DataFrame({
        "rank": list(ranks), "frame_id": ["still", "d003/00012", "d003/00001", "d004/00002"],
        "frame_index": [0, 12, 1, 2], "source": [str(still)] + ["video:x.mp4"] * 3,
        "score": [5.0, 9.5, 7.25, 1.0], "action": ["label", "label", "label", "skip"],
    })
    preds = {}
    for fid, (h, w) in SIZES.items():
        p = rng.integers(0, 3, (h, w))
        if fid == "d003/00001":
            p[p == 1] = 2  # class 1 absent
        p[0, 0] = 255
        preds[fid] = p
    calls = []

    def image_for(fid):
        calls.append(fid)
        return np.full(SIZES[fid] + (3,), 9, np.uint8)

    return queue, preds, image_for, calls


def _export(tmp_path, ranks=(3, 1, 2, 4), **kw):
    queue, preds, image_for, calls = _setup(tmp_path, ranks)
    out = export_cvat(queue, out_dir=tmp_path / "cvat", classes=CLASSES,
                      prediction_for=preds.__getitem__, image_for=image_for, **kw)
    return out, preds, calls


def _png(archive, name):
    return np.asarray(Image.open(io.BytesIO(archive.read(name))).convert("RGB"))


def test_queue_order_in_names_manifest_and_imagesets(tmp_path):
    out, _, _ = _export(tmp_path)
    expected = [f"000001_{frame_stem('d003/00012')}", f"000002_{frame_stem('d003/00001')}", f"000003_{frame_stem('still')}"]
    lines = [json.loads(l) for l in (out / "images/manifest.jsonl").read_text().splitlines()]
    assert lines[:2] == [{"version": "1.1"}, {"type": "images"}]
    assert [l["name"] for l in lines[2:]] == expected
    assert [(l["extension"], l["height"], l["width"]) for l in lines[2:]] == [
        (".png", 7, 9), (".png", 5, 13), (".png", 6, 4)]
    assert sorted(p.name for p in (out / "images").glob("*.png")) == [e + ".png" for e in expected]
    with zipfile.ZipFile(out / "annotations.zip") as archive:
        assert archive.read("ImageSets/Segmentation/default.txt").decode().split() == expected


def test_class_masks_decode_to_prediction(tmp_path):
    out, preds, _ = _export(tmp_path)
    with zipfile.ZipFile(out / "annotations.zip") as archive:
        lines = archive.read("labelmap.txt").decode().splitlines()
        assert lines[0].startswith("#") and lines[1] == "background:0,0,0::"
        colour_to_id = {}
        for line in lines[2:]:
            name, rgb, parts, actions = line.split(":")
            colour_to_id[tuple(int(v) for v in rgb.split(","))] = CLASSES.names.index(name)
        assert len(colour_to_id) == 3
        for name in archive.read("ImageSets/Segmentation/default.txt").decode().split():
            fid = {f"000001_{frame_stem('d003/00012')}": "d003/00012", f"000002_{frame_stem('d003/00001')}": "d003/00001",
                   f"000003_{frame_stem('still')}": "still"}[name]
            rgb = _png(archive, f"SegmentationClass/{name}.png")
            decoded = np.full(rgb.shape[:2], 255)
            for colour, cid in colour_to_id.items():
                decoded[(rgb == colour).all(axis=2)] = cid
            np.testing.assert_array_equal(decoded, preds[fid])

            objects = _png(archive, f"SegmentationObject/{name}.png")
            present = [c for c in range(3) if (preds[fid] == c).any()]
            for k, cid in enumerate(present, start=1):  # one object per class, VOC colours
                np.testing.assert_array_equal((objects == VOC[k]).all(axis=2), preds[fid] == cid)
            assert (objects[preds[fid] == 255] == 0).all()


def test_images_linked_or_copied_and_generated_once(tmp_path):
    out, _, calls = _export(tmp_path)
    src, linked = tmp_path / "src/still.png", out / f"images/000003_{frame_stem('still')}.png"
    assert os.path.samefile(src, linked)
    assert sorted(calls) == ["d003/00001", "d003/00012"]
    generated = out / f"images/000001_{frame_stem('d003/00012')}.png"
    stamp = generated.stat().st_mtime_ns
    out, _, calls = _export(tmp_path, copy=True)
    assert calls == [] and generated.stat().st_mtime_ns == stamp
    assert not os.path.samefile(src, linked) and src.read_bytes() == linked.read_bytes()


def test_reexport_with_new_order_replaces_stale_images(tmp_path):
    _export(tmp_path)
    out, _, _ = _export(tmp_path, ranks=(1, 2, 3, 4))
    names = sorted(p.name for p in (out / "images").glob("*.png"))
    assert names == [f"000001_{frame_stem('still')}.png", f"000002_{frame_stem('d003/00012')}.png", f"000003_{frame_stem('d003/00001')}.png"]


def test_labels_json(tmp_path):
    out, _, _ = _export(tmp_path)
    labels = json.loads((out / "cvat_labels.json").read_text())
    assert [(l["name"], l["color"], l["type"]) for l in labels] == [
        ("Road", "#804080", "mask"), ("Lane", "#ffff00", "mask"), ("Car", "#400080", "mask")]


@pytest.mark.parametrize("classes, message", [
    (ClassInfo(names=("a", "b"), colours=((0, 0, 0), (1, 1, 1))), "'a' has colour"),
    (ClassInfo(names=("a", "b"), colours=((5, 5, 5), (5, 5, 5))), "like 'a'"),
    (ClassInfo(names=("a:b", "c"), colours=((1, 1, 1), (2, 2, 2))), "without ':'"),
])
def test_class_list_cvat_cannot_hold(tmp_path, classes, message):
    queue, preds, image_for, _ = _setup(tmp_path)
    with pytest.raises(DataError, match=message):
        export_cvat(queue, out_dir=tmp_path / "c", classes=classes,
                    prediction_for=preds.__getitem__, image_for=image_for)
    assert not (tmp_path / "c" / "annotations.zip").exists()


def test_the_same_export_gives_the_same_archive_bytes(tmp_path):
    import time

    first = (_export(tmp_path)[0] / "annotations.zip").read_bytes()
    time.sleep(2.1)  # zip stores times at 2 s resolution
    assert (_export(tmp_path, copy=True)[0] / "annotations.zip").read_bytes() == first
