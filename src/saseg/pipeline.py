"""fit, score and evaluate as plain functions over the pieces (paper section 5.1, Figure 5).

Run layout written by `score` (everything later commands need sits beside scores.parquet)::

    RUN/scores.parquet      one row per (frame, predicted class)
    RUN/frames.parquet      one row per frame: group SAs and the frame SA
    RUN/zscore.json         per-class mean/std used for z-scoring (reusable as a reference)
    RUN/score.json          provenance: model, SA model, data spec, settings
    RUN/predictions/<frame_id>.png   predicted class ids (uint8), for evaluate/export/video
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from . import __version__
from .data import Dataset, Frame, open_dataset
from .errors import DataError, DegenerateDataError, FormatError
from .io import PartStore, read_json, write_json, write_parquet

log = logging.getLogger(__name__)

ESTIMATOR_NAMES = ("mdsa", "lsa", "dsa")
SOFTMAX_NAMES = ("max_softmax", "entropy", "margin")


def as_dataset(data: Dataset | str, split: str | None, **options) -> Dataset:
    """Open a spec; `split` is a command's default, so it only applies to split layouts."""
    from .data.specs import has_splits

    if not isinstance(data, str):
        return data
    return open_dataset(data, split=split if has_splits(data) else None, **options)


def as_model(model, device: str):
    from .models import LoadedModel, load_model

    return model if isinstance(model, LoadedModel) else load_model(model, device=device)


def frame_seed(seed: int, frame_id: str) -> int:
    """Per-frame seed, so a frame's sampled pixels do not depend on batch or run order."""
    digest = hashlib.sha256(f"{seed}:{frame_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def _batches(dataset: Dataset, indices: Sequence[int], batch_size: int) -> Iterable[list[Frame]]:
    """Frames in order, batched; a batch never mixes image sizes (the model needs one size)."""
    batch: list[Frame] = []
    for i in indices:
        try:
            frame = dataset[i]
        except DataError as exc:
            dataset.skip(i, exc)
            continue
        if batch and (len(batch) == batch_size or frame.image.shape != batch[0].image.shape):
            yield batch
            batch = []
        batch.append(frame)
    if batch:
        yield batch


def _forward(model, tracer, frames: list[Frame]):
    x = model.preprocess([f.image for f in frames])
    logits, features = tracer(x)
    if not torch.isfinite(features).all():
        bad = [f.frame_id for f, ok in zip(frames, torch.isfinite(features).flatten(1).all(1)) if not ok]
        raise DegenerateDataError(f"Expected finite activations, but got NaN/Inf for frames {bad[:5]}.")
    size = frames[0].image.shape[:2]
    if logits.shape[-2:] != size:
        logits = torch.nn.functional.interpolate(logits, size=size, mode="bilinear",
                                                 align_corners=model.align_corners)
    return logits, features


def _progress(iterable, total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="frame", disable=not enabled, leave=False)


# --------------------------------------------------------------------------------------- fit
def fit(model, data: Dataset | str, out_dir: str | Path, *, split: str | None = "train",
        estimators: Sequence[str] = ("mdsa",), pixels_per_class: int | None = 100,
        max_images: int | None = 10_000, max_ats_per_class: int | None = 10_000, seed: int = 0,
        batch_size: int = 8, device: str = "cpu", progress: bool = True, on_error: str = "raise",
        min_ats_per_class: int = 10, **estimator_options) -> dict:
    """Fit per-class SA models on training pixels and save them with provenance to `out_dir`.

    Pixels are sampled by their *label* class (paper 5.1: 100 px per class per image from up
    to 10,000 images, then up to 10,000 ATs per class). ``max_ats_per_class=None`` streams
    every sampled AT into MDSA's moments (LSA and DSA need a capped reference set).
    Classes with fewer than `min_ats_per_class` ATs are left out (recorded in ``sa.json`` as
    ``dropped_classes``): their pixels get no SA (NaN) when scoring rather than a noisy one.
    Returns the provenance written to ``sa.json``.
    """
    from .estimators import DSA, LSA, MDSA
    from .sampling import ClassReservoir, sample_pixels
    from .tracing import ActivationTracer, sample_ats

    estimators = tuple(e.lower() for e in estimators)
    unknown = sorted(set(estimators) - set(ESTIMATOR_NAMES))
    if unknown or not estimators:
        raise DataError(f"Expected estimators from {list(ESTIMATOR_NAMES)}, but got {list(estimators)}.")
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

    reservoir = ClassReservoir(capacity=max_ats_per_class or 1, seed=seed)
    mdsa_stream = MDSA(**estimator_options.get("mdsa", {})) if streaming else None
    counts: dict[int, int] = {}
    tracer = ActivationTracer(model.net, model.layer, capture=model.capture,
                              align_corners=model.align_corners)
    started = time.perf_counter()
    bar = _progress(None, len(indices), "fit: tracing", progress)
    for frames in _batches(dataset, indices, batch_size):
        _, features = _forward(model, tracer, frames)
        for b, frame in enumerate(frames):
            label = torch.as_tensor(frame.label, device=features.device)
            gen = torch.Generator().manual_seed(frame_seed(seed, frame.frame_id))
            ys, xs, cls = sample_pixels(label, pixels_per_class, generator=gen,
                                        ignore_index=classes.ignore_index)
            ats = sample_ats(features[b], ys, xs, label.shape, align_corners=model.align_corners)
            for c, n in zip(*torch.unique(cls, return_counts=True)):
                counts[int(c)] = counts.get(int(c), 0) + int(n)
            if streaming:
                mdsa_stream.partial_fit(ats.double(), cls, class_names=classes.names)
            else:
                reservoir.update(ats.float().cpu(), cls.cpu())
        bar.update(len(frames))
    bar.close()
    if not counts:
        raise DataError(f"Expected labelled pixels in {dataset.spec}, but every sampled pixel was ignored.")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [classes.names[c] for c in range(classes.num_classes)]
    fitted = {}
    if streaming:
        fitted["mdsa"] = mdsa_stream
    else:
        ats, cls = reservoir.to_arrays()
        ids, n_per = torch.unique(cls, return_counts=True)
        dropped = {classes.names[int(c)]: int(n) for c, n in zip(ids, n_per) if n < min_ats_per_class}
        if dropped:
            log.warning("too few ATs to model classes %s (need %d); frames predicted as them get "
                        "no SA for those pixels", dropped, min_ats_per_class)
            keep = ~torch.isin(cls, ids[n_per < min_ats_per_class])
            ats, cls = ats[keep], cls[keep]
            if not len(cls):
                raise DegenerateDataError(f"Expected at least {min_ats_per_class} ATs for some class, "
                                          f"but got {dropped}.")
        for name in estimators:
            make = lambda: {"mdsa": MDSA, "lsa": LSA, "dsa": DSA}[name](**estimator_options.get(name, {}))
            log.info("fitting %s on %d ATs", name, len(cls))
            fitted[name], bad = _fit_per_class_models(make, ats, cls, names, independent=name != "dsa")
            dropped.update({f"{classes.names[c]} ({name})": reason for c, reason in bad.items()})
    for name, est in fitted.items():
        est.save(out_dir)
    provenance = {
        "saseg_version": __version__,
        "estimators": list(fitted),
        "model": {"path": model.path, "sha256": model.sha256,
                  "layer": model.layer, "capture": model.capture, "align_corners": model.align_corners},
        "data": {"spec": dataset.spec, "n_frames": len(dataset), "n_used": int(len(indices)),
                 "skipped": dataset.skipped},
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
    write_json(out_dir / "sa.json", provenance)
    return provenance


def _fit_per_class_models(make, ats, cls, names, *, independent: bool):
    """Fit; if some classes are degenerate (e.g. constant ATs), leave just those out.

    Only for estimators whose per-class models are independent (MDSA, LSA): one dead class
    must not cost every other class its SA model. Returns (estimator, {class: reason}).
    """
    try:
        return make().fit(ats, cls, class_names=names), {}
    except DegenerateDataError:
        if not independent:
            raise
    bad = {}
    for c in torch.unique(cls).tolist():
        try:
            make().fit(ats[cls == c], cls[cls == c])
        except DegenerateDataError as exc:
            bad[c] = str(exc)
    keep = ~torch.isin(cls, torch.tensor(list(bad), dtype=cls.dtype))
    if not keep.any():
        raise DegenerateDataError(f"Expected some class with usable ATs, but every class failed: {bad}")
    log.warning("left out degenerate classes: %s", bad)
    return make().fit(ats[keep], cls[keep], class_names=names), bad


def load_sa_model(sa_dir: str | Path, names: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Load the estimators of an SA model dir: ({name: estimator}, provenance)."""
    from .estimators import load_estimator

    meta = read_json(Path(sa_dir) / "sa.json")
    wanted = list(names) if names else meta["estimators"]
    missing = sorted(set(wanted) - set(meta["estimators"]))
    if missing:
        raise FormatError(f"Expected estimators {missing} in {sa_dir}, but it holds {meta['estimators']}.")
    return {n: load_estimator(sa_dir, n) for n in wanted}, meta


# ------------------------------------------------------------------------------------- score
def score(model, sa_dir: str | Path, data: Dataset | str, out: str | Path, *,
          split: str | None = "test", pixels_per_class: int | None = 1000,
          estimators: Sequence[str] | None = None, softmax: bool = True, seed: int = 0,
          batch_size: int = 8, device: str = "cpu", reference: str | Path | None = None,
          resume: bool = True, save_predictions: bool = True, chunk_frames: int | None = None,
          progress: bool = True, on_error: str = "raise"):
    """Score every frame: per predicted class, the mean SA of up to `pixels_per_class` pixels.

    Writes ``scores.parquet`` (one row per frame and predicted class), ``frames.parquet``
    (z-scored class-group SAs and the frame SA) and the run files listed in the module doc.
    Work is saved in chunks, so a killed run restarted with the same arguments resumes and
    ends with exactly the rows an uninterrupted run writes. Returns the scores DataFrame.
    """
    import pandas as pd

    from .aggregate import ZScoreReference, class_scores, frame_scores
    from .estimators import softmax_scores
    from .sampling import sample_pixels
    from .tracing import ActivationTracer, sample_ats

    out = Path(out)
    run_dir = out.parent
    model = as_model(model, device)
    fitted, sa_meta = load_sa_model(sa_dir, estimators)
    dataset = as_dataset(data, split, on_error=on_error)
    classes = model.classes
    chunk_frames = chunk_frames or batch_size * 8
    settings = {"model_sha256": model.sha256, "sa_dir": str(Path(sa_dir).resolve()),
                "estimators": list(fitted), "data": dataset.spec, "n_frames": len(dataset),
                "pixels_per_class": pixels_per_class, "softmax": softmax, "seed": seed,
                "batch_size": batch_size, "chunk_frames": chunk_frames}
    store = PartStore(out, settings, resume=resume)
    done = store.done_chunks()
    tracer = ActivationTracer(model.net, model.layer, capture=model.capture,
                              align_corners=model.align_corners)
    known = {n: torch.as_tensor(est.classes_).long() for n, est in fitted.items()}
    pred_dir = run_dir / "predictions"
    timing: dict[str, float] = {"frames": 0}
    n = len(dataset)
    n_chunks = (n + chunk_frames - 1) // chunk_frames
    bar = _progress(None, n, "score", progress)
    bar.update(min(n, len(done) * chunk_frames))
    for chunk in range(n_chunks):
        if chunk in done:
            continue
        rows = []
        indices = range(chunk * chunk_frames, min(n, (chunk + 1) * chunk_frames))
        for frames in _batches(dataset, indices, batch_size):
            clock = time.perf_counter()
            logits, features = _forward(model, tracer, frames)
            preds = logits.argmax(1)
            clock = _tick(timing, "forward_s", clock)
            for b, frame in enumerate(frames):
                pred = preds[b]
                gen = torch.Generator().manual_seed(frame_seed(seed, frame.frame_id))
                ys, xs, cls = sample_pixels(pred, pixels_per_class, generator=gen)
                ats = sample_ats(features[b], ys, xs, pred.shape, align_corners=model.align_corners)
                clock = _tick(timing, "sampling_s", clock)
                per_pixel = {}
                for name, est in fitted.items():
                    values = torch.full((len(cls),), float("nan"), device=ats.device)
                    ok = torch.isin(cls, known[name].to(cls.device))
                    if ok.any():
                        values[ok] = est.score(ats[ok], cls[ok]).to(values.dtype)
                    per_pixel[name] = values
                    clock = _tick(timing, f"{name}_s", clock)
                if softmax:
                    per_pixel.update(softmax_scores(logits[b][:, ys, xs].T))
                n_pixels = torch.bincount(pred.flatten(), minlength=classes.num_classes)
                table = class_scores(per_pixel, cls, n_pixels)
                table["at_mean"] = list(_class_means(ats, cls, np.array(table["class_id"])))
                table.insert(0, "frame_id", frame.frame_id)
                table.insert(1, "frame_index", frame.index)
                table.insert(2, "source", frame.source)
                table.insert(4, "class_name", [classes.names[c] for c in table["class_id"]])
                rows.append(table)
                clock = _tick(timing, "aggregate_s", clock)
                if save_predictions:
                    _save_prediction(pred_dir, frame.frame_id, pred)
                clock = _tick(timing, "predictions_s", clock)
            timing["frames"] += len(frames)
            bar.update(len(frames))
        store.write(chunk, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame())
    bar.close()

    scores_df = store.finish(sort_by=["frame_index", "class_id"])
    if scores_df.empty:
        raise DataError(f"Expected frames to score in {dataset.spec}, but none could be read.")
    columns = list(fitted) + (list(SOFTMAX_NAMES) if softmax else [])
    ref = (ZScoreReference.load(reference) if reference
           else ZScoreReference.fit(scores_df, columns))
    frames_df = frame_scores(scores_df, classes, columns, reference=ref)
    ref.save(run_dir / "zscore.json")
    write_parquet(run_dir / "frames.parquet", frames_df)
    write_json(run_dir / "score.json", {
        "saseg_version": __version__, **settings, "model_path": model.path,
        "classes": classes.to_dict(), "score_columns": columns, "sa_provenance": sa_meta,
        "reference": str(reference) if reference else "self", "skipped": dataset.skipped,
        "timing_this_session": timing, "predictions": "predictions" if save_predictions else None,
    })
    write_parquet(out, scores_df)
    store.cleanup()
    return scores_df


def _tick(timing: dict, key: str, since: float) -> float:
    """Add the time since `since` to timing[key]; return now (for the next stage)."""
    now = time.perf_counter()
    timing[key] = timing.get(key, 0.0) + now - since
    return now


def _class_means(ats: torch.Tensor, cls: torch.Tensor, class_ids: np.ndarray) -> np.ndarray:
    """(len(class_ids), d) float32 mean AT per class: the frame embedding used for diversity."""
    sums = torch.zeros(int(cls.max()) + 1, ats.shape[1], dtype=torch.float64, device=ats.device)
    sums.index_add_(0, cls, ats.double())
    counts = torch.bincount(cls, minlength=sums.shape[0]).clamp(min=1).unsqueeze(1)
    return (sums / counts)[torch.as_tensor(class_ids, device=ats.device)].float().cpu().numpy()


def _save_prediction(pred_dir: Path, frame_id: str, pred: torch.Tensor) -> None:
    from PIL import Image

    from .io import atomic_path

    path = pred_dir / f"{frame_id}.png"
    with atomic_path(path) as tmp:
        Image.fromarray(pred.to(torch.uint8).cpu().numpy()).save(tmp, format="PNG")


def load_prediction(run_dir: str | Path, frame_id: str) -> np.ndarray:
    """The predicted class-id mask that `score` saved for a frame."""
    from PIL import Image

    path = Path(run_dir) / "predictions" / f"{frame_id}.png"
    try:
        with Image.open(path) as img:
            return np.asarray(img, dtype=np.int64)
    except FileNotFoundError:
        raise FormatError(f"Expected a saved prediction at {path}; rerun `saseg score` "
                          "without --no-predictions.") from None
