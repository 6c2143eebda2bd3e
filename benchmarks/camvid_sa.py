"""The paper's RQ1/RQ2 on real data: CamVid test scored with a model trained on CamVid train.

    python benchmarks/camvid_sa.py --model runs/camvid/model --camvid ../shared/data/camvid \
        --out runs/camvid

Fits MDSA and LSA (100 px per class per image, 10,000 ATs per class), scores CamVid test
(up to 1,000 px per predicted class), evaluates, and prints in Markdown: the Table-3-style
correlations, rho(MDSA, LSA), the largest skip ratio with <= 5 % of skipped frames below IoU
0.5 (SA order, random, oracle), scoring throughput and the share of it spent on SA, and an
investigation of aggregation choices for thin classes (mean vs 90th percentile, tiny
segments). Writes the same text to OUT/camvid_summary.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from saseg.analysis.correlation import format_table
from saseg.analysis.tradeoff import max_skip_table
from saseg.evaluation import evaluate
from saseg.pipeline import fit, score


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/camvid/model")
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--out", default="runs/camvid")
    ap.add_argument("--estimators", nargs="+", default=["mdsa", "lsa"])
    args = ap.parse_args()
    out = Path(args.out)
    spec = f"camvid:{Path(args.camvid).resolve()}"
    lines = []

    t0 = time.perf_counter()
    fit(args.model, spec + ":train", out / "sa", estimators=args.estimators, pixels_per_class=100,
        max_images=10_000, max_ats_per_class=10_000, lsa={"dtype": "float32"})
    fit_s = time.perf_counter() - t0
    scores_path = out / "test" / "scores.parquet"
    t0 = time.perf_counter()
    score(args.model, out / "sa", spec + ":test", scores_path, pixels_per_class=1000,
          resume=False)
    score_s = time.perf_counter() - t0
    summary = evaluate(scores_path, None, out / "test" / "eval")
    meta = json.loads((out / "test" / "score.json").read_text())
    timing = meta["timing_this_session"]

    lines += [f"Test mIoU (dataset confusion matrix, 480x360): {summary['dataset_miou']:.3f}", ""]
    lines += ["Per-class test IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["dataset_iou"].items()), ""]
    lines += ["RQ1, Spearman rho / p of class SA (mean over sampled pixels) against class IoU:", "",
              "```", summary["table"], "```", ""]
    agreement = out / "test" / "eval" / "agreement.csv"
    if agreement.exists():
        agree = pd.read_csv(agreement)
        lines += ["rho(MDSA, LSA) per class: " + ", ".join(
            f"{r.target} {r.rho:.3f}" for r in agree.itertuples()), ""]
    curves = pd.read_csv(out / "test" / "eval" / "tradeoff.csv")
    skips = max_skip_table(curves, threshold=0.5, risk=0.05)
    lines += ["RQ2, largest skip ratio with at most 5 % of skipped frames below IoU 0.5:", "",
              "```", _skip_text(skips), "```", ""]

    n = timing["frames"]
    est_s = {k[:-2]: v for k, v in timing.items() if k[:-2] in args.estimators}
    lines += [f"Scoring: {n} frames in {score_s:.0f} s wall (fit took {fit_s:.0f} s); per frame "
              f"forward {1e3 * timing['forward_s'] / n:.0f} ms, sampling + AT reading "
              f"{1e3 * timing['sampling_s'] / n:.1f} ms, "
              + ", ".join(f"{k} {1e3 * v / n:.1f} ms" for k, v in est_s.items())
              + f", aggregation {1e3 * timing['aggregate_s'] / n:.1f} ms, saving predictions "
              f"{1e3 * timing['predictions_s'] / n:.1f} ms.",
              f"MDSA's share over the forward pass (sampling + AT reading + MDSA): "
              f"{100 * (timing['sampling_s'] + timing.get('mdsa_s', 0)) / timing['forward_s']:.1f} %.", ""]
    lines += ["Thin classes: rho with IoU for other aggregations (MDSA):", "", "```",
              _aggregation_study(pd.read_parquet(scores_path), pd.read_parquet(out / "test" / "eval" / "iou.parquet")),
              "```"]
    text = "\n".join(lines)
    print(text)
    (out / "camvid_summary.md").write_text(text + "\n")


def _skip_text(skips: pd.DataFrame) -> str:
    keep = skips[skips["score"].isin(["mdsa", "lsa", "entropy"])]
    wide = keep.pivot_table(index=["target", "kind"], columns="score", values="max_skip_ratio", sort=False)
    refs = keep.groupby(["target", "kind"], sort=False)[["max_skip_random", "max_skip_oracle"]].first()
    return wide.join(refs).reset_index().to_string(index=False, float_format=lambda v: f"{v:.2f}")


def _aggregation_study(scores: pd.DataFrame, iou: pd.DataFrame) -> str:
    """rho(SA, IoU) per class for: mean, q90, mean on frames with >= 1,000 label pixels,
    and the predicted pixel count alone (a size baseline)."""
    classes = iou[iou["kind"] == "class"][["frame_id", "class_id", "iou", "n_label"]]
    joined = scores.merge(classes, on=["frame_id", "class_id"])
    rows = []
    for name, g in joined.groupby("class_name", sort=False):
        big = g[g["n_label"] >= 1000]
        rows.append({
            "class": name, "n": len(g),
            "rho_mean": _rho(g["mdsa"], g["iou"]), "rho_q90": _rho(g["mdsa_q90"], g["iou"]),
            "n_big": len(big), "rho_mean_big": _rho(big["mdsa"], big["iou"]),
            "rho_entropy": _rho(g["entropy"], g["iou"]),
            "rho_n_pixels": _rho(g["n_pixels"], g["iou"]),
        })
    return pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}")


def _rho(a, b) -> float:
    """Spearman rho over the pairs where both are defined (a class that is present but not
    predicted has a row with no SA), NaN when fewer than 3 remain or `a` is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3 or np.ptp(a) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


if __name__ == "__main__":
    main()
