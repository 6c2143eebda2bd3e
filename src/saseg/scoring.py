"""Scoring one batch of frames into per-(frame, class) rows: the work of one scoring worker.

`FrameScorer` holds what every worker loads once (the model and the fitted SA estimators)
and turns a batch of frames into a `ScoredBatch`: rows of ``scores.parquet`` and the
predicted masks. It writes nothing: the driver's `saseg.writer.ScoreWriter` does, for both
engines. `run_tables` turns all rows into the run's other tables. The local engine
(`saseg.pipeline.score`) and the Ray engine (`saseg.distributed`) call the same functions,
so their rows are the same by construction. Pixel sampling is seeded per frame id
(`frame_seed`), so neither batch order nor worker order can change a row.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .aggregate import ZScoreReference, class_scores, frame_scores
from .columns import drive_of
from .data import Dataset, Frame
from .errors import DataError, DegenerateDataError
from .estimators import score_names, softmax_scores
from .models import LoadedModel
from .models.checkpoint import nonfinite_frames
from .quality.agreement import (FLIP_COLUMN, TEMPORAL_COLUMN, class_agreement, mirror_frames,
                                temporal_agreement)
from .quality.features import quality_features
from .sampling import sample_pixels
from .tracing import sample_ats

__all__ = ["FrameScorer", "ScoredBatch", "frame_seed", "trace_finite", "run_tables", "score_columns",
           "add_temporal_agreement", "check_tta", "TTA_MODES"]

TTA_MODES = ("flip",)
"""Test-time augmentations `FrameScorer` can add as agreement features (``tta=``)."""


def check_tta(tta: str | None) -> None:
    """None or one of `TTA_MODES`; one line otherwise."""
    if tta is not None and tta not in TTA_MODES:
        raise DataError(f"Expected tta None or one of {list(TTA_MODES)}, but got {tta!r}.")


def frame_seed(seed: int, frame_id: str) -> int:
    """Per-frame seed, so a frame's sampled pixels do not depend on batch or run order."""
    digest = hashlib.sha256(f"{seed}:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def trace_finite(model: LoadedModel, dataset: Dataset | None, frames: list[Frame]):
    """`model.trace`, leaving out (``on_error="skip"``) or refusing frames with NaN/Inf outputs.

    Returns the frames kept and their logits and features; a batch whose frames are all bad
    comes back empty. Without a `dataset` to record the skip, a bad frame raises.
    """
    logits, features = model.trace(frames, check_finite=False)
    bad = set(nonfinite_frames(frames, logits, features))
    if not bad:
        return frames, logits, features
    for frame in frames:
        if frame.frame_id in bad:
            exc = DegenerateDataError(f"Expected finite logits and activations for frame "
                                      f"{frame.frame_id!r} ({frame.source}), but got NaN/Inf.")
            exc.where = frame.frame_id
            if dataset is None:
                raise exc
            dataset.skip(frame.index, exc)
    keep = torch.tensor([f.frame_id not in bad for f in frames], device=logits.device)
    return [f for f in frames if f.frame_id not in bad], logits[keep], features[keep]


def score_columns(estimators: Sequence[str], softmax: bool) -> list[str]:
    """The class-score columns a run aggregates, in order: SA estimators, then every registered
    baseline (`saseg.estimators.SCORES`; what `softmax_scores` returns)."""
    return list(estimators) + (list(score_names("baseline")) if softmax else [])


@dataclass
class ScoredBatch:
    """What `FrameScorer.score_batch` returns for one batch.

    Attributes
    ----------
    rows : DataFrame, the rows of every kept frame, in batch order (empty: none kept)
    predictions : dict frame id -> (H, W) tensor of predicted class ids on the CPU
    """

    rows: pd.DataFrame
    predictions: dict = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.predictions)


class FrameScorer:
    """Per frame and class: mean SA of sampled predicted pixels, softmax baselines and
    quality features (`saseg.quality.features`).

    Parameters
    ----------
    model : LoadedModel
    fitted : mapping name -> fitted SA estimator
    pixels_per_class : int or None (every pixel)
    softmax : bool, also the softmax baselines over the same pixels
    baselines : names of the baselines to compute (default: every registered one, see
        `saseg.estimators.SCORES`); fixed here, so a Ray worker that lacks one fails loudly
    seed : int, the run seed; each frame's pixels use ``frame_seed(seed, frame_id)``
    features : bool, also the quality features (rows then include likely-present classes)
    tta : None or "flip": also run each frame mirrored left-right and add ``flip_iou``
        (`saseg.quality.agreement`); a second forward pass per frame, timed as ``flip_s``

    Attributes
    ----------
    timing : dict stage -> seconds, and ``frames``
    """

    def __init__(self, model: LoadedModel, fitted: Mapping, *, pixels_per_class: int | None = 1000,
                 softmax: bool = True, seed: int = 0, features: bool = True,
                 tta: str | None = None, baselines: Sequence[str] | None = None):
        check_tta(tta)
        self.model = model
        self.tta = tta
        self.fitted = dict(fitted)
        self.pixels_per_class = pixels_per_class
        self.softmax = softmax
        self.baselines = tuple(score_names("baseline") if baselines is None else baselines) if softmax else ()
        self.seed = seed
        self.features = features
        self.timing: dict[str, float] = {"frames": 0}

    def get_params(self) -> dict:
        """The settings besides the model and estimators: ``FrameScorer(model, fitted,
        **get_params())`` rebuilds it (a Ray actor does, from object-store references)."""
        return dict(pixels_per_class=self.pixels_per_class, softmax=self.softmax, seed=self.seed,
                    features=self.features, tta=self.tta, baselines=list(self.baselines))

    def score_batch(self, frames: list[Frame], dataset: Dataset | None = None) -> ScoredBatch:
        """The rows and predicted masks of the batch's kept frames (frames with NaN outputs
        are skipped via `dataset`)."""
        clock = time.perf_counter()
        frames, logits, features = trace_finite(self.model, dataset, frames)
        clock = self._tick("forward_s", clock)
        flip = self._flip_agreement(frames, logits) if self.tta == "flip" and frames else None
        tables, predictions = [], {}
        for b, frame in enumerate(frames):
            pred = logits[b].max(0).indices  # = argmax(0), several times faster over dim 0 on CPU
            tables.append(self.score_frame(frame, logits[b], features[b], pred=pred,
                                           flip_iou=None if flip is None else flip[b]))
            predictions[frame.frame_id] = pred.cpu()
        self.timing["frames"] += len(frames)
        rows = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
        return ScoredBatch(rows, predictions)

    def _flip_agreement(self, frames: list[Frame], logits: torch.Tensor) -> torch.Tensor:
        """(B, C) IoU per class of each prediction with the mirrored frame's, mirrored back;
        a frame whose mirrored pass is not finite gets NaN."""
        clock = time.perf_counter()
        flipped, _ = self.model.trace(mirror_frames(frames), check_finite=False)
        flipped = flipped.flip(-1)
        finite = torch.isfinite(flipped).flatten(1).all(1)
        n_classes = self.model.classes.num_classes
        out = torch.stack([class_agreement(logits[b].max(0).indices, flipped[b].max(0).indices, n_classes)
                           for b in range(len(frames))])
        out[~finite.to(out.device)] = float("nan")
        self._tick("flip_s", clock)
        return out

    def score_frame(self, frame: Frame, logits: torch.Tensor, features: torch.Tensor, *,
                    pred: torch.Tensor | None = None, flip_iou: torch.Tensor | None = None) -> pd.DataFrame:
        """Rows of one frame from its traced logits (C, H, W) and features (d, h, w); `pred`
        is ``argmax`` of the logits over classes when already computed; with `flip_iou` (C,),
        its rows get the ``flip_iou`` column."""
        classes = self.model.classes
        clock = time.perf_counter()
        if pred is None:
            pred = logits.max(0).indices  # = argmax(0), several times faster over dim 0 on CPU
        gen = torch.Generator().manual_seed(frame_seed(self.seed, frame.frame_id))
        ys, xs, cls = sample_pixels(pred, self.pixels_per_class, generator=gen)
        ats = sample_ats(features, ys, xs, pred.shape, align_corners=self.model.align_corners)
        clock = self._tick("sampling_s", clock)
        per_pixel = {}
        for name, est in self.fitted.items():
            per_pixel[name] = est.score(ats, cls, unknown="nan").to(torch.float32)
            clock = self._tick(f"{name}_s", clock)
        if self.softmax:
            per_pixel.update(softmax_scores(logits[:, ys, xs].T, names=self.baselines))
        n_pixels = torch.bincount(pred.flatten(), minlength=classes.num_classes)
        table = class_scores(per_pixel, cls, n_pixels)
        table["at_mean"] = list(_class_means(ats, cls, np.array(table["class_id"])))
        clock = self._tick("aggregate_s", clock)
        if self.features:
            extra = quality_features(logits)
            table = extra.merge(table.drop(columns="n_pixels"), on="class_id", how="left")
            table["n_sampled"] = table["n_sampled"].fillna(0).astype("int64")
            clock = self._tick("features_s", clock)
        if flip_iou is not None:
            table[FLIP_COLUMN] = flip_iou.cpu().numpy()[table["class_id"].to_numpy()]
        table.insert(0, "frame_id", frame.frame_id)
        table.insert(1, "frame_index", frame.index)
        table.insert(2, "source", frame.source)
        table.insert(4, "class_name", [classes.names[c] for c in table["class_id"]])
        return table

    def _tick(self, key: str, since: float) -> float:
        now = time.perf_counter()
        self.timing[key] = self.timing.get(key, 0.0) + now - since
        return now


def add_temporal_agreement(scores_df: pd.DataFrame, prediction: Callable[[str], np.ndarray],
                           num_classes: int) -> pd.DataFrame:
    """`scores_df` with ``temporal_iou``: each row's class IoU with the previous frame of its
    sequence (`saseg.quality.agreement.temporal_agreement`; sequence = `drive_of` the frame id).

    A second pass over the saved predictions (`prediction`: frame id -> (H, W) mask, e.g.
    `RunDir.prediction`), after every frame is scored: unlike state carried from batch to
    batch it cannot depend on batch size, chunking, resumption or which Ray worker scored
    which frame.
    """
    frames = scores_df.drop_duplicates("frame_id")[["frame_id", "frame_index"]]
    ids = frames["frame_id"].astype(str).tolist()
    iou = temporal_agreement(ids, frames["frame_index"].tolist(), [drive_of(f) for f in ids],
                             prediction, num_classes)
    table = np.stack([iou[f] for f in scores_df["frame_id"].astype(str)])
    out = scores_df.copy()
    out[TEMPORAL_COLUMN] = table[np.arange(len(out)), out["class_id"].to_numpy(dtype=np.int64)]
    return out


def run_tables(scores_df: pd.DataFrame, classes, columns: Sequence[str], *,
               reference: ZScoreReference | None = None) -> tuple[pd.DataFrame, ZScoreReference]:
    """The run's frames table (`saseg.aggregate.frame_scores`) and the z-score reference it
    used (fitted on `scores_df` when None), from all rows."""
    ref = reference if reference is not None else ZScoreReference.fit(scores_df, columns)
    return frame_scores(scores_df, classes, columns, reference=ref), ref


def _class_means(ats: torch.Tensor, cls: torch.Tensor, class_ids: np.ndarray) -> np.ndarray:
    """(len(class_ids), d) float32 mean AT per class: the frame embedding used for diversity."""
    sums = torch.zeros(int(cls.max()) + 1, ats.shape[1], dtype=torch.float64, device=ats.device)
    sums.index_add_(0, cls, ats.double())
    counts = torch.bincount(cls, minlength=sums.shape[0]).clamp(min=1).unsqueeze(1)
    return (sums / counts)[torch.as_tensor(class_ids, device=ats.device)].float().cpu().numpy()
