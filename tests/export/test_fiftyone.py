"""FiftyOne export: samples.json order and fields, exact masks, heatmap quantisation, loading."""

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saseg.data.classes import ClassInfo
from saseg.layout import frame_stem
from saseg.errors import DataError
from saseg.export import export_fiftyone, load_fiftyone

CLASSES = ClassInfo(names=("Road", "Lane", "Car"),
                    colours=((128, 64, 128), (255, 255, 0), (64, 0, 128)), ignore_index=255)
SIZES = {"still": (6, 4), "d003/00012": (7, 9), "d003/00001": (5, 13)}


def _setup(tmp_path):
    rng = np.random.default_rng(0)
    still = tmp_path / "src" / "still.png"
    still.parent.mkdir(exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (6, 4, 3), dtype=np.uint8)).save(still)
    queue = pd.DataFrame({
        "rank": [3, 1, 2], "frame_id": list(SIZES), "frame_index": [0, 12, 1],
        "source": [str(still), "v.mp4", "v.mp4"], "score": [5.0, 9.5, 7.25],
        "action": ["label"] * 3,
    })
    preds = {fid: rng.integers(0, 3, hw) for fid, hw in SIZES.items()}
    preds["still"][0, 0] = 255
    heat = {fid: rng.normal(10, 3, hw) for fid, hw in SIZES.items()}
    heat["d003/00012"][2, 3] = np.nan
    return queue, preds, heat


def _export(tmp_path, **kw):
    queue, preds, heat = _setup(tmp_path)
    out = export_fiftyone(queue, out_dir=tmp_path / "fo", classes=CLASSES,
                          prediction_for=preds.__getitem__, heatmap_for=heat.__getitem__,
                          image_for=lambda fid: np.zeros(SIZES[fid] + (3,), np.uint8), **kw)
    return json.loads((out / "samples.json").read_text())["samples"], preds, heat, out


def test_samples_in_rank_order_with_fields(tmp_path):
    samples, _, _, out = _export(tmp_path)
    assert [s["frame_id"] for s in samples] == ["d003/00012", "d003/00001", "still"]
    assert [(s["rank"], s["surprise"]) for s in samples] == [(1, 9.5), (2, 7.25), (3, 5.0)]
    # Relative to the export folder (FiftyOne's importer resolves them so): the folder can move.
    assert samples[2]["filepath"] == "../src/still.png"
    assert samples[0]["filepath"] == f"images/{frame_stem('d003/00012')}.png"
    assert samples[0]["prediction"]["mask_path"] == f"fields/prediction/{frame_stem('d003/00012')}.png"
    assert 'color_by="value"' in (out / "IMPORT.md").read_text()
    assert str(tmp_path) not in (out / "IMPORT.md").read_text()
    assert all(s["prediction"]["_cls"] == "Segmentation" for s in samples)
    assert all(s["heatmap"]["_cls"] == "Heatmap" for s in samples)
    info = json.loads((out / "metadata.json").read_text())
    assert info["media_type"] == "image"
    assert info["info"]["default_mask_targets"] == {"0": "Road", "1": "Lane", "2": "Car"}


def test_masks_decode_to_prediction(tmp_path):
    samples, preds, _, out = _export(tmp_path)
    for s in samples:
        mask = np.asarray(Image.open(out / s["prediction"]["mask_path"]))
        np.testing.assert_array_equal(mask, preds[s["frame_id"]])


def test_heatmaps_quantise_sa(tmp_path):
    samples, _, heat, out = _export(tmp_path)
    for s in samples:
        sa = heat[s["frame_id"]]
        q = np.asarray(Image.open(out / s["heatmap"]["map_path"])).astype(np.float64)
        lo, hi = s["heatmap_sa_range"]
        assert s["heatmap"]["range"] == [0, 65535]
        assert (lo, hi) == (np.nanmin(sa), np.nanmax(sa))
        finite = np.isfinite(sa)
        np.testing.assert_allclose((lo + q / 65535 * (hi - lo))[finite], sa[finite],
                                   atol=(hi - lo) / 65535)
        assert (q[~finite] == 0).all()

    samples, _, heat, out = _export(tmp_path, heatmap_range=(9.0, 11.0))
    sa = heat[samples[0]["frame_id"]]
    q = np.asarray(Image.open(out / samples[0]["heatmap"]["map_path"])).astype(np.int64)
    expected = np.rint(np.clip((np.nan_to_num(sa, nan=9.0) - 9) / 2, 0, 1) * 65535)
    np.testing.assert_array_equal(q, expected)


def test_heatmap_bad_inputs(tmp_path):
    queue, preds, _ = _setup(tmp_path)
    with pytest.raises(DataError, match="Frame 'd003/00012'.*SA heatmap.*7x9"):
        export_fiftyone(queue, out_dir=tmp_path / "fo", classes=CLASSES,
                        prediction_for=preds.__getitem__, heatmap_for=lambda f: np.zeros((2, 2)),
                        image_for=lambda fid: np.zeros(SIZES[fid] + (3,), np.uint8))
    with pytest.raises(DataError, match="lo < hi"):
        _export(tmp_path, heatmap_range=(3.0, 3.0))


def _fake_fiftyone(datasets):
    """Just enough of FiftyOne's public API to run import_fiftyone.py."""
    class Label(dict):
        def __init__(self, **kw):
            super().__init__(kw, _cls=type(self).__name__)

    class Segmentation(Label):
        pass

    class Heatmap(Label):
        pass

    class Sample(dict):
        def __init__(self, filepath, **fields):
            super().__init__(filepath=filepath, **fields)

    class Dataset:
        def __init__(self, name):
            self.name, self.samples = name, []
            datasets[name] = self

        def add_samples(self, samples):
            self.samples += samples

    return types.SimpleNamespace(
        Sample=Sample, Segmentation=Segmentation, Heatmap=Heatmap, Dataset=Dataset,
        dataset_exists=lambda name: name in datasets, delete_dataset=datasets.pop)


def test_import_snippet_builds_dataset_in_order(tmp_path, monkeypatch):
    datasets = {"queue": "stale"}
    monkeypatch.setitem(sys.modules, "fiftyone", _fake_fiftyone(datasets))
    samples, _, _, out = _export(tmp_path, dataset_name="queue")
    dataset = datasets["queue"]
    assert dataset.persistent and dataset.default_mask_targets == {0: "Road", 1: "Lane", 2: "Car"}
    assert [s["rank"] for s in dataset.samples] == [1, 2, 3]
    first = dataset.samples[0]
    assert first["prediction"] == {"_cls": "Segmentation",
                                   "mask_path": str(out.resolve() / samples[0]["prediction"]["mask_path"])}
    assert first["heatmap"]["map_path"] == str(out.resolve() / samples[0]["heatmap"]["map_path"])
    assert load_fiftyone(out, name="again").name == "again"


def test_dataset_name_without_fiftyone(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "fiftyone", None)
    with pytest.raises(DataError, match="fiftyone package"):
        _export(tmp_path, dataset_name="queue")
    assert (tmp_path / "fo" / "import_fiftyone.py").is_file()  # the files are still written
