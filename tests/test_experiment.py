import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import saseg.data.compose as compose
import saseg.experiment as experiment
from saseg.data import open_dataset
from saseg.data.compose import open_set
from saseg.errors import DataError, FormatError
from saseg.experiment import load_config, run_retrain_experiment, summarise
from saseg.io import read_json
from saseg.models import load_model

QUICK = Path(__file__).resolve().parents[1] / "configs" / "retrain_quick.json"
CAMVID = QUICK.with_name("retrain_camvid.json")
SPEC = "synthetic:n=32,seed=0,size=96x72:train"


def tiny_config(out):
    """The quick config, smaller still: 16 base frames, 24 pool frames, 8 test frames."""
    cfg = read_json(QUICK)
    half = {"fraction": 0.5, "seed": 0}
    cfg.update(base={"spec": SPEC, "subset": {**half, "part": 0}},
               pool=[{"spec": SPEC, "subset": {**half, "part": 1}}, "synthetic:n=8,seed=1,size=96x72:test"],
               test="synthetic:n=8,seed=2,size=96x72:test", out=str(out),
               quick={"seeds": [0], "levels": ["high", "diverse"], "sizes": [2]}, image_size=[48, 64])
    cfg["selection"]["min_pixels"] = 20
    return cfg


def brute_iou(model_dir, data, class_id):
    """Dataset-level IoU of one class from per-pixel counts, without the metrics module."""
    model = load_model(model_dir)
    inter = union = 0
    for f in data:
        with torch.no_grad():
            pred = model.net(model.preprocess([f.image])).argmax(1)[0].numpy()
        keep = f.label != data.classes.ignore_index
        p, t = (pred == class_id) & keep, (f.label == class_id) & keep
        inter += int((p & t).sum())
        union += int((p | t).sum())
    return inter / union if union else math.nan


@pytest.mark.slow
def test_quick_experiment_end_to_end_then_resumes(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path / "exp")
    table = run_retrain_experiment(cfg, quick=True, progress=False)
    assert list(table.columns) == ["target", "level", "size", "seed", "target_iou", "miou", "n_added",
                                   "added_spread"]
    assert list(table.level) == ["base", "high", "diverse"]
    assert list(table.n_added) == [0, 2, 2]
    out = tmp_path / "exp"
    for name in ("table.csv", "summary.csv", "retrain.png", "experiment.json", "pool_pixels.parquet"):
        assert (out / name).is_file(), name
    pd.testing.assert_frame_equal(pd.read_csv(out / "table.csv"), table, check_dtype=False)
    # The target IoU is the dataset-level IoU over every test frame.
    test = open_set(cfg["test"], cfg["image_size"])
    for level, run in (("base", "base_0"), ("high", "vehicle_high_2_0")):
        expected = brute_iou(out / "runs" / run, test, 10)
        got = float(table.loc[table.level == level, "target_iou"].iloc[0])
        assert got == pytest.approx(expected, abs=1e-12) or (math.isnan(got) and math.isnan(expected))
    # Added frames come from the pool only, with more than min_pixels labelled vehicle pixels.
    base_ids = {f.frame_id for f in open_set(cfg["base"])}
    pool = open_set(cfg["pool"], cfg["image_size"])
    labels = {f.frame_id: f.label for f in pool}
    for run in ("vehicle_high_2_0", "vehicle_diverse_2_0"):
        picked = pd.read_csv(out / "selections" / f"{run}.csv")
        assert len(picked) == 2 and not set(picked.frame_id) & base_ids
        assert all((labels[f] == 10).sum() > cfg["selection"]["min_pixels"] for f in picked.frame_id)
        assert read_json(out / "runs" / run / "result.json")["added"] == list(picked.frame_id)

    # Second call: nothing is trained, fitted or scored again, and the table is the same.
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/model.pt")}
    assert len(mtimes) == 3

    def boom(*args, **kwargs):
        raise AssertionError("should not run again")

    monkeypatch.setattr(experiment, "train", boom)
    monkeypatch.setattr(experiment.pipeline, "fit", boom)
    monkeypatch.setattr(experiment.pipeline, "score", boom)
    again = run_retrain_experiment(cfg, quick=True, progress=False)
    pd.testing.assert_frame_equal(again, table)
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/model.pt")} == mtimes
    # A finished run with other settings is never silently reused.
    with pytest.raises(FormatError, match=r"base_0.result.json: .*same settings.* train.lr: 0.02 -> 0.03"):
        run_retrain_experiment({**cfg, "train": {**cfg["train"], "lr": 0.03}}, quick=True, progress=False)
    with pytest.raises(FormatError, match=r"stage.json: .*fit/score settings.* score.pixels_per_class: 100 -> 7"):
        run_retrain_experiment({**cfg, "score": {"pixels_per_class": 7}}, quick=True, progress=False)


def test_summary_mean_and_std_by_hand():
    table = pd.DataFrame({
        "target": ["car"] * 5, "level": ["base", "base", "high", "high", "high"],
        "size": [0, 0, 0.1, 0.1, 0.1], "seed": [0, 1, 0, 1, 2],
        "target_iou": [0.30, 0.40, 0.5, 0.6, 0.9], "miou": [0.2, 0.2, 0.3, 0.4, 0.5],
        "n_added": [0, 0, 4, 4, 4]})
    s = summarise(table).set_index("level")
    assert s.loc["base", "target_iou_mean"] == pytest.approx(0.35)
    assert s.loc["base", "target_iou_std"] == pytest.approx(statistics.stdev([0.3, 0.4]))
    assert s.loc["high", "target_iou_mean"] == pytest.approx((0.5 + 0.6 + 0.9) / 3)
    assert s.loc["high", "target_iou_std"] == pytest.approx(statistics.stdev([0.5, 0.6, 0.9]))
    assert s.loc["high", "miou_std"] == pytest.approx(0.1)
    assert s.loc["high", "n_seeds"] == 3 and s.loc["high", "n_added"] == 4


def test_config_errors(tmp_path):
    cfg = tiny_config(tmp_path)
    for change in ({"levels": ["medium"]}, {"seeds": []}, {"epochz": 1},
                   {"selection": {"pixels": "both"}}):
        with pytest.raises(DataError):
            load_config({**cfg, **change})
    no_out = dict(cfg)
    del no_out["out"]
    with pytest.raises(DataError, match="missing"):
        load_config(no_out)
    with pytest.raises(FormatError):
        load_config(tmp_path / "nope.json")
    quick = load_config(cfg, quick=True)
    assert quick["seeds"] == [0] and quick["sizes"] == [2]
    default_quick = {k: v for k, v in cfg.items() if k != "quick"}
    assert load_config(default_quick, quick=True)["seeds"] == [0]
    with pytest.raises(DataError, match="Expected a class name"):
        run_retrain_experiment({**cfg, "target_classes": ["unicorn"]}, progress=False)


def test_shipped_configs_are_valid():
    quick, camvid = load_config(QUICK), load_config(CAMVID)
    assert quick["target_classes"] == ["vehicle"] and len(quick["seeds"]) >= 3
    assert camvid["sizes"] == [0.1, 0.2, 0.3] and len(camvid["seeds"]) >= 3
    assert camvid["target_classes"] == ["Car", "Pedestrian"]
    assert load_config(CAMVID, quick=True)["train"]["epochs"] == 2  # quick merges into train
    assert load_config(CAMVID, quick=True)["train"]["arch"] == "small"


@pytest.mark.camvid
def test_camvid_config_splits_train_into_disjoint_base_and_pool(monkeypatch):
    monkeypatch.chdir(QUICK.parents[1])
    if not Path("../shared/data/camvid/train").is_dir():
        pytest.skip("CamVid is not in ../shared/data")
    cfg = load_config(CAMVID)
    base, pool = open_set(cfg["base"]), open_set(cfg["pool"])
    ids = lambda d: {d.frame_id(i) for i in range(len(d))}  # noqa: E731
    train = open_dataset("camvid:../shared/data/camvid:train")
    assert len(base) == round(0.5 * len(train)) and not ids(base) & ids(pool)
    assert ids(base) | ids(train) == ids(train) and ids(train) <= ids(base) | ids(pool)


def test_moved_names_stay_importable_from_experiment():
    for name in ("SubsetDataset", "ConcatDataset", "ResizedDataset", "open_set"):
        assert getattr(experiment, name) is getattr(compose, name) and name in experiment.__all__
    assert {"run_retrain_experiment", "load_config", "summarise", "evaluate_iou"} <= set(experiment.__all__)


def test_evaluate_iou_is_the_dataset_iou(tiny_model_dir):
    data = open_dataset("synthetic:n=3,seed=4,size=64x48:test")
    iou = experiment.evaluate_iou(tiny_model_dir, data, batch_size=2)
    assert isinstance(iou, np.ndarray) and iou.shape == (data.classes.num_classes,)
    for c in range(data.classes.num_classes):
        expected = brute_iou(tiny_model_dir, data, c)
        assert iou[c] == pytest.approx(expected, abs=1e-12) or (np.isnan(iou[c]) and math.isnan(expected))


def test_per_target_settings():
    assert experiment._per_target(5, "Car") == 5
    assert experiment._per_target({"Car": 7}, "Car") == 7
    with pytest.raises(DataError, match="Pedestrian"):
        experiment._per_target({"Car": 7}, "Pedestrian")
