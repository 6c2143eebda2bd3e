"""export_plan on the tiny scored run: each tool gets the planned frames, masks equal to the saved
predictions and images equal to the scored frames."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TEST_SPEC
from saseg.data import open_dataset
from saseg.errors import DataError, SasegError
from saseg.export import EXPORTERS, rle
from saseg.export.run import export_plan


@pytest.fixture(scope="module")
def labelled_run(tiny_run, tmp_path_factory):
    """A copy of the tiny run whose saved predictions are the labels (ignore -> class 0).

    The tiny model predicts one class everywhere; many classes per mask make the mask checks
    mean something.
    """
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(tiny_run, run)
    data = open_dataset(TEST_SPEC)
    for frame in data:
        pred = np.where(frame.label == data.classes.ignore_index, 0, frame.label).astype(np.uint8)
        Image.fromarray(pred).save(run / "predictions" / f"{frame.frame_id}.png")
    return run


def saved_prediction(run, frame_id: str) -> np.ndarray:
    with Image.open(run / "predictions" / f"{frame_id}.png") as img:
        return np.asarray(img, dtype=np.int64)


def planned(run) -> pd.DataFrame:
    """The plan's rows to label, in rank order (ids as text)."""
    queue = pd.read_csv(run / "plan" / "plan.csv", dtype={"frame_id": str})
    return queue[queue["action"] == "label"].sort_values("rank")


def read_rgb(source) -> np.ndarray:
    with Image.open(source) as img:
        return np.asarray(img.convert("RGB"))


def test_labelstudio_export_holds_the_planned_frames_and_predictions(labelled_run, tmp_path):
    out = export_plan(labelled_run / "plan" / "plan.csv", to="labelstudio", out_dir=tmp_path / "ls")
    tasks = json.loads((out / "tasks.json").read_text())
    queue = planned(labelled_run)
    assert 0 < len(tasks) < 10  # the plan skips half the frames
    assert [t["data"]["frame_id"] for t in tasks] == queue["frame_id"].tolist()
    names = list(open_dataset(TEST_SPEC).classes.names)
    for task in tasks:
        pred = saved_prediction(labelled_run, task["data"]["frame_id"])
        rebuilt = np.full(pred.shape, -1)
        for region in task["predictions"][0]["result"]:
            painted = rle.decode(region["value"]["rle"], *pred.shape)
            assert (rebuilt[painted] == -1).all()
            rebuilt[painted] = names.index(region["value"]["brushlabels"][0])
        np.testing.assert_array_equal(rebuilt, pred)
        assert len(np.unique(pred)) > 2  # several classes per mask were compared


def test_every_frame_score_travels_with_the_frame(labelled_run, tmp_path):
    """Label Studio data and FiftyOne fields carry each frame_<score> beside the ranked one."""
    frames = pd.read_parquet(labelled_run / "frames.parquet").set_index("frame_id")
    scores = [c for c in frames.columns if c.startswith("frame_") and c != "frame_index"]
    assert {"frame_mdsa", "frame_entropy"} <= set(scores)
    tasks = json.loads((export_plan(labelled_run / "plan" / "plan.csv", to="labelstudio",
                                    out_dir=tmp_path / "ls") / "tasks.json").read_text())
    samples = json.loads((export_plan(labelled_run / "plan" / "plan.csv", to="fiftyone",
                                      out_dir=tmp_path / "fo", heatmaps=False)
                          / "samples.json").read_text())["samples"]
    for record in [t["data"] for t in tasks] + samples:
        for column in scores:
            assert record[column] == pytest.approx(frames.loc[record["frame_id"], column])


def test_cvat_export_masks_and_images_equal_the_run(labelled_run, tmp_path):
    out = export_plan(labelled_run / "plan" / "plan.csv", to="cvat", out_dir=tmp_path / "cvat")
    queue = planned(labelled_run)
    data = open_dataset(TEST_SPEC)
    colours = {tuple(c): i for i, c in enumerate(data.classes.colours)}
    lines = [json.loads(l) for l in (out / "images" / "manifest.jsonl").read_text().splitlines()][2:]
    assert len(lines) == len(queue)
    with zipfile.ZipFile(out / "annotations.zip") as archive:
        names = archive.read("ImageSets/Segmentation/default.txt").decode().split()
        assert names == [line["name"] for line in lines]
        for name, row in zip(names, queue.itertuples()):
            rgb = np.asarray(Image.open(io.BytesIO(archive.read(f"SegmentationClass/{name}.png"))).convert("RGB"))
            decoded = np.full(rgb.shape[:2], -1)
            for colour, cid in colours.items():
                decoded[(rgb == colour).all(axis=2)] = cid
            np.testing.assert_array_equal(decoded, saved_prediction(labelled_run, row.frame_id))
            image = out / "images" / f"{name}.png"
            np.testing.assert_array_equal(read_rgb(image), data[int(row.frame_index)].image)


def test_fiftyone_export_with_heatmaps_from_the_run(labelled_run, tmp_path):
    out = export_plan(labelled_run / "plan" / "plan.csv", to="fiftyone", out_dir=tmp_path / "fo")
    samples = json.loads((out / "samples.json").read_text())["samples"]
    queue = planned(labelled_run)
    data = open_dataset(TEST_SPEC)
    assert [s["frame_id"] for s in samples] == queue["frame_id"].tolist()
    for sample, row in zip(samples, queue.itertuples()):
        pred = saved_prediction(labelled_run, row.frame_id)
        with Image.open(out / sample["prediction"]["mask_path"]) as mask:
            np.testing.assert_array_equal(np.asarray(mask), pred)
        np.testing.assert_array_equal(read_rgb(out / sample["filepath"]), data[int(row.frame_index)].image)
        with Image.open(out / sample["heatmap"]["map_path"]) as heat:
            quantised = np.asarray(heat)
        lo, hi = sample["heatmap_sa_range"]  # the frame's own SA range, so it spans 0..65535
        assert quantised.shape == pred.shape and np.isfinite([lo, hi]).all() and lo < hi
        assert (quantised.min(), quantised.max()) == (0, 65535)


def test_fiftyone_without_heatmaps_needs_no_model(labelled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(labelled_run, run)
    meta = json.loads((run / "score.json").read_text())
    meta["model_path"] = meta["sa_dir"] = str(tmp_path / "gone")
    (run / "score.json").write_text(json.dumps(meta))
    out = export_plan(run / "plan" / "plan.csv", to="fiftyone", out_dir=tmp_path / "fo", heatmaps=False)
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert len(samples) == len(planned(run)) and all("heatmap" not in s for s in samples)


@pytest.mark.parametrize("to", EXPORTERS)
def test_plan_outside_the_run_needs_run_dir(labelled_run, tmp_path, to):
    plan = tmp_path / "elsewhere" / "plan.csv"
    plan.parent.mkdir()
    shutil.copy(labelled_run / "plan" / "plan.csv", plan)
    with pytest.raises(DataError, match="--run"):
        export_plan(plan, to=to, out_dir=tmp_path / "a", heatmaps=False)
    out = export_plan(plan, to=to, out_dir=tmp_path / "b", run_dir=labelled_run, heatmaps=False)
    assert Path(out).resolve() == (tmp_path / "b").resolve()


def test_changed_data_or_unknown_frames_are_errors(labelled_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(labelled_run, run)
    meta = json.loads((run / "score.json").read_text())
    meta["data"] = TEST_SPEC.replace("n=10", "n=2")  # the planned frames are no longer there
    (run / "score.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="changed since scoring"):
        export_plan(run / "plan" / "plan.csv", to="cvat", out_dir=tmp_path / "cvat")

    plan = pd.read_csv(labelled_run / "plan" / "plan.csv", dtype={"frame_id": str})
    plan.loc[plan["rank"] == 1, "frame_id"] = "d000/99999"
    plan.to_csv(tmp_path / "plan.csv", index=False)
    with pytest.raises(SasegError, match="d000/99999"):
        export_plan(tmp_path / "plan.csv", to="labelstudio", out_dir=tmp_path / "ls",
                    run_dir=labelled_run)
    with pytest.raises(DataError, match="export target"):
        export_plan(labelled_run / "plan" / "plan.csv", to="excel", out_dir=tmp_path / "x")


def test_a_tampered_plan_cannot_make_export_read_elsewhere(tiny_run, tmp_path):
    """A plan's `source` column is ignored: images come from the run's own record."""
    import pandas as pd
    from PIL import Image

    from saseg.export.run import export_plan

    secret = tmp_path / "secret.png"
    Image.fromarray(np.full((48, 64, 3), 7, np.uint8)).save(secret)
    plan = pd.read_csv(tiny_run / "plan" / "plan.csv", dtype={"frame_id": str, "source": str})
    plan["source"] = str(secret)
    tampered = tmp_path / "plan.csv"
    plan.to_csv(tampered, index=False)
    out = export_plan(tampered, to="labelstudio", out_dir=tmp_path / "ls", run_dir=tiny_run, copy=True)
    assert str(secret) not in (out / "tasks.json").read_text()
    plan.loc[0, "frame_id"] = "../../etc/passwd"
    plan.to_csv(tampered, index=False)
    with pytest.raises(DataError, match="not, e.g.*etc/passwd"):
        export_plan(tampered, to="cvat", out_dir=tmp_path / "cvat", run_dir=tiny_run)


def test_segment_plan_marks_accepted_segments_in_every_tool(labelled_run, tmp_path):
    """A segments.csv beside the plan: Label Studio shows the accepted classes per task, FiftyOne
    and CVAT carry them per sample / image; a frame plan's exports stay as they were."""
    plan_dir = tmp_path / "segplan"
    shutil.copytree(labelled_run / "plan", plan_dir)
    queue = planned(labelled_run)
    first, second = queue["frame_id"].iloc[0], queue["frame_id"].iloc[1]
    pd.DataFrame({"frame_id": [first, first, second], "class_id": [0, 1, 2],
                  "class_name": ["sky", "road", "car"], "score": [0.1, 0.2, 0.9],
                  "action": ["accept", "accept", "label"]}).to_csv(plan_dir / "segments.csv", index=False)
    kw = dict(run_dir=labelled_run)
    ls = export_plan(plan_dir / "plan.csv", to="labelstudio", out_dir=tmp_path / "ls", **kw)
    tasks = {t["data"]["frame_id"]: t["data"] for t in json.loads((ls / "tasks.json").read_text())}
    assert tasks[first]["accepted_segments"] == "sky, road" and tasks[second]["accepted_segments"] == "none"
    assert "$accepted_segments" in (ls / "labelstudio_config.xml").read_text()
    fo = export_plan(plan_dir / "plan.csv", to="fiftyone", out_dir=tmp_path / "fo", heatmaps=False, **kw)
    samples = {s["frame_id"]: s for s in json.loads((fo / "samples.json").read_text())["samples"]}
    assert samples[first]["accepted_classes"] == ["sky", "road"] and samples[second]["accepted_classes"] == []
    cv = export_plan(plan_dir / "plan.csv", to="cvat", out_dir=tmp_path / "cvat", **kw)
    names = json.loads((cv / "cvat_frames.json").read_text())
    accepted = json.loads((cv / "cvat_accepted.json").read_text())
    assert {names[n]: v for n, v in accepted.items()}[first] == ["sky", "road"]
    plain = export_plan(labelled_run / "plan" / "plan.csv", to="labelstudio", out_dir=tmp_path / "plain")
    assert "accepted_segments" not in (plain / "tasks.json").read_text()
    assert "accepted_segments" not in (plain / "labelstudio_config.xml").read_text()  # only the rank header
