import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from saseg.analysis.correlation import correlation_table, format_table, paired_table, score_agreement
from saseg.data.classes import from_names
from saseg.errors import DataError
from saseg.metrics import spearman

CLASSES = from_names(["road", "car", "bike"], groups={"vehicles": [1, 2]})


def _tables(n=12, seed=0):
    rng = np.random.default_rng(seed)
    scores, ious, frames = [], [], []
    for f in range(n):
        fid = f"f{f}"
        present = [0, 1] if f % 4 else [0, 1, 2]
        for c in present:
            scores.append((fid, f, c, rng.random(), rng.random()))
            ious.append((fid, CLASSES.names[c], "class", c, rng.random()))
        frames.append((fid, f, rng.random(), rng.random()))
        ious.append((fid, "vehicles", "group", -1, rng.random()))
    # bike labelled but never predicted in f1 -> IoU row without a score row: not counted
    ious.append(("f1", "bike", "class", 2, 0.0))
    scores_df = pd.DataFrame(scores, columns=["frame_id", "frame_index", "class_id", "mdsa", "lsa"])
    iou_df = pd.DataFrame(ious, columns=["frame_id", "target", "kind", "class_id", "iou"])
    frames_df = pd.DataFrame(frames, columns=["frame_id", "frame_index", "group_vehicles_mdsa",
                                              "group_vehicles_lsa"])
    return scores_df, frames_df, iou_df


def test_correlation_table_matches_scipy():
    scores_df, frames_df, iou_df = _tables()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = correlation_table(scores_df, frames_df, iou_df, ["mdsa", "lsa"], CLASSES)
    assert set(zip(table.target, table.score)) == {(t, s) for t in ["road", "car", "bike", "vehicles"]
                                                   for s in ["mdsa", "lsa"]}
    for row in table.itertuples():
        if row.kind == "class":
            cid = CLASSES.id(row.target)
            s = scores_df[scores_df.class_id == cid]
            i = iou_df[(iou_df.kind == "class") & (iou_df.class_id == cid)]
            m = s.merge(i, on="frame_id")
            x, y = m[row.score], m["iou"]
        else:
            m = frames_df.merge(iou_df[iou_df.target == "vehicles"], on="frame_id")
            x, y = m[f"group_vehicles_{row.score}"], m["iou"]
        assert row.n_frames == len(m)
        if len(m) < 3:
            assert math.isnan(row.rho) and row.reason
            continue
        ref = spearmanr(x, y)
        assert row.rho == pytest.approx(ref.statistic) and row.p == pytest.approx(ref.pvalue)
    assert table.set_index(["target", "score"]).loc[("bike", "mdsa"), "n_frames"] == 3


def test_undefined_correlations_give_reason_without_warnings():
    scores_df, frames_df, iou_df = _tables()
    scores_df.loc[scores_df.class_id == 1, "mdsa"] = 0.5  # constant SA for car
    scores_df = scores_df[~((scores_df.class_id == 2) & (scores_df.frame_id == "f8"))]  # 2 bikes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        table = correlation_table(scores_df, frames_df, iou_df, ["mdsa"], CLASSES).set_index("target")
    assert math.isnan(table.loc["car", "rho"]) and table.loc["car", "reason"] == "constant SA"
    assert math.isnan(table.loc["bike", "p"]) and table.loc["bike", "reason"].startswith("fewer than 3")
    assert spearman([1, 2, 3], [4, 4, 4])[2] == "constant IoU"
    text = format_table(table.reset_index())
    assert "vehicles" in text and "rho_mdsa" in text and "-" in text


def test_paired_table_drops_nan_and_orders_frames():
    scores_df, frames_df, iou_df = _tables()
    scores_df.loc[0, "mdsa"] = np.nan
    pairs = paired_table(scores_df, None, iou_df, ["mdsa"], CLASSES)
    assert set(pairs.kind) == {"class"}
    road = pairs[pairs.target == "road"]
    assert list(road.frame_index) == list(range(1, 12))


def test_score_agreement_matches_scipy():
    scores_df, frames_df, _ = _tables(n=10)
    agree = score_agreement(scores_df, "mdsa", "lsa", frames_df=frames_df, classes=CLASSES)
    for row in agree.itertuples():
        if row.kind == "class":
            s = scores_df[scores_df.class_id == CLASSES.id(row.target)]
            ref = spearmanr(s.mdsa, s.lsa)
        else:
            ref = spearmanr(frames_df.group_vehicles_mdsa, frames_df.group_vehicles_lsa)
        assert row.rho == pytest.approx(ref.statistic)
    assert set(agree.score) == {"mdsa~lsa"}


def test_missing_columns_raise():
    scores_df, frames_df, iou_df = _tables()
    with pytest.raises(DataError, match="scores table"):
        correlation_table(scores_df, frames_df, iou_df, ["dsa"], CLASSES)
    with pytest.raises(DataError, match="frames table"):
        correlation_table(scores_df, frames_df.drop(columns="group_vehicles_mdsa"), iou_df, ["mdsa"], CLASSES)
    with pytest.raises(DataError, match="IoU table"):
        correlation_table(scores_df, frames_df, iou_df.drop(columns="iou"), ["mdsa"], CLASSES)
    with pytest.raises(DataError, match="correlation table"):
        format_table(pd.DataFrame({"target": []}))
