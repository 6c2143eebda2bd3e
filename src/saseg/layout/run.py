"""A scored run's directory: the one place that knows its file names and formats.

``saseg score`` writes a run; ``evaluate``, ``plan``, ``export``, ``video``, ``report`` and the
demo read it, all through `RunDir`::

    RUN/scores.parquet            one row per (frame, predicted class); any name (`from_scores`)
    RUN/frames.parquet            one row per frame: group SAs and the frame SA
    RUN/zscore.json               per-class mean/std used for z-scoring (reusable as a reference)
    RUN/score.json                provenance: model, SA model, data spec, settings, classes,
                                  score columns, frames skipped
    RUN/predictions/<id>.png      predicted class ids (uint8 PNG); ids with "/" nest folders
    RUN/eval/  RUN/plan/  RUN/gallery/  RUN/report/    what the later commands write by default

Everything is written atomically (`saseg.io`), so a reader sees a whole file or none.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..aggregate import ZScoreReference
from ..data import ClassInfo, Dataset, Frame, open_dataset
from ..errors import DataError, FormatError
from ..estimators.base import SurpriseEstimator
from ..estimators.sa_model import load_sa_model
from ..io import (PartStore, atomic_path, atomic_paths, check_not_unfinished, json_text, read_json, write_json,
                  write_parquet)
from ..models import LoadedModel, load_model

__all__ = ["RunDir", "SCORES", "encode_prediction", "frame_relpath", "frame_stem"]

SCORES = "scores.parquet"
FRAMES = "frames.parquet"
META = "score.json"
ZSCORE = "zscore.json"
PREDICTIONS = "predictions"


def frame_relpath(frame_id: str, suffix: str) -> PurePosixPath:
    """The relative path ``<frame_id><suffix>`` a frame's file gets inside a run folder.

    Frame ids are data (a video's name, a folder's relative paths), so they are checked
    before they become paths: an absolute id, an empty one, or one with a ``..`` or ``.``
    component would leave (or alias) its folder, and is refused.
    """
    text = str(frame_id)
    parts = text.replace("\\", "/").split("/")
    if (not text or text.startswith(("/", "\\")) or "\x00" in text
            or any(p in ("", ".", "..") for p in parts)
            or (text[0].isalpha() and text[1:2] == ":" and text[2:3] in ("", "/", "\\"))):
        raise DataError(f"Expected a frame id that names a file inside the run (no absolute path, "
                        f"empty, '.' or '..' part), but got {frame_id!r}.")
    return PurePosixPath(*parts[:-1], parts[-1] + suffix)


def encode_prediction(pred: torch.Tensor | np.ndarray) -> bytes:
    """Predicted class ids (H, W) as the 8-bit PNG a run keeps (class ids < 256)."""
    array = pred.to(torch.uint8).cpu().numpy() if torch.is_tensor(pred) else np.asarray(pred, np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def frame_stem(frame_id: str, *, max_slug: int = 48) -> str:
    """A flat file-name stem unique per frame id: ``<readable slug>-<16 hex of sha256(id)>``.

    Exports, heatmaps and the gallery put frames side by side in one folder. A slug alone
    collides (``d0/1`` and ``d0_1``; ``帧1`` and ``фр1`` both keep only ``1``; ``A`` and ``a`` on
    a case-insensitive disk), so the hash of the exact id makes the name unique; 64 bits keep
    a collision below 1e-7 even among a million frames, and exporters check anyway.
    """
    text = str(frame_id)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:max_slug].strip("._") or "frame"
    return f"{slug}-{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}"


class RunDir:
    """Paths and parts of one scored run (layout in the module docstring).

    Parameters
    ----------
    root : path
        The run folder.
    scores_name : str
        File name of the scores table (``score -o RUN/NAME.parquet`` may choose another).
    """

    def __init__(self, root: str | os.PathLike, *, scores_name: str = SCORES):
        self.root = Path(root)
        self.scores_name = scores_name
        self._meta: dict | None = None

    @classmethod
    def from_scores(cls, scores: str | os.PathLike) -> "RunDir":
        """The run a scores table belongs to (its folder)."""
        scores = Path(scores)
        return cls(scores.parent, scores_name=scores.name)

    @classmethod
    def near(cls, path: str | os.PathLike) -> "RunDir":
        """The scored run at `path`, or beside or above a file inside it (e.g. ``RUN/plan/plan.csv``)."""
        path = Path(path)
        for candidate in (path, path.parent, path.parent.parent):
            if (candidate / META).is_file():
                return cls(candidate)
        raise DataError(f"Expected a scored run ({META} from `saseg score`) at, beside or above "
                        f"{path}, but found none; pass the run dir (--run).")

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # ---- paths ----------------------------------------------------------------------------
    @property
    def scores_path(self) -> Path:
        return self.root / self.scores_name

    @property
    def frames_path(self) -> Path:
        return self.root / FRAMES

    @property
    def meta_path(self) -> Path:
        return self.root / META

    @property
    def zscore_path(self) -> Path:
        return self.root / ZSCORE

    @property
    def predictions_dir(self) -> Path:
        return self.root / PREDICTIONS

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    @property
    def plan_dir(self) -> Path:
        return self.root / "plan"

    @property
    def gallery_dir(self) -> Path:
        return self.root / "gallery"

    @property
    def report_dir(self) -> Path:
        return self.root / "report"

    def has_any_output(self) -> bool:
        """Whether `score` left any of its files here (the report's test for a run dir)."""
        return any(p.exists() for p in (self.meta_path, self.scores_path, self.frames_path))

    # ---- metadata -------------------------------------------------------------------------
    @property
    def is_scored(self) -> bool:
        return self.meta_path.is_file()

    def meta(self) -> dict:
        """``score.json`` (read once): model, SA dir, data spec, settings, classes, score columns."""
        if self._meta is None:
            meta = read_json(self.meta_path)
            if not isinstance(meta, dict):
                raise FormatError(f"{self.meta_path}: expected a JSON object, but got {type(meta).__name__}.")
            self._meta = meta
        return self._meta

    def write_meta(self, meta: dict) -> None:
        write_json(self.meta_path, meta)
        self._meta = dict(meta)

    def _field(self, key: str):
        meta = self.meta()
        if key not in meta:
            raise FormatError(f"{self.meta_path}: expected the field {key!r} (written by `saseg "
                              f"score`), but it is missing.")
        return meta[key]

    def classes(self) -> ClassInfo:
        try:
            return ClassInfo.from_dict(self._field("classes"))
        except (DataError, TypeError, AttributeError, KeyError) as exc:
            raise FormatError(f"{self.meta_path}: bad 'classes': {exc}") from None

    def score_columns(self) -> list[str]:
        """The score names of the run (``mdsa``, ..., then the softmax baselines)."""
        return list(self._field("score_columns"))

    # ---- tables ---------------------------------------------------------------------------
    def scores(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``scores.parquet``: one row per (frame, predicted class)."""
        self.check_finished()
        table = _read_table(self.scores_path, columns)
        if "class_id" in table.columns and len(table) and self.meta_path.is_file():
            ids, n = table["class_id"], self.classes().num_classes
            if not pd.api.types.is_integer_dtype(ids) or ids.min() < 0 or ids.max() >= n:
                raise FormatError(f"{self.scores_path}: expected class ids in 0..{n - 1} (the run's classes), but "
                                  f"got {ids.dtype} values in [{ids.min()}, {ids.max()}] (edited?); score the run again.")
        return table

    def frames(self, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """``frames.parquet``: one row per frame (``frame_<score>``, ``group_<g>_<score>``)."""
        self.check_finished()
        table = _read_table(self.frames_path, columns)
        if "frame_id" in table.columns and table["frame_id"].duplicated().any():
            twice = table.loc[table["frame_id"].duplicated(), "frame_id"].iloc[0]
            raise FormatError(f"{self.frames_path}: expected one row per frame, but {twice!r} has several "
                              "(edited?); score the run again.")
        return table

    def check_finished(self) -> None:
        """Refuse a run that `score` is writing, or left unfinished (its parts folder is there),
        or that another command stopped writing halfway: its tables may be half old, half new."""
        parts = PartStore.parts_dir(self.scores_path)
        if parts.exists():
            raise DataError(f"Expected a finished run in {self.root}, but `saseg score` is writing it "
                            f"or was stopped ({parts} is there); rerun the same score command to "
                            "finish it.")
        check_not_unfinished(self.root)  # e.g. `quality apply` killed between two tables

    def write_scores(self, df: pd.DataFrame) -> None:
        write_parquet(self.scores_path, df)

    def write_annotated(self, scores_df: pd.DataFrame, frames_df: pd.DataFrame, meta: dict) -> None:
        """The scores and frames tables and ``score.json`` of a finished run together (``quality
        apply``): all three are written before any replaces its file, so a failure halfway (a
        full disk) leaves the run as it was, not one model's columns beside another's record."""
        with atomic_paths(self.frames_path, self.scores_path, self.meta_path) as (frames, scores, meta_file):
            frames_df.to_parquet(frames, index=False)
            scores_df.to_parquet(scores, index=False)
            meta_file.write_text(json_text(meta), encoding="utf-8")
        self._meta = dict(meta)

    def write_frames(self, df: pd.DataFrame) -> None:
        write_parquet(self.frames_path, df)

    def zscore(self) -> ZScoreReference:
        return ZScoreReference.load(self.zscore_path)

    def write_zscore(self, reference: ZScoreReference) -> None:
        reference.save(self.zscore_path)

    # ---- predictions ----------------------------------------------------------------------
    def prediction_path(self, frame_id: str) -> Path:
        return self.predictions_dir / frame_relpath(frame_id, ".png")

    def write_prediction(self, frame_id: str, pred: torch.Tensor | np.ndarray) -> None:
        """Save predicted class ids (H, W) as an 8-bit PNG (class ids < 256)."""
        self.write_prediction_png(frame_id, encode_prediction(pred))

    def write_prediction_png(self, frame_id: str, png: bytes) -> None:
        """Save a prediction already encoded by `encode_prediction` (e.g. on a Ray worker)."""
        with atomic_path(self.prediction_path(frame_id)) as tmp:
            tmp.write_bytes(png)

    def prediction(self, frame_id: str) -> np.ndarray:
        """The predicted class-id mask (H, W) int64 that `score` saved for a frame."""
        path = self.prediction_path(frame_id)
        try:
            with Image.open(path) as img:
                mask = np.asarray(img, dtype=np.int64)
        except FileNotFoundError:
            raise FormatError(f"Expected a saved prediction at {path}; rerun `saseg score` "
                              "without --no-predictions.") from None
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # truncated, not a PNG, too large
            raise FormatError(f"Expected the prediction PNG `saseg score` saved at {path}, but it cannot be "
                              f"read ({exc}); score the run again.") from None
        if mask.ndim != 2:
            raise FormatError(f"Expected a class-id PNG (one channel) at {path}, but it has shape {mask.shape}; "
                              "score the run again.")
        return mask

    # ---- what the run was scored with -----------------------------------------------------
    def dataset(self, **options) -> Dataset:
        """The scored dataset, reopened from the canonical spec in ``score.json``."""
        return open_dataset(self._field("data"), **options)

    def frame_lookup(self) -> Callable[[str], Frame]:
        """``frame_id -> Frame`` over the scored dataset, by the frame indices the run recorded.

        An id the run does not hold is a `DataError`; so is a dataset whose frame at the
        recorded index has another id (the data changed since scoring).
        """
        dataset = self.dataset()
        frames = self.frames(["frame_id", "frame_index"])
        index_of = dict(zip(frames["frame_id"], frames["frame_index"].astype(int)))

        def frame_for(frame_id: str) -> Frame:
            if frame_id not in index_of:
                raise DataError(f"Expected a frame of the run {self.root}, but {frame_id!r} is not in "
                                f"{self.frames_path}.")
            i = index_of[frame_id]
            frame = dataset[i] if 0 <= i < len(dataset) else None
            if frame is None or frame.frame_id != frame_id:
                found = "no frame" if frame is None else repr(frame.frame_id)
                raise DataError(f"Expected frame {frame_id!r} at index {i} of {dataset.spec}, but "
                                f"found {found}; the data changed since scoring.")
            return frame

        return frame_for

    def frame_sources(self) -> dict[str, str]:
        """``frame_id -> source`` (file path or spec) as the run recorded it."""
        table = self.scores(["frame_id", "source"]).drop_duplicates("frame_id")
        return dict(zip(table["frame_id"].astype(str), table["source"].astype(str)))

    def sa_model(self, names: Sequence[str] | None = None) -> tuple[dict[str, SurpriseEstimator], dict]:
        """The run's SA estimators (all, or `names`) and their provenance."""
        return load_sa_model(self._field("sa_dir"), names)

    def model(self, device: str | torch.device = "cpu") -> LoadedModel:
        """The checkpoint the run was scored with."""
        return load_model(self._field("model_path"), device=device)


def _read_table(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    """A Parquet table, with one clear error when it is missing, truncated or lacks columns."""
    if not path.is_file():
        raise DataError(f"Expected {path} (written by `saseg score`), but it does not exist.")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise FormatError(f"Expected a Parquet table in {path}, but it cannot be read: {exc}") from None
    if columns is not None:
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise FormatError(f"Expected columns {missing} in {path}, but got {list(df.columns)}.")
        df = df[list(columns)]
    return df
