"""A frame-quality model: predicted IoU of each (frame, class) from label-free features.

Fitted on a labelled pilot (its ``iou.parquet``), it turns a run's quality features (SA,
softmax dispersion over interiors and boundaries, geometry, false-negative mass, plug-in
IoU; `saseg.quality.features`) into one number a team can rank by, in the spirit of MetaSeg
(Rottmann et al., IJCNN 2020). By default gradient-boosted trees (LightGBM) when the pilot is
large enough, a ridge regression on standardised features otherwise; any backend of
`saseg.quality.regressors.REGRESSORS` when named.

Honest by construction: cross-validation is grouped by drive or sequence (frames of one
drive are strongly correlated, so a frame-random split would leak), and a pilot of a single
drive is cut into contiguous blocks of frames instead. The out-of-fold predictions give
the reported rho and R^2, next to the rho of every single feature. Saved as LightGBM's own
text model plus JSON (each backend's own files); nothing is pickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from ..errors import DataError, FormatError, NotFittedError
from ..io import read_json, write_json, write_text
from . import checks
from .regressors import REGRESSORS, make_regressor

log = logging.getLogger(__name__)

__all__ = ["QualityModel", "grouped_folds"]

FORMAT = "saseg-quality-model"
FORMAT_VERSION = 2  # 2: content hash of the tree file in "files"; NaN written as null
META = "quality.json"


def grouped_folds(groups: Sequence, order: Sequence[int] | None = None, n_folds: int = 5
                  ) -> np.ndarray:
    """Fold id (n,) per row such that no group is split between folds.

    With at least two groups, whole groups are dealt to folds (largest first, each to the
    currently smallest fold). With one group, rows are cut into `n_folds` contiguous blocks of
    `order` (e.g. frame index), so neighbouring frames stay together.
    """
    groups = np.asarray(groups).astype(str)
    n = len(groups)
    if n == 0:
        raise DataError("grouped_folds: expected at least one row, but got none.")
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) >= 2:
        k = min(n_folds, len(names))
        load = np.zeros(k, dtype=np.int64)
        fold_of = np.empty(len(names), dtype=np.int64)
        for g in np.argsort(-sizes, kind="stable"):
            fold_of[g] = int(np.argmin(load))
            load[fold_of[g]] += sizes[g]
        return fold_of[inverse]
    order = np.arange(n) if order is None else np.asarray(order)
    ranks = np.empty(n, dtype=np.int64)
    ranks[np.argsort(order, kind="stable")] = np.arange(n)
    k = max(2, min(n_folds, n))
    return (ranks * k) // n


class QualityModel:
    """Regress IoU on quality features; ``risk = 1 - predicted IoU`` ranks frames to label.

    Parameters
    ----------
    regressor : str or None, default None
        A backend of `REGRESSORS` ("lightgbm", "ridge", or one registered since); None: LightGBM,
        or the ridge below `min_rows_for_trees` pilot rows.
    min_rows_for_trees : int, default 200
        With ``regressor=None``, below this many pilot rows the ridge fallback is used: trees
        overfit tiny pilots.
    n_folds : int, default 5
        Cross-validation folds (grouped, see `grouped_folds`).
    num_boost_round, learning_rate, num_leaves, min_data_in_leaf : LightGBM settings
    ridge_alpha : float, default 1.0
        L2 penalty of the ridge, on standardised features.
    seed : int, default 0

    Each backend takes the settings its ``__init__`` names (`make_regressor`).

    Attributes
    ----------
    kind_ : str, the `REGRESSORS` name of the backend fitted (what ``quality.json`` records)
    features_ : list of str, the feature columns, in order
    importances_ : dict feature -> share of total gain (trees) or of |coefficient| (ridge)
    oof_ : ndarray (n,), out-of-fold predicted IoU of each fitted row (NaN where IoU was NaN)
    cv_ : dict with out-of-fold ``rho``, ``rho_p``, ``r2``, ``n_rows``, ``n_groups``,
        ``n_folds`` and ``single`` = {feature: rho of that feature alone with IoU}
    """

    def __init__(self, *, regressor: str | None = None, min_rows_for_trees: int = 200, n_folds: int = 5,
                 num_boost_round: int = 300, learning_rate: float = 0.05, num_leaves: int = 15,
                 min_data_in_leaf: int = 10, ridge_alpha: float = 1.0, seed: int = 0):
        self.regressor = regressor
        self.min_rows_for_trees = min_rows_for_trees
        self.n_folds = n_folds
        self.num_boost_round = num_boost_round
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.ridge_alpha = ridge_alpha
        self.seed = seed

    # ---- fitting ----------------------------------------------------------------------------
    def fit(self, features: pd.DataFrame, iou: Sequence[float], groups: Sequence,
            order: Sequence[int] | None = None) -> "QualityModel":
        """Fit on pilot rows: `features` (n, p) numeric, `iou` (n,) in [0, 1], `groups` (n,).

        `groups` names each row's drive or sequence; `order` (e.g. frame index) orders the
        rows of a single-drive pilot for its contiguous blocks. Rows with NaN IoU are dropped;
        NaN features are allowed (trees route them, the ridge fills the pilot median).
        """
        X, y = self._check(features), np.asarray(iou, dtype=np.float64)
        groups = np.asarray(groups)
        if len(y) != len(X) or len(groups) != len(X):
            raise DataError(f"QualityModel.fit: expected iou and groups of length {len(X)}, but got "
                            f"{len(y)} and {len(groups)}.")
        keep = np.isfinite(y)
        X, y, groups = X[keep], y[keep], groups[keep]
        order = None if order is None else np.asarray(order)[keep]
        if len(y) < 10:
            raise DataError(f"QualityModel.fit: expected at least 10 labelled rows, but got {len(y)}.")
        if self.regressor is not None and self.regressor not in REGRESSORS:
            raise DataError(f"QualityModel.fit: expected a regressor in {list(REGRESSORS)}, but got "
                            f"{self.regressor!r}.")
        self.features_ = list(features.columns)
        self.kind_ = self.regressor or ("lightgbm" if len(y) >= self.min_rows_for_trees else "ridge")
        folds = grouped_folds(groups, order, self.n_folds)
        oof = np.empty(len(y))
        for f in np.unique(folds):
            test = folds == f
            oof[test] = self._fit_one(X[~test], y[~test]).predict(X[test])
        self._state = self._fit_one(X, y)
        self.oof_ = np.full(len(keep), np.nan)
        self.oof_[keep] = np.clip(oof, 0.0, 1.0)
        rho, p = spearmanr(oof, y) if np.ptp(oof) > 0 and np.ptp(y) > 0 else (np.nan, np.nan)
        single = {}
        for j, name in enumerate(self.features_):
            column = X[:, j]
            ok = np.isfinite(column)
            single[name] = float(spearmanr(column[ok], y[ok])[0]) if ok.sum() > 2 and np.ptp(column[ok]) > 0 else float("nan")
        self.cv_ = {"rho": float(rho), "rho_p": float(p), "r2": _r2(y, np.clip(oof, 0, 1)),
                    "n_rows": int(len(y)), "n_groups": int(len(np.unique(groups.astype(str)))),
                    "n_folds": int(len(np.unique(folds))), "single": single}
        self.importances_ = self._state.importances(self.features_)
        return self

    def _fit_one(self, X: np.ndarray, y: np.ndarray):
        return make_regressor(self.kind_, self.get_params()).fit(X, y)

    # ---- prediction -------------------------------------------------------------------------
    def predict(self, features: pd.DataFrame) -> np.ndarray:
        """Predicted IoU (n,), clipped to [0, 1]."""
        if not hasattr(self, "_state"):
            raise NotFittedError(type(self).__name__)
        missing = [c for c in self.features_ if c not in features.columns]
        if missing:
            raise DataError(f"QualityModel.predict: expected the feature columns {missing} it was "
                            f"fitted on, but they are missing.")
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            raw = np.asarray(self._state.predict(self._check(features[self.features_])), dtype=np.float64)
        bad = ~np.isfinite(raw)
        if bad.any():  # clipped, inf would read as "certainly fine" (risk 0): never skip on it
            raise FormatError(f"{getattr(self, 'source_', 'quality model')}: expected a finite predicted "
                              f"IoU, but got {raw[bad][0]} for {int(bad.sum())} of {len(raw)} rows; "
                              "the model is corrupt: refit it (`saseg quality fit`).")
        return np.clip(raw, 0.0, 1.0)

    def risk(self, features: pd.DataFrame) -> np.ndarray:
        """``1 - predicted IoU``: higher means label first, as for SA."""
        return 1.0 - self.predict(features)

    def _check(self, features: pd.DataFrame) -> np.ndarray:
        if not isinstance(features, pd.DataFrame) or features.shape[1] == 0:
            raise DataError("QualityModel: expected features as a DataFrame with at least one column.")
        try:
            return features.to_numpy(dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"QualityModel: expected numeric feature columns, but got: {exc}") from None

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """``quality.json`` (settings, features, CV report, the backend's JSON state, the sha256
        of each backend file) and the backend's files, e.g. ``quality.lgb.txt`` in LightGBM's
        text format (files first, so the hashes in ``quality.json`` always name whole files)."""
        if not hasattr(self, "_state"):
            raise NotFittedError(type(self).__name__)
        directory = Path(directory)
        files = {}
        for name, text in self._state.to_files().items():
            write_text(directory / name, text)
            files[name] = hashlib.sha256(text.encode("utf-8")).hexdigest()
        # ``regressor`` only when named: a default model's file stays as older saseg wrote and reads it
        settings = {k: v for k, v in self.get_params().items() if k != "regressor" or v is not None}
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": self.kind_,
                "features": self.features_, "settings": settings, "cv": self.cv_,
                "importances": self.importances_, "state": self._state.to_json(), "files": files}
        write_json(directory / META, meta)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "QualityModel":
        """Read and check a saved model (`saseg.quality.checks`); every failure is one
        `FormatError` naming the file. Format 1 (no content hashes) is still read; a ``kind``
        not in `REGRESSORS` is refused."""
        directory = Path(directory)
        path = directory / META
        kinds = {name: backend.extra_files for name, backend in REGRESSORS.items()}
        meta = checks.check_model_meta(read_json(path), path, FORMAT, FORMAT_VERSION, cls().get_params(), kinds)
        model = cls(**meta["settings"])
        model.kind_, model.features_ = meta["kind"], list(meta["features"])
        model.cv_, model.importances_ = meta["cv"], meta["importances"]
        model.source_ = str(path)
        model._state = make_regressor(model.kind_, model.get_params()).restore(
            meta["state"], directory, meta["files"], len(model.features_), path)
        return model

    def get_params(self) -> dict:
        return {k: getattr(self, k) for k in ("regressor", "min_rows_for_trees", "n_folds", "num_boost_round",
                                              "learning_rate", "num_leaves", "min_data_in_leaf",
                                              "ridge_alpha", "seed")}

    def describe(self) -> str:
        cv = self.cv_
        best = max(cv["single"].items(), key=lambda kv: abs(kv[1]) if np.isfinite(kv[1]) else -1)
        return (f"quality model ({self.kind_}, {len(self.features_)} features, {cv['n_rows']} pilot rows, "
                f"{cv['n_folds']} grouped folds over {cv['n_groups']} group(s)): out-of-fold rho "
                f"{cv['rho']:.3f}, R^2 {cv['r2']:.3f}; best single feature {best[0]} rho {best[1]:.3f}")


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    total = float(((y - y.mean()) ** 2).sum())
    return float("nan") if total == 0 else 1.0 - float(((y - pred) ** 2).sum()) / total
