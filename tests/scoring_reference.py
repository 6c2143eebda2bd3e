"""The per-frame scoring of saseg before batching (issue 27), kept as the reference that the
batched `FrameScorer.score_batch` must reproduce: one frame at a time, a class loop of
``nanmean``/``nanquantile`` per score, a pandas table per frame merged onto the frame's
quality features. Only the pieces that batching rewrote are copied here; sampling, ATs, SA,
the softmax formulas, the boundary mask and the component statistics come from saseg (each
is tested against its own reference)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from saseg.estimators import softmax_scores
from saseg.estimators.softmax import SoftmaxStats, dispersion_maps
from saseg.quality.components import COMPONENT_COLUMNS, component_stats
from saseg.quality.features import FEATURE_COLUMNS, boundary_mask
from saseg.sampling import sample_pixels
from saseg.scoring import frame_seed
from saseg.tracing import sample_ats


def class_scores(scores, classes, n_pixels, q=0.9) -> pd.DataFrame:
    classes = torch.as_tensor(classes).reshape(-1).long()
    ids, counts = torch.unique(classes, return_counts=True)
    ids_np = ids.cpu().numpy()
    out = {"class_id": ids_np.astype(np.int64),
           "n_pixels": torch.as_tensor(n_pixels).cpu().numpy()[ids_np].astype(np.int64),
           "n_sampled": counts.cpu().numpy().astype(np.int64)}
    for name, values in scores.items():
        values = torch.as_tensor(values).reshape(-1).to(torch.float64)
        means, quants = [], []
        for c in ids:
            v = values[classes.to(values.device) == c]
            means.append(torch.nanmean(v))
            quants.append(torch.nanquantile(v, q))
        out[name] = torch.stack(means).cpu().numpy() if means else np.empty(0)
        out[f"{name}_q{round(q * 100)}"] = torch.stack(quants).cpu().numpy() if quants else np.empty(0)
    return pd.DataFrame(out)


def quality_features(logits, boundary_px=2, likely_p=0.2, min_likely_pixels=16) -> pd.DataFrame:
    n_classes = logits.shape[0]
    logp = torch.log_softmax(logits.float(), 0)
    p = logp.exp()
    pred = logits.max(0).indices
    top1 = p.gather(0, pred[None])[0]
    top2 = p.scatter(0, pred[None], -1.0).max(0).values
    dispersion = dispersion_maps(SoftmaxStats(logp, p, top1, top2, 0))
    boundary = boundary_mask(pred, boundary_px)
    n_pixels = torch.bincount(pred.flatten(), minlength=n_classes)
    likely = ((p >= likely_p).flatten(1).sum(1) >= min_likely_pixels)
    ids = torch.nonzero((n_pixels > 0) | likely).flatten()
    cell = (pred * 2 + boundary.long()).flatten()
    counts = torch.bincount(cell, minlength=2 * n_classes).reshape(n_classes, 2).double()
    out = {"class_id": ids.numpy().astype(np.int64), "n_pixels": n_pixels[ids].numpy().astype(np.int64)}
    for name, values in dispersion.items():
        sums = torch.bincount(cell, weights=values.flatten().double(), minlength=2 * n_classes)
        means = sums.reshape(n_classes, 2) / counts
        out[f"{name}_interior"] = means[ids, 0].numpy()
        out[f"{name}_boundary"] = means[ids, 1].numpy()
    mass_all = p.flatten(1).sum(1, dtype=torch.float64)
    mass_own = torch.bincount(pred.flatten(), weights=top1.flatten().double(), minlength=n_classes)
    fn_mass = (mass_all - mass_own).clamp(min=0.0)
    area = n_pixels.double()
    out["fn_mass"] = fn_mass[ids].numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        fn_ratio = (fn_mass / area)[ids].numpy()
    out["fn_ratio"] = np.where(out["n_pixels"] > 0, fn_ratio, np.nan)
    out["plugin_iou"] = (mass_own / (area + fn_mass).clamp(min=1e-12))[ids].numpy()
    share = (counts[:, 1] / area.clamp(min=1))[ids].numpy()
    out["boundary_share"] = np.where(out["n_pixels"] > 0, share, np.nan)
    comps = component_stats(pred, dispersion["entropy"], dispersion["margin"], boundary, n_classes)
    comps = {name: values[ids].numpy() for name, values in comps.items()}
    out["n_components"] = comps["n_components"].astype(np.int64)
    out["largest_component"] = comps["largest_component"].astype(np.int64)
    for name in ("mean_component", *COMPONENT_COLUMNS):
        out[name] = comps[name]
    return pd.DataFrame(out)[["class_id", "n_pixels", *FEATURE_COLUMNS, *COMPONENT_COLUMNS]]


def class_means(ats, cls, class_ids):
    sums = torch.zeros(int(cls.max()) + 1, ats.shape[1], dtype=torch.float64)
    sums.index_add_(0, cls, ats.double())
    counts = torch.bincount(cls, minlength=sums.shape[0]).clamp(min=1).unsqueeze(1)
    return (sums / counts)[torch.as_tensor(class_ids)].float().numpy()


def score_frames(scorer, frames) -> pd.DataFrame:
    """Today's rows of `frames` (one forward pass), one frame at a time."""
    model, classes = scorer.model, scorer.model.classes
    logits_b, features_b = model.trace(frames)
    tables = []
    for b, frame in enumerate(frames):
        logits, features = logits_b[b], features_b[b]
        pred = logits.max(0).indices
        gen = torch.Generator().manual_seed(frame_seed(scorer.seed, frame.frame_id))
        ys, xs, cls = sample_pixels(pred, scorer.pixels_per_class, generator=gen)
        ats = sample_ats(features, ys, xs, pred.shape, align_corners=model.align_corners)
        per_pixel = {name: est.score(ats, cls, unknown="nan").to(torch.float32)
                     for name, est in scorer.fitted.items()}
        if scorer.softmax:
            per_pixel.update(softmax_scores(logits[:, ys, xs].T, names=scorer.baselines))
        n_pixels = torch.bincount(pred.flatten(), minlength=classes.num_classes)
        table = class_scores(per_pixel, cls, n_pixels)
        table["at_mean"] = list(class_means(ats, cls, np.array(table["class_id"])))
        if scorer.features:
            extra = quality_features(logits)
            table = extra.merge(table.drop(columns="n_pixels"), on="class_id", how="left")
            table["n_sampled"] = table["n_sampled"].fillna(0).astype("int64")
        table.insert(0, "frame_id", frame.frame_id)
        table.insert(1, "frame_index", frame.index)
        table.insert(2, "source", frame.source)
        table.insert(4, "class_name", [classes.names[c] for c in table["class_id"]])
        tables.append(table)
    return pd.concat(tables, ignore_index=True)
