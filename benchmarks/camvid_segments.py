"""Segment plans on real data (issue 24): the protocol, fixed before any result is seen.

Called by ``camvid_triage.py`` after the runs are scored, evaluated and the quality model
(fitted on CamVid val) applied; also runnable alone on those outputs:

    python benchmarks/camvid_segments.py --out runs/camvid_triage

- Segments: every row of test's scores.parquet (predicted and likely-present classes);
  wrong = class IoU < t = 0.5; a labelled class without a row counts as wrong when its frame
  is skipped whole.
- 500 random halvings of CamVid test (seed 0) into calibration and evaluation halves, frames
  as the unit. ALPHA in {0.05, 0.10}, DELTA = 0.1, score ``risk``. Rules: label error with
  confidence (LTT, WSR betting), label error in expectation (conformal risk control), skip
  precision with confidence (its ratio loss is not monotone: no in-expectation form), and
  label error with a per-class promise for Pedestrian and Bicyclist.
- Validity: share of splits whose realised evaluation-half value exceeds ALPHA (target <= DELTA
  within 2 s.e. = +-2.7 %) for the confidence promises; mean realised value for the
  expectation promises (target <= ALPHA); per class, the same for the class's own share.
- Savings: mean (min) share of segment units accepted, share of frames skipped whole; beside
  them the hindsight best score on each evaluation half (risk, 1 - plug-in IoU, and the SA and
  softmax scores on the rows where they are defined; NaN rows labelled) and the oracle, under
  the same promise. Target: label error at ALPHA 5 % accepts >= 56 % of segment units.
- Ranking on the same rows (item 5): hindsight accepted share on the whole test set per score,
  on all rows and on the rows every score shares.
- Drive split: calibrate on val (out-of-fold risk), plan test: accepted, realised, alarm.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pandas as pd

from saseg.analysis.segment_compare import available_scores, compare_scores
from saseg.analysis.segment_plan import calibrate_segments
from saseg.analysis.segments import (SegmentTable, accept, hindsight, oracle_score, realised, segment_table,
                                     subset)
from saseg.analysis.shift import shift_check
from saseg.layout import RunDir

ALPHAS, DELTA, T, SPLITS, SEED = (0.05, 0.10), 0.1, 0.5, 500, 0
PER_CLASS = ("Pedestrian", "Bicyclist")
RULES = {  # name -> (promise, in expectation, per-class)
    "label error, 90 % confidence (LTT, WSR)": ("label-error", False, ()),
    "label error, in expectation (CRC)": ("label-error", True, ()),
    "skip precision, 90 % confidence (LTT, WSR)": ("skip-precision", False, ()),
    "label error + per class Pedestrian, Bicyclist (LTT, WSR)": ("label-error", False, PER_CLASS),
}


def _value(r: dict, promise: str) -> float:
    return r["label_error"] if promise == "label-error" else (
        0.0 if not np.isfinite(r["wrong_among_accepted"]) else r["wrong_among_accepted"])


def _class_share(table, accepted, skipped, name) -> float:
    """Realised share of `name` segments wrongly accepted (missed ones count with skipped frames)."""
    is_c = table.class_name == name
    missed = np.array([name in m for m in table.missed_classes])
    n = is_c.sum() + missed.sum()
    wrong = (accepted & table.wrong & is_c).sum() + (skipped & missed).sum()
    return float(wrong / n) if n else 0.0


def splits_table(test: SegmentTable, sa_tables: dict) -> list[str]:
    """The 500 halvings: validity and savings of each rule, hindsight and oracle beside them."""
    rng = np.random.default_rng(SEED)
    n = test.n_frames
    halves = [rng.permutation(n) for _ in range(SPLITS)]
    se = 2 * math.sqrt(DELTA * (1 - DELTA) / SPLITS)
    lines = ["## Segment plans: 500 random halvings of test (calibrate on one half, plan the other)", "",
             f"{n} test frames, {len(test.score)} segments, {int(test.missed.sum())} labelled classes without a "
             f"row. Validity target: violation rate <= DELTA = 10 % (+-{se:.1%}, 2 s.e.) or mean <= ALPHA in "
             "expectation. Shares are of segment units (segments x annotators).", "",
             "| rule | ALPHA | violation rate | mean realised | accepted: mean (min) | frames skipped whole | "
             "certified splits | per class violation |", "|---|---|---|---|---|---|---|---|"]
    hind = {a: {} for a in ALPHAS}
    for alpha in ALPHAS:
        for rule, (promise, expect, per_class) in RULES.items():
            viol, vals, acc, skip, cert, cls = [], [], [], [], 0, {c: [] for c in per_class}
            for perm in halves:
                cal, ev = subset(test, perm[: n // 2]), subset(test, perm[n // 2:])
                g = calibrate_segments(cal, score="risk", alpha=alpha, delta=DELTA, iou_below=T, promise=promise,
                                       in_expectation=expect, per_class=per_class)
                a, s = accept(ev, g.threshold, g.class_thresholds)
                r = realised(ev, a, s)
                v = _value(r, promise)
                vals.append(v)
                viol.append(v > alpha)
                acc.append(r["accepted_rows_share"])
                skip.append(r["skipped_frames_share"])
                cert += g.threshold is not None
                for c in per_class:
                    cls[c].append(_class_share(ev, a, s, c) > alpha if not expect else _class_share(ev, a, s, c))
            acc = np.array(acc)
            per = ", ".join(f"{c} {np.mean(v):.1%}" for c, v in cls.items()) or "-"
            lines.append(f"| {rule} | {alpha:.0%} | {'-' if expect else f'{np.mean(viol):.1%}'} | "
                         f"{np.mean(vals):.2%} | {acc.mean():.1%} ({acc.min():.1%}) | {np.mean(skip):.1%} | "
                         f"{cert}/{SPLITS} | {per} |")
        for name, table in {**sa_tables, "oracle": None}.items():
            for promise in ("label-error", "skip-precision"):
                shares = []
                for perm in halves[:100]:  # hindsight on 100 evaluation halves (it needs no calibration)
                    ev = subset(test if table is None else table, perm[n // 2:])
                    if table is None:
                        ev.score = oracle_score(ev)
                    shares.append(hindsight(ev, alpha, promise)["accepted_rows_share"])
                hind[alpha][(name, promise)] = np.mean(shares)
    lines += ["", "Hindsight best on the evaluation halves (first 100 splits; no guarantee), share of segment "
              "units accepted, NaN rows labelled:", "",
              "| score | " + " | ".join(f"label error @{a:.0%} | skip precision @{a:.0%}" for a in ALPHAS) + " |",
              "|---|" + "---|---|" * len(ALPHAS)]
    for name in [*sa_tables, "oracle"]:
        lines.append(f"| {name} | " + " | ".join(f"{hind[a][(name, 'label-error')]:.1%} | "
                                                 f"{hind[a][(name, 'skip-precision')]:.1%}" for a in ALPHAS) + " |")
    return lines + [""]


def same_rows_table(scores_df, iou_df, n_classes, names) -> list[str]:
    lines = ["## Scores on the same rows (whole test set, hindsight, label error)", "",
             "| score | " + " | ".join(f"all rows @{a:.0%} | shared rows @{a:.0%}" for a in ALPHAS) + " |",
             "|---|" + "---|---|" * len(ALPHAS)]
    tables = {a: compare_scores(scores_df, iou_df, n_classes, names, alpha=a, iou_below=T).set_index("score")
              for a in ALPHAS}
    for name in [*names, "oracle"]:
        lines.append(f"| {name} | " + " | ".join(f"{tables[a].loc[name, 'all_rows']:.1%} | "
                                                 f"{tables[a].loc[name, 'shared_rows']:.1%}" for a in ALPHAS) + " |")
    t = tables[ALPHAS[0]]
    return lines + ["", f"All rows: {int(t['n_all'].iloc[0])}; shared rows (every score defined): "
                    f"{int(t['n_shared'].iloc[0])}.", ""]


def drive_split(pilot: RunDir, pool: RunDir, n_classes: int) -> list[str]:
    pilot_t = segment_table(pilot.scores(), "risk", n_classes, pd.read_parquet(pilot.eval_dir / "iou.parquet"), T)
    pool_t = segment_table(pool.scores(), "risk", n_classes, pd.read_parquet(pool.eval_dir / "iou.parquet"), T)
    lines = ["## Segment plans, drive split: calibrate on val (0016E5, out-of-fold risk), plan test", ""]
    for alpha in ALPHAS:
        for rule, (promise, expect, per_class) in RULES.items():
            g = calibrate_segments(pilot_t, score="risk", alpha=alpha, delta=DELTA, iou_below=T, promise=promise,
                                   in_expectation=expect, per_class=per_class)
            r = realised(pool_t, *accept(pool_t, g.threshold, g.class_thresholds))
            lines.append(f"- ALPHA {alpha:.0%}, {rule}: threshold {g.threshold}; test accepts "
                         f"{r['accepted_rows_share']:.1%} of segments, skips {r['skipped_frames_share']:.1%} of frames "
                         f"whole; realised label error {r['label_error']:.2%}, wrong among accepted "
                         f"{r['wrong_among_accepted']:.1%}." + (f" {g.causes['all']}" if 'all' in g.causes else ""))

    def means(t):
        ok = np.isfinite(t.score)
        return np.bincount(t.row_frame[ok], t.score[ok], t.n_frames) / np.maximum(
            np.bincount(t.row_frame[ok], minlength=t.n_frames), 1)
    check = shift_check(means(pilot_t), means(pool_t), column="mean segment risk per frame")
    return lines + ["", f"Shift alarm: {check.describe()}.", ""]


def segment_sections(val: RunDir, test: RunDir) -> list[str]:
    """Every segment table of the protocol, as Markdown lines."""
    n_classes = test.classes().num_classes
    scores_df = test.scores()
    iou_df = pd.read_parquet(test.eval_dir / "iou.parquet")
    names = available_scores(scores_df, test.score_columns())
    tables = {s: segment_table(scores_df, s, n_classes, iou_df, T) for s in names}
    present = set(tables["risk"].class_name) | {m for ms in tables["risk"].missed_classes for m in ms}
    for rule, (promise, expect, per_class) in RULES.items():  # classes the dataset lacks are left out
        RULES[rule] = (promise, expect, tuple(c for c in per_class if c in present))
    return (splits_table(tables["risk"], tables) + same_rows_table(scores_df, iou_df, n_classes, names)
            + drive_split(val, test, n_classes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/camvid_triage")
    args = ap.parse_args()
    out = Path(args.out)
    text = "\n".join(segment_sections(RunDir(out / "val"), RunDir(out / "test")))
    print(text)
    (out / "camvid_segments.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
