"""Audit design, pilot only: would a learned model of the residual's square find the frames
that carry each class's error better than the plug-in model ``v = Û (Û - Î)``?

    python benchmarks/camvid_audit_pilot.py --triage runs/camvid_triage --camvid ../shared/data/camvid

A development check for issue 26 that never touches the pool (CamVid test): on CamVid **val**,
the pilot, every prediction is out of fold. The quality column of the val run holds the
quality model's out-of-fold IoU ``q̂`` (`saseg.analysis.quality`, contiguous blocks of the one
drive); a second `saseg.quality.QualityModel` on the same class features regresses the squared
out-of-fold residual ``(q - q̂)²`` (``--target abs``: ``|q - q̂|``, then squared), again out of
fold, and the learned model is ``v_ic = Û_ic² ê²_ic``. Printed: the quality model's
cross-validation line for the residual, `camvid_audit.tail_table` on val under each ``v``
(does the design see the frames holding the error?), and coverage and mean width of the 90 %
PPI++ interval on val as the pool, N in {10, 20, 40} x 300 repetitions, under each ``v``.

The rule, decided before the first run: adopt the learned ``v`` only if it raises the top-10
frames' share of ``v`` for most of the six classes. It raised it for three (Building, Road,
Tree) and lowered it for three (Sky, Pavement, Car), and the design's inclusion probability of
those frames stayed at the pool's mean under either ``v``; so the audit keeps the plug-in ``v``
(README, "Audit").
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from camvid_audit import LEVEL, MAJOR, tail_table, truth_table
from saseg.analysis.audit import PoolPredictions, estimate
from saseg.analysis.audit_math import inclusion_probabilities, systematic_sample
from saseg.analysis.quality import class_features, target_iou
from saseg.commands.audit import pool_predictions
from saseg.layout import RunDir
from saseg.quality import QualityModel

NS, REPS = (10, 20, 40), 300


@dataclasses.dataclass(frozen=True)
class LearnedResidual(PoolPredictions):
    """A pool whose residual model is given, not the plug-in one."""

    v: np.ndarray = None

    def residual_model(self) -> np.ndarray:
        return self.v


def learned_pool(run: RunDir, target: str) -> tuple[PoolPredictions, PoolPredictions, str]:
    """The plug-in pool, the same pool with the learned ``v``, and the residual model's CV line."""
    scores, meta, classes = run.scores(), run.meta(), run.classes()
    keys = pd.MultiIndex.from_arrays([scores["frame_id"].astype(str), scores["class_id"].astype(int)])
    iou = target_iou(pd.read_parquet(run.eval_dir / "iou.parquet"), "class").reindex(keys).to_numpy(np.float64)
    residual = iou - scores["quality"].to_numpy(np.float64)  # out of fold on the pilot
    X = class_features(scores, [c for c in meta["score_columns"] if c != "risk"], classes)
    model = QualityModel(seed=0).fit(X, residual ** 2 if target == "sq" else np.abs(residual),
                                     groups=["pilot"] * len(X), order=np.arange(len(X)))
    e = np.where(np.isfinite(model.oof_), model.oof_, model.predict(X))  # unlabelled rows: in sample
    e2 = e if target == "sq" else e ** 2
    pool = pool_predictions(run, "quality")
    row = pd.Series(np.arange(len(pool.frame_ids)), index=pool.frame_ids)
    sq = np.zeros_like(pool.union_hat)
    np.add.at(sq, (row[scores["frame_id"].astype(str)].to_numpy(), scores["class_id"].to_numpy()), e2)
    fields = {f.name: getattr(pool, f.name) for f in dataclasses.fields(PoolPredictions)}
    return pool, LearnedResidual(**fields, v=pool.union_hat ** 2 * np.maximum(sq, 1e-6)), model.describe()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--triage", default="runs/camvid_triage", help="camvid_triage.py's output folder")
    ap.add_argument("--camvid", default="../shared/data/camvid")
    ap.add_argument("--target", default="sq", choices=("sq", "abs"), help="regress (q - q̂)² or |q - q̂|")
    args = ap.parse_args()
    logging.getLogger("saseg").setLevel(logging.ERROR)
    run = RunDir(Path(args.triage) / "val")
    classes = run.classes()
    plugin, learned, described = learned_pool(run, args.target)
    print("residual model:", described)
    inter, union, frame_iou = truth_table(run, f"camvid:{Path(args.camvid).resolve()}:val", plugin.frame_ids)
    truth = np.divide(inter.sum(0), union.sum(0), out=np.full(inter.shape[1], np.nan), where=union.sum(0) > 0)
    pools = {"plug-in v": plugin, "learned v": learned}
    for name, pool in pools.items():
        print(f"\n{name}, tail_table on val:\n" + tail_table(pool, inter, union, classes.names, MAJOR)
              .round(3).to_string(index=False))
    rows = []
    for n in NS:
        for name, pool in pools.items():
            pi = inclusion_probabilities(pool.uncertainty(), n)
            for rep in range(REPS):
                s = systematic_sample(pi, seed=rep)
                result = estimate(pool, s, pi, inter[s], union[s], frame_iou[s], classes, level=LEVEL)
                t, m = result.classes.set_index("class_name"), result.summary["miou"]
                rows.append((n, name, "mIoU", m["low"] <= np.nanmean(truth) <= m["high"], m["high"] - m["low"]))
                for c in MAJOR:
                    ok = c in t.index and np.isfinite(t.loc[c, "estimate"])
                    truth_c = truth[classes.names.index(c)]
                    rows.append((n, name, c, bool(ok and t.loc[c, "low"] <= truth_c <= t.loc[c, "high"]),
                                 t.loc[c, "high"] - t.loc[c, "low"] if ok else np.nan))
    df = pd.DataFrame(rows, columns=["n", "v", "target", "covered", "width"])
    for what in ("covered", "width"):
        print(f"\n{'coverage' if what == 'covered' else 'mean width'} on val, {REPS} repetitions:")
        print(df.groupby(["target", "v", "n"])[what].mean().unstack("n").round(3).to_string())


if __name__ == "__main__":
    main()
