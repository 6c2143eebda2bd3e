"""Quality models over scored runs: fit on a labelled pilot, add ``quality`` and ``risk``.

One `saseg.quality.QualityModel` per target, each regressing that target's IoU on
label-free features of a run (``saseg quality fit``):

- **class**: one row per (frame, class) of ``scores.parquet`` (predicted, or likely present
  but missed). Features: the quality features, the class SA and softmax scores, and a one-hot
  class column (``is_<class>``). Target: the class IoU of the frame.
- **group g** and **frame**: one row per frame, from the frame's class rows restricted to
  the target's classes: means of the dispersion, boundary, false-negative and plug-in IoU
  features over predicted classes, the minimum plug-in IoU, the mean plug-in IoU over all
  rows, the number and the false-negative mass of likely-missed classes, the count of
  predicted classes, the mean and the worst (``max_``/``min_``) over predicted classes of
  each optional feature present (`extra_columns`: components, flip TTA, temporal), and the
  z-scored ``group_<g>_<s>`` or ``frame_<s>`` columns. Target:
  the group IoU, or the frame's mean class IoU (as `saseg.analysis.correlation`).

Drives are the groups of the grouped cross-validation: `drive_of` reads them from the frame
id. `apply_quality` writes ``quality`` (predicted IoU) and ``risk = 1 - quality`` into the
run's tables (``risk``, ``group_<g>_risk``, ``frame_risk``; ``risk`` joins the run's score
columns, so every command ranks by it like SA). On the pilot run itself the out-of-fold
predictions are written instead of in-sample ones, so a calibration on the pilot stays honest.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data import ClassInfo
from ..errors import DataError, FormatError
from ..io import read_json, write_json, write_parquet
from ..quality import QualityModel
from ..quality.features import EXTRA_FEATURE_COLUMNS, FEATURE_COLUMNS, FEATURE_GROUPS
from ..run_dir import RunDir

log = logging.getLogger(__name__)

__all__ = ["RunQuality", "drive_of", "class_features", "extra_columns", "target_features", "target_iou",
           "fit_quality", "apply_quality", "QUALITY_FORMAT"]

QUALITY_FORMAT = "saseg-run-quality"
_VERSION = 1
_FRAME_MEANS = ("entropy_interior", "entropy_boundary", "max_softmax_interior", "max_softmax_boundary",
                "margin_interior", "margin_boundary", "boundary_share", "fn_ratio", "plugin_iou")


def drive_of(frame_id: str) -> str:
    """The drive or sequence of a frame id: its folder (``d003/00012`` -> ``d003``), else the
    part before the first ``_`` (CamVid's ``0001TP_006690`` -> ``0001TP``), else ``""``."""
    text = str(frame_id)
    if "/" in text:
        return text.rsplit("/", 1)[0]
    return text.split("_", 1)[0] if "_" in text else ""


def class_features(scores_df: pd.DataFrame, score_columns: Sequence[str], classes: ClassInfo) -> pd.DataFrame:
    """(n_rows, p) features of each (frame, class) row, in the row order of `scores_df`."""
    _require(scores_df, ["class_id", "n_pixels", *FEATURE_COLUMNS], "scores table (scored with features)")
    columns = ["n_pixels", *FEATURE_COLUMNS, *extra_columns(scores_df)]
    for s in score_columns:
        columns += [c for c in (s, f"{s}_q90") if c in scores_df.columns]
    out = scores_df[columns].astype("float64").reset_index(drop=True)
    for c, name in enumerate(classes.names):
        out[f"is_{_slug(name)}"] = (scores_df["class_id"].to_numpy() == c).astype(np.float64)
    return out


def extra_columns(scores_df: pd.DataFrame) -> list[str]:
    """The optional feature columns (`EXTRA_FEATURE_COLUMNS`: components, flip, temporal) a
    scores table has, in their fixed order: a model fitted with them needs them to predict."""
    return [c for c in EXTRA_FEATURE_COLUMNS if c in scores_df.columns]


def target_features(scores_df: pd.DataFrame, frames_df: pd.DataFrame, score_columns: Sequence[str],
                    class_ids: Sequence[int] | None, prefix: str) -> pd.DataFrame:
    """(n_frames, p) features of one frame-level target, indexed by ``frame_id``.

    `class_ids` are the target's classes (None: all); `prefix` names its frames-table
    columns (``frame_`` or ``group_<g>_``).
    """
    _require(scores_df, ["frame_id", "class_id", "n_pixels", *FEATURE_COLUMNS], "scores table (scored with features)")
    rows = scores_df if class_ids is None else scores_df[scores_df["class_id"].isin(list(class_ids))]
    frame_ids = frames_df["frame_id"].astype(str)
    predicted = rows[rows["n_pixels"] > 0]
    missed = rows[rows["n_pixels"] == 0]
    by_pred = predicted.groupby("frame_id")
    out = pd.DataFrame(index=pd.Index(frame_ids, name="frame_id"))
    for col in _FRAME_MEANS:
        out[f"mean_{col}"] = by_pred[col].mean()
    out["min_plugin_iou"] = by_pred["plugin_iou"].min()
    out["mean_plugin_iou_all"] = rows.groupby("frame_id")["plugin_iou"].mean()
    out["n_predicted"] = by_pred.size()
    out["n_likely_missed"] = missed.groupby("frame_id").size()
    out["missed_mass"] = missed.groupby("frame_id")["fn_mass"].sum()
    for col in extra_columns(scores_df):  # mean and worst over the predicted classes
        out[f"mean_{col}"] = by_pred[col].mean()
        out[f"{EXTRA_FEATURE_COLUMNS[col]}_{col}"] = by_pred[col].agg(EXTRA_FEATURE_COLUMNS[col])
    for col in ("n_predicted", "n_likely_missed", "missed_mass"):
        out[col] = out[col].fillna(0.0)
    indexed = frames_df.set_index(frame_ids)
    for s in score_columns:
        if f"{prefix}{s}" in indexed.columns:
            out[f"{prefix}{s}"] = indexed[f"{prefix}{s}"]
    return out.astype("float64")


def target_iou(iou_df: pd.DataFrame, target: str) -> pd.Series:
    """IoU per frame (for ``frame`` or a group name) or per (frame, class) (``class``)."""
    _require(iou_df, ["frame_id", "kind", "target", "class_id", "iou"], "IoU table")
    class_iou = iou_df[iou_df["kind"] == "class"]
    if target == "class":
        return class_iou.set_index(["frame_id", "class_id"])["iou"]
    if target == "frame":
        return class_iou.groupby("frame_id")["iou"].mean()
    rows = iou_df[(iou_df["kind"] == "group") & (iou_df["target"] == target)]
    return rows.set_index("frame_id")["iou"]


class RunQuality:
    """The quality models of one class layout: ``class``, each class group, and ``frame``.

    Parameters
    ----------
    extra_features : sequence of `FEATURE_GROUPS` names (``components``, ``flip``,
        ``temporal``), default none: the optional feature groups to learn from. Off by default
        because none has yet shown an out-of-drive gain (README, "Quality features"); the
        pilot must have the groups' columns.
    **model_options : passed to every `QualityModel` (e.g. ``min_rows_for_trees``)

    Attributes
    ----------
    models_ : dict target -> fitted QualityModel
    score_columns_ : the run score columns used as features
    classes_ : ClassInfo
    pilot_ : dict, the pilot run's path, frame-id hash and size
    oof_ : dict target -> DataFrame of out-of-fold predictions on the pilot
    """

    def __init__(self, *, extra_features: Sequence[str] = (), **model_options):
        self.extra_features = extra_features
        self.model_options = model_options

    def fit(self, run: RunDir, iou_df: pd.DataFrame) -> "RunQuality":
        """Fit on a scored pilot run and its evaluation's ``iou.parquet`` rows."""
        scores_df, frames_df = run.scores(), run.frames()
        scores_df = scores_df.drop(columns=self._unused_columns(scores_df, run))
        self.classes_ = run.classes()
        self.score_columns_ = [c for c in run.score_columns() if c not in ("risk",)]
        self.pilot_ = {**_identity(run, frames_df), "run": str(run.root), "n_frames": int(len(frames_df))}
        self.models_, self.oof_ = {}, {}
        for target, (X, keys) in self._tables(scores_df, frames_df).items():
            y = target_iou(iou_df, target)
            iou = y.reindex(keys).to_numpy(dtype=np.float64)
            frame_ids = (keys.get_level_values(0) if isinstance(keys, pd.MultiIndex) else keys).astype(str)
            if np.isfinite(iou).sum() < 10:
                log.warning("quality fit: target %s has %d labelled rows; left out (needs 10).",
                            target, int(np.isfinite(iou).sum()))
                continue
            model = QualityModel(**self.model_options)
            model.fit(X, iou, groups=[drive_of(f) for f in frame_ids], order=np.arange(len(X)))
            self.models_[target] = model
            self.oof_[target] = pd.DataFrame({"key": _key_strings(keys), "oof": model.oof_})
        if "class" not in self.models_:
            raise DataError("quality fit: expected at least 10 labelled (frame, class) rows in the pilot.")
        return self

    def _unused_columns(self, scores_df: pd.DataFrame, run: RunDir) -> list[str]:
        """The optional feature columns of the groups not asked for; refuses missing ones."""
        groups = list(self.extra_features)
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown:
            raise DataError(f"quality fit: expected extra feature groups from {list(FEATURE_GROUPS)}, "
                            f"but got {unknown}.")
        wanted = {c for g in groups for c in FEATURE_GROUPS[g]}
        missing = sorted(wanted - set(scores_df.columns))
        if missing:
            raise DataError(f"quality fit: expected the pilot {run.root} to have the columns {missing} of "
                            f"the feature groups {groups} (flip_iou needs `saseg score --tta flip`, "
                            f"temporal_iou saved predictions), but it has not.")
        return [c for c in extra_columns(scores_df) if c not in wanted]

    def _tables(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame) -> dict:
        """target -> (features, keys): keys is a (frame_id, class_id) MultiIndex or frame ids."""
        keys = pd.MultiIndex.from_arrays([scores_df["frame_id"].astype(str), scores_df["class_id"].astype(int)])
        tables = {"class": (class_features(scores_df, self.score_columns_, self.classes_), keys)}
        for g, ids in self.classes_.groups.items():
            X = target_features(scores_df, frames_df, self.score_columns_, ids, f"group_{g}_")
            tables[g] = (X.reset_index(drop=True), pd.Index(X.index))
        X = target_features(scores_df, frames_df, self.score_columns_, None, "frame_")
        tables["frame"] = (X.reset_index(drop=True), pd.Index(X.index))
        return tables

    def predict(self, run: RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The run's scores and frames tables with ``quality``/``risk`` columns added."""
        if not hasattr(self, "models_"):
            raise DataError("RunQuality: fit or load it first.")
        if run.classes().names != self.classes_.names:
            raise DataError(f"quality model: expected a run with classes {self.classes_.names}, but "
                            f"{run.root} has {run.classes().names}.")
        scores_df, frames_df = run.scores(), run.frames()
        missing = [c for c in self.score_columns_ if c not in run.score_columns()]
        if missing:
            raise DataError(f"quality model: expected the run to have the scores {missing} it was fitted "
                            f"with; score it with the same SA model.")
        fitted = set(self.models_["class"].features_) if "class" in self.models_ else set()
        lacking = [c for c in EXTRA_FEATURE_COLUMNS if c in fitted and c not in scores_df.columns]
        if lacking:
            raise DataError(f"quality model: expected the run to have the feature columns {lacking} it was "
                            f"fitted with, but {run.root} lacks them; score it as the pilot was "
                            f"(flip_iou needs `saseg score --tta flip`, temporal_iou saved predictions).")
        identity = _identity(run, frames_df)
        on_pilot = all(self.pilot_.get(k) == v for k, v in identity.items())
        if on_pilot:
            log.warning("quality: %s holds the pilot's frames; writing out-of-fold predictions.", run.root)
        for target, (X, keys) in self._tables(scores_df, frames_df).items():
            if target not in self.models_:  # too few pilot rows: no estimate
                quality = np.full(len(X), np.nan)
            else:
                quality = self.models_[target].predict(X)
            if on_pilot and target in self.models_:
                oof = self.oof_[target].set_index("key")["oof"]
                fitted = pd.Series(_key_strings(keys)).map(oof).to_numpy(dtype=np.float64)
                quality = np.where(np.isfinite(fitted), np.clip(fitted, 0.0, 1.0), quality)
            if target == "class":
                scores_df["quality"], scores_df["risk"] = quality, 1.0 - quality
            else:
                prefix = "frame_" if target == "frame" else f"group_{target}_"
                series = pd.Series(quality, index=keys)
                values = frames_df["frame_id"].astype(str).map(series).to_numpy(dtype=np.float64)
                frames_df[f"{prefix}quality"], frames_df[f"{prefix}risk"] = values, 1.0 - values
        return scores_df, frames_df

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        directory = Path(directory)
        names = {}
        for i, (target, model) in enumerate(self.models_.items()):
            sub = "class" if target == "class" else "frame" if target == "frame" else f"group{i}"
            names[target] = sub
            model.save(directory / sub)
            write_parquet(directory / sub / "oof.parquet", self.oof_[target])
        write_json(directory / "run_quality.json", {
            "format": QUALITY_FORMAT, "format_version": _VERSION, "targets": names,
            "classes": self.classes_.to_dict(), "score_columns": self.score_columns_,
            "pilot": self.pilot_, "model_options": self.model_options,
            "extra_features": list(self.extra_features)})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "RunQuality":
        directory = Path(directory)
        path = directory / "run_quality.json"
        meta = read_json(path)
        if not isinstance(meta, dict) or meta.get("format") != QUALITY_FORMAT or meta.get("format_version") != _VERSION:
            raise FormatError(f"{path}: expected a saseg quality dir (format {QUALITY_FORMAT} v{_VERSION}, "
                              f"from `saseg quality fit`), but got something else.")
        self = cls(extra_features=meta.get("extra_features", []), **meta.get("model_options", {}))
        self.classes_ = ClassInfo.from_dict(meta["classes"])
        self.score_columns_ = list(meta["score_columns"])
        self.pilot_ = dict(meta["pilot"])
        self.models_, self.oof_ = {}, {}
        for target, sub in meta["targets"].items():
            if not re.fullmatch(r"class|frame|group\d+", str(sub)):
                raise FormatError(f"{path}: bad target folder {sub!r}.")
            self.models_[target] = QualityModel.load(directory / sub)
            self.oof_[target] = pd.read_parquet(directory / sub / "oof.parquet")
        return self

    def describe(self) -> str:
        return "\n".join(f"{target}: {model.describe()}" for target, model in self.models_.items())


def fit_quality(run: str | os.PathLike, eval_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                extra_features: Sequence[str] = (), **model_options) -> RunQuality:
    """``saseg quality fit``: fit on a pilot run and its eval dir, save to `out_dir`."""
    iou_path = Path(eval_dir) / "iou.parquet"
    if not iou_path.is_file():
        raise DataError(f"Expected {iou_path} (from `saseg evaluate` on the pilot), but it does not exist.")
    quality = RunQuality(extra_features=extra_features, **model_options).fit(_run(run), pd.read_parquet(iou_path))
    quality.save(out_dir)
    return quality


def apply_quality(run: str | os.PathLike | RunDir, quality_dir: str | os.PathLike) -> pd.DataFrame:
    """``saseg quality apply``: write ``quality`` and ``risk`` into a scored run; returns its scores."""
    run = run if isinstance(run, RunDir) else _run(run)
    quality = RunQuality.load(quality_dir)
    scores_df, frames_df = quality.predict(run)
    meta = dict(run.meta())
    columns = [c for c in meta["score_columns"] if c != "risk"] + ["risk"]
    meta.update(score_columns=columns, quality={"dir": str(Path(quality_dir).resolve()),
                                                "pilot": quality.pilot_})
    run.write_frames(frames_df)
    run.write_scores(scores_df)
    run.write_meta(meta)
    return scores_df


def _run(path) -> RunDir:
    path = Path(path)
    return RunDir.from_scores(path) if path.suffix == ".parquet" else RunDir(path)


def _identity(run: RunDir, frames_df: pd.DataFrame) -> dict:
    """What makes a run the pilot: the same data spec, model and frame ids (ids alone repeat
    across generated data sets)."""
    meta = run.meta()
    return {"data": meta.get("data"), "model_sha256": meta.get("model_sha256"),
            "frame_ids_sha256": _ids_sha256(frames_df["frame_id"])}


def _ids_sha256(frame_ids) -> str:
    digest = hashlib.sha256()
    for f in sorted(map(str, frame_ids)):
        digest.update(f.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()


def _key_strings(keys: pd.Index) -> list[str]:
    if isinstance(keys, pd.MultiIndex):
        return [f"{f}\0{c}" for f, c in keys]
    return [str(k) for k in keys]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "class"


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{what}: expected columns {missing}, but got {list(df.columns)}.")
