"""fit and score as plain functions: trace the frames, then hand off (paper 5.1, Figure 5).

``fit`` samples labelled pixels, reads their ATs and fits the estimators (an SA model dir,
`saseg.estimators.sa_model`); ``score`` samples predicted pixels, scores them and aggregates
class, group and frame SA into a run dir (`saseg.layout.RunDir`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from . import __version__
from .aggregate import ZScoreReference
from .data import Dataset, as_dataset, iter_batches, prefetched
from .errors import DataError
from .estimators import DEFAULT_BASELINES, ESTIMATORS, fit_per_class, make_estimator, score_names
from .estimators.sa_model import check_fitted_on, load_sa_model, sa_model_sha256, save_sa_model
from .io import PartStore
from .models import as_model
from .progress import progress_bar
from .layout import RunDir
from . import distributed
from .collect import PixelCollector
from .distributed import RayOptions
from .scoring import FrameScorer, add_temporal_agreement, check_tta, run_tables, score_columns
from .writer import ScoreWriter

log = logging.getLogger(__name__)



def check_pixels_per_class(pixels_per_class: int | None) -> None:
    """None means every pixel; anything else must be a positive count."""
    if pixels_per_class is not None and int(pixels_per_class) < 1:
        raise DataError(f"Expected pixels_per_class >= 1 (or None for every pixel), but got "
                        f"{pixels_per_class}.")


ENGINES = ("local", "ray")


def check_engine(engine: str, ray_options: RayOptions | None, device: str) -> RayOptions | None:
    """The Ray options to run with (None for the local engine); one line for a bad choice."""
    if engine not in ENGINES:
        raise DataError(f"Expected engine to be one of {list(ENGINES)}, but got {engine!r}.")
    if engine == "local":
        return None
    if str(device) != "cpu":
        raise DataError(f"Expected --device cpu with --engine ray (workers take GPUs with "
                        f"--gpus-per-worker), but got {device!r}.")
    distributed.require_ray()
    return ray_options or RayOptions()


def _progress(total, desc, enabled):
    return progress_bar(total=total, desc=desc, unit="frame", enabled=enabled)


# --------------------------------------------------------------------------------------- fit
def fit(model, data: Dataset | str, out_dir: str | Path, *, split: str | None = "train",
        estimators: Sequence[str] = ("mdsa",), pixels_per_class: int | None = 100,
        max_images: int | None = 10_000, max_ats_per_class: int | None = 10_000, seed: int = 0,
        batch_size: int = 8, device: str = "cpu", progress: bool = True, on_error: str = "raise",
        min_ats_per_class: int = 10, engine: str = "local", ray_options: RayOptions | None = None,
        **estimator_options) -> dict:
    """Fit per-class SA models on training pixels and save them with provenance to `out_dir`.

    Pixels are sampled by their *label* class (paper 5.1: 100 px per class per image from up
    to 10,000 images, then up to 10,000 ATs per class). ``max_ats_per_class=None`` streams
    every sampled AT into MDSA's moments (LSA and DSA need a capped reference set).
    Classes with fewer than `min_ats_per_class` ATs are left out (recorded in ``sa.json`` as
    ``dropped_classes``): their pixels get no SA (NaN) when scoring rather than a noisy one.
    With ``engine="ray"`` frames are traced by Ray workers (`saseg.distributed`) whose
    samples are merged: the same reservoir, and MDSA moments equal to float64 rounding.
    Returns the provenance written to ``sa.json``.
    """
    check_pixels_per_class(pixels_per_class)
    ray_options = check_engine(engine, ray_options, device)
    estimators = tuple(e.lower() for e in estimators)
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown or not estimators:
        raise DataError(f"Expected estimators from {list(ESTIMATORS)}, but got {list(estimators)}.")
    streaming = max_ats_per_class is None
    dropped: dict[str, object] = {}  # class -> ATs seen, or why its model failed
    if streaming and set(estimators) - {"mdsa"}:
        raise DataError("Expected max_ats_per_class to be set for LSA/DSA (a KDE over every "
                        "pixel is impractical), but got None.")
    model = as_model(model, device)
    dataset = as_dataset(data, split, on_error=on_error)
    if not dataset.has_labels:
        raise DataError(f"Expected labelled training data to fit SA models, but {dataset.spec} has no labels.")
    classes = dataset.classes
    rng = np.random.default_rng(seed)
    indices = np.arange(len(dataset))
    if max_images is not None and len(indices) > max_images:
        indices = np.sort(rng.choice(indices, size=max_images, replace=False))

    collector = PixelCollector(model, classes, pixels_per_class=pixels_per_class, seed=seed,
                               max_ats_per_class=max_ats_per_class,
                               mdsa_options=estimator_options.get("mdsa", {}))
    started = time.perf_counter()
    if ray_options is not None:
        sample = distributed.collect_pixels(collector, dataset, indices, batch_size=batch_size,
                                            options=ray_options, progress=progress, on_error=on_error)
    else:
        sample = collector.empty()
        bar = _progress(len(indices), "fit: tracing", progress)
        for frames in prefetched(iter_batches(dataset, indices, batch_size)):  # reads ahead
            collector.add_batch(sample, frames, dataset)
            bar.update(len(frames))
        bar.close()
    counts, n_used, reservoir = sample.counts, sample.n_used, sample.reservoir
    if not counts:
        raise DataError(f"Expected labelled pixels in {dataset.spec}, but every sampled pixel was ignored.")

    names = [classes.names[c] for c in range(classes.num_classes)]
    fitted = {}
    if streaming:
        fitted["mdsa"] = sample.mdsa.finalize()
    else:
        ats, cls = reservoir.to_arrays()
        for name in estimators:
            log.info("fitting %s on %d ATs", name, len(cls))
            fitted[name], too_few, failed = fit_per_class(
                make_estimator(name, **estimator_options.get(name, {})), ats, cls,
                class_names=names, min_ats_per_class=min_ats_per_class)
            dropped.update({classes.names[c]: n for c, n in too_few.items()})
            dropped.update({f"{classes.names[c]} ({name})": why for c, why in failed.items()})
    provenance = {
        "saseg_version": __version__,
        "estimators": list(fitted),
        "model": {"path": model.path, "sha256": model.sha256,
                  "layer": model.layer, "capture": model.capture, "align_corners": model.align_corners},
        "data": {"spec": dataset.spec, "n_frames": len(dataset), "n_used": n_used,
                 "skipped": [list(s) for s in dataset.skipped + sample.skipped]},
        "sampler": {"pixels_per_class": pixels_per_class, "max_images": max_images,
                    "max_ats_per_class": max_ats_per_class, "seed": seed},
        "classes": classes.to_dict(),
        "sampled_per_class": {classes.names[c]: n for c, n in sorted(counts.items())},
        "dropped_classes": dropped,
        "fitted_per_class": ({classes.names[int(c)]: int(n) for c, n in
                              zip(*np.unique(reservoir.to_arrays()[1].numpy(), return_counts=True))}
                             if not streaming else {classes.names[c]: n for c, n in sorted(counts.items())}),
        "seconds": round(time.perf_counter() - started, 2),
    }
    save_sa_model(out_dir, fitted, provenance)
    return provenance


# ------------------------------------------------------------------------------------- score
def score(model, sa_dir: str | Path, data: Dataset | str, out: str | Path, *,
          split: str | None = "test", pixels_per_class: int | None = 1000,
          estimators: Sequence[str] | None = None, softmax: bool = True, seed: int = 0,
          batch_size: int = 8, device: str = "cpu", reference: str | Path | None = None,
          resume: bool = True, save_predictions: bool = True, chunk_frames: int | None = None,
          progress: bool = True, on_error: str = "raise", allow_mismatch: bool = False,
          features: bool = True, quality=None, engine: str = "local",
          ray_options: RayOptions | None = None, tta: str | None = None):
    """Score every frame: per predicted class, the mean SA of up to `pixels_per_class` pixels.

    With `features`, each row also holds the quality features of `saseg.quality.features`,
    and classes likely present but not predicted get rows too (``n_pixels`` 0, SA NaN).
    With `quality` (a loaded quality model, ``saseg.analysis.quality.RunQuality.load(dir)``,
    or anything with its ``annotate(scores_df, frames_df, meta, where=)``), ``quality`` and
    ``risk`` columns are added before the tables are written. With `features` and
    `save_predictions`, rows also get ``temporal_iou`` (IoU with the previous frame of the
    same sequence, from the saved masks after all frames are scored). ``tta="flip"`` adds
    ``flip_iou`` (agreement with the mirrored frame's prediction) at the cost of a second
    forward pass per frame (`saseg.scoring.FrameScorer`).

    Writes ``scores.parquet`` (one row per frame and predicted class), ``frames.parquet``
    (z-scored class-group SAs and the frame SA) and the run files listed in the module doc,
    each once, at the end (`saseg.writer.ScoreWriter` writes masks and parts on the way).
    Work is saved in chunks, so a killed run restarted with the same arguments resumes and
    ends with exactly the rows an uninterrupted run writes. Returns the scores DataFrame.
    An SA model fitted on another network, layer or class list is refused unless
    `allow_mismatch` (then logged). With ``engine="ray"`` the frames are scored by Ray
    workers (`saseg.distributed`, options in `ray_options`) into the same parts and files:
    the same rows, and a killed run resumes the same way.
    """
    check_pixels_per_class(pixels_per_class)
    check_tta(tta)
    if quality is not None and not callable(getattr(quality, "annotate", None)):
        raise DataError(f"Expected quality to be a loaded quality model (RunQuality.load(dir)), but got "
                        f"{type(quality).__name__}.")
    ray_options = check_engine(engine, ray_options, device)
    run = RunDir.from_scores(out)
    model = as_model(model, device)
    fitted, sa_meta = load_sa_model(sa_dir, estimators)
    check_fitted_on(sa_meta, sha256=model.sha256, layer=model.layer, classes=model.classes.to_dict(),
                    sa_dir=sa_dir, allow_mismatch=allow_mismatch)
    dataset = as_dataset(data, split, on_error=on_error)
    z_reference = ZScoreReference.load(reference) if reference else None  # checked before the run is touched
    others = sorted(p.name for p in run.root.glob("*.parquet") if p.name not in (run.scores_name, run.frames_path.name))
    if others:
        raise DataError(f"Expected {run.root} to hold one run, but it holds {others[0]} besides {run.scores_name}: "
                        "two scores files in one folder would share its frames.parquet, score.json and "
                        "predictions; write each run to its own folder.")
    classes = model.classes
    chunk_frames = chunk_frames or batch_size * 8
    fingerprint = dataset.fingerprint()
    # Everything that changes rows or files, by content: a resumed run must not mix results.
    settings = {"model_sha256": model.sha256, "sa_dir": str(Path(sa_dir).resolve()),
                "sa_sha256": sa_model_sha256(sa_dir), "estimators": list(fitted),
                "data": dataset.spec, "n_frames": len(dataset),
                "frame_ids_sha256": fingerprint["ids_sha256"],
                **({"frame_files_sha256": fingerprint["files_sha256"]} if "files_sha256" in fingerprint else {}),
                "pixels_per_class": pixels_per_class, "softmax": softmax, "seed": seed,
                "batch_size": batch_size, "chunk_frames": chunk_frames,
                "save_predictions": bool(save_predictions), "features": bool(features), "tta": tta}
    if softmax and score_names("baseline") != DEFAULT_BASELINES:  # a registered baseline changes the rows
        settings["baselines"] = list(score_names("baseline"))
    store = PartStore(run.scores_path, settings, resume=resume)
    # From here on the folder holds this run's files: drop the old run's ``score.json`` (the
    # mark of a whole run, written last) first, so a run killed halfway leaves a resumable
    # run that readers refuse, never the old metadata over a mix of old and new files.
    run.meta_path.unlink(missing_ok=True)
    done = store.done_chunks()
    if not done:  # a fresh run: the old run's masks of frames this one lacks must not stay behind
        shutil.rmtree(run.predictions_dir, ignore_errors=True)
    n = len(dataset)
    pending = [c for c in range((n + chunk_frames - 1) // chunk_frames) if c not in done]
    done_frames = min(n, len(done) * chunk_frames)
    scorer = FrameScorer(model, fitted, pixels_per_class=pixels_per_class, softmax=softmax, seed=seed,
                         features=features, tta=tta)
    with ScoreWriter(store, run if save_predictions else None) as writer:
        if ray_options is not None:
            timing = distributed.score_chunks(
                scorer, dataset, pending, chunk_frames=chunk_frames, batch_size=batch_size, writer=writer,
                options=ray_options, progress=progress, on_error=on_error, done_frames=done_frames)
        else:
            bar = _progress(n, "score", progress)
            bar.update(done_frames)
            for chunk in pending:
                rows = []
                skipped_before = len(dataset.skipped)
                indices = range(chunk * chunk_frames, min(n, (chunk + 1) * chunk_frames))
                for frames in prefetched(iter_batches(dataset, indices, batch_size)):  # reads ahead
                    batch = scorer.score_batch(frames, dataset)
                    for frame_id, mask in batch.predictions.items():
                        writer.write_prediction(frame_id, mask)
                    rows.append(batch.rows)
                    bar.update(batch.n_frames)
                rows = [r for r in rows if len(r)]
                writer.write_part(chunk, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(),
                                  notes=[list(entry) for entry in dataset.skipped[skipped_before:]])
            bar.close()
            timing = dict(scorer.timing)
    if save_predictions:
        timing["predictions_s"] = writer.seconds

    scores_df = store.finish(sort_by=["frame_index", "class_id"])
    if scores_df.empty:
        raise DataError(f"Expected frames to score in {dataset.spec}, but none could be read.")
    if features and save_predictions:
        scores_df = add_temporal_agreement(scores_df, run.prediction, classes.num_classes)
    columns = score_columns(fitted, softmax)
    frames_df, zscore = run_tables(scores_df, classes, columns,
                                   reference=z_reference)
    meta = {
        "saseg_version": __version__, **settings, "model_path": model.path,
        "classes": classes.to_dict(), "score_columns": columns, "sa_provenance": sa_meta,
        "reference": str(reference) if reference else "self", "skipped": store.notes(),
        "timing_this_session": timing, "engine": engine,
        "predictions": run.predictions_dir.name if save_predictions else None,
    }
    if quality is not None:
        scores_df, frames_df, meta = quality.annotate(scores_df, frames_df, meta, where=run.root)
    # each file once; score.json last: its presence marks a whole run
    run.write_zscore(zscore)
    run.write_frames(frames_df)
    run.write_scores(scores_df)
    run.write_meta(meta)
    store.cleanup()
    return scores_df
