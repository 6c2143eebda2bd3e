import itertools
import math

import numpy as np
import pandas as pd
import pytest

from saseg.analysis.tradeoff import (curves_from_pairs, max_skip, max_skip_table, tradeoff_curve,
                                     tradeoff_table)
from saseg.errors import DataError

SA = np.array([0.3, 0.1, 0.7, 0.1, 0.9, 0.5, 0.2])
IOU = np.array([0.95, 0.4, 0.55, 0.85, 0.2, 0.65, 0.75])
RATIOS = np.linspace(0, 1, 15)


def _brute(sa, iou, k, t):
    order = sorted(range(len(sa)), key=lambda i: (sa[i], i))[:k]
    if k == 0:
        return 0.0
    if t is None:
        return sum(1 - iou[i] for i in order) / k
    return sum(iou[i] < t for i in order) / k


def test_sa_curve_against_brute_force():
    curve = tradeoff_curve(SA, IOU, thresholds=(0.5, 0.7), skip_ratios=RATIOS)
    assert list(curve.columns) == ["skip_ratio", "n_skipped", "metric", "threshold", "value"]
    assert len(curve) == 3 * len(RATIOS)
    for row in curve.itertuples():
        k = int(math.floor(row.skip_ratio * len(SA) + 1e-9))
        assert row.n_skipped == k
        t = None if row.metric == "mean_1_minus_iou" else row.threshold
        assert row.value == pytest.approx(_brute(SA, IOU, k, t))
    assert curve[curve.metric == "mean_1_minus_iou"].threshold.isna().all()
    # ties in SA (frames 1 and 3) are skipped in frame order: frame 1 (IoU 0.4) first
    assert curve[(curve.threshold == 0.5) & (curve.n_skipped == 1)].value.iloc[0] == 1.0


def test_skip_ratio_half_of_seven_floors():
    curve = tradeoff_curve(SA, IOU, skip_ratios=[0.5, 0.3 / 0.3 * 3 / 7])
    assert sorted(set(curve.n_skipped)) == [3]


def test_random_reference_is_exact_expectation_over_permutations():
    sa, iou = SA[:5], IOU[:5]
    curve = tradeoff_curve(sa, iou, thresholds=(0.6,), skip_ratios=[0, 0.2, 0.4, 0.6, 1.0], order="random")
    for row in curve.itertuples():
        k = row.n_skipped
        vals = []
        for perm in itertools.permutations(range(5)):
            skipped = perm[:k]
            if k == 0:
                vals.append(0.0)
            elif row.metric == "below_t":
                vals.append(np.mean([iou[i] < 0.6 for i in skipped]))
            else:
                vals.append(np.mean([1 - iou[i] for i in skipped]))
        assert row.value == pytest.approx(np.mean(vals))


def test_oracle_is_best_subset():
    curve = tradeoff_curve(SA, IOU, thresholds=(0.7,), skip_ratios=RATIOS, order="oracle")
    sa_curve = tradeoff_curve(SA, IOU, thresholds=(0.7,), skip_ratios=RATIOS)
    for row in curve.itertuples():
        k = row.n_skipped
        if k == 0:
            assert row.value == 0
            continue
        f = (lambda s: np.mean([IOU[i] < 0.7 for i in s])) if row.metric == "below_t" \
            else (lambda s: np.mean([1 - IOU[i] for i in s]))
        best = min(f(s) for s in itertools.combinations(range(len(SA)), k))
        assert row.value == pytest.approx(best)
    assert (curve.value.to_numpy() <= sa_curve.value.to_numpy() + 1e-12).all()


def test_nan_pairs_dropped():
    sa = np.append(SA, [np.nan, 0.0])
    iou = np.append(IOU, [0.1, np.nan])
    a = tradeoff_curve(sa, iou, skip_ratios=RATIOS)
    b = tradeoff_curve(SA, IOU, skip_ratios=RATIOS)
    pd.testing.assert_frame_equal(a, b)


def test_tradeoff_table_and_max_skip():
    pairs = pd.DataFrame({"target": ["car"] * 7 + ["road"] * 7, "kind": "class", "score": "mdsa",
                          "sa": np.concatenate([SA, SA[::-1]]), "iou": np.concatenate([IOU, IOU])})
    table = curves_from_pairs(pairs, thresholds=(0.5,), skip_ratios=RATIOS)
    assert set(table.order) == {"sa", "random", "oracle"} and set(table.target) == {"car", "road"}
    assert (table.n_frames == 7).all()
    car = table[table.target == "car"]
    direct = tradeoff_curve(SA, IOU, thresholds=(0.5,), skip_ratios=RATIOS)
    np.testing.assert_allclose(car[car.order == "sa"].value.to_numpy(), direct.value.to_numpy())
    # brute force max_skip: largest ratio with value <= risk
    for risk in (0.0, 0.2, 0.5, 1.0):
        below = direct[direct.metric == "below_t"]
        expected = below[below.value <= risk].skip_ratio.max()
        assert max_skip(car, 0.5, risk) == pytest.approx(expected)
    assert max_skip(direct, None, 0.3) == pytest.approx(
        direct[(direct.metric == "mean_1_minus_iou") & (direct.value <= 0.3)].skip_ratio.max())
    with pytest.raises(DataError, match="single target"):
        max_skip(table, 0.5, 0.1)
    per = max_skip_table(table, 0.5, 0.2).set_index("target")
    assert per.loc["car", "max_skip_ratio"] == max_skip(car, 0.5, 0.2)
    assert per.loc["road", "max_skip_ratio"] == max_skip(table[table.target == "road"], 0.5, 0.2)
    oracle = tradeoff_curve(SA, IOU, thresholds=(0.5,), skip_ratios=RATIOS, order="oracle")
    below = oracle[oracle.metric == "below_t"]
    assert per.loc["car", "max_skip_oracle"] == pytest.approx(below[below.value <= 0.2].skip_ratio.max())
    assert (per["max_skip_oracle"] >= per["max_skip_ratio"]).all()
    with pytest.raises(DataError, match="threshold 0.8"):
        max_skip(car, 0.8, 0.1)


def test_bad_inputs():
    with pytest.raises(DataError, match="one IoU per SA"):
        tradeoff_curve([0.1, 0.2], [0.5])
    with pytest.raises(DataError, match=r"IoU values in \[0, 1\]"):
        tradeoff_curve([0.1, 0.2], [0.5, 1.5])
    with pytest.raises(DataError, match="skip ratios"):
        tradeoff_curve([0.1], [0.5], skip_ratios=[1.2])
    with pytest.raises(DataError, match="order"):
        tradeoff_curve([0.1], [0.5], order="best")
    with pytest.raises(DataError, match="pairs table"):
        curves_from_pairs(pd.DataFrame({"sa": [1.0]}))
    with pytest.raises(DataError, match="expected columns"):
        max_skip(pd.DataFrame({"value": [0.0]}))


def test_tradeoff_table_from_run_tables_includes_frame_target():
    from saseg.data.classes import from_names

    classes = from_names(["a", "b"], groups={"ab": [0, 1]})
    scores = pd.DataFrame({"frame_id": [f"f{i}" for i in range(7) for _ in (0, 1)],
                           "frame_index": [i for i in range(7) for _ in (0, 1)],
                           "class_id": [0, 1] * 7, "mdsa": np.arange(14.0)})
    frames = pd.DataFrame({"frame_id": [f"f{i}" for i in range(7)], "frame_index": range(7),
                           "group_ab_mdsa": SA, "frame_mdsa": SA})
    iou = pd.concat([pd.DataFrame({"frame_id": [f"f{i}"] * 3, "target": ["a", "b", "ab"],
                                   "kind": ["class", "class", "group"], "class_id": [0, 1, -1],
                                   "iou": [IOU[i], IOU[i] / 2, IOU[i]]}) for i in range(7)])
    table = tradeoff_table(scores, frames, iou, ["mdsa"], classes, thresholds=(0.5,),
                           skip_ratios=RATIOS, references=False)
    assert list(dict.fromkeys(table.target)) == ["a", "b", "ab", "frame"]
    frame = table[table.target == "frame"]
    miou = (IOU + IOU / 2) / 2  # frame target: mean class IoU of the frame
    np.testing.assert_allclose(frame.value.to_numpy(), tradeoff_curve(
        SA, miou, thresholds=(0.5,), skip_ratios=RATIOS).value.to_numpy())
