"""The CVAT export read by datumaro, the dataset framework CVAT imports "Segmentation mask 1.1"
with, from .venv-tools/datumaro (PyPI datumaro 1.13 names the format ``voc_segmentation``).

Each item's masks must be exactly ``prediction == class`` (none for absent classes, none for
ignored pixels), in queue order; the manifest must follow CVAT's manifest 1.1 rules.
"""

import json
import re
import shutil
import zipfile

import numpy as np
from PIL import Image

from saseg.data import open_dataset
from saseg.export import export_cvat
from saseg.export import check_export
from saseg.export.labels_import import import_labels, label_spec

READ_WITH_DATUMARO = """
import json, sys
import numpy as np
from datumaro.components.annotation import AnnotationType
from datumaro.components.dataset import Dataset
dataset = Dataset.import_from(sys.argv[1], "voc_segmentation")
labels = [c.name for c in dataset.categories()[AnnotationType.label].items]
items, masks = [], {}
for item in dataset:
    regions = []
    for annotation in item.annotations:
        if annotation.type == AnnotationType.mask:
            masks[f"{len(items)}_{len(regions)}"] = annotation.image.astype(bool)
            regions.append(labels[annotation.label])
    items.append({"id": item.id, "labels": regions})
np.savez(sys.argv[2], **masks)
print(json.dumps({"labels": labels, "items": items}))
"""


def test_annotations_import_with_datumaro_as_masks(datumaro_python, tool_runner, tool_queue, tmp_path):
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    unzipped = tmp_path / "annotations"
    with zipfile.ZipFile(q.out / "annotations.zip") as archive:
        archive.extractall(unzipped)
    read = tool_runner(datumaro_python, READ_WITH_DATUMARO, unzipped, tmp_path / "masks.npz")
    masks = np.load(tmp_path / "masks.npz")

    assert read["labels"] == ["background", *q.classes.names]
    frame_of = json.loads((q.out / "cvat_frames.json").read_text())
    assert [frame_of[item["id"]] for item in read["items"]] == q.order
    checked = 0
    for i, item in enumerate(read["items"]):
        pred = q.preds[frame_of[item["id"]]]
        present = [q.classes.names[c] for c in np.unique(pred) if c < q.classes.num_classes]
        assert sorted(item["labels"]) == sorted(present)  # one mask per predicted class
        for j, label in enumerate(item["labels"]):
            np.testing.assert_array_equal(masks[f"{i}_{j}"], pred == q.classes.names.index(label))
            checked += 1
    assert checked >= 3 * len(q.order)
    assert "Pole" not in read["items"][q.order.index("drive_a_000003")]["labels"]


def test_manifest_follows_cvats_rules(tool_queue):
    """CVAT's manifest 1.1 for images: version line, type line, then per image a ``name``
    without extension, an ``extension`` with its dot, integer ``width`` / ``height`` of the
    file itself; uploaded with the images, in the order frames get in the task."""
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    lines = [json.loads(line) for line in (q.out / "images" / "manifest.jsonl").read_text().splitlines()]
    assert lines[:2] == [{"version": "1.1"}, {"type": "images"}]
    files = sorted(p.name for p in (q.out / "images").iterdir() if p.suffix == ".png")
    assert sorted(e["name"] + e["extension"] for e in lines[2:]) == files  # no file left out
    for entry in lines[2:]:
        assert {"name", "extension", "width", "height"} <= set(entry)
        assert re.fullmatch(r"\.[a-z]+", entry["extension"]) and "." not in entry["name"]
        assert isinstance(entry["width"], int) and isinstance(entry["height"], int)
        with Image.open(q.out / "images" / (entry["name"] + entry["extension"])) as image:
            assert (image.width, image.height) == (entry["width"], entry["height"])
    frame_of = json.loads((q.out / "cvat_frames.json").read_text())
    assert [frame_of[e["name"]] for e in lines[2:]] == q.order
    assert [e["name"] for e in lines[2:]] == sorted(e["name"] for e in lines[2:])  # lexicographic too
    check = check_export(q.out, "cvat", prediction_for=q.prediction_for, expected_order=q.order)
    assert check.ok, check.describe()


WRITE_WITH_DATUMARO = """
import json, sys
import numpy as np
from datumaro.components.annotation import Mask
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
spec = json.load(open(sys.argv[1]))
labels = np.load(sys.argv[2])
items = []
for name in spec["names"]:
    annotations = []
    if name in labels.files:
        for class_id, label in enumerate(spec["labels"][1:], start=1):
            painted = labels[name] == class_id - 1
            if painted.any():
                annotations.append(Mask(image=painted, label=class_id))
    items.append(DatasetItem(id=name, annotations=annotations))
dataset = Dataset.from_iterable(items, categories=spec["labels"])
dataset.export(sys.argv[3], "voc_segmentation", label_map=sys.argv[4], save_media=False)
print(json.dumps({"items": len(items)}))
"""


def test_labels_back_from_a_segmentation_mask_export(datumaro_python, tool_runner, tool_queue, tmp_path):
    """CVAT's "Segmentation mask 1.1" export, as datumaro (CVAT's exporter) writes it, back into
    saseg: masks equal to the prediction, edited ones, one frame never labelled; the export
    folder moved before the import."""
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    with zipfile.ZipFile(q.out / "annotations.zip") as archive:
        (tmp_path / "labelmap.txt").write_bytes(archive.read("labelmap.txt"))
    names = {v: k for k, v in json.loads((q.out / "cvat_frames.json").read_text()).items()}
    submitted = {}
    for i, frame_id in enumerate(q.order[:4]):
        label = q.preds[frame_id].copy()
        if i % 2:  # edited: a car painted over the road, the pole erased
            label[-6:, 2:12] = 1
            label[label == 2] = 0
        submitted[frame_id] = label
    np.savez(tmp_path / "labels.npz", **{names[f]: v for f, v in submitted.items()})
    (tmp_path / "spec.json").write_text(json.dumps({
        "names": [names[f] for f in q.order], "labels": ["background", *q.classes.names]}))
    tool_runner(datumaro_python, WRITE_WITH_DATUMARO, tmp_path / "spec.json",
                tmp_path / "labels.npz", tmp_path / "cvat_export", tmp_path / "labelmap.txt")
    zipped = shutil.make_archive(str(tmp_path / "task_export"), "zip", tmp_path / "cvat_export")

    moved = tmp_path / "moved" / "export"
    shutil.move(str(q.out), moved)
    report = import_labels("cvat", moved, zipped, tmp_path / "labels")
    assert report.ok and sorted(report.imported) == sorted(submitted)
    assert report.unlabelled == [q.order[4]]
    frames = {f.frame_id: f for f in open_dataset(label_spec(tmp_path / "labels"))}
    assert sorted(frames) == sorted(submitted)
    for frame_id, label in submitted.items():
        np.testing.assert_array_equal(frames[frame_id].label, label)  # ignored pixels stay 255
        np.testing.assert_array_equal(frames[frame_id].image, q.images[frame_id])
