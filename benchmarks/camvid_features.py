"""Out-of-drive ablation of the quality features of issue 24 item 3, and their cost per frame.

    python benchmarks/camvid_features.py --model runs/camvid/model --sa runs/camvid_triage/sa \
        --camvid ../shared/data/camvid --out runs/camvid_features

Protocol, fixed before any result was seen (as ``camvid_triage.py``, issue 11):

- CamVid val (101 frames, drive 0016E5) and test (233 frames, 0001TP and Seq05VD) are scored
  once at 480x360 with every feature: ``--tta flip`` (``flip_iou``), the per-component
  columns and ``temporal_iou`` (previous frame of the same sequence). SA model: the triage's
  (MDSA and LSA fitted on CamVid train); fitted here with the triage's recipe if absent.
- Feature groups: **base** (the features before this change: dispersion, geometry,
  false-negative mass, plug-in IoU, SA and softmax scores), **components** (`COMPONENT_COLUMNS`),
  **flip** (``flip_iou``), **temporal** (``temporal_iou``). Variants: base; base + each
  group; all; all minus each group. A variant drops the other columns from both runs and
  fits with ``extra_features`` = its groups.
- Each variant's quality model is fitted on val (`fit_quality`, seed 0) and applied to test,
  which it never saw (split by drive, never by frame).
- Reported on test: frame-level Spearman rho of ``frame_risk`` with the frame's mean class
  IoU, and hindsight skip@5 % (largest share of frames skippable lowest risk first with at
  most 5 % of the skipped below IoU 0.5); per class (the triage's seven classes) rho and
  skip@5 % of ``risk`` on the rows where the class is predicted (the same rows for every
  variant). Oracle skip@5 % beside them. Target (issue 24): frame skip@5 % >= 25 %.
- Cost: seconds per frame from the test run's ``score.json`` timing (forward pass, features
  with components, flip pass) and the temporal pass timed here; CPU load is whatever the
  machine had (say so).

Prints Markdown and writes it to OUT/camvid_features.md.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from saseg.commands.quality import apply_quality, fit_quality
from saseg.analysis.tradeoff import max_skip, tradeoff_curve
from saseg.evaluation import evaluate
from saseg.pipeline import fit, score
from saseg.quality.agreement import FLIP_COLUMN, TEMPORAL_COLUMN
from saseg.quality.components import COMPONENT_COLUMNS
from saseg.layout import RunDir
from saseg.scoring import add_temporal_agreement

CLASSES = ("Sky", "Building", "Road", "Pavement", "Tree", "Car", "Pedestrian")
GROUPS = {"components": list(COMPONENT_COLUMNS), "flip": [FLIP_COLUMN], "temporal": [TEMPORAL_COLUMN]}
T, RISK = 0.5, 0.05


def variants() -> dict[str, list[str]]:
    """Variant name -> the groups it keeps (base is always kept)."""
    out = {"base": []}
    out.update({f"base + {g}": [g] for g in GROUPS})
    out["all"] = list(GROUPS)
    out.update({f"all - {g}": [h for h in GROUPS if h != g] for g in GROUPS})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="runs/camvid/model")
    ap.add_argument("--sa", default="runs/camvid_triage/sa")
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--out", default="runs/camvid_features")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--train", help="spec of the SA model's training frames (default: CamVid train)")
    ap.add_argument("--val", help="spec of the pilot (default: CamVid val)")
    ap.add_argument("--test", help="spec of the pool (default: CamVid test)")
    ap.add_argument("--classes", help="comma-separated class targets (default: the triage's seven)")
    ap.add_argument("--estimators", default="mdsa,lsa",
                    help="SA columns in every variant (default the triage's; 'mdsa' alone scores several times faster)")
    args = ap.parse_args()
    out = Path(args.out)
    spec = f"camvid:{Path(args.camvid).resolve()}"
    specs = {"train": args.train or spec + ":train", "val": args.val or spec + ":val",
             "test": args.test or spec + ":test"}
    if args.classes:
        global CLASSES
        CLASSES = tuple(c.strip() for c in args.classes.split(","))
    sa = Path(args.sa)
    if not (sa / "sa.json").exists():
        sa = out / "sa"
        if not (sa / "sa.json").exists():
            fit(args.model, specs["train"], sa, split=None, estimators=tuple(args.estimators.split(",")), pixels_per_class=100,
                max_images=10_000, max_ats_per_class=10_000, lsa={"dtype": "float32"}, progress=False)
    runs = {}
    for split in ("val", "test"):
        run = RunDir(out / "scored" / split)
        if not run.is_scored:
            score(args.model, sa, specs[split], run.scores_path, split=None, pixels_per_class=1000,
                  estimators=args.estimators.split(","),
                  batch_size=args.batch_size, tta="flip", progress=False)
        if not (run.eval_dir / "iou.parquet").exists():
            evaluate(run.scores_path, None, run.eval_dir, split=None, plots=False, progress=False)
        runs[split] = run

    text = "\n".join(report(runs["val"], runs["test"], out))
    print(text)
    (out / "camvid_features.md").write_text(text + "\n")


def report(pilot_run: RunDir, pool_run: RunDir, out: Path) -> list[str]:
    """The cost table and the ablation table (Markdown lines); variant runs go under `out`."""
    lines = ["# Quality features of issue 24 item 3: out-of-drive ablation (fit on the pilot, judge on the pool)", ""]
    lines += cost(pool_run)
    test_iou = pd.read_parquet(pool_run.eval_dir / "iou.parquet")
    results = {}
    for name, keep in variants().items():
        drop = [c for g, cols in GROUPS.items() if g not in keep for c in cols]
        pilot, pool = (_variant(r, out / "variants" / _slug(name) / s, drop)
                       for r, s in ((pilot_run, "val"), (pool_run, "test")))
        fit_quality(pilot.root, pilot.eval_dir, pilot.root.parent / "quality", seed=0, extra_features=keep)
        for run in (pilot, pool):
            apply_quality(run, pilot.root.parent / "quality")
        results[name] = judge(pool, test_iou)
    return lines + table(results, test_iou, pool_run)


def _slug(name: str) -> str:
    return name.replace(" + ", "_plus_").replace(" - ", "_minus_").replace(" ", "_")


def _variant(run: RunDir, where: Path, drop: list[str]) -> RunDir:
    """A copy of `run`'s tables without the `drop` columns (eval dir copied, no predictions)."""
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for path in (run.meta_path, run.zscore_path, run.frames_path):
        shutil.copy(path, where / path.name)
    shutil.copytree(run.eval_dir, where / run.eval_dir.name)
    copy = RunDir(where)
    copy.write_scores(run.scores().drop(columns=[c for c in drop if c in run.scores().columns]))
    return copy


def _skip(score, iou, order: str = "sa") -> float:
    return max_skip(tradeoff_curve(score, iou, thresholds=(T,), order=order), T, RISK)


def judge(run: RunDir, iou_df: pd.DataFrame) -> dict[str, tuple[float, float, int]]:
    """target -> (rho of risk with IoU, skip@5 %, n) on test."""
    class_iou = iou_df[iou_df["kind"] == "class"]
    frames = run.frames()
    iou = frames["frame_id"].map(class_iou.groupby("frame_id")["iou"].mean()).to_numpy(dtype=float)
    risk = frames["frame_risk"].to_numpy(dtype=float)
    ok = np.isfinite(iou) & np.isfinite(risk)
    out = {"frame": (spearmanr(risk[ok], iou[ok]).statistic, _skip(risk[ok], iou[ok]), int(ok.sum()))}
    rows = run.scores()
    rows = rows[rows["n_pixels"] > 0].merge(class_iou[["frame_id", "class_id", "iou"]], on=["frame_id", "class_id"])
    for name in CLASSES:
        sub = rows[rows["class_name"] == name].dropna(subset=["risk", "iou"])
        out[name] = (spearmanr(sub["risk"], sub["iou"]).statistic, _skip(sub["risk"], sub["iou"]), len(sub))
    return out


def table(results: dict, iou_df: pd.DataFrame, run: RunDir) -> list[str]:
    names = ["frame", *CLASSES]
    head = "| variant | " + " | ".join(f"{n} rho / skip" for n in names) + " |"
    lines = [f"## Ablation on the pool, {run.meta()['data']} (rho of risk with IoU; hindsight skip@5 % at t = 0.5)", "",
             head, "|" + "---|" * (1 + len(names))]
    for variant, res in results.items():
        lines.append(f"| {variant} | " + " | ".join(f"{res[n][0]:+.3f} / {res[n][1]:.0%}" for n in names) + " |")
    class_iou = iou_df[iou_df["kind"] == "class"]
    frame_iou = class_iou.groupby("frame_id")["iou"].mean().to_numpy()
    oracle = [_skip(np.zeros(len(frame_iou)), frame_iou, order="oracle")]
    rows = run.scores()
    rows = rows[rows["n_pixels"] > 0].merge(class_iou[["frame_id", "class_id", "iou"]], on=["frame_id", "class_id"])
    for name in CLASSES:
        iou = rows.loc[rows["class_name"] == name, "iou"].dropna().to_numpy()
        oracle.append(_skip(np.zeros(len(iou)), iou, order="oracle"))
    lines.append("| oracle | " + " | ".join(f"- / {v:.0%}" for v in oracle) + " |")
    n = results["base"]
    lines += ["", "Rows: " + ", ".join(f"{k} {n[k][2]}" for k in names) + ". Target (issue 24): frame skip@5 % "
              f">= 25 %; base {n['frame'][1]:.0%}, all {results['all']['frame'][1]:.0%}.", ""]
    return lines


def cost(run: RunDir) -> list[str]:
    """Seconds per frame of each stage of the test run, and of the temporal pass."""
    timing = run.meta()["timing_this_session"]
    frames = max(1, timing["frames"])
    started = time.perf_counter()
    add_temporal_agreement(run.scores(), run.prediction, run.classes().num_classes)
    temporal = time.perf_counter() - started
    per = {k: 1000 * v / frames for k, v in timing.items() if k.endswith("_s")}
    forward = per["forward_s"]
    lines = [f"## Cost per frame on the pool run ({run.meta()['data']}; CPU shared with other jobs)", "",
             "| stage | ms per frame | share of the forward pass |", "|---|---|---|"]
    for k, v in per.items():
        lines.append(f"| {k[:-2]} | {v:.0f} | {v / forward:.0%} |")
    lines.append(f"| temporal pass (read masks, IoU) | {1000 * temporal / frames:.0f} | "
                 f"{1000 * temporal / frames / forward:.0%} |")
    return lines + ["", "features includes the per-component columns (their share alone: "
                    "`python benchmarks/bench_features.py`); flip is the second forward pass on "
                    "the mirrored frames plus the IoU.", ""]


if __name__ == "__main__":
    main()
