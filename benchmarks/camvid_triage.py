"""Triage on real data: the learned risk against SA and softmax, and the guarantee's validity.

    python benchmarks/camvid_triage.py --model runs/camvid/model --camvid ../shared/data/camvid \
        --out runs/camvid_triage

The protocol is fixed in advance (issue 11), so no label leaks:

- MDSA and LSA are fitted on CamVid train (as ``camvid_sa.py``); val and test are scored at
  480x360 with quality features and evaluated.
- The quality model is fitted on the pilot, CamVid **val** (101 frames of drive 0016E5), and
  evaluated on CamVid **test** (233 frames of 0001TP and Seq05VD), which it never saw.
- Per class and at frame level, for MDSA, LSA, entropy, 1 - max p, margin, 1 - plug-in IoU
  (issue 24; at frame level 1 - the mean over predicted classes) and risk: Spearman
  rho with IoU (p) and skip@5 % at t = 0.5 (largest share skippable, lowest score first, with
  at most 5 % of skipped frames below IoU 0.5). Class rows are those where the class is
  predicted and every score is defined, so every score is judged on the same pairs.
- Guarantee validity: 500 random halvings of test into calibration and evaluation halves
  (seed 0). At ALPHA in {0.05, 0.10}, DELTA = 0.1, target "frame" (mean class IoU), score
  frame_risk: the share of splits in which the realised failing share of skipped evaluation
  frames exceeds ALPHA, and the mean share skipped; the same for the old ratio-transfer rule.
- Drive split: calibrate on val (its out-of-fold risk), plan test, report the realised share
  and what the shift alarm says.

- Segment plans (issue 24): `camvid_segments.py`, whose docstring fixes that protocol.

Prints Markdown and writes it to OUT/camvid_triage.md.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from saseg.analysis.guarantee import failures_from_iou, frames_needed, learn_then_test
from saseg.commands.quality import apply_quality, fit_quality
from saseg.commands.shift import pool_shift
from saseg.analysis.tradeoff import max_skip, tradeoff_curve
from saseg.evaluation import evaluate
from saseg.pipeline import fit, score
from saseg.layout import RunDir

from camvid_segments import segment_sections

CLASSES = ("Sky", "Building", "Road", "Pavement", "Tree", "Car", "Pedestrian")
SCORES = ("mdsa", "lsa", "entropy", "max_softmax", "margin", "plugin_risk", "risk")
ALPHAS, DELTA, T, SPLITS = (0.05, 0.10), 0.1, 0.5, 500


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/camvid/model")
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--out", default="runs/camvid_triage")
    args = ap.parse_args()
    out = Path(args.out)
    spec = f"camvid:{Path(args.camvid).resolve()}"
    started = time.perf_counter()
    if not (out / "sa" / "sa.json").exists():
        fit(args.model, spec + ":train", out / "sa", estimators=("mdsa", "lsa"), pixels_per_class=100,
            max_images=10_000, max_ats_per_class=10_000, lsa={"dtype": "float32"})
    runs = {}
    for split in ("val", "test"):
        run = RunDir(out / split)
        score(args.model, out / "sa", f"{spec}:{split}", run.scores_path, pixels_per_class=1000, resume=False)
        evaluate(run.scores_path, None, run.eval_dir, plots=False)
        runs[split] = run
    quality = fit_quality(runs["val"].root, runs["val"].eval_dir, out / "quality", seed=0)
    for run in runs.values():  # val gets its out-of-fold risk, test the fitted model's
        apply_quality(run, out / "quality")
    minutes = (time.perf_counter() - started) / 60

    timing = runs["test"].meta()["timing_this_session"]
    lines = [f"# CamVid triage (pilot: val, 101 frames; pool: test, 233 frames; {minutes:.1f} min)", "",
             f"Quality features cost {timing.get('features_s', 0) / timing['forward_s']:.0%} of the forward pass "
             f"at 480x360 ({1000 * timing.get('features_s', 0) / timing['frames']:.0f} ms against "
             f"{1000 * timing['forward_s'] / timing['frames']:.0f} ms per frame, same run; target <= 10 %).", "",
             "Quality model, fitted on val (cross-validated out of fold, contiguous blocks of the one drive):",
             "", "```", quality.describe(), "```", ""]
    test_iou = pd.read_parquet(runs["test"].eval_dir / "iou.parquet")
    lines += ranking_tables(runs["test"], test_iou)
    lines += validity(runs["test"], test_iou)
    lines += drive_split(runs["val"], runs["test"], test_iou)
    lines += segment_sections(runs["val"], runs["test"])  # issue 24: per segment (camvid_segments.py)
    text = "\n".join(lines)
    print(text)
    (out / "camvid_triage.md").write_text(text + "\n")


def _skip_at(score, iou) -> float:
    return max_skip(tradeoff_curve(score, iou, thresholds=(T,)), T, 0.05)


def ranking_tables(run: RunDir, iou_df: pd.DataFrame) -> list[str]:
    """Per class and frame: rho (p) and skip@5 % of each score on the same test pairs."""
    scores = run.scores()
    scores["plugin_risk"] = 1 - scores["plugin_iou"]  # the plug-in expected IoU as a score (issue 24)
    class_iou = iou_df[iou_df["kind"] == "class"][["frame_id", "class_id", "iou"]]
    rows = scores[scores["n_pixels"] > 0].merge(class_iou, on=["frame_id", "class_id"])
    rows = rows.dropna(subset=list(SCORES))
    head = "| target | n | " + " | ".join(f"rho {s}" for s in SCORES) + " | " + \
        " | ".join(f"skip@5% {s}" for s in SCORES) + " |"
    table = [head, "|" + "---|" * (2 + 2 * len(SCORES))]
    verdicts = {"rho": 0, "skip": 0}
    for name in [*CLASSES, "frame"]:
        if name == "frame":
            frames = run.frames()
            # frame plug-in: 1 - mean plug-in IoU over the frame's predicted classes
            plugin = scores[scores["n_pixels"] > 0].groupby("frame_id")["plugin_iou"].mean()
            frames = frames.assign(frame_plugin_risk=1 - frames["frame_id"].map(plugin))
            iou = iou_df[iou_df["kind"] == "class"].groupby("frame_id")["iou"].mean()
            sub = frames.assign(iou=frames["frame_id"].map(iou))
            cols = {s: f"frame_{s}" for s in SCORES}
        else:
            sub = rows[rows["class_name"] == name]
            cols = {s: s for s in SCORES}
        sub = sub.dropna(subset=[*cols.values(), "iou"])
        rhos = {s: spearmanr(sub[c], sub["iou"]) for s, c in cols.items()}
        skips = {s: _skip_at(sub[c].to_numpy(), sub["iou"].to_numpy()) for s, c in cols.items()}
        table.append(f"| {name} | {len(sub)} | " + " | ".join(
            f"{r.statistic:+.2f} ({r.pvalue:.0e})" for r in rhos.values()) + " | " +
            " | ".join(f"{v:.0%}" for v in skips.values()) + " |")
        singles = [s for s in SCORES if s not in ("risk", "plugin_risk")]
        if name != "frame":
            best_rho = max(-rhos[s].statistic for s in singles)
            verdicts["rho"] += -rhos["risk"].statistic >= best_rho
            verdicts["skip"] += skips["risk"] >= max(skips[s] for s in singles)
        else:
            frame_wins = all(-rhos["risk"].statistic > -rhos[s].statistic and skips["risk"] >= skips[s]
                             for s in ("mdsa", "entropy"))
    return ["## Ranking on test (rho: negative = the score predicts failure)", "", *table, "",
            f"Targets: risk correlates at least as strongly as the best single score on "
            f"{verdicts['rho']} of 7 classes (target 7); its skip@5 % is at least the best single "
            f"score's on {verdicts['skip']} of 7 (target >= 5); frame-level risk beats frame MDSA and "
            f"frame entropy on both measures: {'yes' if frame_wins else 'no'}.", ""]


def _fails(frames: pd.DataFrame, iou_df: pd.DataFrame) -> np.ndarray:
    return failures_from_iou(frames, iou_df, ["frame"], T)["frame"]


def validity(run: RunDir, iou_df: pd.DataFrame) -> list[str]:
    """500 random halvings of test: LTT and the ratio-transfer rule, realised risk."""
    frames = run.frames()
    score = frames["frame_risk"].to_numpy(dtype=np.float64)
    fails = _fails(frames, iou_df)
    ok = np.isfinite(score) & np.isfinite(fails)
    score, fails = score[ok], fails[ok]
    n = len(score)
    rng = np.random.default_rng(0)
    lines = ["## Guarantee validity: 500 random halvings of test (calibrate on one half, plan the other)", "",
             f"{n} test frames, {fails.mean():.0%} of them below frame IoU {T:g}. Monte Carlo error of a "
             f"violation rate near {DELTA:.0%} over {SPLITS} splits: +-{2 * math.sqrt(DELTA * (1 - DELTA) / SPLITS):.1%} (2 s.e.).",
             "", "| rule | ALPHA | violation rate (target <= DELTA = 10 %) | mean share skipped | "
             "mean realised failing share |", "|---|---|---|---|---|"]
    for alpha in ALPHAS:
        stats = {"LTT (guarantee)": [], "ratio transfer (old)": []}
        for _ in range(SPLITS):
            perm = rng.permutation(n)
            cal, ev = perm[: n // 2], perm[n // 2:]
            g = learn_then_test(score[cal], {"frame": fails[cal]}, alpha=alpha, delta=DELTA)
            skip = score[ev] <= g.threshold if g.threshold is not None else np.zeros(len(ev), bool)
            stats["LTT (guarantee)"].append(_outcome(skip, fails[ev], alpha))
            ratio = max_skip(tradeoff_curve(score[cal], 1 - fails[cal], thresholds=(T,)), T, alpha)
            k = math.floor(ratio * len(ev) + 1e-9)
            skip = np.zeros(len(ev), bool)
            skip[np.argsort(score[ev], kind="stable")[:k]] = True
            stats["ratio transfer (old)"].append(_outcome(skip, fails[ev], alpha))
        for rule, values in stats.items():
            v = np.array(values)
            lines.append(f"| {rule} | {alpha:.0%} | {v[:, 0].mean():.1%} | {v[:, 1].mean():.1%} | "
                         f"{np.nanmean(v[:, 2]):.1%} |")
    lines += ["", f"A pilot half has {n // 2} frames; LTT needs at least {frames_needed(0.05, DELTA)} "
              f"skipped pilot frames at ALPHA 5 % and {frames_needed(0.10, DELTA)} at 10 % before it can skip "
              "anything.", ""]
    return lines


def _outcome(skip: np.ndarray, fails: np.ndarray, alpha: float) -> tuple[float, float, float]:
    """(violated, share skipped, realised failing share among skipped; NaN if none skipped)."""
    if not skip.any():
        return 0.0, 0.0, float("nan")
    realised = float(fails[skip].mean())
    return float(realised > alpha), float(skip.mean()), realised


def drive_split(pilot: RunDir, pool: RunDir, iou_df: pd.DataFrame) -> list[str]:
    """Calibrate on val (out-of-fold risk), plan test: realised risk and the shift alarm."""
    pilot_frames = pilot.frames()
    pilot_fails = _fails(pilot_frames, pd.read_parquet(pilot.eval_dir / "iou.parquet"))
    frames = pool.frames()
    fails = _fails(frames, iou_df)
    lines = ["## Drive split: calibrate on val (drive 0016E5), plan test (0001TP, Seq05VD)", ""]
    for alpha in ALPHAS:
        g = learn_then_test(pilot_frames["frame_risk"].to_numpy(dtype=np.float64), {"frame": pilot_fails},
                            alpha=alpha, delta=DELTA, score="frame_risk")
        skip = frames["frame_risk"].to_numpy() <= g.threshold if g.threshold is not None else np.zeros(len(frames), bool)
        realised = f"{np.nanmean(fails[skip]):.1%}" if skip.any() else "n/a"
        lines.append(f"- ALPHA {alpha:.0%}: {g.describe()} On test it skips {skip.sum()} of {len(frames)} "
                     f"frames ({skip.mean():.0%}); realised failing share {realised}.")
    lines += ["", "Shift alarm, test against val:", ""]
    lines += [f"- {c.describe()}" for c in pool_shift(pilot, pool, ["frame_risk"])]
    return lines + [""]


if __name__ == "__main__":
    main()
