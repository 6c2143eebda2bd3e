"""Audit on real data: does the PPI++ interval for the pool's IoU hold, and how much narrower is it?

    python benchmarks/camvid_audit.py --triage runs/camvid_triage --camvid ../shared/data/camvid \
        --out runs/camvid_audit
    python benchmarks/camvid_audit.py --synthetic --out runs/synth_audit      # the shifted generator pool

Protocol (issue 26), fixed before any result was seen:

- Pool = CamVid **test** (233 frames), scored with quality features by ``camvid_triage.py``; its
  labels are held back as the truth. Predictions Ŷ = each frame's predicted intersection and
  union per class from the learned ``quality`` (the quality model fitted on CamVid **val**,
  never the pool; ``--predictor quality``) times the plug-in union (`saseg.analysis.audit`).
- Truth per frame and class: intersection and union pixels of the run's saved predictions
  against the test labels (ignore excluded); pool IoU = Σ I / Σ U per class, mIoU = their
  mean over the classes present in the pool.
- For N in {10, 20, 40, 80} and 1,000 repetitions (seeds 0-999): draw the audit sample
  (uncertainty-driven, half uniform: ``sample_audit``'s design), estimate with 90 % intervals.
  Coverage: share of repetitions whose interval holds the true mIoU, and each of Sky,
  Building, Road, Pavement, Tree, Car (target >= 88 % at N >= 20; a class absent from a
  sample has no interval and counts as not covered).
- Width ratio: mean PPI++ width (active sample) / mean labels-only width under **uniform**
  sampling at the same N and seeds (target <= 0.7 for mIoU and >= 4 of 6 classes).
- ``--synthetic``: the same on the embedded generator, a small model trained on day drives and
  a shifted pool of 200 night and rain frames (plug-in predictor: no quality model), where the
  predictions are biased; the interval must still cover.

Method (changed after the first run, which missed class coverage; the protocol above is
unchanged): the design favours frames by the predicted residual scale ``√(mean_c v_ic / T_c²)``,
``v_ic = Û_ic (Û_ic - Î_ic)`` (`saseg.analysis.audit`), and the PPI++ variance is scaled by the
anticipated-variance ratio (`saseg.analysis.audit_math`). The first method is kept beside it as
arms of the same run: ``active_v1`` draws by the old uncertainty ``error_mass``
(`PoolPredictions.uncertainty`), and ``ppi_plain`` is the interval without the ratio, so each
change's effect is measured apart. A last table (`tail_table`, diagnostics, not a target) shows
where each class's error sits and whether the design sees it.

Prints Markdown and writes it to OUT/camvid_audit.md (or synth_audit.md).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from saseg.analysis.audit import estimate, frame_truth
from saseg.commands.audit import pool_predictions
from saseg.analysis.audit_math import inclusion_probabilities, systematic_sample
from saseg.data import open_dataset
from saseg.io import write_parquet, write_text
from saseg.layout import RunDir

MAJOR = ("Sky", "Building", "Road", "Pavement", "Tree", "Car")
NS, REPS, LEVEL = (10, 20, 40, 80), 1000, 0.9
SYNTH_TRAIN = "synthetic:n=240,seed=11,size=96x72,split=train,conditions=day"
SYNTH_POOL = "synthetic:n=200,seed=12,size=96x72,split=test,conditions=night@0.5+rain@0.5"


def truth_table(run: RunDir, labels: str, ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(M, C) true intersections and unions and (M,) frame IoU, in the pool's frame order."""
    dataset = open_dataset(labels)
    index_of = {dataset.frame_id(i): i for i in range(len(dataset))}
    classes = run.classes()
    parts = [frame_truth(run.prediction(f), dataset[index_of[f]].label, classes) for f in ids]
    return (np.array([p[0] for p in parts]), np.array([p[1] for p in parts]),
            np.array([p[2] for p in parts]))


def tail_table(pool, inter, union, names, targets, n: int = 20, top: int = 10) -> pd.DataFrame:
    """Why a class's interval misses: do the frames that hold its error stand out to the design?

    Per class, the `top` frames with the largest true linearised residual ``|I_i - R U_i|``
    (R the pool IoU): their share of the squared residual, their share of the model ``v``
    (`PoolPredictions.residual_model`), their true and predicted IoU, their mean inclusion
    probability at N = `n` against the pool's, and the share of the REPS samples of `n` that
    hold none of them.
    """
    pi = inclusion_probabilities(pool.uncertainty(), n)
    samples = [systematic_sample(pi, seed=rep) for rep in range(REPS)]
    v = pool.residual_model()
    rows = []
    for name in targets:
        c = names.index(name)
        e = inter[:, c] - inter[:, c].sum() / union[:, c].sum() * union[:, c]
        worst = np.argsort(-np.abs(e))[:top]
        rows.append({"class": name, "share_e2": (e[worst] ** 2).sum() / (e ** 2).sum(),
                     "share_v": v[worst, c].sum() / v[:, c].sum(),
                     "iou_true": inter[worst, c].sum() / union[worst, c].sum(),
                     "iou_predicted": pool.inter_hat[worst, c].sum() / pool.union_hat[worst, c].sum(),
                     "pi_worst": pi[worst].mean(), "pi_mean": pi.mean(),
                     "none_drawn": np.mean([not np.isin(worst, s).any() for s in samples])})
    return pd.DataFrame(rows)


def simulate(run: RunDir, labels: str, predictor: str, targets) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per (N, repetition, arm, target): estimate, low, high, truth; and `tail_table`."""
    pool = pool_predictions(run, predictor)
    classes = run.classes()
    inter, union, frame_iou = truth_table(run, labels, pool.frame_ids)
    truth = np.divide(inter.sum(0), union.sum(0), out=np.full(inter.shape[1], np.nan), where=union.sum(0) > 0)
    truth_miou = float(np.nanmean(truth))
    m = len(pool.frame_ids)
    ids = {name: classes.names.index(name) for name in targets}
    rows = []
    for n in NS:
        designs = {"active": inclusion_probabilities(pool.uncertainty(), n),
                   "active_v1": inclusion_probabilities(pool.uncertainty("error_mass"), n),
                   "uniform": np.full(m, n / m)}
        for rep in range(REPS):
            for design, pi in designs.items():
                s = systematic_sample(pi, seed=rep)
                for anticipate in (True, False):
                    result = estimate(pool, s, pi, inter[s], union[s], frame_iou[s], classes, level=LEVEL,
                                      anticipate=anticipate)
                    t = result.classes.set_index("class_name")
                    mi = result.summary["miou"]
                    ppi = "ppi" if anticipate else "ppi_plain"
                    arms = {ppi: (mi["estimate"], mi["low"], mi["high"])}
                    if anticipate:
                        arms["labels"] = (mi["labels_only"]["estimate"], mi["labels_only"]["low"],
                                          mi["labels_only"]["high"])
                    for arm, (e, lo, hi) in arms.items():
                        rows.append((n, rep, design, arm, "mIoU", e, lo, hi, truth_miou))
                    for name, c in ids.items():
                        have = name in t.index and np.isfinite(t.loc[name, "estimate"])
                        cols = {ppi: ("estimate", "low", "high"), "labels": ("labels_only", "labels_low", "labels_high")}
                        for arm in arms:
                            e, lo, hi = (t.loc[name, k] for k in cols[arm]) if have else (np.nan,) * 3
                            rows.append((n, rep, design, arm, name, e, lo, hi, truth[c]))
    df = pd.DataFrame(rows, columns=["n", "rep", "design", "arm", "target", "estimate", "low", "high", "truth"])
    df["covered"] = (df["low"] <= df["truth"]) & (df["truth"] <= df["high"])
    df["width"] = df["high"] - df["low"]
    return df, tail_table(pool, inter, union, classes.names, targets)


def fmt(table: pd.DataFrame, spec: str) -> str:
    """A Markdown table: targets down, N across."""
    head = "| target | " + " | ".join(f"N = {n}" for n in table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    body = ["| " + str(t) + " | " + " | ".join(format(v, spec) for v in row) + " |"
            for t, row in zip(table.index, table.to_numpy())]
    return "\n".join([head, rule, *body])


def tables(df: pd.DataFrame, targets) -> list[str]:
    order = ["mIoU", *targets]
    ppi = df[(df.design == "active") & (df.arm == "ppi")]
    lab = df[(df.design == "uniform") & (df.arm == "labels")]
    cov = ppi.groupby(["target", "n"])["covered"].mean().unstack("n").reindex(order)
    ratio = (ppi.groupby(["target", "n"])["width"].mean() / lab.groupby(["target", "n"])["width"].mean()
             ).unstack("n").reindex(order)
    cov_lab = lab.groupby(["target", "n"])["covered"].mean().unstack("n").reindex(order)
    first = df[(df.design == "active_v1") & (df.arm == "ppi_plain")]
    plain = df[(df.design == "active") & (df.arm == "ppi_plain")]
    cov_first = first.groupby(["target", "n"])["covered"].mean().unstack("n").reindex(order)
    cov_plain = plain.groupby(["target", "n"])["covered"].mean().unstack("n").reindex(order)
    first_rho = df[(df.design == "active_v1") & (df.arm == "ppi")]
    cov_first_rho = first_rho.groupby(["target", "n"])["covered"].mean().unstack("n").reindex(order)
    ratio_first_rho = (first_rho.groupby(["target", "n"])["width"].mean()
                       / lab.groupby(["target", "n"])["width"].mean()).unstack("n").reindex(order)
    ratio_first = (first.groupby(["target", "n"])["width"].mean() / lab.groupby(["target", "n"])["width"].mean()
                   ).unstack("n").reindex(order)
    missing = ppi.groupby(["target", "n"])["estimate"].apply(lambda x: x.isna().mean()).unstack("n").reindex(order)
    return ["Coverage of the 90 % PPI++ interval (active sample):", "", fmt(cov, ".3f"), "",
            "Width ratio, PPI++ (active) / labels-only (uniform), mean widths:", "", fmt(ratio, ".2f"), "",
            "Coverage of the labels-only interval under uniform sampling (reference):", "", fmt(cov_lab, ".3f"), "",
            "Share of repetitions where the class is absent from the sample (no interval, counted as a miss):",
            "", fmt(missing, ".3f"), "",
            "The first method in the same run (old uncertainty, plain jackknife): coverage, then width ratio:", "",
            fmt(cov_first, ".3f"), "", fmt(ratio_first, ".2f"), "",
            "The new design with the plain jackknife (the ratio's share of the change): coverage:", "",
            fmt(cov_plain, ".3f"), "",
            "The first design with the ratio (the design's share): coverage, then width ratio:", "",
            fmt(cov_first_rho, ".3f"), "", fmt(ratio_first_rho, ".2f"), ""]


def synthetic_run(out: Path) -> tuple[RunDir, str]:
    """A small day-trained model, MDSA, and the shifted pool scored with quality features."""
    from saseg.models.train import train
    from saseg.pipeline import fit, score

    run = RunDir(out / "pool")
    if not run.scores_path.exists():
        train(open_dataset(SYNTH_TRAIN), out / "model", arch="small", epochs=6, batch_size=8, lr=3e-3, seed=0,
              progress=False)
        fit(out / "model", SYNTH_TRAIN, out / "sa", estimators=("mdsa",), max_ats_per_class=500, progress=False)
        score(out / "model", out / "sa", SYNTH_POOL, run.scores_path, pixels_per_class=100, progress=False)
    return run, SYNTH_POOL


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triage", default="runs/camvid_triage", help="camvid_triage.py's output folder")
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--predictor", default="quality", choices=("plugin", "quality"))
    ap.add_argument("--synthetic", action="store_true", help="the shifted generator pool instead of CamVid")
    ap.add_argument("--out", default="runs/camvid_audit")
    args = ap.parse_args()
    logging.getLogger("saseg.analysis.audit").setLevel(logging.ERROR)  # absent-class notes: counted below
    out = Path(args.out)
    started = time.perf_counter()
    if args.synthetic:
        run, labels = synthetic_run(out)
        predictor, name = "plugin", "synth_audit"
        classes = run.classes().names
        totals = pool_predictions(run).union_hat.sum(0)
        targets = tuple(classes[c] for c in np.argsort(-totals)[:6])  # the six largest classes
    else:
        run = RunDir(Path(args.triage) / "test")
        labels, predictor, name, targets = f"camvid:{Path(args.camvid).resolve()}:test", args.predictor, "camvid_audit", MAJOR
    df, tail = simulate(run, labels, predictor, targets)
    out.mkdir(parents=True, exist_ok=True)
    write_parquet(out / f"{name}_reps.parquet", df)
    tail_lines = ["| class | share of e² | share of v | IoU true / predicted | π worst / mean | none drawn |",
                  "|---|---:|---:|---:|---:|---:|"]
    tail_lines += [f"| {r['class']} | {r.share_e2:.2f} | {r.share_v:.2f} | {r.iou_true:.2f} / {r.iou_predicted:.2f} "
                   f"| {r.pi_worst:.3f} / {r.pi_mean:.3f} | {r.none_drawn:.2f} |" for _, r in tail.iterrows()]
    lines = [f"# {name}: pool {run.root} ({len(run.frames())} frames), predictor {predictor}, "
             f"{REPS} repetitions per N", "", *tables(df, targets),
             "Where each class's error sits (`tail_table`): the 10 frames with the largest residual, "
             "N = 20:", "", *tail_lines, "",
             f"true pool mIoU {df[df.target == 'mIoU'].truth.iloc[0]:.4f}; took {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines)
    write_text(out / f"{name}.md", text + "\n")
    print(text)


if __name__ == "__main__":
    main()
