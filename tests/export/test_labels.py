"""`saseg labels import`: Label Studio (JSON, PNG) and CVAT exports back to a label folder.

The tool exports are written here the way each tool writes them (Label Studio's task JSON and
``task-<id>-annotation-<id>-by-<user>-tag-<label>-<n>.png`` names; CVAT's Segmentation mask
1.1 zip); tests/export/test_tool_*.py do the same against the real tools.
"""

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from saseg.data import open_dataset
from saseg.errors import DataError, FormatError
from saseg.export import export_cvat, export_labelstudio
from saseg.export.cvat import cvat_labelmap, segmentation_pngs
from saseg.export.labels_import import import_labels, label_spec
from saseg.export.labelstudio import brush_results


def _labels(q):
    """What the labellers submit: the prediction with a car moved (an edit)."""
    out = {}
    for i, frame_id in enumerate(q.order):
        label = q.preds[frame_id].copy()
        label[-5:, :6] = 1 if i % 2 else 0
        out[frame_id] = label
    return out


def _ls_export(q, labels, *, skip=(), extra=None):
    """Label Studio's JSON export of the project: task ids 101.., one annotation per task."""
    sent = json.loads((q.out / "tasks.json").read_text())
    tasks = []
    for n, task in enumerate(sent):
        frame_id = task["data"]["frame_id"]
        annotations = []
        if frame_id in labels:
            annotations.append({"id": 500 + n, "was_cancelled": frame_id in skip,
                                "result": [] if frame_id in skip else
                                brush_results(labels[frame_id], q.classes),
                                "created_at": f"2026-12-0{1 + n % 9}T10:00:00Z"})
        tasks.append({"id": 101 + n, "data": task["data"], "annotations": annotations,
                      "predictions": []})
    for key, value in (extra or {}).items():
        tasks[key].update(value)
    return tasks


@pytest.fixture
def ls(tool_queue, tmp_path):
    q = tool_queue
    export_labelstudio(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                       image_for=q.image_for)
    q.labels = _labels(q)
    q.source = tmp_path / "project.json"
    q.write = lambda tasks: q.source.write_text(json.dumps(tasks))
    return q


def _read_back(out):
    dataset = open_dataset(label_spec(out))
    return {frame.frame_id: frame for frame in dataset}


def test_json_labels_come_back_under_their_frame_ids(ls, tmp_path):
    labelled = {f: ls.labels[f] for f in ls.order[:3]}
    ls.write(_ls_export(ls, {**labelled, ls.order[3]: ls.labels[ls.order[3]]}, skip=[ls.order[3]]))
    report = import_labels("labelstudio", ls.out, ls.source, tmp_path / "labels")
    assert report.ok and sorted(report.imported) == sorted(labelled)
    assert sorted(report.unlabelled) == sorted(ls.order[3:])  # skipped, and never annotated
    assert "3 labelled frames imported, 2 unlabelled" in report.describe()
    frames = _read_back(tmp_path / "labels")
    assert sorted(frames) == sorted(labelled)
    for frame_id, label in labelled.items():
        np.testing.assert_array_equal(frames[frame_id].label, label)  # 255 where unpainted
        np.testing.assert_array_equal(frames[frame_id].image, ls.images[frame_id])
    record = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert record["frames"][ls.order[0]]["task"] == "task 101"


def test_importing_twice_is_idempotent_and_a_bad_task_loses_nothing(ls, tmp_path):
    ls.write(_ls_export(ls, ls.labels))
    out = tmp_path / "labels"
    import_labels("labelstudio", ls.out, ls.source, out)
    files = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    import_labels("labelstudio", ls.out, ls.source, out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
    # A later export where one task went bad: it is refused, the frame keeps its labels.
    tasks = _ls_export(ls, ls.labels)
    tasks[0]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["Tree"]
    ls.write(tasks)
    report = import_labels("labelstudio", ls.out, ls.source, out)
    assert len(report.refused) == 1 and "'Tree' is not a class" in report.refused[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files


@pytest.mark.parametrize("case, match", [
    ("unknown class", "label 'Tree' is not a class"),
    ("wrong size", "mask is 24x18, the image 48x36"),
    ("not in plan", "is not in the export"),
    ("two annotations", "2 annotations for one task"),
    ("no regions", "has no brush regions"),
    ("no frame id", "no data.frame_id"),
    ("data not an object", "no data.frame_id"),
    ("annotations not a list", "not the layout of Label Studio's JSON export"),
    ("result not regions", "not the layout of Label Studio's JSON export"),
    ("no image height", "not the layout of Label Studio's JSON export (KeyError"),
    ("height not a number", "not the layout of Label Studio's JSON export (ValueError"),
    ("huge image", "regions of an image of 1000000x1000000 pixels"),
    ("negative height", "regions of an image of 48x-5 pixels"),
    ("annotation id not a number", "not the layout of Label Studio's JSON export (ValueError"),
])
def test_each_bad_task_gets_one_line_and_the_rest_come_back(ls, tmp_path, case, match):
    tasks = _ls_export(ls, ls.labels)
    bad = tasks[1]
    if case == "unknown class":
        bad["annotations"][0]["result"][-1]["value"]["brushlabels"] = ["Tree"]
    elif case == "wrong size":
        bad["annotations"][0]["result"] = brush_results(ls.labels[ls.order[1]][::2, ::2], ls.classes)
    elif case == "not in plan":
        bad["data"] = {**bad["data"], "frame_id": "skipped/000001"}  # a frame the queue skipped
    elif case == "two annotations":
        bad["annotations"].append({**bad["annotations"][0], "id": 999})
    elif case == "no regions":
        bad["annotations"][0]["result"] = []
    elif case == "no frame id":
        del bad["data"]["frame_id"]
    elif case == "data not an object":
        bad["data"] = "x"
    elif case == "annotations not a list":
        bad["annotations"] = ["x"]
    elif case == "result not regions":
        bad["annotations"][0]["result"] = "x"
    elif case == "no image height":
        del bad["annotations"][0]["result"][0]["original_height"]
    elif case == "height not a number":
        bad["annotations"][0]["result"][0]["original_height"] = "abc"
    elif case in ("huge image", "negative height"):
        for region in bad["annotations"][0]["result"]:
            if case == "huge image":
                region["original_height"] = region["original_width"] = 10**6
            else:
                region["original_height"] = -5
    elif case == "annotation id not a number":
        bad["annotations"].append({**bad["annotations"][0], "id": "abc"})
    ls.write(tasks)
    if case == "annotation id not a number":
        report = import_labels("labelstudio", ls.out, ls.source, tmp_path / "labels", pick="latest")
        assert len(report.refused) == 1 and match in report.refused[0], report.refused
        return
    report = import_labels("labelstudio", ls.out, ls.source, tmp_path / "labels")
    assert len(report.refused) == 1 and match in report.refused[0], report.refused
    assert report.refused[0].startswith("task 102")
    assert len(report.imported) == len(ls.order) - 1 and ls.order[1] not in report.imported


def test_two_annotations_latest_takes_the_newest(ls, tmp_path):
    tasks = _ls_export(ls, ls.labels)
    newer = ls.labels[ls.order[0]].copy()
    newer[:4, :4] = 2
    tasks[0]["annotations"].insert(0, {"id": 900, "was_cancelled": False,
                                       "result": brush_results(newer, ls.classes)})
    ls.write(tasks)
    report = import_labels("labelstudio", ls.out, ls.source, tmp_path / "l", pick="latest")
    assert report.ok
    np.testing.assert_array_equal(_read_back(tmp_path / "l")[ls.order[0]].label, newer)


def test_overlapping_regions_the_later_one_wins(ls, tmp_path):
    tasks = _ls_export(ls, ls.labels)
    label = ls.labels[ls.order[0]]
    car = np.zeros_like(label, dtype=bool)
    car[2:8, 2:8] = True
    results = brush_results(label, ls.classes) + [{**brush_results(np.where(car, 1, 255), ls.classes)[0],
                                                   "id": "late"}]
    tasks[0]["annotations"][0]["result"] = results
    ls.write(tasks)
    import_labels("labelstudio", ls.out, ls.source, tmp_path / "l")
    np.testing.assert_array_equal(_read_back(tmp_path / "l")[ls.order[0]].label,
                                  np.where(car, 1, label))


def _png_export(ls, path, *, labels=None, task_ids=None):
    """Label Studio's Brush-labels-to-PNG zip: one 0/255 file per region."""
    labels = labels or ls.labels
    with zipfile.ZipFile(path, "w") as archive:
        for n, frame_id in enumerate(ls.order):
            if frame_id not in labels:
                continue
            for class_id in np.unique(labels[frame_id]):
                if class_id >= ls.classes.num_classes:
                    continue
                buffer = io.BytesIO()
                Image.fromarray(((labels[frame_id] == class_id) * 255).astype(np.uint8)).save(buffer, "PNG")
                task = (task_ids or {}).get(frame_id, 101 + n)
                archive.writestr(f"task-{task}-annotation-{500 + n}-by-saseg@example.com-tag-"
                                 f"{ls.classes.names[class_id]}-0.png", buffer.getvalue())


def test_png_export_maps_task_ids_through_the_import_record(ls, tmp_path):
    labelled = {f: ls.labels[f] for f in ls.order[:4]}
    _png_export(ls, tmp_path / "png.zip", labels=labelled)
    with pytest.raises(DataError, match="labelstudio_tasks.json"):
        import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l")
    ids = {str(101 + n): f for n, f in enumerate(ls.order)}
    (ls.out / "labelstudio_tasks.json").write_text(json.dumps({"project": 1, "tasks": ids}))
    report = import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l")
    assert report.ok and sorted(report.imported) == sorted(labelled)
    assert report.unlabelled == [ls.order[4]]
    frames = _read_back(tmp_path / "l")
    for frame_id, label in labelled.items():
        np.testing.assert_array_equal(frames[frame_id].label, label)
    # The same through a JSON export of the project (--tasks) instead of the record.
    (ls.out / "labelstudio_tasks.json").unlink()
    ls.write(_ls_export(ls, {}))
    report = import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l2", tasks=ls.source)
    assert sorted(report.imported) == sorted(labelled)


def test_png_overlap_and_unknown_task_are_refused(ls, tmp_path):
    ids = {str(101 + n): f for n, f in enumerate(ls.order)}
    (ls.out / "labelstudio_tasks.json").write_text(json.dumps({"project": 1, "tasks": ids}))
    _png_export(ls, tmp_path / "png.zip", task_ids={ls.order[2]: 777})
    with zipfile.ZipFile(tmp_path / "png.zip", "a") as archive:
        buffer = io.BytesIO()
        Image.fromarray(np.full(ls.labels[ls.order[0]].shape, 255, np.uint8)).save(buffer, "PNG")
        archive.writestr("task-101-annotation-500-by-saseg@example.com-tag-Sky-1.png", buffer.getvalue())
    report = import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l")
    assert any(r.startswith("task 101:") and "overlap" in r for r in report.refused)
    assert any(r.startswith("task 777:") and "not a task of this export" in r for r in report.refused)
    assert len(report.refused) == 2 and len(report.imported) == 3


def test_moved_export_still_imports(ls, tmp_path):
    moved = tmp_path / "elsewhere" / "export"
    shutil.move(str(ls.out), moved)
    ls.out = moved
    ls.write(_ls_export(ls, ls.labels))
    report = import_labels("labelstudio", moved, ls.source, tmp_path / "l")
    assert report.ok and len(report.imported) == len(ls.order)


def test_cvat_segmentation_mask_export_comes_back(tool_queue, tmp_path):
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    labels = _labels(q)
    names = {v: k for k, v in json.loads((q.out / "cvat_frames.json").read_text()).items()}
    zip_path = tmp_path / "cvat.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
        archive.writestr("labelmap.txt", cvat_labelmap(q.classes).replace("Pole:", "Pole:") +
                         "Tree:1,2,3::\n")
        archive.writestr("ImageSets/Segmentation/default.txt",
                         "".join(names[f] + "\n" for f in q.order) + "999999_stranger\n")
        for n, frame_id in enumerate(q.order[:4]):
            label = labels[frame_id].copy()
            if n == 3:
                label[0, 5] = 4  # painted with 'Tree' (colour 1,2,3)
            rgb = np.asarray(Image.open(io.BytesIO(segmentation_pngs(label, q.classes)[0])))
            if n == 3:
                rgb = rgb.copy()
                rgb[0, 5] = (1, 2, 3)
            buffer = io.BytesIO()
            Image.fromarray(rgb).save(buffer, "PNG")
            archive.writestr(f"SegmentationClass/{names[frame_id]}.png", buffer.getvalue())
    report = import_labels("cvat", q.out, zip_path, tmp_path / "l")
    assert sorted(report.imported) == sorted(q.order[:3])
    assert report.unlabelled == [q.order[4]]
    assert len(report.refused) == 2
    assert "label 'Tree' is not a class" in report.refused[0]
    assert "999999_stranger" in report.refused[1] and "cvat_frames.json" in report.refused[1]
    frames = _read_back(tmp_path / "l")
    for frame_id in q.order[:3]:
        np.testing.assert_array_equal(frames[frame_id].label, labels[frame_id])
        np.testing.assert_array_equal(frames[frame_id].image, q.images[frame_id])


def test_unpainted_pixels_without_an_ignore_index_are_refused(ls, tmp_path):
    from dataclasses import replace
    from saseg.export.queue import write_classes

    write_classes(ls.out, replace(ls.classes, ignore_index=None))
    ls.write(_ls_export(ls, ls.labels))
    report = import_labels("labelstudio", ls.out, ls.source, tmp_path / "l")
    assert len(report.refused) == len(ls.order) and "no ignore index" in report.refused[0]


def test_swapped_folders_and_other_classes_are_refused(ls, tmp_path):
    ls.write(_ls_export(ls, ls.labels))
    with pytest.raises(DataError, match="swap them"):
        import_labels("labelstudio", tmp_path / "nowhere", ls.out, tmp_path / "l")
    out = tmp_path / "l"
    import_labels("labelstudio", ls.out, ls.source, out)
    saved = json.loads((out / "classes.json").read_text())
    (out / "classes.json").write_text(json.dumps({**saved, "names": ["a", "b", "c", "d"]}))
    with pytest.raises(DataError, match="import into another folder"):
        import_labels("labelstudio", ls.out, ls.source, out)


def test_url_prefix_export_maps_images_through_the_document_root(tool_queue, tmp_path):
    q = tool_queue
    export_labelstudio(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                       image_for=q.image_for, url_prefix="http://host:8081/data/")
    labels = _labels(q)
    (tmp_path / "p.json").write_text(json.dumps(_ls_export(q, labels)))
    report = import_labels("labelstudio", q.out, tmp_path / "p.json", tmp_path / "l")
    assert report.ok and len(report.imported) == len(q.order)
    tasks = json.loads((q.out / "tasks.json").read_text())
    tasks[0]["data"]["image"] = "https://elsewhere/x.png"
    (q.out / "tasks.json").write_text(json.dumps(tasks))
    with pytest.raises(DataError, match="image URLs starting with"):
        import_labels("labelstudio", q.out, tmp_path / "p.json", tmp_path / "l")


def _fo_mask(values):
    """A mask as FiftyOne's FiftyOneDataset exporter writes one kept in its database."""
    import base64
    import zlib

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(values), allow_pickle=False)
    return {"$binary": {"base64": base64.b64encode(zlib.compress(buffer.getvalue())).decode(),
                        "subType": "00"}}


@pytest.fixture
def fo(tool_queue, tmp_path):
    from saseg.export import export_fiftyone

    q = tool_queue
    export_fiftyone(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                    image_for=q.image_for)
    q.labels = _labels(q)
    q.source = tmp_path / "fo_export"
    (q.source / "fields").mkdir(parents=True)

    def write(samples, targets={"1": "Road", "2": "Car", "3": "Pole", "4": "Sky"}):
        (q.source / "metadata.json").write_text(json.dumps({"mask_targets": {"ground_truth": targets}}))
        (q.source / "samples.json").write_text(json.dumps({"samples": samples}))

    def sample(frame_id, label):
        value = None if label is None else {"_cls": "Segmentation",
                                            "mask": _fo_mask(np.where(label == 255, 0, label + 1))}
        return {"filepath": f"data/{frame_id}.png", "frame_id": frame_id, "ground_truth": value}

    q.write, q.sample = write, sample
    return q


def test_fiftyone_labels_map_by_target_name(fo, tmp_path):
    samples = [fo.sample(f, fo.labels[f]) for f in fo.order[:3]] + [fo.sample(fo.order[3], None)]
    # One mask as a file (mask_path, relative to the export) instead of in the database.
    Image.fromarray(np.where(fo.labels[fo.order[2]] == 255, 0, fo.labels[fo.order[2]] + 1)
                    .astype(np.uint8)).save(fo.source / "fields" / "m.png")
    samples[2]["ground_truth"] = {"_cls": "Segmentation", "mask_path": "fields/m.png"}
    fo.write(samples)
    report = import_labels("fiftyone", fo.out, fo.source, tmp_path / "l")
    assert report.ok and sorted(report.imported) == sorted(fo.order[:3])
    assert sorted(report.unlabelled) == sorted(fo.order[3:])
    frames = _read_back(tmp_path / "l")
    for frame_id in fo.order[:3]:
        np.testing.assert_array_equal(frames[frame_id].label, fo.labels[frame_id])


@pytest.mark.parametrize("case, match", [
    ("unknown value", "mask values [9] have no mask target"),
    ("rgb mask", "2-D class-value mask"),
    ("no frame id", "no frame_id field"),
    ("not in plan", "is not in the export"),
    ("wrong size", "mask is 24x18"),
])
def test_fiftyone_bad_samples_get_one_line(fo, tmp_path, case, match):
    samples = [fo.sample(f, fo.labels[f]) for f in fo.order]
    label = fo.labels[fo.order[1]]
    if case == "unknown value":
        samples[1]["ground_truth"]["mask"] = _fo_mask(np.where(label == 1, 9, label))
    elif case == "rgb mask":
        samples[1]["ground_truth"]["mask"] = _fo_mask(np.stack([label] * 3, axis=-1))
    elif case == "no frame id":
        del samples[1]["frame_id"]
    elif case == "not in plan":
        samples[1]["frame_id"] = "skipped/000001"
    elif case == "wrong size":
        samples[1]["ground_truth"]["mask"] = _fo_mask(label[::2, ::2])
    fo.write(samples)
    report = import_labels("fiftyone", fo.out, fo.source, tmp_path / "l")
    assert len(report.refused) == 1 and match in report.refused[0], report.refused
    assert len(report.imported) == len(fo.order) - 1


def test_fiftyone_targets_naming_no_class_are_refused(fo, tmp_path):
    fo.write([fo.sample(f, fo.labels[f]) for f in fo.order], targets={"1": "Tree"})
    with pytest.raises(DataError, match="'Tree'"):
        import_labels("fiftyone", fo.out, fo.source, tmp_path / "l")


def test_referenced_images_that_did_not_move_are_found_with_root(tool_queue, tmp_path):
    """Images referenced in place (not copied into the export): the export moves, the images
    stay; the import names the missing image and `root` points it at them."""
    q = tool_queue
    data = tmp_path / "data" / "frames"
    data.mkdir(parents=True)
    sources = []
    for frame_id in q.queue["frame_id"]:
        path = data / f"{len(sources)}.png"
        Image.fromarray(q.images[frame_id]).save(path)
        sources.append(str(path))
    queue = q.queue.assign(source=sources)
    export_labelstudio(queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for)
    moved = tmp_path / "far" / "away" / "export"
    shutil.move(str(q.out), moved)
    q.out = moved
    (tmp_path / "p.json").write_text(json.dumps(_ls_export(q, _labels(q))))
    with pytest.raises(DataError, match="pass --root"):
        import_labels("labelstudio", moved, tmp_path / "p.json", tmp_path / "l")
    report = import_labels("labelstudio", moved, tmp_path / "p.json", tmp_path / "l",
                           root=tmp_path / "data")  # the document root: the storage's parent
    assert report.ok and len(report.imported) == len(q.order)


def test_cli_prints_one_line_per_refused_task_and_exits_1(ls, tmp_path):
    from typer.testing import CliRunner

    from saseg.cli import app

    tasks = _ls_export(ls, ls.labels)
    tasks[0]["annotations"][0]["result"][0]["value"]["brushlabels"] = ["Tree"]
    ls.write(tasks)
    result = CliRunner().invoke(app, ["labels", "import", "--tool", "labelstudio", "--export",
                                      str(ls.out), "--from", str(ls.source), "-o", str(tmp_path / "l")])
    assert result.exit_code == 1
    assert "4 labelled frames imported, 0 unlabelled" in result.output
    assert sum("refused: task 101: label 'Tree'" in line for line in result.output.splitlines()) == 1
    assert "error: 1 tasks refused (listed above); the 4 others are imported" in result.output
    result = CliRunner().invoke(app, ["labels", "import", "--tool", "labelstudio", "--export",
                                      str(ls.out), "--from", str(tmp_path / "nope.json"), "-o",
                                      str(tmp_path / "l")])
    assert result.exit_code == 1 and "does not exist" in str(result.exception)


def _png_bytes(array):
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case, match", [
    ("unknown label", "label 'Tree' is not a class"),
    ("two annotations", "2 annotations for one task"),
    ("wrong size", "mask is 24x18"),
    ("unreadable", "unreadable PNG"),
])
def test_png_bad_tasks_get_one_line(ls, tmp_path, case, match):
    ids = {str(101 + n): f for n, f in enumerate(ls.order)}
    (ls.out / "labelstudio_tasks.json").write_text(json.dumps({"project": 1, "tasks": ids}))
    labels = dict(ls.labels)
    if case == "wrong size":
        labels[ls.order[1]] = labels[ls.order[1]][::2, ::2]
    _png_export(ls, tmp_path / "png.zip", labels=labels)
    layer = (ls.labels[ls.order[1]] == 0) * 255
    extra = {"unknown label": ("task-102-annotation-501-by-x-tag-Tree-0.png", _png_bytes(layer)),
             "two annotations": ("task-102-annotation-777-by-x-tag-Road-0.png", _png_bytes(layer)),
             "unreadable": ("task-102-annotation-501-by-x-tag-Road-1.png", b"not a png")}.get(case)
    if extra:
        with zipfile.ZipFile(tmp_path / "png.zip", "a") as archive:
            archive.writestr(*extra)
    report = import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l")
    assert len(report.refused) == 1 and match in report.refused[0], report.refused
    assert report.refused[0].startswith("task 102") and len(report.imported) == len(ls.order) - 1
    if case == "two annotations":  # --pick latest: annotation 777, the newer one, alone
        report = import_labels("labelstudio", ls.out, tmp_path / "png.zip", tmp_path / "l2",
                               pick="latest")
        assert report.ok
        expected = np.where(layer > 0, 0, 255)
        np.testing.assert_array_equal(_read_back(tmp_path / "l2")[ls.order[1]].label, expected)


def test_cvat_mask_of_the_wrong_size_is_refused(tool_queue, tmp_path):
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    names = {v: k for k, v in json.loads((q.out / "cvat_frames.json").read_text()).items()}
    with zipfile.ZipFile(tmp_path / "c.zip", "w") as archive:
        archive.writestr("labelmap.txt", cvat_labelmap(q.classes))
        archive.writestr("ImageSets/Segmentation/default.txt", names[q.order[0]] + "\n")
        small = q.preds[q.order[0]][::2, ::2]
        archive.writestr(f"SegmentationClass/{names[q.order[0]]}.png",
                         segmentation_pngs(small, q.classes)[0])
    report = import_labels("cvat", q.out, tmp_path / "c.zip", tmp_path / "l")
    assert len(report.refused) == 1 and "mask is 24x18, the image 48x36" in report.refused[0]


def test_json_min_export_is_refused_with_a_hint(ls, tmp_path):
    ls.source.write_text(json.dumps([{"image": "x", "tag": []}]))
    with pytest.raises(FormatError, match="JSON_MIN"):
        import_labels("labelstudio", ls.out, ls.source, tmp_path / "l")


@pytest.mark.parametrize("url", ["/data/local-files/?d={outside}", "/data/local-files/?d=../../outside/secret.png",
                                 "/data/local-files/?d=%2E%2E/%2E%2E/outside/secret.png"])
def test_image_paths_outside_the_document_root_are_refused(ls, tmp_path, url):
    """An edited tasks.json must not pull another file of the machine into the label set."""
    secret = tmp_path / "outside" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.zeros((36, 48, 3), np.uint8)).save(secret)
    tasks = json.loads((ls.out / "tasks.json").read_text())
    tasks[0]["data"]["image"] = url.format(outside=secret)
    (ls.out / "tasks.json").write_text(json.dumps(tasks))
    ls.write(_ls_export(ls, ls.labels))
    with pytest.raises(DataError, match="below the document root"):
        import_labels("labelstudio", ls.out, ls.source, tmp_path / "labels")
    assert not (tmp_path / "labels").exists()


@pytest.mark.parametrize("file, content", [
    ("tasks.json", {"a": 1}), ("tasks.json", [1, 2]), ("labelstudio_storage.json", [1]),
    ("labelstudio_storage.json", {"url_prefix": 5}), ("saseg_classes.json", [1]),
    ("saseg_classes.json", {"names": 5}),
])
def test_a_tampered_saseg_export_is_one_clear_error(ls, tmp_path, file, content):
    ls.write(_ls_export(ls, ls.labels))
    (ls.out / file).write_text(json.dumps(content))
    with pytest.raises((DataError, FormatError)):
        import_labels("labelstudio", ls.out, ls.source, tmp_path / "labels")


@pytest.mark.parametrize("labelmap, match", [
    ("Road:70,130::\n", "Expected labelmap.txt lines"),
    ("Road:70,130,300::\n", "Expected labelmap.txt lines"),
    ("R\xe9:1,2,3::\n", "not UTF-8"),
])
def test_a_bad_cvat_labelmap_is_one_clear_error(tool_queue, tmp_path, labelmap, match):
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    source = tmp_path / "cvat"
    (source / "ImageSets" / "Segmentation").mkdir(parents=True)
    (source / "labelmap.txt").write_bytes(labelmap.encode("latin-1"))
    (source / "ImageSets" / "Segmentation" / "default.txt").write_text("")
    with pytest.raises(FormatError, match=match):
        list(import_labels("cvat", q.out, source, tmp_path / "l").refused)


def test_a_16_bit_cvat_class_png_is_refused(tool_queue, tmp_path):
    """CVAT writes 8-bit colour PNGs; PIL would clip 16-bit values onto whatever colour they hit."""
    q = tool_queue
    export_cvat(q.queue, out_dir=q.out, classes=q.classes, prediction_for=q.prediction_for,
                image_for=q.image_for)
    name = next(iter(json.loads((q.out / "cvat_frames.json").read_text())))
    source = tmp_path / "cvat"
    (source / "ImageSets" / "Segmentation").mkdir(parents=True)
    (source / "SegmentationClass").mkdir()
    (source / "labelmap.txt").write_text(cvat_labelmap(q.classes))
    (source / "ImageSets" / "Segmentation" / "default.txt").write_text(name + "\n")
    Image.fromarray(np.full((36, 48), 65535, np.uint16)).save(source / "SegmentationClass" / f"{name}.png")
    report = import_labels("cvat", q.out, source, tmp_path / "l")
    assert report.imported == [] and len(report.refused) == 1 and "8-bit colour class PNG" in report.refused[0]
