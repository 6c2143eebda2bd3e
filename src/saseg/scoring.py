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

from .aggregate import ZScoreReference, frame_scores, group_scores
from .columns import drive_of
from .data import Dataset, Frame
from .errors import DataError, DegenerateDataError
from .estimators import score_names, softmax_scores
from .models import LoadedModel
from .quality.agreement import (FLIP_COLUMN, TEMPORAL_COLUMN, class_agreement, mirror_frames,
                                temporal_agreement)
from .quality.features import batch_quality_features
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
    logits, features, bad = model.trace_checked(frames)
    bad = set(bad)
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
        are skipped via `dataset`).

        One pass over the batch: each frame's pixels are drawn with its own seed, then the
        SA estimators and baselines score every sampled pixel of the batch in one call, the
        class scores of all (frame, class) groups come from one sort per score
        (`saseg.aggregate.group_scores`), the quality features from one bincount per map
        (`saseg.quality.features.batch_quality_features`), and the table is built once,
        from columns. Rows equal those of scoring each frame alone, to float rounding of
        the means (tests keep that per-frame implementation as the reference).
        """
        clock = time.perf_counter()
        frames, logits, features = trace_finite(self.model, dataset, frames)
        clock = self._tick("forward_s", clock)
        if not frames:
            return ScoredBatch(pd.DataFrame(), {})
        flip = self._flip_agreement(frames, logits) if self.tta == "flip" else None
        clock = time.perf_counter()
        n_classes, batch = self.model.classes.num_classes, len(frames)
        pred = logits.max(1).indices  # = argmax(1), several times faster over the class dim on CPU
        ys, xs, cls, frame = [], [], [], []
        ats = []
        for b, f in enumerate(frames):
            gen = torch.Generator().manual_seed(frame_seed(self.seed, f.frame_id))
            y, x, c = sample_pixels(pred[b], self.pixels_per_class, generator=gen)
            ats.append(sample_ats(features[b], y, x, pred.shape[1:], align_corners=self.model.align_corners))
            ys.append(y), xs.append(x), cls.append(c), frame.append(torch.full_like(c, b))
        ys, xs, cls, frame, ats = (torch.cat(t) for t in (ys, xs, cls, frame, ats))
        clock = self._tick("sampling_s", clock)
        per_pixel = {}
        for name, est in self.fitted.items():
            per_pixel[name] = est.score(ats, cls, unknown="nan").to(torch.float32)
            clock = self._tick(f"{name}_s", clock)
        if self.softmax:
            per_pixel.update(softmax_scores(logits[frame, :, ys, xs], names=self.baselines))
        groups, n_sampled, stats = group_scores(per_pixel, frame * n_classes + cls)
        batch_keys = n_classes * torch.arange(batch, device=pred.device).view(batch, 1, 1)
        n_pixels = torch.bincount((pred + batch_keys).flatten(), minlength=batch * n_classes).cpu().numpy()
        at_mean = _group_means(ats, frame * n_classes + cls, groups)
        columns = {"frame": groups // n_classes, "class_id": groups % n_classes,
                   "n_pixels": n_pixels[groups].astype(np.int64), "n_sampled": n_sampled, **stats}
        clock = self._tick("aggregate_s", clock)
        if self.features:
            extra = batch_quality_features(logits, pred=pred)
            rows = extra["frame"] * n_classes + extra["class_id"]  # a superset of the sampled groups
            at = np.searchsorted(groups, rows).clip(max=max(len(groups) - 1, 0))
            found = (groups[at] == rows) if len(groups) else np.zeros(len(rows), bool)
            sampled = {"n_sampled": np.where(found, n_sampled[at] if len(groups) else 0, 0).astype(np.int64)}
            for name, values in stats.items():
                sampled[name] = np.where(found, values[at] if len(groups) else np.nan, np.nan)
            at_mean = [at_mean[i] if ok else np.nan for i, ok in zip(at, found)]
            columns = {**extra, **sampled}
            clock = self._tick("features_s", clock)
        frame_of, class_of = columns["frame"], columns["class_id"]
        table = self._table(frames, columns, at_mean)
        if flip is not None:
            table[FLIP_COLUMN] = flip.cpu().numpy()[frame_of, class_of]
        self.timing["frames"] += batch
        return ScoredBatch(table, {f.frame_id: pred[b].cpu() for b, f in enumerate(frames)})

    def _table(self, frames: list[Frame], columns: dict, at_mean: list) -> pd.DataFrame:
        """The batch's rows from columns (``frame`` indexes `frames`), in the order of a run."""
        names = self.model.classes.names
        columns = dict(columns)
        frame, class_id = columns.pop("frame"), columns.pop("class_id").astype(np.int64)
        return pd.DataFrame({
            "frame_id": [frames[i].frame_id for i in frame],
            "frame_index": np.array([frames[i].index for i in frame], dtype=np.int64),
            "source": [frames[i].source for i in frame],
            "class_id": class_id, "class_name": [names[c] for c in class_id],
            **columns, "at_mean": list(at_mean)})

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

    def _tick(self, key: str, since: float) -> float:
        """Add the time since `since` to stage `key`; on a GPU after its queued work is done,
        so each stage is charged its own kernels."""
        if self.model.device.type == "cuda":
            torch.cuda.synchronize(self.model.device)
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


def _group_means(ats: torch.Tensor, keys: torch.Tensor, groups: np.ndarray) -> list[np.ndarray]:
    """The mean AT (float32, (d,)) of each group in `groups` (ascending keys present in
    `keys`), summed in float64: the frame embedding of a (frame, class) used for diversity.

    A batch's pixels come frame after frame, each frame's sorted by class, so each group is
    one run of rows: a sum per run (4x faster than ``index_add_`` over all rows on the CPU)."""
    if len(keys) and bool((keys[1:] >= keys[:-1]).all()):
        counts = torch.unique_consecutive(keys, return_counts=True)[1]
        sums = torch.stack([run.sum(0, dtype=torch.float64) for run in torch.split(ats, counts.tolist())])
    else:
        inverse = torch.searchsorted(torch.as_tensor(groups, device=keys.device), keys)
        sums = torch.zeros(len(groups), ats.shape[1], dtype=torch.float64, device=ats.device)
        sums.index_add_(0, inverse, ats.double())
        counts = torch.bincount(inverse, minlength=len(groups))
    return list((sums / counts.clamp(min=1).unsqueeze(1)).float().cpu().numpy())
