"""QualityModel: grouped cross-validation without leakage, both learners, save/load without pickle."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from saseg.errors import DataError, FormatError, NotFittedError
from saseg.quality.model import QualityModel, grouped_folds


def _pilot(n=400, groups=4, seed=0):
    rng = np.random.default_rng(seed)
    entropy = rng.uniform(0, 2, n)
    size = rng.uniform(0, 1, n)
    iou = np.clip(0.95 - 0.35 * entropy + 0.2 * size + rng.normal(0, 0.05, n), 0, 1)
    X = pd.DataFrame({"entropy_interior": entropy, "n_pixels": size, "noise": rng.normal(size=n)})
    return X, iou, np.repeat([f"drive{g}" for g in range(groups)], n // groups), np.arange(n)


def test_folds_never_split_a_group_and_blocks_are_contiguous():
    groups = np.array(list("aaabbbbccd"))
    folds = grouped_folds(groups, n_folds=3)
    for g in set(groups):
        assert len(set(folds[groups == g])) == 1
    assert len(set(folds)) == 3
    one = grouped_folds(["x"] * 10, order=np.arange(10)[::-1], n_folds=5)
    assert list(one) == [4, 4, 3, 3, 2, 2, 1, 1, 0, 0]  # contiguous in frame order


@pytest.mark.parametrize("n, kind", [(400, "lightgbm"), (60, "ridge")])
def test_learns_iou_out_of_fold_better_than_any_single_feature(n, kind):
    X, iou, groups, order = _pilot(n)
    model = QualityModel(seed=1).fit(X, iou, groups, order)
    assert model.kind_ == kind and model.cv_["n_groups"] == 4
    assert model.cv_["rho"] > max(abs(v) for v in model.cv_["single"].values())
    assert model.cv_["r2"] > 0.7
    assert model.cv_["single"]["entropy_interior"] == pytest.approx(spearmanr(X["entropy_interior"], iou)[0])
    assert model.importances_["noise"] < model.importances_["entropy_interior"]
    pred = model.predict(X)
    assert pred.min() >= 0 and pred.max() <= 1
    assert np.allclose(model.risk(X), 1 - pred)


def test_grouped_cross_validation_does_not_leak_drives():
    """A feature that only identifies the drive predicts nothing about an unseen drive."""
    rng = np.random.default_rng(3)
    n_groups, per = 12, 40
    drive = np.repeat(np.arange(n_groups), per)
    tag, level = rng.normal(size=n_groups), rng.uniform(0, 1, n_groups)
    X = pd.DataFrame({"drive_tag": tag[drive] + rng.normal(0, 1e-3, len(drive))})
    iou = level[drive] + rng.normal(0, 0.01, len(drive))
    model = QualityModel(seed=0).fit(X, iou, drive.astype(str))
    assert abs(model.cv_["rho"]) < 0.6  # frame-random folds would give ~1.0 here
    random_folds = QualityModel(seed=0).fit(X, iou, np.arange(len(drive)).astype(str))
    assert random_folds.cv_["rho"] > 0.9


@pytest.mark.parametrize("n", [400, 60])
def test_save_and_load_round_trip_without_pickle(tmp_path, n):
    X, iou, groups, order = _pilot(n)
    model = QualityModel().fit(X, iou, groups, order)
    model.save(tmp_path / "q")
    files = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert files == (["quality.json", "quality.lgb.txt"] if n == 400 else ["quality.json"])
    loaded = QualityModel.load(tmp_path / "q")
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert loaded.cv_ == json.loads(json.dumps(model.cv_)) and loaded.kind_ == model.kind_
    assert np.array_equal(loaded.predict(X[X.columns[::-1]]), model.predict(X))  # by name, not position


def test_bad_inputs_and_files(tmp_path):
    X, iou, groups, _ = _pilot(60)
    with pytest.raises(NotFittedError):
        QualityModel().predict(X)
    with pytest.raises(DataError, match="length"):
        QualityModel().fit(X, iou[:-1], groups)
    with pytest.raises(DataError, match="at least 10"):
        QualityModel().fit(X[:5], iou[:5], groups[:5])
    model = QualityModel().fit(X, iou, groups)
    with pytest.raises(DataError, match="noise"):
        model.predict(X.drop(columns="noise"))
    model.save(tmp_path / "q")
    meta = json.loads((tmp_path / "q" / "quality.json").read_text())
    meta["state"]["coef"] = meta["state"]["coef"][:1]
    (tmp_path / "q" / "quality.json").write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="ridge vectors"):
        QualityModel.load(tmp_path / "q")
    (tmp_path / "q" / "quality.json").write_text('{"format": "other"}')
    with pytest.raises(FormatError, match="quality model"):
        QualityModel.load(tmp_path / "q")
