"""Quality regressors as backends: a toy one registered in one line fits, saves, loads and applies."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from saseg.errors import DataError, FormatError
from saseg.quality import (REGRESSORS, QualityModel, QualityRegressor, make_regressor, register_regressor,
                           unregister_regressor)
from saseg.quality.checks import finite_vector


class MeanRegressor(QualityRegressor):
    """Predicts the pilot's mean IoU, shrunk by `ridge_alpha` towards 0.5 (a setting it borrows)."""

    def __init__(self, *, ridge_alpha: float):
        self.ridge_alpha = ridge_alpha

    def fit(self, X, y):
        self.mean_ = (y.sum() + 0.5 * self.ridge_alpha) / (len(y) + self.ridge_alpha)
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)

    def importances(self, names):
        return {n: 1.0 / len(names) for n in names}

    def to_json(self):
        return {"mean": self.mean_}

    def restore(self, state, directory, hashes, n_features, where):
        self.mean_ = float(finite_vector([state["mean"]], 1, where, "mean")[0])
        return self


@pytest.fixture
def mean_regressor():
    register_regressor("mean", MeanRegressor)
    yield MeanRegressor
    unregister_regressor("mean")


def _pilot(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = pd.DataFrame({"entropy_interior": rng.uniform(0, 2, n), "noise": rng.normal(size=n)})
    iou = np.clip(0.9 - 0.3 * X["entropy_interior"] + rng.normal(0, 0.05, n), 0, 1).to_numpy()
    return X, iou, np.repeat(["d0", "d1", "d2"], n // 3)


def test_a_registered_regressor_fits_saves_loads_and_applies(tmp_path, mean_regressor):
    X, iou, groups = _pilot()
    model = QualityModel(regressor="mean", ridge_alpha=2.0).fit(X, iou, groups)
    assert model.kind_ == "mean"
    expected = (iou.sum() + 1.0) / (len(iou) + 2.0)
    assert np.allclose(model.predict(X), expected) and np.allclose(model.risk(X), 1 - expected)
    model.save(tmp_path / "q")
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["quality.json"]
    meta = json.loads((tmp_path / "q" / "quality.json").read_text())
    assert meta["kind"] == "mean" and meta["settings"]["regressor"] == "mean" and meta["files"] == {}
    loaded = QualityModel.load(tmp_path / "q")
    assert loaded.kind_ == "mean" and np.array_equal(loaded.predict(X), model.predict(X))
    unregister_regressor("mean")
    try:  # a file naming a backend that is not registered is refused, never guessed
        with pytest.raises(FormatError, match=r"expected kind in \['lightgbm', 'ridge'\]"):
            QualityModel.load(tmp_path / "q")
    finally:
        register_regressor("mean", MeanRegressor)


def test_the_default_choice_and_its_file_are_unchanged(tmp_path):
    X, iou, groups = _pilot(60)
    model = QualityModel().fit(X, iou, groups)
    assert model.kind_ == "ridge" and QualityModel(min_rows_for_trees=10).fit(X, iou, groups).kind_ == "lightgbm"
    assert QualityModel(regressor="ridge", min_rows_for_trees=10).fit(X, iou, groups).kind_ == "ridge"
    model.save(tmp_path / "q")
    settings = json.loads((tmp_path / "q" / "quality.json").read_text())["settings"]
    assert "regressor" not in settings  # as saseg wrote (and older saseg reads) before backends


def test_unknown_and_bad_regressors():
    X, iou, groups = _pilot()
    with pytest.raises(DataError, match=r"regressor in \['lightgbm', 'ridge'\], but got 'knn'"):
        QualityModel(regressor="knn").fit(X, iou, groups)
    with pytest.raises(DataError, match="QualityRegressor class"):
        register_regressor("mean", object)
    with pytest.raises(DataError, match="letters"):
        register_regressor("a b", MeanRegressor)
    with pytest.raises(DataError, match="registered regressor"):
        unregister_regressor("knn")
    assert list(REGRESSORS) == ["lightgbm", "ridge"]
    ridge = make_regressor("ridge", {"ridge_alpha": 3.0, "num_leaves": 7})
    assert ridge.ridge_alpha == 3.0 and not hasattr(ridge, "num_leaves")


def test_a_bad_regressor_setting_in_a_file_is_refused(tmp_path):
    X, iou, groups = _pilot()
    QualityModel(regressor="ridge").fit(X, iou, groups).save(tmp_path / "q")
    path = tmp_path / "q" / "quality.json"
    meta = json.loads(path.read_text())
    meta["settings"]["regressor"] = "../x"
    path.write_text(json.dumps(meta))
    with pytest.raises(FormatError, match="'regressor' to be null or a name"):
        QualityModel.load(tmp_path / "q")
