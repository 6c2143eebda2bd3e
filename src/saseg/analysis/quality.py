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
id. `saseg.commands.quality.apply_quality` writes ``quality`` (predicted IoU) and ``risk = 1 - quality`` into the
run's tables (``risk``, ``group_<g>_risk``, ``frame_risk``; ``risk`` joins the run's score
columns, so every command ranks by it like SA). On the pilot run itself the out-of-fold
predictions are written instead of in-sample ones, so a calibration on the pilot stays honest.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..columns import FRAME, drive_of, frame_target_iou, require_columns, run_identity, target_column
from ..data import ClassInfo
from ..errors import DataError, FormatError
from ..io import check_not_unfinished, read_json, write_json, write_parquet
from ..quality import QualityModel
from ..quality.model import META as QUALITY_META
from ..quality.checks import check_keys, check_params, check_sha256, sha256_bytes
from ..quality.features import EXTRA_FEATURE_COLUMNS, FEATURE_COLUMNS, FEATURE_GROUPS
from ..layout import QualityDir

log = logging.getLogger(__name__)

__all__ = ["RunQuality", "drive_of", "class_features", "extra_columns", "target_features", "target_iou",
           "QUALITY_FORMAT"]

QUALITY_FORMAT = "saseg-run-quality"
_VERSION = 2  # 2: "files" maps every file of the folder to its sha256
_FRAME_MEANS = ("entropy_interior", "entropy_boundary", "max_softmax_interior", "max_softmax_boundary",
                "margin_interior", "margin_boundary", "boundary_share", "fn_ratio", "plugin_iou")


def class_features(scores_df: pd.DataFrame, score_columns: Sequence[str], classes: ClassInfo) -> pd.DataFrame:
    """(n_rows, p) features of each (frame, class) row, in the row order of `scores_df`."""
    require_columns(scores_df, ["class_id", "n_pixels", *FEATURE_COLUMNS], "scores table (scored with features)")
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
                    class_ids: Sequence[int] | None, target: str) -> pd.DataFrame:
    """(n_frames, p) features of one frame-level target, indexed by ``frame_id``.

    `class_ids` are the target's classes (None: all); `target` (``"frame"`` or a group name)
    names its frames-table columns (`saseg.columns.target_column`).
    """
    require_columns(scores_df, ["frame_id", "class_id", "n_pixels", *FEATURE_COLUMNS], "scores table (scored with features)")
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
        column = target_column(target, s)
        if column in indexed.columns:
            out[column] = indexed[column]
    return out.astype("float64")


def target_iou(iou_df: pd.DataFrame, target: str) -> pd.Series:
    """IoU per frame (for ``frame`` or a group name) or per (frame, class) (``class``)."""
    require_columns(iou_df, ["frame_id", "kind", "target", "class_id", "iou"], "IoU table")
    class_iou = iou_df[iou_df["kind"] == "class"]
    if target == "class":
        return class_iou.set_index(["frame_id", "class_id"])["iou"]
    if target == FRAME:
        return frame_target_iou(iou_df)
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
    source_ : str or None, the folder it was saved to or loaded from
    """

    def __init__(self, *, extra_features: Sequence[str] = (), **model_options):
        self.extra_features = extra_features
        self.model_options = model_options

    def fit(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame, meta: dict, iou_df: pd.DataFrame, *,
            where: object = "the pilot") -> "RunQuality":
        """Fit on a scored pilot's tables (``scores.parquet``, ``frames.parquet``, ``score.json``)
        and its evaluation's ``iou.parquet`` rows; `where` names the pilot (recorded, and in
        errors)."""
        scores_df = scores_df.drop(columns=self._unused_columns(scores_df, where))
        self.classes_ = ClassInfo.from_dict(meta["classes"])
        self.score_columns_ = [c for c in meta["score_columns"] if c not in ("risk",)]
        self.pilot_ = {**run_identity(meta, frames_df["frame_id"]), "run": str(where), "n_frames": int(len(frames_df))}
        self.models_, self.oof_, self.source_ = {}, {}, None
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

    def _unused_columns(self, scores_df: pd.DataFrame, where: object) -> list[str]:
        """The optional feature columns of the groups not asked for; refuses missing ones."""
        groups = list(self.extra_features)
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown:
            raise DataError(f"quality fit: expected extra feature groups from {list(FEATURE_GROUPS)}, "
                            f"but got {unknown}.")
        wanted = {c for g in groups for c in FEATURE_GROUPS[g]}
        missing = sorted(wanted - set(scores_df.columns))
        if missing:
            raise DataError(f"quality fit: expected the pilot {where} to have the columns {missing} of "
                            f"the feature groups {groups} (flip_iou needs `saseg score --tta flip`, "
                            f"temporal_iou saved predictions), but it has not.")
        return [c for c in extra_columns(scores_df) if c not in wanted]

    def _tables(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame) -> dict:
        """target -> (features, keys): keys is a (frame_id, class_id) MultiIndex or frame ids."""
        keys = pd.MultiIndex.from_arrays([scores_df["frame_id"].astype(str), scores_df["class_id"].astype(int)])
        tables = {"class": (class_features(scores_df, self.score_columns_, self.classes_), keys)}
        for g, ids in self.classes_.groups.items():
            X = target_features(scores_df, frames_df, self.score_columns_, ids, g)
            tables[g] = (X.reset_index(drop=True), pd.Index(X.index))
        X = target_features(scores_df, frames_df, self.score_columns_, None, FRAME)
        tables["frame"] = (X.reset_index(drop=True), pd.Index(X.index))
        return tables

    def annotate(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame, meta: dict, *,
                 where: object = "the run") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
        """A scored run's tables and metadata (``score.json``) with ``quality``/``risk`` added.

        Takes tables, not a folder, so `saseg.pipeline.score` applies it before the run's one
        write and ``saseg quality apply`` (`apply_quality`) to a finished run alike; `where`
        names the run in errors. ``risk`` joins ``score_columns`` and ``quality`` records this
        model's folder and pilot."""
        scores_df, frames_df = self.predict(scores_df, frames_df, meta, where=where)
        columns = [c for c in meta["score_columns"] if c != "risk"] + ["risk"]
        meta = {**meta, "score_columns": columns,
                "quality": {"dir": self.source_,
                            "pilot": self.pilot_}}
        return scores_df, frames_df, meta

    def predict(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame, meta: dict, *,
                where: object = "the run") -> tuple[pd.DataFrame, pd.DataFrame]:
        """A run's scores and frames tables (copies) with ``quality``/``risk`` columns added;
        `meta` is its ``score.json`` (classes, score columns, data spec, model hash)."""
        if not hasattr(self, "models_"):
            raise DataError("RunQuality: fit or load it first.")
        run_classes = ClassInfo.from_dict(meta["classes"])
        if run_classes.names != self.classes_.names:
            raise DataError(f"quality model: expected a run with classes {self.classes_.names}, but "
                            f"{where} has {run_classes.names}.")
        scores_df, frames_df = scores_df.copy(), frames_df.copy()
        missing = [c for c in self.score_columns_ if c not in meta["score_columns"]]
        if missing:
            raise DataError(f"quality model: expected the run to have the scores {missing} it was fitted "
                            f"with; score it with the same SA model.")
        fitted = set(self.models_["class"].features_) if "class" in self.models_ else set()
        lacking = [c for c in EXTRA_FEATURE_COLUMNS if c in fitted and c not in scores_df.columns]
        if lacking:
            raise DataError(f"quality model: expected the run to have the feature columns {lacking} it was "
                            f"fitted with, but {where} lacks them; score it as the pilot was "
                            f"(flip_iou needs `saseg score --tta flip`, temporal_iou saved predictions).")
        identity = run_identity(meta, frames_df["frame_id"])
        on_pilot = all(self.pilot_.get(k) == v for k, v in identity.items())
        if on_pilot:
            log.warning("quality: %s holds the pilot's frames; writing out-of-fold predictions.", where)
        for target, (X, keys) in self._tables(scores_df, frames_df).items():
            if target not in self.models_:  # too few pilot rows: no estimate
                quality = np.full(len(X), np.nan)
            else:
                _check_feature_order(self.models_[target], X, where)
                quality = self.models_[target].predict(X)
            if on_pilot and target in self.models_:
                oof = self.oof_[target].set_index("key")["oof"]
                fitted = pd.Series(_key_strings(keys)).map(oof).to_numpy(dtype=np.float64)
                quality = np.where(np.isfinite(fitted), np.clip(fitted, 0.0, 1.0), quality)
            if target == "class":
                scores_df["quality"], scores_df["risk"] = quality, 1.0 - quality
            else:
                series = pd.Series(quality, index=keys)
                values = frames_df["frame_id"].astype(str).map(series).to_numpy(dtype=np.float64)
                frames_df[target_column(target, "quality")] = values
                frames_df[target_column(target, "risk")] = 1.0 - values
        return scores_df, frames_df

    # ---- persistence ------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Each target's model and out-of-fold table, then ``run_quality.json`` with the sha256
        of every file. The old manifest goes first, so a refit killed halfway leaves a folder
        that is refused, never an old manifest over a mix of old and new files."""
        out = QualityDir(directory)
        out.summary_path.unlink(missing_ok=True)
        names, files = {}, {}
        for i, (target, model) in enumerate(self.models_.items()):
            sub = out.target_folder(target, i)
            names[target] = sub
            model.save(out.model_dir(sub))
            write_parquet(out.oof_path(sub), self.oof_[target])
            for path in sorted(out.model_dir(sub).glob("*")):
                if path.is_file() and not path.name.startswith("."):
                    files[f"{sub}/{path.name}"] = sha256_bytes(path.read_bytes())
        write_json(out.summary_path, {
            "format": QUALITY_FORMAT, "format_version": _VERSION, "targets": names,
            "classes": self.classes_.to_dict(), "score_columns": self.score_columns_,
            "pilot": self.pilot_, "model_options": self.model_options, "files": files,
            "extra_features": list(self.extra_features)})
        self.source_ = str(out.root.resolve())
        return out.root

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "RunQuality":
        """Read and check a quality dir: keys and types of the manifest, the sha256 of every
        file it lists, then each model (`QualityModel.load`) and out-of-fold table. Format 1
        (written before content hashes) is still read, without the hash check."""
        folder = QualityDir(directory)
        check_not_unfinished(folder.root)  # a refit killed halfway
        path = folder.summary_path
        meta = read_json(path)
        if not isinstance(meta, dict) or meta.get("format") != QUALITY_FORMAT or meta.get("format_version") not in (1, _VERSION):
            raise FormatError(f"{path}: expected a saseg quality dir (format {QUALITY_FORMAT} v1 or v{_VERSION}, "
                              f"from `saseg quality fit`), but got something else.")
        required = {"format", "format_version", "targets", "classes", "score_columns", "pilot", "model_options"}
        meta = check_keys(meta, required | ({"files"} if meta["format_version"] >= 2 else set()), path,
                          "a quality dir manifest", optional={"extra_features"})
        extra = meta.get("extra_features", [])
        if not isinstance(extra, list) or any(g not in FEATURE_GROUPS for g in extra):
            raise FormatError(f"{path}: expected 'extra_features' as a list of {sorted(FEATURE_GROUPS)}, "
                              f"but got {extra!r}.")
        self = cls(extra_features=extra, **check_params(meta["model_options"], QualityModel().get_params(), path))
        self.source_ = str(folder.root.resolve())
        try:
            self.classes_ = ClassInfo.from_dict(meta["classes"])
        except (DataError, TypeError, AttributeError, KeyError, ValueError) as exc:
            raise FormatError(f"{path}: bad 'classes': {exc}") from None
        columns, pilot, targets = meta["score_columns"], meta["pilot"], meta["targets"]
        if (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
                or not isinstance(pilot, dict) or not isinstance(targets, dict) or "class" not in targets):
            raise FormatError(f"{path}: expected 'score_columns' (a list of names), 'pilot' (an object) "
                              "and 'targets' (an object with 'class').")
        self.score_columns_, self.pilot_ = list(columns), dict(pilot)
        files = meta.get("files")
        self.models_, self.oof_ = {}, {}
        for target, sub in targets.items():
            if not isinstance(sub, str):
                raise FormatError(f"{path}: bad target folder {sub!r}.")
            if files is not None:
                _check_files(folder, sub, files, path)
            self.models_[target] = QualityModel.load(folder.model_dir(sub))
            self.oof_[target] = _read_oof(folder.oof_path(sub))
        return self

    def describe(self) -> str:
        return "\n".join(f"{target}: {model.describe()}" for target, model in self.models_.items())


def _check_files(folder: QualityDir, sub: str, files: dict, manifest: Path) -> None:
    """Every file of a target's folder is listed in the manifest with the content it has."""
    listed = {k: v for k, v in files.items() if isinstance(k, str) and k.startswith(f"{sub}/")}
    needed = [f"{sub}/{QUALITY_META}", f"{sub}/{folder.OOF}"]
    if any(name not in listed for name in needed):
        raise FormatError(f"{manifest}: expected the sha256 of {' and '.join(needed)} "
                          "in 'files', but they are not listed.")
    for name, digest in listed.items():
        path = folder.root / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FormatError(f"Expected {path} (listed in {manifest}), but it does not exist; refit "
                              "with `saseg quality fit`.") from None
        check_sha256(data, digest, path)


def _read_oof(path: Path) -> pd.DataFrame:
    """A target's out-of-fold predictions (``key``, ``oof``): written on the pilot instead of
    in-sample ones."""
    if not path.is_file():
        raise FormatError(f"Expected {path} (the pilot's out-of-fold predictions, written by `saseg "
                          "quality fit`), but it does not exist; refit the quality dir.")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise FormatError(f"Expected a Parquet table in {path}, but it cannot be read: {exc}") from None
    if list(table.columns) != ["key", "oof"] or not pd.api.types.is_float_dtype(table["oof"]):
        raise FormatError(f"{path}: expected the columns ['key', 'oof'] (oof as floats), but got "
                          f"{list(table.columns)}.")
    oof = table["oof"].to_numpy()
    if not ((np.isnan(oof)) | ((oof >= 0) & (oof <= 1))).all():
        raise FormatError(f"{path}: expected out-of-fold IoUs in [0, 1] (or empty), but some are not.")
    return table


def _check_feature_order(model: QualityModel, X: pd.DataFrame, run: object) -> None:
    """The model's features are columns this run has, in the order the run builds them: names
    swapped in ``quality.json`` would otherwise feed each coefficient another column."""
    where = getattr(model, "source_", "quality model")
    missing = [f for f in model.features_ if f not in X.columns]
    if missing:
        raise DataError(f"{where}: expected the run {run} to have the features {missing[:5]} the "
                        "model was fitted on; score it with the same SA model and --features.")
    wanted = set(model.features_)
    if [c for c in X.columns if c in wanted] != list(model.features_):
        raise FormatError(f"{where}: expected the features in the order the run builds them, but they "
                          "are reordered; the file was edited: refit it (`saseg quality fit`).")


def _key_strings(keys: pd.Index) -> list[str]:
    if isinstance(keys, pd.MultiIndex):
        return [f"{f}\0{c}" for f, c in keys]
    return [str(k) for k in keys]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "class"

