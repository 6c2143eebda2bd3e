"""Audit a scored pool: its dataset-level IoU from a few labelled frames, with an interval.

``saseg audit sample`` (`saseg.commands.audit`) draws n frames of a run with inclusion probabilities that favour frames
whose predicted quality is most uncertain, mixed half and half with uniform
(`saseg.analysis.audit_math`); ``saseg audit estimate`` takes their labels and estimates, over
the whole pool, each class's IoU ``Σ_i I_ic / Σ_i U_ic`` (as one confusion matrix over every
frame gives), the mIoU, and the share of frames whose frame IoU is below a threshold, by
PPI++ (predictions corrected by the labels) with a jackknife interval.

Predictions per frame i and class c, in pixels, from the run's quality features
(`saseg.quality.features`): the plug-in union ``Û = n_pixels + fn_mass`` and intersection
``Î = plugin_iou · Û`` (the softmax mass of c on the pixels predicted c); with
``predictor="quality"`` the learned ``quality`` (predicted class IoU) replaces the plug-in IoU
where it is finite.

The sample favours frames whose estimate residual is predicted to be large (Zrnic and Candès
2024: ``π_i ∝ √E[e_i²]``). A frame's residual for class c is, in pixels, about
``U_ic (q_ic - q̂_ic)`` (q its IoU); the model takes ``E[e_ic²] ∝ v_ic = Û_ic (Û_ic - Î_ic) =
Û_ic² (1 - q̂_ic)``: it grows with the square of the class's area (a large region wrongly
segmented moves the pool's ratio most) and with the predicted error rate (a bound on
``q̂ (1 - q̂)`` that stays positive when the model is over-confident). The class IoU's
linearised residual is divided by the class's pool total ``T_c = Σ_j Û_jc``, and the mIoU
averages the classes, so a frame's uncertainty is ``u_i = √(mean_c v_ic / T_c²)`` over the
classes the pool predicts. The same ``v`` anticipates the variance a sample should show
(`saseg.analysis.audit_math`, unseen tails).

An audit folder (sample) holds::

    AUDIT/sample.csv          frame_id, frame_index, source, pi, uncertainty (one row per sampled frame)
    AUDIT/plan.csv            the same frames as a labelling queue (`saseg export --plan`)
    AUDIT/audit_sample.json   n, pool size, seed, mix, predictor, the pool's frame-id hash

and an estimate folder ``audit.json`` (summary, sentence), ``classes.csv`` (per class: PPI++
estimate and interval, labels-only estimate and interval, predictions-only figure, λ,
effective labels) and ``widths.csv`` / ``widths.png`` (interval width against n).
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..columns import require_numeric
from ..data import ClassInfo
from ..errors import DataError
from ..io import write_csv, write_json
from ..metrics import confusion_matrix
from ..layout.audit import (AUDIT_DIR, CLASSES_CSV, ESTIMATE_JSON, SAMPLE_CSV, SAMPLE_JSON, WIDTHS_CSV,
                            WIDTHS_PNG)
from .audit_math import mean_estimate, ratio_estimates, t_value

log = logging.getLogger(__name__)

__all__ = ["PoolPredictions", "predict_pool", "frame_truth", "AuditResult", "estimate", "sentence", "describe",
           "SAMPLE_CSV", "SAMPLE_JSON", "ESTIMATE_JSON", "CLASSES_CSV", "WIDTHS_CSV", "WIDTHS_PNG", "PREDICTORS",
           "AUDIT_DIR", "UNCERTAINTIES"]

PREDICTORS = ("plugin", "quality")
UNCERTAINTIES = ("residual_scale", "error_mass")
"""What an audit design favours (`PoolPredictions.uncertainty`); the first is the default."""
_FEATURES = ("n_pixels", "fn_mass", "plugin_iou")


@dataclass(frozen=True)
class PoolPredictions:
    """Predicted parts of every frame of a pool.

    frame_ids : (M,) str, in frame order; inter_hat, union_hat : (M, C) float64 pixels;
    frame_iou_hat : (M,) predicted frame IoU (mean over predicted classes; NaN: none).
    """

    frame_ids: np.ndarray
    frame_index: np.ndarray
    sources: np.ndarray
    inter_hat: np.ndarray
    union_hat: np.ndarray
    frame_iou_hat: np.ndarray

    def residual_model(self) -> np.ndarray:
        """(M, C) ``v_ic = Û_ic (Û_ic - Î_ic)``, the model of each residual's square (module doc)."""
        return self.union_hat * np.maximum(self.union_hat - self.inter_hat, 0.0)

    def uncertainty(self, kind: str = "residual_scale") -> np.ndarray:
        """(M,) what the design favours, over the classes the pool predicts (module doc):
        ``residual_scale`` ``√(mean_c v_ic / T_c²)``; ``error_mass`` ``mean_c (Û_ic - Î_ic) / T_c``,
        the first design, that of samples whose ``sample.json`` names none (kept so their labels
        still count)."""
        if kind not in UNCERTAINTIES:
            raise DataError(f"audit: expected an uncertainty in {UNCERTAINTIES}, but got {kind!r}.")
        totals = self.union_hat.sum(0)
        used = totals > 0
        if not used.any():
            return np.zeros(len(self.frame_ids))
        if kind == "error_mass":
            return ((self.union_hat - self.inter_hat)[:, used] / totals[used]).mean(1)
        return np.sqrt((self.residual_model()[:, used] / totals[used] ** 2).mean(1))

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(map(str, self.frame_ids)).encode()).hexdigest()[:16]


def predict_pool(scores: pd.DataFrame, frames: pd.DataFrame, n_classes: int, sources: dict,
                 predictor: str = "plugin", *, where: object = "the run") -> PoolPredictions:
    """A run's predicted intersections and unions per frame and class (module doc), from its
    scores and frames tables and its frames' sources; `where` names the run in errors."""
    if predictor not in PREDICTORS:
        raise DataError(f"audit: expected a predictor in {PREDICTORS}, but got {predictor!r}.")
    missing = [c for c in _FEATURES if c not in scores.columns]
    if missing:
        raise DataError(f"audit: expected the quality features {missing} in {where}; score the "
                        "run with --features (the default).")
    if predictor == "quality" and "quality" not in scores.columns:
        raise DataError(f"audit: expected a `quality` column in {where}; run `saseg quality apply`.")
    require_numeric(scores, ["class_id", *_FEATURES, *(["quality"] if predictor == "quality" else [])],
                    "audit", hint=f" in {where} (edited?)")
    ids = scores["class_id"].to_numpy()
    pixels = scores["n_pixels"].to_numpy(np.float64)
    if len(ids) and (not np.isfinite(ids).all() or (ids != np.round(ids)).any() or ids.min() < 0
                     or ids.max() >= n_classes or not (np.isfinite(pixels) & (pixels >= 0)).all()):
        raise DataError(f"audit: expected class ids in 0..{n_classes - 1} and finite pixel counts in {where}, "
                        "but some are not (edited?); score the run again.")
    frames = frames[["frame_id", "frame_index"]]
    frames = frames.assign(frame_id=frames["frame_id"].astype(str)).sort_values(["frame_index", "frame_id"])
    ids = frames["frame_id"].to_numpy()
    row = pd.Series(np.arange(len(ids)), index=ids)
    scores = scores[scores["frame_id"].astype(str).isin(row.index)]
    i = row[scores["frame_id"].astype(str)].to_numpy()
    c = scores["class_id"].to_numpy(dtype=np.int64)
    union = scores["n_pixels"].to_numpy(np.float64) + np.nan_to_num(scores["fn_mass"].to_numpy(np.float64))
    iou = np.nan_to_num(scores["plugin_iou"].to_numpy(np.float64))
    if predictor == "quality":
        learned = scores["quality"].to_numpy(np.float64)
        iou = np.where(np.isfinite(learned), np.clip(learned, 0.0, 1.0), iou)
    inter_hat, union_hat = np.zeros((len(ids), n_classes)), np.zeros((len(ids), n_classes))
    np.add.at(union_hat, (i, c), union)
    np.add.at(inter_hat, (i, c), iou * union)
    predicted = scores["n_pixels"].to_numpy() > 0
    sums = np.bincount(i[predicted], weights=iou[predicted], minlength=len(ids))
    counts = np.bincount(i[predicted], minlength=len(ids))
    with np.errstate(invalid="ignore", divide="ignore"):
        frame_iou = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return PoolPredictions(ids, frames["frame_index"].to_numpy(np.int64),
                           np.array([sources.get(f, "") for f in ids], dtype=object),
                           inter_hat, union_hat, frame_iou)


def frame_truth(pred, label, classes: ClassInfo) -> tuple[np.ndarray, np.ndarray, float]:
    """True (C,) intersection and union pixels of one frame, and its frame IoU.

    Ignore pixels count for neither; the frame IoU is the mean class IoU over the classes
    labelled or predicted there (as `saseg.metrics.frame_iou` and the quality model's
    ``frame`` target define it).
    """
    cm = confusion_matrix(pred, label, classes.num_classes, classes.ignore_index).cpu().numpy()
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    present = union > 0
    return tp, union.astype(np.float64), float((tp[present] / union[present]).mean()) if present.any() else np.nan


@dataclass
class AuditResult:
    """An estimate: ``classes`` (one row per class present), ``summary`` (mIoU, share, sentence)."""

    classes: pd.DataFrame
    summary: dict
    widths: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, out: str | os.PathLike) -> Path:
        """The estimate's files, ``audit.json`` out first and in last: a folder whose writing
        stopped partway holds no summary, so no reader takes old and new files for one estimate."""
        out = Path(out)
        (out / ESTIMATE_JSON).unlink(missing_ok=True)
        write_csv(out / CLASSES_CSV, self.classes)
        write_csv(out / WIDTHS_CSV, self.widths)
        (out / WIDTHS_PNG).unlink(missing_ok=True)
        if len(self.widths):
            from ..viz.audit_plot import plot_widths

            plot_widths(self.widths, out / WIDTHS_PNG, level=self.summary["level"],
                        n=self.summary["n_labelled"])
        write_json(out / ESTIMATE_JSON, self.summary)
        return out


def sentence(summary: dict) -> str:
    """"mIoU on this pool is 0.61 (90 % CI 0.59-0.63), from 40 labelled frames of 1,200"."""
    m = summary["miou"]
    return (f"mIoU on this pool is {m['estimate']:.2f} ({summary['level'] * 100:g} % CI "
            f"{m['low']:.2f}-{m['high']:.2f}), from {summary['n_labelled']:,} labelled frames of "
            f"{summary['n_pool']:,}")


def describe(result: AuditResult) -> str:
    """The per-class table, the share below the threshold and the sentence, as text."""
    s, t = result.summary, result.classes
    pct = f"{s['level'] * 100:g} %"
    fmt = lambda lo, hi: f"{lo:.3f}-{hi:.3f}" if np.isfinite(lo) else "-"
    num = lambda x, spec: f"{x:{spec}}" if x is not None and np.isfinite(x) else f"{'-':>{spec.split('.')[0]}}"
    lines = [f"{'class':<14}{'IoU':>7}  {pct + ' CI':<13}  {'labels only':<13}  {'predicted':>9}  {'eff. labels':>11}"]
    for r in t.itertuples():
        if r.note:
            lines.append(f"{r.class_name:<14}{'-':>7}  {r.note}")
            continue
        lines.append(f"{r.class_name:<14}{r.estimate:7.3f}  {fmt(r.low, r.high):<13}  "
                     f"{fmt(r.labels_low, r.labels_high):<13}  {num(r.predicted, '9.3f')}  {num(r.effective_labels, '11.1f')}")
    m, b = s["miou"], s["share_below"]
    lines.append(f"{'mIoU':<14}{m['estimate']:7.3f}  {fmt(m['low'], m['high']):<13}  "
                 f"{fmt(m['labels_only']['low'], m['labels_only']['high']):<13}  {num(m['predicted'], '9.3f')}  "
                 f"{num(m['effective_labels'], '11.1f')}")
    lines.append(f"frames below IoU {s['iou_below']:g}: {b['estimate']:.1%} ({pct} CI {b['low']:.1%}-{b['high']:.1%}; "
                 f"labels only {b['labels_only']['low']:.1%}-{b['labels_only']['high']:.1%})")
    lines.append(s["sentence"] + ".")
    return "\n".join(lines)


def _interval_dict(est) -> dict:
    return {"estimate": float(est.estimate), "low": float(est.low), "high": float(est.high), "se": float(est.se)}


def estimate(pool: PoolPredictions, rows: np.ndarray, pi_pool: np.ndarray, inter: np.ndarray, union: np.ndarray,
             frame_iou: np.ndarray, classes: ClassInfo, *, level: float = 0.9,
             iou_below: float = 0.5, anticipate: bool = True) -> AuditResult:
    """PPI++ estimates from labelled rows of the pool (pure: no files).

    rows : (n,) indices into the pool; pi_pool : (M,) every pool frame's inclusion probability
    (the design's, so the unseen frames' anticipated variance is known); inter, union : (n, C)
    true pixels; frame_iou : (n,) true frame IoU; anticipate : scale the PPI++ variances by the
    anticipated-variance ratio (`saseg.analysis.audit_math`; False: the plain jackknife).
    """
    n, m = len(rows), len(pool.frame_ids)
    if n < 2:
        raise DataError(f"audit estimate: expected at least 2 labelled frames to estimate a variance, but got {n}.")
    pi_pool = np.asarray(pi_pool, np.float64)
    if pi_pool.shape != (m,):
        raise DataError(f"audit estimate: expected {m} inclusion probabilities (one per pool frame), "
                        f"but got {pi_pool.shape}.")
    pi = pi_pool[rows]
    ih, uh = pool.inter_hat, pool.union_hat
    v = pool.residual_model()
    # a frame with π = 0 (uniform share 0) has u = 0, so v = 0: it adds nothing
    weight = np.divide(1.0 - pi_pool, pi_pool, out=np.zeros(m), where=pi_pool > 0)
    v_total = (weight[:, None] * v).sum(0)
    args = (inter, union, ih[rows], uh[rows], ih.sum(0), uh.sum(0), pi)
    # a class is estimable when some labelled frame holds it; present when the pool predicts it too
    seen = union.sum(0) > 0
    present = seen | (uh.sum(0) > 0)
    keep_cols = np.flatnonzero(seen)
    if not len(keep_cols):
        raise DataError("audit estimate: expected a class labelled or predicted in the labelled frames, but got none.")
    cut = tuple(a[:, keep_cols] if a.ndim == 2 else a[keep_cols] for a in args[:-1]) + (pi,)
    anticipated = (v[rows][:, keep_cols], v_total[keep_cols]) if anticipate else None
    ppi, miou = ratio_estimates(*cut, level=level, anticipated=anticipated)
    # effective labels and projected widths compare the plain jackknife's variances: the
    # anticipated-variance ratio is a correction for this sample, not a precision to project
    plain, miou_plain = ratio_estimates(*cut, level=level) if anticipate else (ppi, miou)
    labels_only, miou_lo = ratio_estimates(*cut, level=level, lam=0.0)
    predicted = np.divide(ih.sum(0), uh.sum(0), out=np.full(len(uh[0]), np.nan), where=uh.sum(0) > 0)

    table = []
    for c in np.flatnonzero(present):
        name = classes.names[c]
        if not seen[c]:
            note = (f"class {name} is in none of the {n} labelled frames (neither labelled nor predicted "
                    "there): not estimated, and left out of the mIoU; label frames where it is predicted")
            table.append({"class_id": int(c), "class_name": name, "note": note, "predicted": predicted[c],
                          "frames_with_class": 0})
            continue
        j = int(np.searchsorted(keep_cols, c))
        ratio = (labels_only.se[j] / plain.se[j]) ** 2 if plain.se[j] > 0 else np.nan
        table.append({"class_id": int(c), "class_name": name, "estimate": ppi.estimate[j], "low": ppi.low[j],
                      "high": ppi.high[j], "se": ppi.se[j], "labels_only": labels_only.estimate[j],
                      "labels_low": labels_only.low[j], "labels_high": labels_only.high[j],
                      "predicted": predicted[c], "lam": ppi.lam[j], "effective_labels": n * ratio,
                      "frames_with_class": int((union[:, c] > 0).sum()), "note": ""})
    table = pd.DataFrame(table, columns=["class_id", "class_name", "estimate", "low", "high", "se", "labels_only",
                                         "labels_low", "labels_high", "predicted", "lam", "effective_labels",
                                         "frames_with_class", "note"])
    notes = [t for t in table["note"] if t]
    for text in notes:
        log.warning("audit estimate: %s.", text)
    # share of frames below the threshold: a frame with no predicted class counts as below
    below = np.nan_to_num(frame_iou, nan=1.0) < iou_below
    below_hat = (np.nan_to_num(pool.frame_iou_hat, nan=0.0) < iou_below).astype(np.float64)
    share = mean_estimate(below.astype(np.float64), below_hat[rows], below_hat, pi, pool_size=m, level=level)
    share_lo = mean_estimate(below.astype(np.float64), below_hat[rows], below_hat, pi, pool_size=m,
                             level=level, lam=0.0)
    predicted_miou = float(np.nanmean(predicted[keep_cols]))
    summary = {
        "n_labelled": n, "n_pool": m, "level": level, "iou_below": iou_below,
        "method": "PPI++ (power-tuned), Horvitz-Thompson weights, jackknife interval scaled by the "
                  "anticipated-variance ratio (saseg.analysis.audit_math)",
        "miou": {**_interval_dict(miou), "labels_only": _interval_dict(miou_lo), "predicted": predicted_miou,
                 "effective_labels": n * (miou_lo.se / miou_plain.se) ** 2 if miou_plain.se > 0 else None,
                 "plain_se": float(miou_plain.se), "classes": [classes.names[c] for c in keep_cols]},
        "share_below": {**_interval_dict(share), "labels_only": _interval_dict(share_lo),
                        "predicted": float(below_hat.mean()), "lam": float(share.lam)},
        "notes": notes,
    }
    summary["sentence"] = sentence(summary)
    return AuditResult(classes=table, summary=summary, widths=_widths(summary, m))


def _widths(summary: dict, m: int) -> pd.DataFrame:
    """Projected mIoU interval width against n: ``w(n') = w(n) √((n/n') (1 - n'/M) / (1 - n/M))``.

    The simple-random-sampling scaling of a standard error, assuming the frames' residual
    spread stays what the sample shows; the t quantile's change with n is ignored. PPI++'s
    width is the plain jackknife's (``2 t se``, unclipped, without the anticipated-variance
    ratio, which tends to 1 as n grows); the labels-only width is as measured.
    """
    n = summary["n_labelled"]
    grid = np.unique(np.clip(np.round(np.geomspace(2, m, 24)).astype(int), 2, m))
    grid = np.unique(np.r_[grid, n])
    fpc = lambda k: max(1.0 - k / m, 0.0)
    scale = np.array([np.sqrt(n / k * fpc(k) / fpc(n)) if fpc(n) > 0 else 0.0 for k in grid])
    miou = summary["miou"]
    plain_width = 2.0 * t_value(summary["level"], n) * miou["plain_se"]
    return pd.DataFrame({"n": grid, "ppi_width": plain_width * scale,
                         "labels_only_width": (miou["labels_only"]["high"] - miou["labels_only"]["low"]) * scale,
                         "measured": grid == n})


# ---- files --------------------------------------------------------------------------------
