"""The labelling queue: label the surprising frames, skip the dull ones, and price both.

Frames are ranked most surprising first (rank 1 = label first). The lowest-scoring frames are
skipped, chosen by one of:

- a skip ratio, or a budget (number of frames to label);
- a **guarantee** (`saseg.analysis.guarantee`): a score threshold calibrated on a labelled
  pilot by Learn-then-Test, so that with confidence 1 - delta at most alpha of the skipped
  frames fall below IoU t; the pool is checked against the pilot for a shift
  (`saseg.analysis.shift`), which would void the guarantee;
- a pilot ratio (``ratio_risk``, no guarantee): the largest skip *ratio* whose skipped pilot
  frames were at most that share below t on the pilot's trade-off curve, applied to the pool.

Frames whose score is NaN cannot be judged, so they are always labelled (the conservative
choice).

Cost follows the paper's example (section 2, Google Cloud data labelling): every segment
labelled by one annotator is a unit; per month the first 50,000 units cost 0.87 USD each and
further units 0.85 USD. A frame's segments are its predicted classes (``n_segments`` of the
frames table) unless a fixed number is given.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..columns import parse_score_column, require_columns, require_numeric
from ..errors import DataError
from ..io import write_csv, write_json
from ..layout import PlanDir
from .guarantee import Guarantee
from .shift import ShiftCheck
from .tradeoff import max_skip, n_skipped, one_curve, skip_order

log = logging.getLogger(__name__)

__all__ = ["PriceModel", "Plan", "plan", "pilot_curve_for", "shift_lines"]


@dataclass(frozen=True)
class PriceModel:
    """Tiered price per unit; a unit is one segment labelled by one annotator.

    Parameters
    ----------
    annotators : int
        Annotators per frame (the paper assumes at least three, for robustness).
    tiers : sequence of (upper bound in units, USD per unit)
        Cumulative upper bounds, ascending; the last should be ``inf``.
    segments_per_frame : int or None
        Fixed segments per frame; None takes each frame's ``n_segments``.
    """

    annotators: int = 3
    tiers: tuple[tuple[float, float], ...] = ((50_000, 0.87), (math.inf, 0.85))
    segments_per_frame: int | None = None

    def units(self, n_segments) -> np.ndarray:
        """(n,) units per frame = segments x annotators."""
        if int(self.annotators) < 1:
            raise DataError(f"PriceModel: expected at least 1 annotator, but got {self.annotators}.")
        seg = (np.full(len(n_segments), self.segments_per_frame)
               if self.segments_per_frame is not None else np.asarray(n_segments))
        return seg.astype(np.int64) * int(self.annotators)

    def cost(self, units: float) -> float:
        """USD for `units` units in one month: each unit priced by the tier it falls in."""
        if units < 0:
            raise DataError(f"PriceModel.cost: expected a non-negative number of units, but got {units}.")
        total, lower = 0.0, 0.0
        for upper, price in self.tiers:
            total += max(0.0, min(units, upper) - lower) * price
            lower = upper
            if units <= upper:
                return total
        raise DataError(f"PriceModel: expected the tiers to cover {units} units, but the last "
                        f"tier ends at {lower}; end the tiers with math.inf.")

    def to_dict(self) -> dict:
        return {"annotators": self.annotators, "segments_per_frame": self.segments_per_frame,
                "tiers": [[None if math.isinf(u) else u, p] for u, p in self.tiers]}


@dataclass
class Plan:
    """A labelling queue and its summary.

    Attributes
    ----------
    queue : DataFrame, one row per frame in rank order
        ``rank``, ``frame_id``, ``frame_index``, ``source``, ``score`` (the value of the
        column ranked by, named in ``summary["score"]``), ``action``
        ("label" | "skip"), ``n_segments``, ``units``.
    summary : dict
        Counts, skip ratio, costs (USD), NaN frames and, with a pilot curve, the expected
        inaccuracy of the skipped frames per threshold.
    """

    queue: pd.DataFrame
    summary: dict = field(default_factory=dict)

    def save(self, directory: str | PathLike) -> Path:
        """Write ``plan.csv`` (the queue) and ``plan.json`` (the summary), each atomically.

        Returns the path of ``plan.csv`` (what ``saseg export --plan`` reads).
        """
        out = PlanDir(directory)
        write_csv(out.queue_path, self.queue)
        write_json(out.summary_path, self.summary)
        out.segments_path.unlink(missing_ok=True)  # an earlier segment plan's marks no longer apply
        return out.queue_path

    def describe(self) -> str:
        s = self.summary
        lines = [f"Label {s['n_label']} of {s['n_frames']} frames, skip {s['n_skip']} "
                 f"({s['skip_ratio']:.0%} of scored frames, lowest {s['score']} first).",
                 f"Cost: {s['cost_plan_usd']:,.2f} USD instead of {s['cost_all_usd']:,.2f} USD "
                 f"(saves {s['saved_usd']:,.2f} USD, {s['units_plan']:,} of {s['units_all']:,} units)."]
        if s.get("guarantee"):
            lines.append(s["guarantee"]["statement"])
        lines += shift_lines(s.get("shift", []), "guarantee")
        if s.get("expected_inaccuracy"):
            parts = [f"IoU<{k[len('below_'):]}: {v:.1%}" if k.startswith("below_")
                     else f"mean 1-IoU: {v:.3f}" for k, v in s["expected_inaccuracy"].items()]
            lines.append("Expected among skipped frames (pilot): " + ", ".join(parts) + ".")
        if s["nan_frames"]:
            lines.append(f"{s['nan_frames']} frame(s) have no {s['score']} score and are labelled anyway.")
        if s.get("over_budget"):
            lines.append(f"Over budget: the unscored frames alone exceed the budget of {s['requested']}.")
        return "\n".join(lines)


def shift_lines(checks: Sequence[dict], what: str = "guarantee") -> list[str]:
    """The shift alarm's lines of a plan summary: each check, and the advice when one fired."""
    lines = [("WARNING: " if c["shifted"] else "") + c["statement"] + "." for c in checks]
    if any(c["shifted"] for c in checks):
        lines.append(f"The pool does not look like the pilot, so the {what} may not hold: label a pilot from the "
                     "new conditions and calibrate on it.")
    return lines


def plan(frames_df: pd.DataFrame, *, score: str = "frame_mdsa", skip_ratio: float | None = None,
         budget: int | None = None, ratio_risk: float | None = None,
         guarantee: Guarantee | None = None, shift: Sequence[ShiftCheck] = (),
         pilot_curve: pd.DataFrame | None = None, threshold: float = 0.5,
         price: PriceModel = PriceModel()) -> Plan:
    """Rank frames by surprise and decide which to label.

    Parameters
    ----------
    frames_df : DataFrame, one row per frame
        ``frame_id``, ``frame_index``, ``source``, the ``score`` column and (unless
        ``price.segments_per_frame`` is set) ``n_segments``. Higher score = more surprising.
    score : str
        Column to rank by.
    skip_ratio : float in [0, 1]
        Skip floor(skip_ratio * n_scored) lowest-scoring frames.
    budget : int
        Label this many frames in all (unscored frames count and are labelled first).
    ratio_risk : float in [0, 1]
        The largest skip ratio whose pilot ``below_t`` value at ``threshold`` is at most
        ``ratio_risk`` (needs ``pilot_curve``); a reading of the pilot, not a guarantee.
    guarantee : Guarantee
        Skip the frames whose score is at most ``guarantee.threshold`` (none when None).
    shift : ShiftCheck results of the pool against the guarantee's pilot, for the summary
    pilot_curve : DataFrame, a trade-off curve of one target and score from a labelled pilot
        Also used to report the expected inaccuracy at the chosen skip ratio.
    threshold : float
        IoU threshold for ``ratio_risk`` and the expected inaccuracy.
    price : PriceModel

    Returns
    -------
    Plan
    """
    modes = {"skip_ratio": skip_ratio, "budget": budget, "ratio_risk": ratio_risk, "guarantee": guarantee}
    given = [k for k, v in modes.items() if v is not None]
    if len(given) != 1:
        raise DataError(f"plan: expected exactly one of skip_ratio, budget, ratio_risk, guarantee, but got "
                        f"{given or 'none'}.")
    needed = ["frame_id", "frame_index", "source", score]
    if price.segments_per_frame is None:
        needed.append("n_segments")
    require_columns(frames_df, needed, "plan: the frames table")
    if "n_segments" in needed:
        segments = pd.to_numeric(frames_df["n_segments"], errors="coerce").to_numpy(np.float64)
        if not (np.isfinite(segments) & (segments >= 0) & (segments == np.round(segments))).all():
            raise DataError("plan: expected n_segments as whole non-negative counts in the frames table, but some "
                            "are missing, negative or fractional (edited?); score the run again.")
    require_numeric(frames_df, [score], "plan", what="a numeric score column",
                    hint="; rank by a score (frame_mdsa, frame_risk, ...)")
    if skip_ratio is not None and not 0 <= skip_ratio <= 1:
        raise DataError(f"plan: expected skip_ratio in [0, 1], but got {skip_ratio}.")
    if budget is not None and (int(budget) != budget or budget < 0):
        raise DataError(f"plan: expected budget to be a non-negative number of frames, but got {budget}.")
    if ratio_risk is not None:
        if pilot_curve is None:
            raise DataError("plan: expected a pilot_curve with ratio_risk, but got none.")
        if not 0 <= ratio_risk <= 1:
            raise DataError(f"plan: expected ratio_risk in [0, 1], but got {ratio_risk}.")
    if guarantee is not None and guarantee.score != score:
        raise DataError(f"plan: expected a guarantee calibrated on {score!r}, but it was calibrated on "
                        f"{guarantee.score!r}.")

    df = frames_df.sort_values(["frame_index", "frame_id"], kind="stable").reset_index(drop=True)
    values = df[score].to_numpy(dtype=np.float64)
    scored = np.flatnonzero(np.isfinite(values))
    nan_rows = np.flatnonzero(~np.isfinite(values))
    n_scored = len(scored)
    if skip_ratio is not None:
        n_skip = n_skipped(skip_ratio, n_scored)
    elif budget is not None:
        n_skip = min(n_scored, max(0, len(df) - int(budget)))
    elif guarantee is not None:
        n_skip = 0 if guarantee.threshold is None else int((values[scored] <= guarantee.threshold).sum())
    else:
        ratio = max_skip(pilot_curve, threshold, ratio_risk)
        n_skip = n_skipped(ratio, n_scored)
    # skipping order = tradeoff's (lowest first, ties in frame order); rank is its reverse
    ascending = scored[skip_order(values[scored])]
    skip_rows, label_rows = ascending[:n_skip], ascending[n_skip:][::-1]
    order = np.concatenate([label_rows, nan_rows, skip_rows[::-1]]).astype(np.int64)
    units = price.units(df["n_segments"] if price.segments_per_frame is None else np.zeros(len(df)))
    queue = pd.DataFrame({
        "rank": np.arange(1, len(df) + 1),
        "frame_id": df["frame_id"].to_numpy()[order],
        "frame_index": df["frame_index"].to_numpy()[order],
        "source": df["source"].to_numpy()[order],
        "score": values[order],
        "action": np.where(np.arange(len(df)) < len(df) - n_skip, "label", "skip"),
        "n_segments": (units // price.annotators)[order],
        "units": units[order],
    })
    units_all = int(units.sum())
    units_plan = int(queue.loc[queue["action"] == "label", "units"].sum())
    summary = {
        "n_frames": len(df), "n_label": len(df) - n_skip, "n_skip": int(n_skip),
        "skip_ratio": n_skip / n_scored if n_scored else 0.0, "score": score,
        "mode": given[0], "requested": modes[given[0]] if guarantee is None else guarantee.alpha,
        "nan_frames": len(nan_rows),
        "units_all": units_all, "units_plan": units_plan,
        "cost_all_usd": round(price.cost(units_all), 2),
        "cost_plan_usd": round(price.cost(units_plan), 2),
        "price": price.to_dict(),
    }
    summary["saved_usd"] = round(summary["cost_all_usd"] - summary["cost_plan_usd"], 2)
    if guarantee is not None:
        summary["guarantee"] = guarantee.to_dict()
    if shift:
        summary["shift"] = [c.to_dict() for c in shift]
        summary["shift_alarm"] = any(c.shifted for c in shift)
    if budget is not None and len(nan_rows) > budget:
        summary["over_budget"] = True
        log.warning("plan: %d unscored frames must be labelled, more than the budget of %d.",
                    len(nan_rows), budget)
    if len(nan_rows):
        log.warning("plan: %d frame(s) have no %s score; they are labelled.", len(nan_rows), score)
    if pilot_curve is not None:
        summary["threshold"] = threshold
        summary["expected_inaccuracy"] = _expected(pilot_curve, summary["skip_ratio"])
    return Plan(queue=queue, summary=summary)


def _expected(curve: pd.DataFrame, ratio: float) -> dict:
    """Pilot inaccuracy at `ratio` per threshold (linear interpolation between skip ratios)."""
    out = {}
    below = curve[curve["metric"] == "below_t"]
    if "order" in below.columns:
        below = below[below["order"] == "sa"]
    thresholds: Sequence[float | None] = sorted(below["threshold"].dropna().unique().tolist())
    for t in [*thresholds, None]:
        try:
            sub = one_curve(curve, t)
        except DataError:
            if t is None:
                continue
            raise
        key = "mean_1_minus_iou" if t is None else f"below_{t:g}"
        out[key] = float(np.interp(ratio, sub["skip_ratio"], sub["value"]))
    return out


def pilot_curve_for(table: pd.DataFrame, column: str, where: str = "trade-off table") -> pd.DataFrame:
    """The ``order="sa"`` curve of a `tradeoff_table` that matches a frames-table column.

    ``frame_<s>`` matches target "frame" and score s; ``group_<g>_<s>`` matches group g, score s.
    """
    candidates = parse_score_column(column, table.loc[table["kind"] == "group", "target"].unique())
    for target, s in candidates:
        rows = table[(table["target"] == target) & (table["score"] == s)]
        if "order" in rows.columns:
            rows = rows[rows["order"] == "sa"]
        if len(rows):
            return rows.reset_index(drop=True)
    raise DataError(f"{where}: expected a curve for {column!r} (frame_<score> or "
                    f"group_<group>_<score>), but it holds targets "
                    f"{sorted(table['target'].unique().tolist())} and scores "
                    f"{sorted(table['score'].unique().tolist())}.")
