"""Queue selection and the bad-input paths every exporter shares."""

from pathlib import Path

import numpy as np
from PIL import Image
import pandas as pd
import pytest

from saseg.data.classes import ClassInfo
from saseg.errors import DataError, UnknownClassError
from saseg.export import EXPORTERS, export_queue, read_plan
from saseg.layout import frame_stem

CLASSES = ClassInfo(names=("a", "b"), colours=((1, 2, 3), (4, 5, 6)), ignore_index=255)


def _queue(**overrides):
    data = {"rank": [2, 1], "frame_id": ["x/1", "x/2"], "frame_index": [1, 2],
            "source": ["gen", "gen"], "score": [1.0, 2.0], "action": ["label", "label"]}
    data.update(overrides)
    return pd.DataFrame(data)


def _run(tmp_path, to, queue=None, pred=None, image=None, **kw):
    pred = pred or (lambda fid: np.zeros((4, 5), np.int64))
    image = image or (lambda fid: np.zeros((4, 5, 3), np.uint8))
    return export_queue(_queue() if queue is None else queue, to=to, out_dir=tmp_path / to,
                        classes=CLASSES, prediction_for=pred, image_for=image, **kw)


@pytest.mark.parametrize("to", EXPORTERS)
def test_missing_columns(tmp_path, to):
    with pytest.raises(DataError, match=r"lacks \['score'\]"):
        _run(tmp_path, to, queue=_queue().drop(columns="score"))


@pytest.mark.parametrize("to", EXPORTERS)
def test_prediction_size_differs_from_image(tmp_path, to):
    with pytest.raises(DataError, match="Frame 'x/2'.*4x5, but got 4x6"):
        _run(tmp_path, to, pred=lambda fid: np.zeros((4, 6), np.int64))


@pytest.mark.parametrize("to", EXPORTERS)
def test_prediction_not_a_class_mask(tmp_path, to):
    with pytest.raises(DataError, match="Frame 'x/2'.*integer class-id"):
        _run(tmp_path, to, pred=lambda fid: np.zeros((4, 5), np.float32))
    with pytest.raises(UnknownClassError, match="frame 'x/2'.*got \\[7\\]"):
        _run(tmp_path, to, pred=lambda fid: np.full((4, 5), 7))


@pytest.mark.parametrize("to", EXPORTERS)
def test_non_file_source_needs_image_for(tmp_path, to):
    with pytest.raises(DataError, match="Frame 'x/2'.*image_for"):
        export_queue(_queue(), to=to, out_dir=tmp_path / to, classes=CLASSES,
                     prediction_for=lambda fid: np.zeros((4, 5), np.int64))


def test_bad_image_for_output(tmp_path):
    with pytest.raises(DataError, match=r"\(H, W, 3\) uint8"):
        _run(tmp_path, "cvat", image=lambda fid: np.zeros((4, 5), np.uint8))


def test_duplicate_frames_and_unknown_target(tmp_path):
    with pytest.raises(DataError, match="duplicates"):
        _run(tmp_path, "labelstudio", queue=_queue(frame_id=["x/1", "x/1"]))
    with pytest.raises(DataError, match="export target"):
        _run(tmp_path, "excel")


def test_only_label_rows_in_rank_order(tmp_path):
    seen = []
    _run(tmp_path, "fiftyone", queue=_queue(rank=[2, 1], action=["label", "skip"]),
         pred=lambda fid: seen.append(fid) or np.zeros((4, 5), np.int64))
    assert seen == ["x/1"]
    seen.clear()
    _run(tmp_path, "fiftyone", queue=_queue(rank=[2, 1], action=["label", "skip"]),
         pred=lambda fid: seen.append(fid) or np.zeros((4, 5), np.int64), include_skipped=True)
    assert seen == ["x/2", "x/1"]


def test_read_plan_keeps_ids_as_text(tmp_path):
    path = tmp_path / "plan.csv"
    _queue(frame_id=["00012", "d3/007"]).to_csv(path, index=False)
    assert read_plan(path)["frame_id"].tolist() == ["00012", "d3/007"]
    with pytest.raises(DataError, match="does not exist"):
        read_plan(tmp_path / "missing.csv")


COLLIDING_IDS = ["a/b", "a_b", "帧1", "фр1", "Case", "case", "..x", "x" * 300, "x" * 299 + "y"]


def test_ids_that_collide_under_slugging_keep_their_own_files(tmp_path):
    """Every frame keeps its own mask, heatmap and image, whatever its id slugs to."""
    import json

    n = len(COLLIDING_IDS)
    queue = pd.DataFrame({"rank": range(1, n + 1), "frame_id": COLLIDING_IDS, "frame_index": range(n),
                          "source": ["gen"] * n, "score": np.linspace(1, 0, n), "action": ["label"] * n})
    masks = {fid: np.full((4, 5), i % 2, np.int64) for i, fid in enumerate(COLLIDING_IDS)}
    images = {fid: np.full((4, 5, 3), i, np.uint8) for i, fid in enumerate(COLLIDING_IDS)}
    heat = {fid: np.full((4, 5), float(i), np.float32) for i, fid in enumerate(COLLIDING_IDS)}
    out = export_queue(queue, to="fiftyone", out_dir=tmp_path / "fo", classes=CLASSES,
                       prediction_for=masks.__getitem__, image_for=images.__getitem__,
                       heatmap_for=heat.__getitem__)
    samples = json.loads((out / "samples.json").read_text())["samples"]
    paths = [s["prediction"]["mask_path"] for s in samples]
    assert len(set(paths)) == n and len({p.lower() for p in paths}) == n
    for sample, fid in zip(samples, COLLIDING_IDS):
        assert np.array_equal(np.asarray(Image.open(out / sample["prediction"]["mask_path"])), masks[fid])
        assert np.asarray(Image.open(out / sample["filepath"]))[0, 0, 0] == images[fid][0, 0, 0]
    ls = export_queue(queue, to="labelstudio", out_dir=tmp_path / "ls", classes=CLASSES,
                      prediction_for=masks.__getitem__, image_for=images.__getitem__, copy=True)
    tasks = json.loads((ls / "tasks.json").read_text())
    urls = [t["data"]["image"] for t in tasks]
    assert len(set(urls)) == n and all(len(Path(u).name) < 100 for u in urls)


def test_frame_file_names_are_unique_and_stable():
    stems = [frame_stem(f) for f in COLLIDING_IDS]
    assert len({s.lower() for s in stems}) == len(stems)
    assert frame_stem("d003/00012") == frame_stem("d003/00012")
    assert frame_stem("d003/00012").startswith("d003_00012-") and frame_stem("..").startswith("frame-")


def test_non_finite_score_becomes_null(tmp_path):
    import json

    out = _run(tmp_path, "labelstudio", queue=_queue(score=[float("nan"), 2.0]))
    tasks = json.loads((out / "tasks.json").read_text())
    assert [t["data"]["surprise"] for t in tasks] == [2.0, None]
