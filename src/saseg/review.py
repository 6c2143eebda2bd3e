"""Per-pixel scores for whole frames: review frames, review videos and the report's gallery.

The scorer samples pixels; these views score *every* pixel of a frame (paper 5.2): against the
SA model of its predicted class for a surprise score, from the logits for a baseline
(`saseg.estimators.SCORES` says which a name is), so they are run on the frames a person will
look at.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from .columns import default_ranking_score
from .data import Dataset, Frame, as_dataset
from .errors import DataError
from .estimators import baseline_map, pixel_sa_map, score_kind, score_names
from .estimators.sa_model import check_fitted_on, load_sa_model
from .io import write_json
from .models import as_model
from .layout import RunDir, frame_stem
from .viz.heatmap import scale_from_values
from .viz.review_frame import review_frame, save_png
from .viz.video import write_video

log = logging.getLogger(__name__)


class Reviewer:
    """Model + one per-pixel score, turning frames into (prediction, per-pixel score) pairs.

    Parameters
    ----------
    model : checkpoint dir or LoadedModel
    sa_dir : SA model dir, needed for a surprise score (None is fine for a baseline)
    score : a name in `saseg.estimators.SCORES` ("mdsa", ..., "entropy", ...)
    """

    def __init__(self, model, sa_dir: str | Path | None, *, score: str = "mdsa", device: str = "cpu",
                 allow_mismatch: bool = False):
        kind = score_kind(score)
        if kind is None:
            raise DataError(f"Expected a per-pixel score from {list(score_names())}, but got {score!r}.")
        if kind == "surprise" and sa_dir is None:
            raise DataError(f"Expected an SA model dir for the surprise score {score!r}, but got none.")
        self.model = as_model(model, device)
        self.score, self.estimator = score, None
        if kind == "surprise":
            fitted, provenance = load_sa_model(sa_dir, [score])
            check_fitted_on(provenance, sha256=self.model.sha256, layer=self.model.layer,
                            classes=self.model.classes.to_dict(), sa_dir=sa_dir,
                            allow_mismatch=allow_mismatch)
            self.estimator = fitted[score]

    @classmethod
    def for_run(cls, run: RunDir, *, score: str = "mdsa", device: str = "cpu") -> "Reviewer":
        """The model and SA model a run was scored with."""
        meta = run.meta()
        return cls(meta["model_path"], meta["sa_dir"], score=score, device=device)

    def maps(self, frames: Sequence[Frame]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """For each frame: predicted class ids (H, W) int64 and the per-pixel score (H, W) float32."""
        logits, features = self.model.trace(frames)
        preds = logits.argmax(1)
        baseline = None if self.estimator is not None else baseline_map(self.score, logits, dim=1)
        for b in range(len(frames)):
            if baseline is not None:
                values = baseline[b]
            else:
                values = pixel_sa_map(features[b], preds[b], self.estimator,
                                      align_corners=self.model.align_corners)
            yield preds[b].cpu().numpy(), values.cpu().numpy()

    def colour_scale(self, dataset: Dataset, n: int = 6):
        """One colour scale for a whole run: 1st-99th percentile over `n` evenly spaced frames."""
        idx = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).astype(int))
        values = [sa[np.isfinite(sa)] for f in idx for _, sa in self.maps([dataset[int(f)]])]
        return scale_from_values(np.concatenate(values))

    def render(self, frames: Iterable[Frame], *, scale, threshold: float | None = None,
               frame_sa: dict[str, float] | None = None) -> Iterator[tuple[Frame, np.ndarray]]:
        """Review frames (paper Figure 6) in the order given."""
        classes = self.model.classes
        for frame in frames:
            for pred, sa in self.maps([frame]):
                yield frame, review_frame(frame.image, pred, sa, classes, label=frame.label,
                                          threshold=threshold, scale=scale,
                                          frame_id=frame.frame_id,
                                          frame_sa=(frame_sa or {}).get(frame.frame_id))


def write_review_video(model, sa_dir, data: Dataset | str, out: str | Path, *, split=None,
                       fps: float = 10, start: int = 0, max_frames: int | None = None,
                       threshold: float | None = None, score: str = "mdsa",
                       device: str = "cpu", progress: bool = True,
                       allow_mismatch: bool = False) -> Path:
    """Render consecutive frames (sequence order) into an H.264 MP4 review video of the
    per-pixel `score` (any name in `saseg.estimators.SCORES`)."""
    dataset = as_dataset(data, split)
    stop = len(dataset) if max_frames is None else min(len(dataset), start + max_frames)
    if start >= stop:
        raise DataError(f"Expected frames from index {start}, but {dataset.spec} has {len(dataset)}.")
    reviewer = Reviewer(model, sa_dir, score=score, device=device, allow_mismatch=allow_mismatch)
    scale = reviewer.colour_scale(dataset)
    frames = (dataset[i] for i in range(start, stop))
    images = (img for _, img in reviewer.render(frames, scale=scale, threshold=threshold))
    return write_video(images, out, fps=fps, progress=progress, total=stop - start)


def write_gallery(run_dir: str | Path | RunDir, *, n: int = 6, score: str | None = None,
                  device: str = "cpu") -> list[dict]:
    """Review frames of the `n` most and least surprising frames of a scored run.

    Writes ``RUN/gallery/{top,bottom}/<k>_<frame id>.png`` and ``RUN/gallery/index.json``
    (what the HTML report shows as paper Figure 8).
    """
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    frames_df = run.frames()
    score = score or default_ranking_score(frames_df.columns, run.score_columns())
    ranked = frames_df.dropna(subset=[score]).sort_values(score, ascending=False, kind="stable")
    picks = [("top", ranked.head(n)), ("bottom", ranked.tail(n).iloc[::-1])]
    frame_for = run.frame_lookup()
    reviewer = Reviewer.for_run(run, score=run_pixel_score(run), device=device)
    scale = reviewer.colour_scale(run.dataset())
    values = dict(zip(frames_df["frame_id"], frames_df[score]))
    entries = []
    for which, rows in picks:
        frames = [frame_for(fid) for fid in rows["frame_id"]]
        for k, (frame, img) in enumerate(reviewer.render(frames, scale=scale, frame_sa=values), 1):
            path = Path(run.gallery_dir.name) / which / f"{k:02d}_{frame_stem(frame.frame_id)}.png"
            save_png(run.root / path, img)
            entries.append({"frame_id": frame.frame_id, "rank": k, "which": which,
                            "frame_sa": float(values[frame.frame_id]), "score": score,
                            "path": str(path)})
    write_json(run.gallery_dir / "index.json", entries)
    return entries


def run_pixel_score(run: RunDir) -> str:
    """The per-pixel score a run's heatmaps show: its first surprise score (the SA model's
    first estimator), else its first baseline."""
    columns = run.score_columns()
    for kind in ("surprise", "baseline"):
        found = [c for c in columns if score_kind(c) == kind]
        if found:
            return found[0]
    raise DataError(f"Expected a per-pixel score from {list(score_names())} among the scores of "
                    f"{run.root}, but got {columns}.")


def heatmaps_for_run(run_dir: str | Path | RunDir, *, score: str | None = None, device: str = "cpu"):
    """A `frame_id -> (H, W) per-pixel score` callable over a scored run (for the FiftyOne
    export); `score` defaults to `run_pixel_score`."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    frame_for = run.frame_lookup()
    reviewer = Reviewer.for_run(run, score=score or run_pixel_score(run), device=device)

    def heatmap_for(frame_id: str) -> np.ndarray:
        return next(reviewer.maps([frame_for(frame_id)]))[1]

    return heatmap_for
