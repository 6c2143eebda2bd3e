"""The segment plan: calibrate a segment threshold on a labelled pilot, apply it to a pool, price it.

`calibrate_segments` turns a pilot `SegmentTable` (`saseg.analysis.segments`) into a
`SegmentGuarantee` under one promise: label error (default) or skip precision, with
confidence 1 - delta (Learn-then-Test, fixed sequence, WSR or HB p-values), or label error in
expectation (conformal risk control); optional per-class promises cap their class's threshold
(`saseg.analysis.bounds`). When nothing is certified it says why, from the data: too few
pilot frames (more alike would certify: how many) or too many failures among the
lowest-scored segments (more frames would not help).

`plan_segments` applies the guarantee to a pool: per segment accept / label, per frame skip
(all accepted) / label, and the price: units are segments x annotators (0.87 USD, as the
paper), plus `review` of a unit per accepted segment (default 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..io import write_csv, write_json
from .bounds import BOUNDS, crc_index, fixed_sequence, p_values, pilot_multiple_needed
from ..layout import PlanDir
from .plan import PriceModel, shift_lines
from .segment_compare import compare_scores
from .segments import (PROMISES, SegmentTable, accept, class_losses, label_error_losses, realised,
                       skip_precision_losses, threshold_grid)
from .shift import ShiftCheck

__all__ = ["SegmentGuarantee", "calibrate_segments", "SegmentPlan", "plan_segments",
           "segment_losses", "frame_mean_scores", "hindsight_summary"]


def segment_losses(table: SegmentTable, grid: np.ndarray, promise: str, alpha: float,
                   in_expectation: bool = False) -> np.ndarray:
    """(n_frames, n_grid) losses of `promise`.

    Skip precision has no in-expectation form: its loss ``(W - alpha A)/C + alpha`` equals
    alpha when nothing is accepted and is not monotone, so conformal risk control (monotone
    losses, bound ``(n Lbar + 1)/(n + 1) <= alpha``) cannot certify any threshold for it.
    """
    if promise == "label-error":
        return label_error_losses(table, grid)
    if promise == "skip-precision":
        if in_expectation:
            raise DataError("Expected --promise label-error with --in-expectation: skip precision is a ratio whose "
                            "loss is not monotone, so conformal risk control does not apply; promise it with "
                            "confidence instead.")
        return skip_precision_losses(table, grid, alpha)
    raise DataError(f"Expected a promise in {PROMISES}, but got {promise!r}.")


@dataclass
class SegmentGuarantee:
    """A calibrated segment rule: accept segments whose score <= `threshold` (None: none).

    ``class_thresholds`` caps named classes (per-class promises); ``pilot`` holds what the
    rule does on the pilot (`saseg.analysis.segments.realised`); ``cause`` says why nothing
    (or a class) was certified.
    """

    threshold: float | None
    score: str
    promise: str
    in_expectation: bool
    bound: str
    alpha: float
    delta: float
    iou_below: float
    n_pilot: int
    class_thresholds: dict = field(default_factory=dict)
    pilot: dict = field(default_factory=dict)
    causes: dict = field(default_factory=dict)

    def promise_text(self) -> str:
        what = (f"at most {self.alpha:.0%} of a frame's segment labels are wrong model masks (IoU < "
                f"{self.iou_below:g}; missed classes count), on average over frames"
                if self.promise == "label-error" else
                f"at most {self.alpha:.0%} of the accepted segments are wrong (IoU < {self.iou_below:g}; "
                f"missed classes count), as a ratio over frames")
        how = ("in expectation over pilot and pool (conformal risk control)" if self.in_expectation else
               f"with confidence {1 - self.delta:.0%} (Learn-then-Test, {self.bound.upper()} bound)")
        return f"{what}, {how}"

    def describe(self) -> str:
        lines = []
        if self.threshold is None:
            lines.append(f"No segment certified: the {self.n_pilot}-frame pilot cannot show that "
                         f"{self.promise_text()}. {self.causes.get('all', '')}".rstrip())
        else:
            p = self.pilot
            lines.append(f"Promise: {self.promise_text()}. Accept segments with {self.score} <= "
                         f"{self.threshold:.6g}; on the {self.n_pilot}-frame pilot that accepts "
                         f"{p['accepted_rows_share']:.0%} of segments, skips {p['skipped_frames_share']:.0%} of "
                         f"frames whole, label error {p['label_error']:.1%}, wrong among accepted "
                         f"{p['wrong_among_accepted']:.1%}.")
        for name, value in self.class_thresholds.items():
            if value is None:
                lines.append(f"Per class {name}: nothing certified, {name} segments are all labelled "
                             f"and no frame is skipped whole. {self.causes.get(name, '')}".rstrip())
            else:
                lines.append(f"Per class {name}: at most {self.alpha:.0%} of {name} segments wrongly accepted "
                             f"({'in expectation' if self.in_expectation else f'confidence {1 - self.delta:.0%}'}"
                             f"); accept {name} with {self.score} <= {value:.6g}.")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"unit": "segment", "threshold": self.threshold, "score": self.score, "promise": self.promise,
                "in_expectation": self.in_expectation, "bound": self.bound, "alpha": self.alpha,
                "delta": self.delta, "confidence": 1 - self.delta, "iou_below": self.iou_below,
                "n_pilot": self.n_pilot, "class_thresholds": self.class_thresholds, "pilot": self.pilot,
                "causes": self.causes, "statement": self.describe()}


def _cause(losses: np.ndarray, n: int, alpha: float, delta: float, bound: str, in_expectation: bool) -> str:
    """Why the most cautious threshold failed, read off its (n,) pilot losses."""
    first = losses[:, 0] if losses.ndim == 2 and losses.shape[1] else np.zeros(0)
    if in_expectation:
        needed = math.ceil(1 / alpha - 1)
        if n < needed:
            return (f"Cause: too few pilot frames; conformal risk control needs at least {needed} at "
                    f"ALPHA {alpha:.0%} (1/ALPHA - 1). Label a larger pilot.")
        return (f"Cause: too many failures among the lowest-scored segments (pilot loss {first.mean():.1%} "
                f"at the most cautious threshold, ALPHA {alpha:.0%}); more frames would not help: loosen "
                "ALPHA or use a better score.")
    multiple = pilot_multiple_needed(first, alpha, delta, bound) if n else None
    if multiple is not None:
        return (f"Cause: too few pilot frames; with failures like these the most cautious threshold needs "
                f"about {multiple * n} frames ({multiple} x {n}). Label a larger pilot, loosen ALPHA, or take "
                f"the in-expectation promise (needs {math.ceil(1 / alpha - 1)} frames).")
    if n == 0:
        return "Cause: the pilot has no scored frames."
    return (f"Cause: too many failures among the lowest-scored segments (pilot loss {first.mean():.1%} at "
            f"the most cautious threshold, ALPHA {alpha:.0%}); more frames alike would not help: loosen "
            "ALPHA, use a better score, or promise label error rather than skip precision.")


def _pick(losses: np.ndarray, alpha: float, delta: float, bound: str, in_expectation: bool, seed: int) -> int:
    if in_expectation:
        return crc_index(losses, alpha)
    order = np.random.default_rng(seed).permutation(losses.shape[0])  # fixed before any loss is read
    return fixed_sequence(p_values(losses[order], alpha, delta, bound), delta)


def calibrate_segments(pilot: SegmentTable, *, score: str, alpha: float = 0.05, delta: float = 0.1,
                       iou_below: float = 0.5, promise: str = "label-error", in_expectation: bool = False,
                       bound: str = "wsr", per_class: Sequence[str] = (), seed: int = 0) -> SegmentGuarantee:
    """The largest certified pilot threshold for `promise`, and per-class caps (module doc).

    Parameters
    ----------
    pilot : SegmentTable with truth (``wrong``, ``missed``)
    alpha, delta : the promised rate and the error level (confidence 1 - delta; unused in expectation)
    bound : "wsr" (betting) or "hb" (Hoeffding-Bentkus)
    per_class : class names with their own promise
    seed : the order of the pilot frames for the WSR bet (drawn before any loss is read)
    """
    if promise not in PROMISES:
        raise DataError(f"Expected a promise in {PROMISES}, but got {promise!r}.")
    if bound not in BOUNDS:
        raise DataError(f"Expected a bound in {BOUNDS}, but got {bound!r}.")
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise DataError(f"Expected ALPHA and DELTA in (0, 1), but got {alpha} and {delta}.")
    unknown = sorted(set(per_class) - set(pilot.class_name) - {m for ms in pilot.missed_classes or [] for m in ms})
    if unknown:
        raise DataError(f"Expected per-class names among the pilot's segments, but got {unknown}; "
                        f"it has {sorted(set(pilot.class_name))}.")
    grid = threshold_grid(pilot.score)
    segment_losses(pilot, grid[:0], promise, alpha, in_expectation)  # refuses what has no valid form, first
    g = SegmentGuarantee(threshold=None, score=score, promise=promise, in_expectation=in_expectation,
                         bound=bound, alpha=alpha, delta=delta, iou_below=iou_below, n_pilot=pilot.n_frames)
    losses = segment_losses(pilot, grid, promise, alpha, in_expectation)
    j = _pick(losses, alpha, delta, bound, in_expectation, seed) if len(grid) else -1
    if j >= 0:
        g.threshold = float(grid[j])
    elif promise == "skip-precision":
        g.causes["all"] = (f"Cause: skip precision is a ratio; a frame's loss moves by 1/{pilot.n_classes} (the "
                           "classes) per segment, and the most cautious thresholds accept almost nothing, so the "
                           f"betting bound gains too little over {pilot.n_frames} frames. This promise has little "
                           "power at pilot sizes like this; promise label error instead.")
    else:
        g.causes["all"] = _cause(losses, pilot.n_frames, alpha, delta, bound, in_expectation)
    for name in per_class:
        lc = class_losses(pilot, grid, name)
        jc = _pick(lc, alpha, delta, bound, in_expectation, seed) if len(grid) else -1
        g.class_thresholds[name] = float(grid[jc]) if jc >= 0 else None
        if jc < 0:
            g.causes[name] = _cause(lc, lc.shape[0], alpha, delta, bound, in_expectation)
    g.pilot = realised(pilot, *accept(pilot, g.threshold, g.class_thresholds))
    return g


@dataclass
class SegmentPlan:
    """Per-frame queue (``plan.csv``), per-segment decisions (``segments.csv``), summary (``plan.json``).

    queue : ``rank``, ``frame_id``, ``frame_index``, ``source``, ``score`` (highest segment
        score), ``action`` ("label" | "skip"), ``n_segments``, ``n_accepted``, ``units``
    segments : ``frame_id``, ``class_id``, ``class_name``, ``score``, ``action`` ("accept" | "label")
    """

    queue: pd.DataFrame
    segments: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def save(self, directory: str | PathLike) -> Path:
        out = PlanDir(directory)
        write_csv(out.segments_path, self.segments)
        write_csv(out.queue_path, self.queue)
        write_json(out.summary_path, self.summary)
        return out.queue_path

    def describe(self) -> str:
        s = self.summary
        lines = [f"Segment plan: accept {s['n_accepted']:,} of {s['n_segments']:,} segments "
                 f"({s['accepted_share']:.0%}, lowest {s['score']} first); skip {s['n_skip']} of {s['n_frames']} "
                 f"frames whole, label the rest with the accepted segments marked.",
                 f"Cost: {s['cost_plan_usd']:,.2f} USD instead of {s['cost_all_usd']:,.2f} USD (saves "
                 f"{s['saved_usd']:,.2f} USD, {s['saved_share']:.0%}; {s['units_plan']:,.1f} of "
                 f"{s['units_all']:,} units; review {s['review']:g} unit per accepted segment)."]
        if s.get("guarantee"):
            lines.append(s["guarantee"]["statement"])
        lines += shift_lines(s.get("shift", []), "promise")
        if s.get("realised"):
            r = s["realised"]
            among = r["wrong_among_accepted"]
            lines.append(f"Realised on the labelled pool: label error {r['label_error']:.1%} (promise "
                         f"{s['requested']:.0%}), wrong among accepted "
                         f"{'n/a' if not np.isfinite(among) else format(among, '.1%')}, "
                         f"{r['missed_accepted']} missed class(es) accepted with skipped frames.")
        if s.get("hindsight"):
            h = s["hindsight"]
            lines.append(f"Hindsight best on the pool: {h['best_score']} accepts {h['best_accepted_share']:.0%} "
                         f"(saves {h['best_saved_usd']:,.2f} USD); oracle {h['oracle_accepted_share']:.0%}.")
        if s["nan_segments"]:
            lines.append(f"{s['nan_segments']} segment(s) have no {s['score']} score and are labelled.")
        return "\n".join(lines)


def plan_segments(scores_df: pd.DataFrame, pool: SegmentTable, guarantee: SegmentGuarantee, *,
                  price: PriceModel = PriceModel(), review: float = 0.0,
                  shift: Sequence[ShiftCheck] = ()) -> SegmentPlan:
    """Apply `guarantee` to the pool's segments and price the result.

    Parameters
    ----------
    scores_df : the pool's scores table (``frame_id``, ``frame_index``, ``source`` per row)
    pool : its `SegmentTable` (same rows, no truth needed)
    review : units charged per accepted segment (a fraction of a unit; 0 = free)
    """
    if not 0 <= review <= price.annotators:
        raise DataError(f"plan: expected a review price in [0, {price.annotators}] units, but got {review}.")
    accepted, skipped = accept(pool, guarantee.threshold, guarantee.class_thresholds)
    n_rows = np.bincount(pool.row_frame, minlength=pool.n_frames)
    n_acc = np.bincount(pool.row_frame, weights=accepted, minlength=pool.n_frames).astype(np.int64)
    units = price.units(n_rows - n_acc) + review * n_acc
    first = scores_df.drop_duplicates("frame_id").set_index(scores_df.drop_duplicates("frame_id")["frame_id"].astype(str))
    top = pool.frame_max()
    frames = pd.DataFrame({"frame_id": pool.frame_ids,
                           "frame_index": first["frame_index"].reindex(pool.frame_ids).to_numpy(),
                           "source": first["source"].reindex(pool.frame_ids).to_numpy(),
                           "score": np.where(np.isfinite(top), top, np.nan),
                           "action": np.where(skipped, "skip", "label"),
                           "n_segments": n_rows, "n_accepted": n_acc, "units": units})
    frames["_key"] = np.where(skipped, 1, 0)
    frames["_top"] = np.where(np.isfinite(top), top, np.inf)
    queue = frames.sort_values(["_key", "_top", "frame_index"], ascending=[True, False, True], kind="stable")
    queue = queue.drop(columns=["_key", "_top"]).reset_index(drop=True)
    queue.insert(0, "rank", np.arange(1, len(queue) + 1))
    segments = pd.DataFrame({"frame_id": pool.frame_ids[pool.row_frame], "class_id": pool.class_id,
                             "class_name": pool.class_name, "score": pool.score,
                             "action": np.where(accepted, "accept", "label")})
    units_all = int(price.units(n_rows).sum())
    units_plan = float(units.sum())
    summary = {"unit": "segment", "n_frames": pool.n_frames, "n_skip": int(skipped.sum()),
               "n_label": int((~skipped).sum()), "skip_ratio": float(skipped.mean()) if pool.n_frames else 0.0,
               "n_segments": int(len(accepted)), "n_accepted": int(accepted.sum()),
               "accepted_share": float(accepted.mean()) if len(accepted) else 0.0, "score": guarantee.score,
               "mode": "guarantee", "requested": guarantee.alpha,
               "nan_segments": int((~np.isfinite(pool.score)).sum()), "nan_frames": 0,
               "units_all": units_all, "units_plan": round(units_plan, 3), "review": review,
               "cost_all_usd": round(price.cost(units_all), 2), "cost_plan_usd": round(price.cost(units_plan), 2),
               "price": price.to_dict(), "guarantee": guarantee.to_dict()}
    summary["saved_usd"] = round(summary["cost_all_usd"] - summary["cost_plan_usd"], 2)
    summary["saved_share"] = summary["saved_usd"] / summary["cost_all_usd"] if summary["cost_all_usd"] else 0.0
    if shift:
        summary["shift"] = [c.to_dict() for c in shift]
        summary["shift_alarm"] = any(c.shifted for c in shift)
    return SegmentPlan(queue=queue, segments=segments, summary=summary)


def frame_mean_scores(table: SegmentTable) -> np.ndarray:
    """(n_frames,) mean finite segment score per frame: frames, not segments, for the shift test."""
    ok = np.isfinite(table.score)
    total = np.bincount(table.row_frame[ok], weights=table.score[ok], minlength=table.n_frames)
    count = np.bincount(table.row_frame[ok], minlength=table.n_frames)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def hindsight_summary(scores_df: pd.DataFrame, iou_df: pd.DataFrame, n_classes: int, scores: Sequence[str], *,
                      alpha: float, iou_below: float, promise: str, price: PriceModel, review: float = 0.0) -> dict:
    """On a labelled pool: the best hindsight score (all rows), its accepted share and USD saved,
    and the oracle's; the yardstick beside a calibrated plan."""
    table = compare_scores(scores_df, iou_df, n_classes, scores, alpha=alpha, iou_below=iou_below, promise=promise)
    n_rows = len(scores_df)
    units_all = n_rows * price.annotators

    def saved(share: float) -> float:
        accepted = round(share * n_rows)
        return round(price.cost(units_all) - price.cost((n_rows - accepted) * price.annotators + review * accepted), 2)

    real = table[table["score"] != "oracle"]
    best = real.loc[real["all_rows"].idxmax()] if len(real) else None
    oracle = table[table["score"] == "oracle"].iloc[0]
    return {"best_score": None if best is None else str(best["score"]),
            "best_accepted_share": 0.0 if best is None else float(best["all_rows"]),
            "best_saved_usd": 0.0 if best is None else saved(float(best["all_rows"])),
            "oracle_accepted_share": float(oracle["all_rows"]), "oracle_saved_usd": saved(float(oracle["all_rows"])),
            "table": table.to_dict(orient="records")}
