"""The regressors a `QualityModel` can learn with: one table, name -> backend class.

A backend is a `QualityRegressor` subclass:

- keyword-only hyperparameters in ``__init__``, named like the `QualityModel` settings it reads
  (the model passes each of its settings whose name the signature has, and nothing else);
- ``fit(X, y) -> self`` on X (n, p) float64 (NaN allowed: the backend decides how to treat it)
  and y (n,) IoU in [0, 1];
- ``predict(X) -> (n,)`` the raw predicted IoU (the model clips it to [0, 1]);
- ``importances(names) -> {name: share}``, shares summing to 1;
- saving without pickle: ``to_json()`` (the "state" of ``quality.json``) and ``to_files()``
  (text files beside it, each listed in `extra_files`, their sha256 recorded); ``restore(...)
  -> self`` sets the fitted state back on a backend built from the saved settings, checking
  every value it reads (`saseg.quality.checks`).

The ``kind`` a model file records is the backend's name here, so a file names its backend and a
name not registered is refused at load. Adding a regressor is that class and one
`register_regressor` line; ``saseg quality fit --regressor`` follows the table.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import DataError, FormatError
from . import checks
from .lgb_text import canonical_model_text

__all__ = ["QualityRegressor", "LightGBMRegressor", "RidgeRegressor", "REGRESSORS", "register_regressor",
           "unregister_regressor", "make_regressor"]


class QualityRegressor:
    """Base of the quality backends (the interface is in the module docstring)."""

    extra_files: tuple[str, ...] = ()
    """Files `to_files` writes beside ``quality.json`` (their hashes are required at load)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> "QualityRegressor":
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def importances(self, names) -> dict[str, float]:
        raise NotImplementedError

    def to_json(self) -> Any:
        """The JSON state saved in ``quality.json`` (None when the files hold everything)."""
        return None

    def to_files(self) -> dict[str, str]:
        """File name (in `extra_files`) -> text, written before ``quality.json``."""
        return {}

    def restore(self, state: Any, directory: Path, hashes: Mapping[str, str], n_features: int,
                where: Path) -> "QualityRegressor":
        """The fitted state from `state` and the files in `directory` (`hashes`: file -> sha256,
        empty for format 1); one `FormatError` naming `where` for anything unexpected."""
        raise NotImplementedError


def _shares(weight: np.ndarray, names) -> dict[str, float]:
    total = weight.sum() or 1.0
    return {n: float(w / total) for n, w in zip(names, weight)}


class LightGBMRegressor(QualityRegressor):
    """Gradient-boosted trees (LightGBM, imported here: an optional, heavy dependency); NaN
    features are routed by the trees. Saved as LightGBM's own text model."""

    extra_files = ("quality.lgb.txt",)

    def __init__(self, *, num_boost_round: int, learning_rate: float, num_leaves: int,
                 min_data_in_leaf: int, seed: int):
        self.num_boost_round = num_boost_round
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.seed = seed

    def fit(self, X, y) -> "LightGBMRegressor":
        lgb = _lightgbm()
        params = {"objective": "regression", "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "min_data_in_leaf": self.min_data_in_leaf,
                  "seed": self.seed, "deterministic": True, "force_row_wise": True,
                  "num_threads": 1, "verbosity": -1}
        data = lgb.Dataset(X, label=y, params={"verbosity": -1})
        self.booster_ = lgb.train(params, data, num_boost_round=self.num_boost_round)
        return self

    def predict(self, X):
        return self.booster_.predict(X)

    def importances(self, names):
        return _shares(self.booster_.feature_importance(importance_type="gain"), names)

    def to_files(self):
        return {self.extra_files[0]: self.booster_.model_to_string()}

    def restore(self, state, directory, hashes, n_features, where) -> "LightGBMRegressor":
        """The checked, rebuilt model text (`canonical_model_text`) to LightGBM; never the file."""
        path = Path(directory) / self.extra_files[0]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FormatError(f"Expected the trees of the quality model at {path} (written by "
                              "`saseg quality fit`), but the file does not exist.") from None
        checks.check_sha256(data, hashes.get(path.name), path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"{path}: expected a LightGBM text model (UTF-8), but it is not text.") from None
        canonical = canonical_model_text(text, n_features, str(path))
        lgb = _lightgbm()
        try:
            booster = lgb.Booster(model_str=canonical)
        except lgb.basic.LightGBMError as exc:
            raise FormatError(f"{path}: expected a LightGBM text model, but LightGBM refused it: {exc}") from None
        self.booster_ = booster
        return self


class RidgeRegressor(QualityRegressor):
    """Ridge on standardised features, NaNs filled with the training median:
    ``((X - m) / s) @ w + b`` with ``w = (ZᵀZ + alpha I)⁻¹ Zᵀ(y - ȳ)`` (a solve, no inverse), ``b = ȳ``."""

    def __init__(self, *, ridge_alpha: float):
        self.ridge_alpha = ridge_alpha

    def fit(self, X, y) -> "RidgeRegressor":
        finite = np.isfinite(X)
        with np.errstate(invalid="ignore"):  # an all-NaN column gets median 0
            median = np.array([np.median(X[finite[:, j], j]) if finite[:, j].any() else 0.0
                               for j in range(X.shape[1])])
        Xf = np.where(finite, X, median)
        mean, scale = Xf.mean(0), Xf.std(0)
        scale = np.where(scale > 0, scale, 1.0)
        Z = (Xf - mean) / scale
        coef = np.linalg.solve(Z.T @ Z + self.ridge_alpha * np.eye(Z.shape[1]), Z.T @ (y - y.mean()))
        self.median_, self.mean_, self.scale_ = median, mean, scale
        self.coef_, self.intercept_ = coef, float(y.mean())
        return self

    def predict(self, X):
        Xf = np.where(np.isfinite(X), X, self.median_)
        return ((Xf - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def importances(self, names):
        return _shares(np.abs(self.coef_), names)

    def to_json(self):
        return {"median": self.median_.tolist(), "mean": self.mean_.tolist(), "scale": self.scale_.tolist(),
                "coef": self.coef_.tolist(), "intercept": self.intercept_}

    def restore(self, state, directory, hashes, n_features, where) -> "RidgeRegressor":
        """The ridge state of ``quality.json``: vectors of length `n_features` and an intercept,
        all finite, scales positive."""
        if not isinstance(state, dict) or set(state) != {"median", "mean", "scale", "coef", "intercept"}:
            raise FormatError(f"{where}: expected the ridge state (median, mean, scale, coef, intercept), "
                              f"but got {sorted(state) if isinstance(state, dict) else type(state).__name__}.")
        arrays = [checks.finite_vector(state[k], n_features, where, f"ridge vectors ({k})")
                  for k in ("median", "mean", "scale", "coef")]
        intercept = checks.finite_vector([state["intercept"]], 1, where, "ridge intercept")[0]
        if not (arrays[2] > 0).all():
            raise FormatError(f"{where}: expected positive ridge scales, but some are <= 0.")
        self.median_, self.mean_, self.scale_, self.coef_ = arrays
        self.intercept_ = float(intercept)
        return self


REGRESSORS: dict[str, type[QualityRegressor]] = {"lightgbm": LightGBMRegressor, "ridge": RidgeRegressor}
"""name -> backend class; the name is the ``kind`` a saved model records."""


def register_regressor(name: str, backend: type[QualityRegressor]) -> None:
    """Add (or replace) a backend; ``QualityModel(regressor=name)`` and ``saseg quality fit
    --regressor NAME`` then offer it, and models saved with it load while it is registered."""
    if not isinstance(name, str) or not name or not name.replace("_", "").isalnum():
        raise DataError(f"Expected a regressor name of letters, digits and '_', but got {name!r}.")
    if not (isinstance(backend, type) and issubclass(backend, QualityRegressor)):
        raise DataError(f"Expected regressor {name!r} to be a QualityRegressor class, but got {backend!r}.")
    REGRESSORS[name] = backend


def unregister_regressor(name: str) -> type[QualityRegressor]:
    """Remove a backend; returns its class."""
    if name not in REGRESSORS:
        raise DataError(f"Expected a registered regressor from {list(REGRESSORS)}, but got {name!r}.")
    return REGRESSORS.pop(name)


def make_regressor(name: str, settings: Mapping[str, Any]) -> QualityRegressor:
    """An unfitted backend `name`, given each of `settings` (a model's) that its ``__init__`` names."""
    if name not in REGRESSORS:
        raise DataError(f"Expected a quality regressor in {list(REGRESSORS)}, but got {name!r}.")
    cls = REGRESSORS[name]
    wanted = inspect.signature(cls).parameters
    return cls(**{k: v for k, v in settings.items() if k in wanted})


def _lightgbm():
    try:
        import lightgbm
    except ImportError:
        raise DataError("The quality model's trees need LightGBM: pip install 'saseg[quality]' "
                        "(or lightgbm).") from None
    return lightgbm
