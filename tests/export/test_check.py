"""`check_export` passes sound exports and names what a tampered one got wrong."""

import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from saseg.export import export_queue
from saseg.export import check_export


def _export(q, to, **kw):
    export_queue(q.queue, to=to, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                 image_for=q.image_for, **kw)
    return q.out


@pytest.mark.parametrize("to", ["labelstudio", "cvat", "fiftyone"])
def test_sound_exports_pass(tool_queue, to):
    out = _export(tool_queue, to)
    check = check_export(out, to, prediction_for=tool_queue.prediction_for,
                         expected_order=tool_queue.order)
    assert check.ok, check.describe()
    assert (check.frames, check.masks_verified) == (5, 5)
    assert check.describe() == f"{to}: 5 frames, 5/5 masks verified, order verified"


@pytest.mark.parametrize("to", ["labelstudio", "cvat", "fiftyone"])
def test_a_changed_prediction_is_caught(tool_queue, to):
    out = _export(tool_queue, to)
    changed = {k: v.copy() for k, v in tool_queue.preds.items()}
    changed[tool_queue.order[1]][5, 5] = (changed[tool_queue.order[1]][5, 5] + 1) % 4
    check = check_export(out, to, prediction_for=changed.__getitem__,
                         expected_order=tool_queue.order)
    assert not check.ok and check.masks_verified == 4
    assert check.problems == [f"frame {tool_queue.order[1]!r}: 1 pixels differ from the prediction"]


@pytest.mark.parametrize("to", ["labelstudio", "cvat", "fiftyone"])
def test_another_order_is_caught(tool_queue, to):
    out = _export(tool_queue, to)
    check = check_export(out, to, expected_order=tool_queue.order[::-1])
    assert not check.order_verified and "queue order" in check.problems[0]


def test_labelstudio_image_outside_the_storage(tool_queue):
    out = _export(tool_queue, "labelstudio")
    tasks = json.loads((out / "tasks.json").read_text())
    tasks[0]["data"]["image"] = "/data/local-files/?d=../../etc/passwd"
    (out / "tasks.json").write_text(json.dumps(tasks))
    check = check_export(out, "labelstudio")
    assert any("outside the storage" in p for p in check.problems)


def test_labelstudio_overlapping_regions(tool_queue):
    out = _export(tool_queue, "labelstudio")
    tasks = json.loads((out / "tasks.json").read_text())
    regions = tasks[0]["predictions"][0]["result"]
    regions.append({**regions[0], "value": {**regions[1]["value"],
                                            "brushlabels": regions[0]["value"]["brushlabels"]}})
    (out / "tasks.json").write_text(json.dumps(tasks))
    check = check_export(out, "labelstudio", prediction_for=tool_queue.prediction_for)
    assert any("overlap" in p for p in check.problems)


@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_cvat_manifest_size_and_colour(tool_queue):
    out = _export(tool_queue, "cvat")
    manifest = out / "images" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    entry = json.loads(lines[2])
    entry["width"] += 1
    manifest.write_text("\n".join([*lines[:2], json.dumps(entry), *lines[3:]]) + "\n")
    with zipfile.ZipFile(out / "annotations.zip", "a") as archive:
        name = f"SegmentationClass/{entry['name']}.png"
        path = out / "bad.png"
        Image.fromarray(np.full((36, 48, 3), 7, np.uint8)).save(path)
        archive.write(path, name)  # a second entry of that name: the last one is read
    check = check_export(out, "cvat", prediction_for=tool_queue.prediction_for)
    assert any("manifest says 49x36" in p for p in check.problems)
    assert any("not in labelmap.txt" in p for p in check.problems)


def test_fiftyone_flat_mask_targets_are_refused(tool_queue):
    out = _export(tool_queue, "fiftyone")
    meta = json.loads((out / "metadata.json").read_text())
    meta["info"]["default_mask_targets"] = {"prediction": meta["info"]["default_mask_targets"]}
    (out / "metadata.json").write_text(json.dumps(meta))
    assert any("default_mask_targets" in p for p in check_export(out, "fiftyone").problems)


def test_unreadable_export_is_one_problem(tmp_path):
    check = check_export(tmp_path, "labelstudio")
    assert not check.ok and len(check.problems) == 1 and "cannot read" in check.problems[0]
